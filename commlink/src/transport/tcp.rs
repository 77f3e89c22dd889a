//! The raw TCP carrier: today's link, unchanged on the wire. The key index comes from the
//! dialer's TCP source port, optionally bound inside a configured range so that a firewall
//! rule can name it.

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

use super::{Carrier, LinkConfig};

/// Raw TCP to `host:port`.
#[derive(Debug, Clone)]
pub struct Tcp {
    addr: String,
}

impl Tcp {
    /// A carrier dialing `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Tcp {
        Tcp { addr: addr.into() }
    }
}

impl Carrier for Tcp {
    type Stream = TcpStream;

    fn target(&self) -> &str {
        &self.addr
    }

    async fn open(&self, cfg: &LinkConfig) -> std::io::Result<(TcpStream, u16)> {
        let stream = connect(&self.addr, cfg.source_ports).await?;
        let _ = stream.set_nodelay(true);
        let port = stream.local_addr()?.port();
        Ok((stream, port))
    }
}

pub(super) async fn connect(
    addr: &str,
    source_ports: Option<(u16, u16)>,
) -> std::io::Result<TcpStream> {
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for target in targets {
        let result = match source_ports {
            None => TcpStream::connect(target).await,
            Some((lo, hi)) => connect_from_range(target, lo, hi).await,
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects from a source port inside `lo..=hi`, trying random ports until one is free.
async fn connect_from_range(target: SocketAddr, lo: u16, hi: u16) -> std::io::Result<TcpStream> {
    use rand::RngExt as _;
    let span = u32::from(hi - lo) + 1;
    let tries = span.min(64);
    let mut last = std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free source port in {lo}-{hi}"),
    );
    for _ in 0..tries {
        let port = rand::rng().random_range(lo..=hi);
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        let local: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, port).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, port).into()
        };
        if let Err(e) = socket.bind(local) {
            last = e;
            continue;
        }
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dials_from_inside_the_source_port_range() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        for _ in 0..5 {
            let stream = connect(&addr, Some((41000, 41009)))
                .await
                .expect("connects");
            let port = stream.local_addr().expect("local").port();
            assert!((41000..=41009).contains(&port), "source port {port}");
            let (_, seen) = listener.accept().await.expect("accept");
            assert_eq!(seen.port(), port);
        }
    }

    #[tokio::test]
    async fn the_carrier_reports_the_port_the_acceptor_sees() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let bag = crate::keys::KeyBag::generate(4).expect("a key bag");
        let cfg = LinkConfig::new(std::sync::Arc::new(bag));
        let tcp = Tcp::new(addr.clone());
        assert_eq!(tcp.target(), addr);
        let (_stream, port) = tcp.open(&cfg).await.expect("opens");
        let (_, seen) = listener.accept().await.expect("accept");
        assert_eq!(seen.port(), port);
    }

    #[tokio::test]
    async fn an_unresolvable_or_closed_address_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        drop(listener);
        assert!(connect(&addr, None).await.is_err());
    }
}
