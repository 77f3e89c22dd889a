//! The https carrier: the commlink inside TLS to the web frontend's own public HTTPS listener
//! (`https://web.example.com[/PREFIX]`), for an inside host whose only way out is port 443,
//! directly or through a `CONNECT` proxy ([`super::Proxy`], composed, not duplicated).
//!
//! It opens TCP (or the proxy's tunnel), does TLS (ALPN `http/1.1`) trusting the system
//! roots, a CA file, or exactly one certificate by its SHA-256 fingerprint, then upgrades
//! `GET PREFIX/v1/link` to a WebSocket with subprotocol `ffs-commlink.1` and runs the
//! commlink's lines inside binary messages ([`super::websocket`]). The web sees no source
//! port of ours, so the key index comes from a virtual port announced in HELLO (`v<P>`,
//! PROTOCOL.md §4 and §10). TLS is only the envelope: the commlink stays end-to-end sealed
//! with the key bag, whatever terminates or inspects the TLS.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::trust::{self, Trust, TrustError};
use super::websocket::{WsStream, handshake};
use super::{AddrError, Carrier, LinkAddr, LinkConfig, Proxy};

/// The endpoint below the prefix.
pub const LINK_PATH: &str = "/v1/link";

/// Why the https carrier cannot be built. The caller names the setting.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The address is not an `https://` URL.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// The trust setting (pin, CA file, system bundle) cannot be used.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The https carrier to one web frontend.
#[derive(Clone)]
pub struct Https {
    host: String,
    authority: String,
    path: String,
    via: Option<Proxy>,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    label: String,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("target", &self.label)
            .finish()
    }
}

impl Https {
    /// A carrier to `url` (`https://host[:port][/prefix]`) checking the certificate with
    /// `trust`, through `proxy` (a [`Proxy`] URL) when given.
    pub fn new(url: &str, trust: &Trust, proxy: Option<&str>) -> Result<Https, HttpsError> {
        let LinkAddr::Https(addr) = LinkAddr::parse(url)? else {
            return Err(AddrError::MalformedHttps(url.to_owned()).into());
        };
        let via = proxy
            .map(|p| Proxy::new(p, addr.authority.clone()))
            .transpose()?;
        let name = ServerName::try_from(addr.host.clone())
            .map_err(|_| AddrError::MalformedHttps(url.to_owned()))?;
        let path = format!("{}{LINK_PATH}", addr.prefix);
        let shown = format!("https://{}{}", addr.authority, addr.prefix);
        let label = match &via {
            Some(p) => {
                let t = p.target();
                let proxy_part = t.split_once(" via ").map_or(t, |(_, v)| v);
                format!("{shown} via {proxy_part}")
            }
            None => shown,
        };
        Ok(Https {
            host: addr.host.clone(),
            authority: addr.authority,
            path,
            via,
            tls: tokio_rustls::TlsConnector::from(Arc::new(client_config(trust)?)),
            name,
            label,
        })
    }

    async fn tcp(&self, cfg: &LinkConfig) -> std::io::Result<(TcpStream, u16)> {
        match &self.via {
            Some(proxy) => proxy.open(cfg).await,
            None => {
                let stream = super::tcp::connect(&self.authority, None).await?;
                let _ = stream.set_nodelay(true);
                Ok((stream, super::proxy::virtual_port(cfg.source_ports)))
            }
        }
    }
}

impl Carrier for Https {
    type Stream = WsStream<TlsStream<TcpStream>>;

    fn target(&self) -> &str {
        &self.label
    }

    fn virtual_port(&self) -> bool {
        true
    }

    async fn open(&self, cfg: &LinkConfig) -> std::io::Result<(Self::Stream, u16)> {
        let (tcp, port) = self.tcp(cfg).await?;
        let mut tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS with {}: {e}", self.host)))?;
        let host = if self.authority.ends_with(":443") {
            self.authority.trim_end_matches(":443")
        } else {
            &self.authority
        };
        let early = handshake(&mut tls, host, &self.path).await?;
        Ok((WsStream::new(tls, early), port))
    }
}

/// The rustls client configuration for `trust` ([`super::trust`]) with ALPN `http/1.1`.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, HttpsError> {
    let mut cfg = trust::client_config(trust)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_targets_name_url_and_proxy() {
        let pin = Trust::Pin([0; 32]);
        let h = Https::new("https://web.example.com/ffs-link", &pin, None).expect("builds");
        assert_eq!(h.target(), "https://web.example.com:443/ffs-link");
        assert_eq!(h.path, "/ffs-link/v1/link");
        assert!(h.virtual_port());
        let h = Https::new(
            "https://web.example.com:8443",
            &pin,
            Some("http://u:secret@proxy.corp:3128"),
        )
        .expect("builds");
        assert_eq!(
            h.target(),
            "https://web.example.com:8443 via proxy proxy.corp:3128"
        );
        assert_eq!(h.path, "/v1/link");
        assert!(!format!("{h:?}").contains("secret"));
        assert!(Https::new("tcp://web:1", &pin, None).is_err());
        assert!(Https::new("https://web/", &pin, Some("socks5://p:1")).is_err());
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = client_config(&Trust::CaFile(empty)).unwrap_err();
        assert!(err.to_string().contains("no usable CA"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(client_config(&Trust::CaFile(missing)).is_err());
    }
}
