//! Release signing in the minisign format, so customers verify with the standard tool:
//!
//! ```text
//! minisign -Vm SHA256SUMS -p ffs.pub     # the sums are the vendor's (Ed25519)
//! sha256sum -c SHA256SUMS                # the files are the ones summed
//! ```
//!
//! `ffs publish` with a signing key writes two more objects per release: `SHA256SUMS`
//! (`sha256sum -c` format, one line per file of the release) and `SHA256SUMS.minisig`
//! (prehashed Ed25519 over BLAKE2b-512, algorithm "ED", with a trusted comment naming the
//! product, version and publication time). They are repository objects like any file —
//! immutable, hard-linked into every area of the release — and the manifest records which key
//! signed it ([`ReleaseSignature`]). A new key signs new releases; old ones keep theirs.
//!
//! The secret key file is minisign's own format, created mode 0600 and refused when group
//! or others can read it (`commlink::secret_file`): it lives on the publishing host like
//! the other ffs secrets. It is either unencrypted (KDF "none") or protected by a
//! passphrase exactly as `minisign -G` does it (KDF "Sc": scrypt, the key XORed with the
//! derived stream, a checksum telling a wrong passphrase); keys made by the real
//! `minisign -G` load too. [`Passphrase`] says where a passphrase comes from
//! (`[stager] signing_key_passphrase_file`, 0600, or the operator's prompt). Each public key that signed a release is
//! also kept in the repository (`keys/KEYID.pub`) for `ffs repo verify`; the copy customers
//! trust is the one the web frontend serves from its own configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StagerError};
use crate::repository::ManifestFile;

/// The checksum list's file name in every area of a signed release.
pub const SUMS_NAME: &str = "SHA256SUMS";
/// The signature's file name beside it.
pub const SIG_NAME: &str = "SHA256SUMS.minisig";

/// How a release was signed (recorded in its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSignature {
    /// The signing key's id as minisign prints it (16 upper-case hex digits).
    pub key_id: String,
    /// The signature's trusted comment (product, version, publication time).
    pub trusted_comment: String,
    /// The `SHA256SUMS` object.
    pub sums: ManifestFile,
    /// The `SHA256SUMS.minisig` object.
    pub minisig: ManifestFile,
}

fn sign_err(e: impl std::fmt::Display) -> StagerError {
    StagerError::Invalid(format!("signing: {e}"))
}

