//! Download areas as records, and their one-time secrets (pure: no I/O).
//!
//! Secrets are random: the FTP password is 128 bits, the HTTPS token 256 bits, so a salted
//! SHA-256 is enough to store them (no dictionary to guard against; argon2's cost would buy
//! nothing and slow every login). Only hashes are kept; the plaintext is returned once, in
//! the stage reply. Password checks compare hashes in constant time (subtle); tokens are
//! looked up by their hash, so a lookup never compares the secret itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::fsutil::{random_hex, sha256_hex};
use crate::repository::ManifestFile;

/// A download area as persisted in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AreaRecord {
    /// Random 128-bit id (hex); also the directory name under `areas_dir`.
    pub id: String,
    /// Free text from the stage request (e.g. the customer's login).
    pub label: String,
    /// Product staged.
    pub product: String,
    /// Version staged.
    pub version: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expires (credentials and token stop working; the sweeper removes the area).
    pub expires_at: DateTime<Utc>,
    /// One-time FTP user name (not secret).
    pub ftp_user: String,
    /// Hex salt for the password hash.
    pub ftp_salt: String,
    /// Hex SHA-256(salt ‖ password).
    pub ftp_hash: String,
    /// Hex SHA-256(token).
    pub token_hash: String,
    /// The staged files.
    pub files: Vec<ManifestFile>,
    /// How the files were placed: hardlink, reflink or copy.
    pub method: String,
}

/// The plaintext secrets of a new area (returned once, never stored).
#[derive(Debug, Clone)]
pub struct Secrets {
    /// FTP user name.
    pub ftp_user: String,
    /// FTP password (128-bit, hex).
    pub ftp_password: String,
    /// HTTPS capability token (256-bit, hex).
    pub token: String,
}

impl Secrets {
    /// Fresh random secrets.
    pub fn generate() -> Secrets {
        Secrets {
            ftp_user: format!("ffs-{}", random_hex(8)),
            ftp_password: random_hex(16),
            token: random_hex(32),
        }
    }
}

/// Hash of a password with its salt.
pub fn password_hash(salt_hex: &str, password: &str) -> String {
    sha256_hex(format!("{salt_hex}:{password}").as_bytes())
}

/// Hash under which a token is stored and looked up.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

impl AreaRecord {
    /// Whether the area has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Checks an FTP password in constant time.
    pub fn password_matches(&self, password: &str) -> bool {
        let h = password_hash(&self.ftp_salt, password);
        h.as_bytes().ct_eq(self.ftp_hash.as_bytes()).into()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The admin view.
    pub fn summary(&self) -> commlink::msg::stager::AreaSummary {
        commlink::msg::stager::AreaSummary {
            area_id: self.id.clone(),
            label: self.label.clone(),
            product: self.product.clone(),
            version: self.version.clone(),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            file_count: self.files.len() as u64,
            bytes: self.bytes(),
        }
    }
}

/// RFC 3339 with seconds and `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(s: &Secrets) -> AreaRecord {
        let salt = random_hex(16);
        AreaRecord {
            id: random_hex(16),
            label: String::new(),
            product: "p".into(),
            version: "v".into(),
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::seconds(60),
            ftp_user: s.ftp_user.clone(),
            ftp_hash: password_hash(&salt, &s.ftp_password),
            ftp_salt: salt,
            token_hash: token_hash(&s.token),
            files: vec![],
            method: "hardlink".into(),
        }
    }

    #[test]
    fn passwords_and_tokens() {
        let s = Secrets::generate();
        assert_eq!(s.ftp_password.len(), 32);
        assert_eq!(s.token.len(), 64);
        let r = record(&s);
        assert!(r.password_matches(&s.ftp_password));
        assert!(!r.password_matches(""));
        assert!(!r.password_matches(&Secrets::generate().ftp_password));
        assert_ne!(r.ftp_hash, s.ftp_password);
        assert_eq!(r.token_hash, token_hash(&s.token));
        assert!(!r.expired(Utc::now()));
        assert!(r.expired(Utc::now() + chrono::Duration::seconds(61)));
    }
}
