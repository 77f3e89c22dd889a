//! The one TLS loader of the roles that serve TLS (the stager's HTTPS and FTPS, the web
//! frontend's HTTPS): load a PEM certificate chain and private key, or generate a
//! self-signed pair on first start, and build the rustls server configuration.
//!
//! Generation writes the key first (a new 0600 file, through [`crate::secret_file`]) and the
//! certificate last, atomically ([`crate::atomic_file`]), so a certificate on disk
//! always has its key beside it. A key without its certificate is what an interrupted first
//! start leaves behind; when generating is allowed it is replaced by a fresh pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::secret_file::{self, SecretFileError};

/// Why a TLS identity could not be loaded or generated. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate is missing and generating one is not allowed.
    #[error("no certificate at {} (and generating a self-signed one is off)", .0.display())]
    Missing(PathBuf),
    /// The certificate exists but its key does not.
    #[error(
        "{}: the certificate's private key is missing; restore it, or remove {} to have a \
         new self-signed pair generated",
        key.display(),
        cert.display()
    )]
    KeyMissing {
        /// The certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The key file is missing, unreadable, or open to group/others.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Generating the self-signed pair failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key.
    #[error("{}: {why}", cert.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// rustls's reason.
        why: String,
    },
}

impl TlsError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A loaded server identity.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// The PEM certificate chain in use.
    pub cert_path: PathBuf,
    /// The PEM private key in use (mode 0600).
    pub key_path: PathBuf,
    /// SHA-256 of the leaf certificate (DER), colon-separated upper-case hex.
    pub fingerprint: String,
    /// Whether this call generated the pair.
    pub generated: bool,
    /// The rustls server configuration (ring provider, safe default protocol versions,
    /// HTTP/1.1 ALPN).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Loads `cert` and `key`. When the certificate is missing, `generate` decides: `None`
/// refuses, `Some(names)` writes a self-signed pair for those DNS names or addresses
/// (`localhost` if empty), replacing a key left without its certificate.
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
    generate: Option<&[String]>,
) -> Result<TlsIdentity, TlsError> {
    let mut generated = false;
    if !cert.exists() {
        let Some(names) = generate else {
            return Err(TlsError::Missing(cert.to_owned()));
        };
        generate_pair(cert, key, names)?;
        generated = true;
    } else if !key.exists() {
        return Err(TlsError::KeyMissing {
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
    }
    let certs = read_certs(cert)?;
    let private_key = read_key(key)?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |e: rustls::Error| TlsError::Config {
        cert: cert.to_owned(),
        why: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        cert_path: cert.to_owned(),
        key_path: key.to_owned(),
        fingerprint,
        generated,
        server_config: Arc::new(config),
    })
}

/// SHA-256 of a DER certificate as `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_pair(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let names = if names.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        names.to_vec()
    };
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if key.exists() {
        // Left by an interrupted first start (the key is written before its certificate).
        tracing::warn!(key = %key.display(), "replacing a TLS key that has no certificate");
        std::fs::remove_file(key).map_err(TlsError::io(key))?;
    }
    secret_file::write_new_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    crate::atomic_file::write(cert, ck.cert.pem().as_bytes(), 0o644).map_err(TlsError::io(cert))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(TlsError::io(path))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            why: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key; refused unless readable by its owner only.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = secret_file::read_private(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            why: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            why: "no private key in the file".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generates_once_then_reloads_the_same_pair() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (
            d.path().join("state/cert.pem"),
            d.path().join("state/key.pem"),
        );
        let a = load_or_generate(&c, &k, Some(&names())).unwrap();
        assert!(a.generated);
        assert_eq!(mode(&k), 0o600);
        assert_eq!(mode(&c), 0o644);
        assert_eq!(mode(&d.path().join("state")), 0o700);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        let b = load_or_generate(&c, &k, Some(&names())).unwrap();
        assert!(!b.generated, "reused, not regenerated");
        assert_eq!(a.fingerprint, b.fingerprint);
        let files: Vec<_> = std::fs::read_dir(d.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 2, "no temporary file left: {files:?}");
    }

    #[test]
    fn a_key_left_without_its_certificate_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        // What a first start killed between writing the key and the certificate leaves.
        secret_file::write_new_private(&k, b"-----BEGIN PRIVATE KEY-----\nMIIE").unwrap();
        let a = load_or_generate(&c, &k, Some(&names())).unwrap();
        assert!(a.generated);
        assert_eq!(mode(&k), 0o600);
        let reloaded = load_or_generate(&c, &k, None).unwrap();
        assert_eq!(
            reloaded.fingerprint, a.fingerprint,
            "the new key matches the new cert"
        );
    }

    #[test]
    fn a_missing_certificate_or_key_is_refused_when_generating_is_off() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        let e = load_or_generate(&c, &k, None).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("generating"), "{e}");
        assert!(!k.exists(), "nothing written");
        load_or_generate(&c, &k, Some(&names())).unwrap();
        std::fs::remove_file(&k).unwrap();
        let before = std::fs::read(&c).unwrap();
        let e = load_or_generate(&c, &k, Some(&names()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key.pem") && e.contains("remove"), "{e}");
        assert_eq!(
            std::fs::read(&c).unwrap(),
            before,
            "an existing cert is never replaced"
        );
    }

    #[test]
    fn a_key_open_to_others_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        load_or_generate(&c, &k, Some(&names())).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_or_generate(&c, &k, Some(&names()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_certificate_file_without_a_certificate_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("cert.pem"), d.path().join("key.pem"));
        load_or_generate(&c, &k, Some(&names())).unwrap();
        std::fs::write(&c, "not pem\n").unwrap();
        let e = load_or_generate(&c, &k, Some(&names()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no certificate"),
            "{e}"
        );
    }
}
