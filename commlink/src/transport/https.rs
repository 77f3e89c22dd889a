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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::websocket::{WsStream, handshake};
use super::{AddrError, Carrier, LinkAddr, LinkConfig, Proxy};

/// The endpoint below the prefix.
pub const LINK_PATH: &str = "/v1/link";

/// The Debian/Ubuntu, Fedora/RHEL, openSUSE and Alpine system CA bundles, tried in order
/// when `SSL_CERT_FILE` is not set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How the web's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebTrust {
    /// The system's CA bundle (`SSL_CERT_FILE`, else the distribution's bundle file).
    System,
    /// The CAs in this PEM file (e.g. a company CA, or a TLS-inspecting proxy's).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 (for a self-signed web).
    Pin([u8; 32]),
}

/// Why the https carrier cannot be built. The caller names the setting.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The address is not an `https://` URL.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// Not a SHA-256 fingerprint.
    #[error(
        "{0:?}: expected a SHA-256 certificate fingerprint, \"sha256:\" and 64 hex digits (colons allowed), as `ffs web` logs it"
    )]
    Pin(String),
    /// The CA file (or the system bundle) is unreadable or holds no usable certificate.
    #[error("{path}: {why}")]
    Roots {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// No system CA bundle was found.
    #[error(
        "no system CA bundle (set SSL_CERT_FILE, install ca-certificates, or configure a CA file or a pin)"
    )]
    NoSystemRoots,
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Parses a pin: `sha256:` (optional) then 64 hex digits, colons allowed, any case.
pub fn parse_pin(pin: &str) -> Result<[u8; 32], HttpsError> {
    let v = pin.trim();
    let hexits = v
        .strip_prefix("sha256:")
        .or_else(|| v.strip_prefix("SHA256:"))
        .unwrap_or(v);
    let h: String = hexits.chars().filter(|c| *c != ':').collect();
    hex::decode(&h)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| HttpsError::Pin(pin.to_owned()))
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
    pub fn new(url: &str, trust: &WebTrust, proxy: Option<&str>) -> Result<Https, HttpsError> {
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

/// The rustls client configuration for `trust` (ring, TLS 1.2 and 1.3, ALPN `http/1.1`).
pub fn client_config(trust: &WebTrust) -> Result<rustls::ClientConfig, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let mut cfg = match trust {
        WebTrust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: *pin, algs }))
            .with_no_client_auth(),
        WebTrust::CaFile(path) => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
        WebTrust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn system_roots() -> Result<rustls::RootCertStore, HttpsError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return roots_from(Path::new(&file));
    }
    let found = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(HttpsError::NoSystemRoots)?;
    roots_from(found)
}

fn roots_from(path: &Path) -> Result<rustls::RootCertStore, HttpsError> {
    let err = |why: String| HttpsError::Roots {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| err(format!("bad PEM: {e}")))?;
        // A bundle may hold a certificate rustls cannot use; the others still count.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(err("holds no usable CA certificate".into()));
    }
    Ok(roots)
}

/// Accepts exactly the server certificate whose SHA-256 is the pin (whatever its names,
/// issuer or dates); handshake signatures are still verified against that certificate.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if bool::from(subtle::ConstantTimeEq::ct_eq(&got[..], &self.pin[..])) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the web's certificate has SHA-256 {}, not the pinned one",
                hex::encode(got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_as_logged_and_as_hex() {
        let want: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let colons = want
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_pin(&colons).expect("colons"), want);
        assert_eq!(
            parse_pin(&format!("sha256:{}", hex::encode(want))).expect("prefixed"),
            want
        );
        for bad in ["", "sha256:", "sha256:abcd", "md5:00", &"0".repeat(66)] {
            assert!(parse_pin(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn carrier_targets_name_url_and_proxy() {
        let pin = WebTrust::Pin([0; 32]);
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
        let err = client_config(&WebTrust::CaFile(empty)).unwrap_err();
        assert!(err.to_string().contains("no usable CA"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(client_config(&WebTrust::CaFile(missing)).is_err());
    }
}
