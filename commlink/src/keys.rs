//! The key bag: N pre-shared secret entries, one of which keys each connection.
//!
//! File format (text, UTF-8, mode 0600):
//!
//! ```text
//! # ffs key bag v1 — keep secret; both ends of a link need the same file
//! ffs-keybag v1
//! 0 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! 1 …
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. The first other line is the header
//! `ffs-keybag v1`; then one line per entry: its index (0, 1, 2, … in order) and 32 bytes
//! of key material as 64 lowercase hex digits. N is the number of entries (at least 2).

use std::fmt::Write as _;
use std::path::Path;

use rand::TryRng as _;
use sha2::{Digest, Sha256};

/// Default number of entries in a generated bag (seed 002's example).
pub const DEFAULT_COUNT: usize = 128;
/// Bytes of key material per entry.
pub const ENTRY_LEN: usize = 32;

/// Why a key bag could not be read or written. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyBagError {
    /// The file could not be read or written.
    #[error("key bag {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not readable by its owner only, or could not be read or written.
    #[error("key bag {0}")]
    File(#[from] crate::secret_file::SecretFileError),
    /// The file is not a key bag.
    #[error(
        "key bag {path} line {line}: {what}; regenerate it with `ffs keys generate --out {path}` and copy it to every host"
    )]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        what: String,
    },
    /// Fewer than two entries.
    #[error(
        "key bag {path} has {count} entries; at least 2 are needed (generate one with `ffs keys generate --count 128`)"
    )]
    TooFew {
        /// The file.
        path: String,
        /// How many entries it has.
        count: usize,
    },
    /// Two entries hold the same key material.
    #[error(
        "key bag {path}: entries {first} and {second} are identical; regenerate the bag with `ffs keys generate`"
    )]
    Duplicate {
        /// The file.
        path: String,
        /// The first entry's index.
        first: usize,
        /// The repeating entry's index.
        second: usize,
    },
}

/// N secret entries; entry `P mod N` keys a connection whose initiator used port P.
#[derive(Clone)]
pub struct KeyBag {
    entries: Vec<[u8; ENTRY_LEN]>,
}

impl std::fmt::Debug for KeyBag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(
            f,
            "KeyBag {{ n: {}, fingerprint: {} }}",
            self.len(),
            self.fingerprint()
        )
    }
}

