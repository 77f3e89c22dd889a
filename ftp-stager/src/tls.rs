//! TLS material for HTTPS and FTPS: the configured PEM files, or a self-signed certificate
//! generated on first start into the state directory (key mode 0600, fingerprint logged),
//! through the one loader, [`commlink::tls`].

use commlink::tls::{TlsIdentity, load_or_generate as load};

use crate::config::StagerConfig;
use crate::error::Result;

/// Certificate and key files in use, their fingerprint and the rustls server config.
pub type TlsMaterial = TlsIdentity;

/// Loads the configured certificate, or (none configured) the one in `state_dir`, generated
/// there on first start for `public_host`, `localhost` and `127.0.0.1`.
pub fn load_or_generate(cfg: &StagerConfig) -> Result<TlsMaterial> {
    if !cfg.tls_cert.as_os_str().is_empty() {
        return Ok(load(&cfg.tls_cert, &cfg.tls_key, None)?);
    }
    let mut names = vec![cfg.public_host.clone()];
    for n in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    let cert = cfg.state_dir.join("tls-cert.pem");
    let key = cfg.state_dir.join("tls-key.pem");
    Ok(load(&cert, &key, Some(&names))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_in_the_state_dir_for_the_public_host_once() {
        let d = tempfile::tempdir().unwrap();
        let cfg = StagerConfig {
            state_dir: d.path().join("state"),
            public_host: "files.example.com".into(),
            ..Default::default()
        };
        let a = load_or_generate(&cfg).unwrap();
        assert!(a.generated);
        assert_eq!(a.cert_path, d.path().join("state/tls-cert.pem"));
        assert_eq!(a.key_path, d.path().join("state/tls-key.pem"));
        let b = load_or_generate(&cfg).unwrap();
        assert!(!b.generated);
        assert_eq!(a.fingerprint, b.fingerprint, "reused, not regenerated");
        let pem = std::fs::read_to_string(&a.cert_path).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }

    #[test]
    fn configured_files_are_never_generated() {
        let d = tempfile::tempdir().unwrap();
        let cfg = StagerConfig {
            state_dir: d.path().join("state"),
            tls_cert: d.path().join("mine.pem"),
            tls_key: d.path().join("mine.key"),
            ..Default::default()
        };
        let e = load_or_generate(&cfg).unwrap_err().to_string();
        assert!(e.contains("mine.pem"), "{e}");
        assert!(!d.path().join("mine.key").exists());
        assert!(!d.path().join("state").exists());
    }
}
