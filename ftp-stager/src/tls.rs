//! TLS material for HTTPS and FTPS: the configured PEM files, or a self-signed certificate
//! generated on first start into the state directory (key mode 0600, fingerprint logged).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commlink::secret_file;

use crate::config::StagerConfig;
use crate::error::{Result, StagerError};
use crate::fsutil::sha256_hex;

/// Certificate and key files in use, plus the rustls server config built from them.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// SHA-256 of the leaf certificate (DER), hex with colons.
    pub fingerprint: String,
    /// The HTTPS server config (HTTP/1.1).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Loads the configured certificate, or creates a self-signed one in `state_dir`.
pub fn load_or_generate(cfg: &StagerConfig) -> Result<TlsMaterial> {
    let (cert_path, key_path) = if cfg.tls_cert.as_os_str().is_empty() {
        let c = cfg.state_dir.join("tls-cert.pem");
        let k = cfg.state_dir.join("tls-key.pem");
        if !c.exists() || !k.exists() {
            crate::fsutil::ensure_private_dir(&cfg.state_dir)
                .map_err(StagerError::io("create", &cfg.state_dir))?;
            generate(&cfg.public_host, &c, &k)?;
        }
        (c, k)
    } else {
        (cfg.tls_cert.clone(), cfg.tls_key.clone())
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = certs
        .first()
        .map(|c| colon_hex(&sha256_hex(c.as_ref())))
        .ok_or_else(|| StagerError::Tls(format!("{} holds no certificate", cert_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StagerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StagerError::Tls(format!("{}: {e}", cert_path.display())))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        cert_path,
        key_path,
        fingerprint,
        server_config: Arc::new(sc),
    })
}

fn generate(host: &str, cert: &Path, key: &Path) -> Result<()> {
    let mut names = vec![host.to_owned()];
    for n in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| StagerError::Tls(e.to_string()))?;
    // A key without its certificate is left over from an interrupted first start.
    let _ = fs::remove_file(key);
    secret_file::write_new_private(key, ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| StagerError::Tls(e.to_string()))?;
    crate::fsutil::atomic_write(cert, ck.cert.pem().as_bytes(), 0o644)
        .map_err(StagerError::io("write", cert))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn read_certs(p: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let bytes = fs::read(p).map_err(StagerError::io("read", p))?;
    rustls_pemfile::certs(&mut &bytes[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| StagerError::Tls(format!("{}: {e}", p.display())))
}

/// Reads the private key; refused unless readable by its owner only.
fn read_key(p: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let bytes = secret_file::read_private(p).map_err(|e| StagerError::Tls(e.to_string()))?;
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| StagerError::Tls(format!("{}: {e}", p.display())))?
        .ok_or_else(|| StagerError::Tls(format!("{} holds no private key", p.display())))
}

fn colon_hex(h: &str) -> String {
    h.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_once_with_private_key() {
        let d = tempfile::tempdir().unwrap();
        let cfg = StagerConfig {
            state_dir: d.path().to_path_buf(),
            ..Default::default()
        };
        let a = load_or_generate(&cfg).unwrap();
        assert_eq!(
            fs::metadata(&a.key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load_or_generate(&cfg).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "reused, not regenerated");
        fs::set_permissions(&a.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_generate(&cfg).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "world-readable key refused: {e}");
    }
}