impl KeyBag {
    /// A fresh bag of `count` entries from the OS random number generator.
    pub fn generate(count: usize) -> Result<KeyBag, KeyBagError> {
        if count < 2 {
            return Err(KeyBagError::TooFew {
                path: "(new)".into(),
                count,
            });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let mut e = [0u8; ENTRY_LEN];
            rand::rngs::SysRng
                .try_fill_bytes(&mut e)
                .map_err(|e| KeyBagError::Io {
                    path: "(OS random number generator)".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            entries.push(e);
        }
        Ok(KeyBag { entries })
    }

    /// A bag from given entries (tests and test vectors).
    pub fn from_entries(entries: Vec<[u8; ENTRY_LEN]>) -> Result<KeyBag, KeyBagError> {
        Self::check(entries, "(memory)")
    }

    fn check(entries: Vec<[u8; ENTRY_LEN]>, path: &str) -> Result<KeyBag, KeyBagError> {
        if entries.len() < 2 {
            return Err(KeyBagError::TooFew {
                path: path.into(),
                count: entries.len(),
            });
        }
        let mut seen = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(first) = seen.insert(*e, i) {
                return Err(KeyBagError::Duplicate {
                    path: path.into(),
                    first,
                    second: i,
                });
            }
        }
        Ok(KeyBag { entries })
    }

    /// Number of entries, N.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a bag has at least two entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry index for initiator port `port`: `port mod N`.
    pub fn index_for_port(&self, port: u16) -> usize {
        port as usize % self.entries.len()
    }

    /// The entry for initiator port `port`.
    pub fn entry_for_port(&self, port: u16) -> &[u8; ENTRY_LEN] {
        &self.entries[self.index_for_port(port)]
    }

    /// A public fingerprint of the whole bag (16 hex digits), so two hosts can tell whether
    /// they hold the same bag without revealing any entry.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"ffs-keybag-fingerprint-v1");
        for e in &self.entries {
            h.update(e);
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The file text for this bag.
    pub fn to_file_text(&self) -> String {
        let mut s = String::from(
            "# ffs key bag v1: keep secret (mode 0600); every host of a link needs this same file\n\
             ffs-keybag v1\n",
        );
        for (i, e) in self.entries.iter().enumerate() {
            let _ = writeln!(s, "{i} {}", hex::encode(e));
        }
        s
    }

    /// Parses file text (no permission check; see [`KeyBag::load`]).
    pub fn parse(text: &str, path: &str) -> Result<KeyBag, KeyBagError> {
        let bad = |line: usize, what: &str| KeyBagError::Malformed {
            path: path.into(),
            line,
            what: what.into(),
        };
        let mut header = false;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header {
                if line != "ffs-keybag v1" {
                    return Err(bad(n, "the first line must be `ffs-keybag v1`"));
                }
                header = true;
                continue;
            }
            let (idx, key) = line
                .split_once(' ')
                .ok_or_else(|| bad(n, "expected `INDEX HEX`"))?;
            if idx.parse::<usize>().ok() != Some(entries.len()) {
                return Err(bad(n, &format!("expected index {}", entries.len())));
            }
            let key = key.trim();
            let mut e = [0u8; ENTRY_LEN];
            if key.len() != ENTRY_LEN * 2 || hex::decode_to_slice(key, &mut e).is_err() {
                return Err(bad(n, "key must be 64 hex digits"));
            }
            entries.push(e);
        }
        if !header {
            return Err(bad(1, "empty file: no `ffs-keybag v1` header"));
        }
        Self::check(entries, path)
    }

    /// Loads a bag file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<KeyBag, KeyBagError> {
        let p = path.display().to_string();
        let bytes = crate::secret_file::read_private(path)?;
        let text = String::from_utf8(bytes).map_err(|_| KeyBagError::Malformed {
            path: p.clone(),
            line: 1,
            what: "not UTF-8 text".into(),
        })?;
        Self::parse(&text, &p)
    }

    /// Writes the bag to a new file with mode 0600 (fails if the file exists).
    pub fn write_new(&self, path: &Path) -> Result<(), KeyBagError> {
        Ok(crate::secret_file::write_new_private(
            path,
            self.to_file_text().as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generate_write_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let bag = KeyBag::generate(DEFAULT_COUNT).unwrap();
        bag.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = KeyBag::load(&path).unwrap();
        assert_eq!(back.len(), 128);
        assert_eq!(back.fingerprint(), bag.fingerprint());
        assert!(bag.write_new(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn refuses_group_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        KeyBag::generate(4).unwrap().write_new(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyBag::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn refuses_malformed_small_and_duplicate() {
        let k = "00".repeat(32);
        let k2 = "11".repeat(32);
        let cases = [
            ("", "header"),
            ("ffs-keybag v2\n", "first line"),
            (&format!("ffs-keybag v1\n0 {k}\n") as &str, "at least 2"),
            (&format!("ffs-keybag v1\n0 {k}\n1 {k}\n"), "identical"),
            (
                &format!("ffs-keybag v1\n0 {k}\n2 {k2}\n"),
                "expected index 1",
            ),
            (&format!("ffs-keybag v1\n0 {k}\n1 zz\n"), "64 hex"),
        ];
        for (text, want) in cases {
            let err = KeyBag::parse(text, "bag").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn index_is_port_mod_n() {
        let bag = KeyBag::generate(128).unwrap();
        assert_eq!(bag.index_for_port(50_000), 50_000 % 128);
        assert_eq!(bag.index_for_port(127), 127);
        assert_eq!(bag.index_for_port(128), 0);
    }
}