/// A key id as minisign prints it: the 8 key-number bytes as a little-endian u64, in hex.
pub fn key_id_hex(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    let n = keynum.len().min(8);
    b[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// Whether `s` looks like a key id (16 upper-case hex digits).
pub fn valid_key_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F'))
}

/// A loaded signing key.
pub struct Signer {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Longest passphrase accepted (minisign's own limit).
pub const MAX_PASSPHRASE_BYTES: usize = 1024;

/// A signing key's passphrase. Never printed (`Debug` hides it).
#[derive(Clone)]
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

impl Passphrase {
    /// A passphrase given as text (from a prompt).
    pub fn new(text: impl Into<String>) -> Result<Passphrase> {
        let text = text.into();
        if text.len() > MAX_PASSPHRASE_BYTES {
            return Err(StagerError::Invalid(format!(
                "a passphrase is at most {MAX_PASSPHRASE_BYTES} bytes"
            )));
        }
        Ok(Passphrase(text))
    }

    /// Reads a passphrase file (mode 0600 or refused, `commlink::secret_file`): its first
    /// line, without the line end.
    pub fn read_file(path: &Path) -> Result<Passphrase> {
        let bytes = commlink::secret_file::read_private(path)
            .map_err(|e| StagerError::Config(format!("signing key passphrase: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            StagerError::Config(format!("{}: the passphrase is not UTF-8", path.display()))
        })?;
        let line = text.split('\n').next().unwrap_or_default();
        Passphrase::new(line.strip_suffix('\r').unwrap_or(line))
            .map_err(|e| StagerError::Config(format!("{}: {e}", path.display())))
    }
}

/// Reads a secret key file (0600 or refused) and says whether it is passphrase-protected.
fn read_secret_box(path: &Path) -> Result<(minisign::SecretKeyBox, bool)> {
    let bytes = commlink::secret_file::read_private(path)
        .map_err(|e| StagerError::Config(format!("signing key: {e}")))?;
    let not_key = || {
        StagerError::Config(format!(
            "{} is not a minisign secret key; create one with `ffs keys signing generate`",
            path.display()
        ))
    };
    let text = String::from_utf8(bytes).map_err(|_| not_key())?;
    // The key line: signature algorithm "Ed", then the KDF algorithm ("Sc" = scrypt
    // passphrase, two zero bytes = none).
    let line = text.lines().nth(1).ok_or_else(not_key)?;
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|_| not_key())?;
    let encrypted = match raw.get(..4) {
        Some([b'E', b'd', 0, 0]) => false,
        Some([b'E', b'd', b'S', b'c']) => true,
        _ => return Err(not_key()),
    };
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|_| not_key())?;
    Ok((sk_box, encrypted))
}

/// Whether the secret key at `path` needs a passphrase.
pub fn is_encrypted(path: &Path) -> Result<bool> {
    read_secret_box(path).map(|(_, e)| e)
}

impl Signer {
    /// Loads an unencrypted secret key written by [`generate`], refusing a file group or
    /// others can read; a passphrase-protected key is refused with a message saying so.
    pub fn load(path: &Path) -> Result<Signer> {
        Signer::load_with(path, None)
    }

    /// Loads a secret key, decrypting it with `passphrase` when it is protected (a wrong
    /// passphrase is a clear error; one given for an unencrypted key is ignored).
    pub fn load_with(path: &Path, passphrase: Option<&Passphrase>) -> Result<Signer> {
        let (sk_box, encrypted) = read_secret_box(path)?;
        let bad = |e: minisign::PError| {
            StagerError::Config(format!(
                "{}: unusable minisign secret key ({e})",
                path.display()
            ))
        };
        let sk = match (encrypted, passphrase) {
            (false, _) => minisign::SecretKey::from_unencrypted_box(sk_box).map_err(bad)?,
            (true, None) => {
                return Err(StagerError::Config(format!(
                    "{} is protected by a passphrase: set [stager] signing_key_passphrase_file (a 0600 file holding it)",
                    path.display()
                )));
            }
            (true, Some(p)) => match minisign::SecretKey::from_box(sk_box, Some(p.0.clone())) {
                Ok(sk) => sk,
                Err(e) if matches!(e.kind(), minisign::ErrorKind::Verify) => {
                    return Err(StagerError::Config(format!(
                        "wrong passphrase for the signing key {}",
                        path.display()
                    )));
                }
                Err(e) => return Err(bad(e)),
            },
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(bad)?;
        let key_id = key_id_hex(pk.keynum());
        Ok(Signer { sk, pk, key_id })
    }

    /// Loads `[stager] signing_key` as the configuration says: `None` when no key is set;
    /// a protected key is decrypted with `signing_key_passphrase_file`.
    pub fn from_config(cfg: &crate::StagerConfig) -> Result<Option<Signer>> {
        if cfg.signing_key.as_os_str().is_empty() {
            return Ok(None);
        }
        let pass = if cfg.signing_key_passphrase_file.as_os_str().is_empty() {
            None
        } else {
            Some(Passphrase::read_file(&cfg.signing_key_passphrase_file)?)
        };
        Signer::load_with(&cfg.signing_key, pass.as_ref()).map(Some)
    }

    /// The key id (16 upper-case hex digits, as minisign prints it).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key file's text (minisign format).
    pub fn public_key_text(&self) -> String {
        public_key_text(&self.pk)
    }

    /// Signs `data` (prehashed Ed25519, minisign's "ED"): the `.minisig` file's text.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String> {
        let untrusted = format!("signature from ffs signing key {}", self.key_id);
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map_err(sign_err)?;
        Ok(sig.into_string())
    }
}

fn public_key_text(pk: &minisign::PublicKey) -> String {
    format!(
        "untrusted comment: minisign public key {}\n{}\n",
        key_id_hex(pk.keynum()),
        pk.to_base64()
    )
}

/// Makes a new Ed25519 signing key: the secret key at `secret` (mode 0600, must not exist,
/// unencrypted) and the public key at `public` (mode 0644, must not exist). Returns the key
/// id.
pub fn generate(secret: &Path, public: &Path) -> Result<String> {
    generate_with(secret, public, None)
}

/// [`generate`], the secret key protected by `passphrase` when given (minisign's "Sc"
/// scrypt format, as `minisign -G` writes it).
pub fn generate_with(
    secret: &Path,
    public: &Path,
    passphrase: Option<&Passphrase>,
) -> Result<String> {
    if public.exists() {
        return Err(StagerError::Refused(format!(
            "{} exists already; keys are never overwritten",
            public.display()
        )));
    }
    let kp = match passphrase {
        None => minisign::KeyPair::generate_unencrypted_keypair(),
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p.0.clone())),
    }
    .map_err(sign_err)?;
    let key_id = key_id_hex(kp.pk.keynum());
    let sk_text = kp
        .sk
        .to_box(Some(&format!("ffs signing secret key {key_id}")))
        .map_err(sign_err)?
        .into_string();
    commlink::secret_file::write_new_private(secret, sk_text.as_bytes())
        .map_err(|e| StagerError::Refused(format!("signing key: {e}")))?;
    write_new_public(public, &public_key_text(&kp.pk))?;
    Ok(key_id)
}

