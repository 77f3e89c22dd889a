//! The session cookie key: 64 random bytes in a secret file (0600 or refused, through
//! `commlink::secret_file`), created on first start from the OS random source.

use std::path::Path;

use commlink::secret_file;

use crate::error::StartError;

/// Length of the session key (actix's cookie `Key` wants 64 bytes).
pub const SESSION_KEY_LEN: usize = 64;

/// Loads the session key, generating it on first start.
pub fn load_or_create_session_key(path: &Path) -> Result<[u8; SESSION_KEY_LEN], StartError> {
    if !path.exists() {
        let mut key = [0u8; SESSION_KEY_LEN];
        rand::fill(&mut key[..]);
        secret_file::write_new_private(path, hex::encode(key).as_bytes())?;
        tracing::info!(path = %path.display(), "generated a new session key");
        return Ok(key);
    }
    let text = secret_file::read_private(path)?;
    let bytes = hex::decode(text.trim_ascii()).map_err(|_| StartError::BadSecret {
        path: path.to_path_buf(),
        why: "expected hex",
    })?;
    <[u8; SESSION_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| StartError::BadSecret {
        path: path.to_path_buf(),
        why: "expected 64 bytes of hex",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn session_key_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/k");
        let a = load_or_create_session_key(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_session_key(&p).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0u8; SESSION_KEY_LEN]);
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        load_or_create_session_key(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_session_key(&p).unwrap_err();
        assert!(e.to_string().contains("0644"), "{e}");
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        secret_file::write_new_private(&p, b"zz").unwrap();
        assert!(load_or_create_session_key(&p).is_err());
    }
}
