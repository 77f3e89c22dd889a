//! How a TLS client checks the server it reached: the one place for every carrier and HTTPS
//! client of the project (the https carrier, the relay's `relay+https://`, the stager's
//! `http_client` for remote publishing and replication). Trust is the system CA bundle, the
//! CAs of a PEM file, or exactly one certificate pinned by its SHA-256.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;

/// The Debian/Ubuntu, Fedora/RHEL, openSUSE and Alpine system CA bundles, tried in order
/// when `SSL_CERT_FILE` is not set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA bundle (`SSL_CERT_FILE`, else the distribution's bundle file).
    System,
    /// The CAs in this PEM file (e.g. a company CA, or a TLS-inspecting proxy's).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 (for a self-signed server); handshake
    /// signatures are still verified against that certificate.
    Pin([u8; 32]),
}

/// Why a trust setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Not a SHA-256 fingerprint.
    #[error(
        "{0:?}: expected a SHA-256 certificate fingerprint, \"sha256:\" and 64 hex digits (colons allowed), as `ffs web` and `ffs stager` log it"
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

/// Parses a pin: `sha256:` (optional) then 64 hex digits, any case; colons and white space
/// are ignored (the `AB:CD:…` form the roles log is taken as is).
pub fn parse_pin(pin: &str) -> Result<[u8; 32], TrustError> {
    let v = pin.trim();
    let hexits = v
        .strip_prefix("sha256:")
        .or_else(|| v.strip_prefix("SHA256:"))
        .unwrap_or(v);
    let h: String = hexits
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    hex::decode(&h)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| TrustError::Pin(pin.to_owned()))
}

/// The rustls client configuration for `trust` (ring, TLS 1.2 and 1.3, no client
/// certificate, no ALPN: the caller sets the protocols it speaks).
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    Ok(match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: *pin, algs }))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
    })
}

fn system_roots() -> Result<rustls::RootCertStore, TrustError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return roots_from(Path::new(&file));
    }
    let found = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(TrustError::NoSystemRoots)?;
    roots_from(found)
}

fn roots_from(path: &Path) -> Result<rustls::RootCertStore, TrustError> {
    let err = |why: String| TrustError::Roots {
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
                "the server's certificate has SHA-256 {}, not the pinned one",
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
    fn pins_as_logged_prefixed_and_spaced() {
        let want: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let colons = want
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_pin(&colons).expect("colons"), want);
        let hex = hex::encode(want);
        assert_eq!(parse_pin(&format!("sha256:{hex}")).expect("prefixed"), want);
        assert_eq!(parse_pin(&format!(" {hex}\n")).expect("spaced"), want);
        for bad in ["", "sha256:", "sha256:abcd", "md5:00", &"0".repeat(66)] {
            assert!(matches!(parse_pin(bad), Err(TrustError::Pin(_))), "{bad:?}");
        }
        assert!(matches!(
            parse_pin(&"zz".repeat(32)),
            Err(TrustError::Pin(_))
        ));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = client_config(&Trust::CaFile(path.clone())).expect_err("refused");
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }
}