fn write_new_public(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(StagerError::io("create", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(StagerError::io("write", path))
}

/// A public key, parsed from a minisign `.pub` file's text (or its one base64 line).
#[derive(Clone)]
pub struct PublicKey {
    pk: minisign::PublicKey,
    key_id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl PublicKey {
    /// Parses a `.pub` file's text.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| StagerError::Invalid("no minisign public key found".into()))?;
        let pk = minisign::PublicKey::from_base64(line)
            .map_err(|e| StagerError::Invalid(format!("not a minisign public key: {e}")))?;
        let key_id = key_id_hex(pk.keynum());
        Ok(PublicKey { pk, key_id })
    }

    /// Reads and parses a `.pub` file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path).map_err(StagerError::io("read", path))?;
        PublicKey::parse(&text).map_err(|e| StagerError::Config(format!("{}: {e}", path.display())))
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `.pub` file's text.
    pub fn text(&self) -> String {
        public_key_text(&self.pk)
    }

    /// Verifies a `.minisig` (prehashed or legacy) over `data`: the signature and the
    /// trusted comment's global signature. Returns the trusted comment.
    pub fn verify(&self, sig_text: &str, data: &[u8]) -> Result<String> {
        let sig = minisign::SignatureBox::from_string(sig_text)
            .map_err(|e| StagerError::Invalid(format!("unreadable signature: {e}")))?;
        minisign::verify(
            &self.pk,
            &sig,
            std::io::Cursor::new(data),
            true,
            false,
            false,
        )
        .map_err(|e| StagerError::Invalid(format!("signature: {e}")))?;
        sig.trusted_comment()
            .map_err(|e| StagerError::Invalid(format!("signature: {e}")))
    }
}

/// The key id a `.minisig` names (without verifying it).
pub fn signature_key_id(sig_text: &str) -> Result<String> {
    let sig = minisign::SignatureBox::from_string(sig_text)
        .map_err(|e| StagerError::Invalid(format!("unreadable signature: {e}")))?;
    Ok(key_id_hex(sig.keynum()))
}

/// `SHA256SUMS` for `files` (`sha256sum -c` format: hash, two spaces, name). Release file
/// names contain no backslash or control character, so none needs sha256sum's escaping.
pub fn sums_text(files: &[ManifestFile]) -> String {
    let mut s = String::new();
    for f in files {
        s.push_str(&f.sha256);
        s.push_str("  ");
        s.push_str(&f.name);
        s.push('\n');
    }
    s
}

/// The trusted comment of a release's signature.
pub fn trusted_comment(product: &str, version: &str, published_rfc3339: &str) -> String {
    format!("product:{product} version:{version} published:{published_rfc3339} file:{SUMS_NAME}")
}

/// Where the repository keeps the public key of each key that signed a release.
pub fn repo_key_path(repo_root: &Path, key_id: &str) -> Result<PathBuf> {
    if !valid_key_id(key_id) {
        return Err(StagerError::Invalid(format!("bad key id {key_id:?}")));
    }
    Ok(repo_root.join("keys").join(format!("{key_id}.pub")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generate_sign_verify_and_refuse_tampering() {
        let d = tempfile::tempdir().unwrap();
        let (sk, pk) = (d.path().join("ffs.key"), d.path().join("ffs.pub"));
        let id = generate(&sk, &pk).unwrap();
        assert!(valid_key_id(&id));
        assert_eq!(
            std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            generate(&sk, &d.path().join("other.pub")).is_err(),
            "never overwrites"
        );
        let signer = Signer::load(&sk).unwrap();
        assert_eq!(signer.key_id(), id);
        let public = PublicKey::load(&pk).unwrap();
        assert_eq!(public.key_id(), id);
        let pub_text = std::fs::read_to_string(&pk).unwrap();
        assert!(pub_text.starts_with("untrusted comment: "), "{pub_text}");
        assert_eq!(pub_text, signer.public_key_text());

        let tc = trusted_comment("tool", "1.0", "2026-11-27T00:00:00Z");
        let sig = signer.sign(b"abc  x\n", &tc).unwrap();
        assert_eq!(signature_key_id(&sig).unwrap(), id);
        assert_eq!(public.verify(&sig, b"abc  x\n").unwrap(), tc);
        assert!(public.verify(&sig, b"abd  x\n").is_err());
        let other = d.path().join("o");
        generate(&other, &d.path().join("o.pub")).unwrap();
        let other = Signer::load(&other).unwrap();
        assert!(
            public
                .verify(&other.sign(b"abc  x\n", &tc).unwrap(), b"abc  x\n")
                .is_err()
        );
        // A forged trusted comment breaks the global signature.
        let forged = sig.replace("version:1.0", "version:9.9");
        assert!(public.verify(&forged, b"abc  x\n").is_err());

        std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Signer::load(&sk).is_err(),
            "a world-readable key is refused"
        );
    }
}
