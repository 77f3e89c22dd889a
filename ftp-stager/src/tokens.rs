//! Publish tokens: what a build pipeline presents to publish to the stager remotely.
//!
//! `ffs publish-token create --name ci [--product P]…` makes a token (`ffspt_` + 64 hex
//! digits from the OS random number generator), prints it once and stores only its SHA-256
//! in `state_dir/publish-tokens.json` (mode 0600, rewritten atomically), with its name,
//! the products it may publish (empty = any), when it was made and, once revoked, when.
//! Checking a token hashes it and compares against every live entry in constant time.
//!
//! Replication tokens (`ffs replication-token create --name B`, what a follower stager
//! presents to pull from this one, see [`crate::replicate`]) are the same records in a
//! store of their own, [`TokenStore::replication`] (`ffsrt_…` in
//! `state_dir/replication-tokens.json`), so neither kind of token can do the other's job.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::error::{Result, StagerError};
use crate::fsutil;
use crate::repository::valid_name;

/// The token file's name in the state directory.
pub const FILE: &str = "publish-tokens.json";
/// What every token starts with (so a leaked one is recognisable).
pub const PREFIX: &str = "ffspt_";
/// The replication token file's name in the state directory.
pub const REPLICATION_FILE: &str = "replication-tokens.json";
/// What every replication token starts with.
pub const REPLICATION_PREFIX: &str = "ffsrt_";

/// One stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishToken {
    /// Its name (letters, digits, `. _ + -`), unique.
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub hash: String,
    /// Products it may publish; empty = any.
    #[serde(default)]
    pub products: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked token is refused.
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl PublishToken {
    /// Whether it may publish `product`.
    pub fn allows(&self, product: &str) -> bool {
        self.products.is_empty() || self.products.iter().any(|p| p == product)
    }
}

/// The token store of a state directory.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    prefix: &'static str,
}

fn hash(token: &str) -> String {
    fsutil::sha256_hex(token.as_bytes())
}

impl TokenStore {
    /// The store in `state_dir` (the file may not exist yet: no tokens).
    pub fn new(state_dir: &Path) -> TokenStore {
        TokenStore {
            path: state_dir.join(FILE),
            prefix: PREFIX,
        }
    }

    /// The replication token store in `state_dir` (tokens followers pull with).
    pub fn replication(state_dir: &Path) -> TokenStore {
        TokenStore {
            path: state_dir.join(REPLICATION_FILE),
            prefix: REPLICATION_PREFIX,
        }
    }

    /// Every token, revoked ones included.
    pub fn list(&self) -> Result<Vec<PublishToken>> {
        let bytes = match commlink::secret_file::read_private(&self.path) {
            Ok(b) => b,
            Err(commlink::secret_file::SecretFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(StagerError::Config(e.to_string())),
        };
        serde_json::from_slice(&bytes).map_err(|e| StagerError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })
    }

    fn save(&self, tokens: &[PublishToken]) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fsutil::ensure_private_dir(dir).map_err(StagerError::io("create", dir))?;
        }
        let bytes = serde_json::to_vec_pretty(tokens).map_err(|e| StagerError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        fsutil::atomic_write(&self.path, &bytes, 0o600)
            .map_err(StagerError::io("write", &self.path))
    }

    /// Makes a token named `name` limited to `products` (empty = any). Returns the token,
    /// which is not stored and cannot be shown again.
    pub fn create(&self, name: &str, products: &[String]) -> Result<String> {
        if !valid_name(name) {
            return Err(StagerError::Invalid(format!(
                "token name {name:?}: use letters, digits and . _ + -"
            )));
        }
        if let Some(p) = products.iter().find(|p| !valid_name(p)) {
            return Err(StagerError::Invalid(format!("product name {p:?}")));
        }
        let mut tokens = self.list()?;
        if tokens.iter().any(|t| t.name == name) {
            return Err(StagerError::Refused(format!(
                "a token named {name:?} exists already (revoked ones keep their name)"
            )));
        }
        let token = format!("{}{}", self.prefix, fsutil::random_hex(32));
        tokens.push(PublishToken {
            name: name.to_owned(),
            hash: hash(&token),
            products: products.to_vec(),
            created_at: Utc::now(),
            revoked_at: None,
        });
        self.save(&tokens)?;
        Ok(token)
    }

    /// Revokes the token named `name`. Returns false if it was revoked already.
    pub fn revoke(&self, name: &str) -> Result<bool> {
        let mut tokens = self.list()?;
        let t = tokens
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| StagerError::NotFound(format!("token {name:?}")))?;
        if t.revoked_at.is_some() {
            return Ok(false);
        }
        t.revoked_at = Some(Utc::now());
        self.save(&tokens)?;
        Ok(true)
    }

    /// The live token matching `token`, if any (constant-time comparison of hashes).
    pub fn check(&self, token: &str) -> Result<Option<PublishToken>> {
        let h = hash(token.trim());
        let mut found = None;
        for t in self.list()? {
            let eq: bool = t.hash.as_bytes().ct_eq(h.as_bytes()).into();
            if eq && t.revoked_at.is_none() {
                found = Some(t);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn create_check_limit_revoke() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(&d.path().join("state"));
        assert!(s.list().unwrap().is_empty());
        let ci = s.create("ci", &[]).unwrap();
        assert!(ci.starts_with(PREFIX) && ci.len() == PREFIX.len() + 64);
        let a = s.create("a-only", &["alpha".into()]).unwrap();
        assert!(s.create("ci", &[]).is_err(), "names are unique");
        assert!(s.create("../x", &[]).is_err());
        let text = std::fs::read_to_string(d.path().join("state").join(FILE)).unwrap();
        assert!(
            !text.contains(&ci) && !text.contains(&a),
            "only hashes are stored"
        );
        let mode = std::fs::metadata(d.path().join("state").join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        assert_eq!(s.check(&ci).unwrap().unwrap().name, "ci");
        let t = s.check(&a).unwrap().unwrap();
        assert!(t.allows("alpha") && !t.allows("beta"));
        assert!(s.check(&ci).unwrap().unwrap().allows("beta"));
        assert!(s.check("ffspt_0000").unwrap().is_none());
        assert!(s.revoke("ci").unwrap());
        assert!(!s.revoke("ci").unwrap());
        assert!(s.check(&ci).unwrap().is_none(), "revoked");
        assert!(s.revoke("nope").is_err());
        assert_eq!(s.list().unwrap().len(), 2, "revoked tokens stay listed");
    }
}
