//! Socket options of a server the test runs in its own process, read on the server's side
//! of a connection (the accepted socket, found among this process's descriptors by its two
//! addresses). For settings no client can observe, e.g. `TCP_NODELAY`; [`tls_exchange`]
//! opens such a connection and keeps it open.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A TLS connection to `server` (an IPv4 loopback listener) trusting `trust`, with
/// `request` sent and the first `n` bytes of the answer read: returns the connection (held
/// open by the caller), the client's own address, and those bytes.
pub async fn tls_exchange(
    server: SocketAddr,
    trust: &commlink::Trust,
    request: &[u8],
    n: usize,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    SocketAddr,
    Vec<u8>,
) {
    let cfg = commlink::transport::trust::client_config(trust).expect("a TLS client config");
    let tcp = tokio::net::TcpStream::connect(server)
        .await
        .expect("connects");
    let me = tcp.local_addr().expect("a local address");
    let name = rustls::pki_types::ServerName::from(server.ip());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake");
    tls.write_all(request).await.expect("sends");
    let mut head = vec![0u8; n];
    tls.read_exact(&mut head).await.expect("an answer");
    (tls, me, head)
}

/// The IPv4 address `getsockname`/`getpeername` give for `fd`, if it is an IPv4 socket.
fn addr_of(fd: libc::c_int, peer: bool) -> Option<SocketAddr> {
    // SAFETY: `sa` is a plain C struct, zeroed, with its size passed in `len`; the call
    // writes at most `len` bytes into it and fails harmlessly on a descriptor that is not
    // a socket (or was closed meanwhile).
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let p = (&mut sa as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
        let r = if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        };
        if r != 0 || sa.sin_family != libc::AF_INET as libc::sa_family_t {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Some(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(sa.sin_port),
        )))
    }
}

/// `TCP_NODELAY` on the server's socket of the connection between `server` (the listening
/// address, as the client dialed it) and `client` (the client's own local address); `None`
/// when this process holds no such socket (the server is not in-process, or the
/// connection is gone).
pub fn server_nodelay(server: SocketAddr, client: SocketAddr) -> Option<bool> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if addr_of(fd, false) != Some(server) || addr_of(fd, true) != Some(client) {
            continue;
        }
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads one `c_int` option into `on`, whose size is passed in `len`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut on as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 {
            return Some(on != 0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_accepted_socket_and_reads_its_option() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(server).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let me = client.local_addr().expect("addr");
        assert_eq!(server_nodelay(server, me), Some(false), "Linux's default");
        accepted.set_nodelay(true).expect("set");
        assert_eq!(server_nodelay(server, me), Some(true));
        drop(accepted);
        assert_eq!(server_nodelay(server, me), None, "gone with the connection");
    }
}
