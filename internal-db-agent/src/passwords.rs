//! Password hashing: argon2id with a per-user random salt, PHC strings in the database.
//!
//! The hash never leaves this crate's database layer: replies and logs carry neither the
//! password nor its hash. [`Hasher::verify_dummy`] spends the same work as a real check so
//! an unknown login takes as long as a wrong password.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// Longest password accepted (bytes); longer ones are treated as wrong.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Shortest password the operator CLI accepts for new passwords.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Why a password could not be hashed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 parameters are out of range.
    #[error("invalid argon2 parameters (argon2_memory_kib >= 8, argon2_iterations >= 1): {0}")]
    Params(String),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A new password that is too short or too long.
    #[error("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes long")]
    Length,
}

/// Hashes new passwords with the configured cost and verifies stored hashes.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    dummy: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .finish()
    }
}

impl Hasher {
    /// argon2id with `memory_kib` KiB and `iterations` passes, one lane.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Hasher, PasswordError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let mut h = Hasher {
            params,
            dummy: String::new(),
        };
        // A hash of a password nobody has, made with the same cost as real ones.
        h.dummy = h.hash_unchecked("ffs dummy password for unknown logins")?;
        Ok(h)
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a new password (checking its length) with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.len()) {
            return Err(PasswordError::Length);
        }
        self.hash_unchecked(password)
    }

    fn hash_unchecked(&self, password: &str) -> Result<String, PasswordError> {
        self.argon()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches the stored PHC string. A malformed stored hash never
    /// matches (and still costs a dummy verification).
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            self.verify_dummy("");
            return false;
        }
        match PasswordHash::new(phc) {
            // Parameters come from the stored hash, so old hashes keep working after a
            // cost change.
            Ok(h) => self
                .argon()
                .verify_password(password.as_bytes(), &h)
                .is_ok(),
            Err(_) => {
                self.verify_dummy(password);
                false
            }
        }
    }

    /// Does the work of a verification whose answer is always "no".
    pub fn verify_dummy(&self, password: &str) {
        if let Ok(h) = PasswordHash::new(&self.dummy) {
            let _ = self.argon().verify_password(password.as_bytes(), &h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(64, 1).unwrap()
    }

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let h = cheap();
        let a = h.hash("correct horse").unwrap();
        let b = h.hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "per-user salt");
        assert!(h.verify("correct horse", &a));
        assert!(!h.verify("correct horsf", &a));
        assert!(!h.verify("correct horse", "not a hash"));
    }

    #[test]
    fn stored_parameters_win() {
        let old = Hasher::new(32, 2).unwrap().hash("password1").unwrap();
        assert!(cheap().verify("password1", &old));
    }

    #[test]
    fn length_limits() {
        let h = cheap();
        assert!(matches!(h.hash("short"), Err(PasswordError::Length)));
        assert!(matches!(
            h.hash(&"x".repeat(MAX_PASSWORD_LEN + 1)),
            Err(PasswordError::Length)
        ));
        assert!(Hasher::new(1, 1).is_err());
    }
}
