//! Secret files — key bags, TLS private keys, session keys — on every ffs host obey one
//! rule: readable and writable by their owner only (no group or other permission bits), or
//! refused with a message that says how to fix it. New ones are created with mode 0600.
//!
//! This is the one implementation of that rule; every role loads its secrets through it.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Group or others have permission bits on the file.
    #[error(
        "{} has mode {mode:04o}: a secret file must be readable by its owner only; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl SecretFileError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretFileError + '_ {
        move |source| SecretFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Refuses `path` if group or others have any permission bits on it.
pub fn check_private(path: &Path) -> Result<(), SecretFileError> {
    let meta = std::fs::metadata(path).map_err(SecretFileError::io(path))?;
    check_mode(path, meta.permissions().mode())
}

fn check_mode(path: &Path, mode: u32) -> Result<(), SecretFileError> {
    let mode = mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file after checking its mode on the open descriptor (so the file checked
/// is the file read).
pub fn read_private(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let mut f = std::fs::File::open(path).map_err(SecretFileError::io(path))?;
    let meta = f.metadata().map_err(SecretFileError::io(path))?;
    check_mode(path, meta.permissions().mode())?;
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize);
    f.read_to_end(&mut bytes)
        .map_err(SecretFileError::io(path))?;
    Ok(bytes)
}

/// Writes a new secret file with mode 0600 and syncs it; fails if the file exists, so a
/// secret is never overwritten by accident. Missing parent directories are created 0700.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), SecretFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(SecretFileError::io(dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SecretFileError::io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(SecretFileError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_0600_read_back_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/secret");
        write_new_private(&p, b"s3cret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&p).unwrap(), b"s3cret");
        check_private(&p).unwrap();
        assert!(write_new_private(&p, b"other").is_err());
        assert_eq!(read_private(&p).unwrap(), b"s3cret", "not overwritten");
    }

    #[test]
    fn any_group_or_other_bit_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_new_private(&p, b"x").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_private(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
            assert!(check_private(&p).is_err());
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_private(&p).unwrap(), b"x", "owner read-only is fine");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = read_private(Path::new("/nonexistent/ffs-secret"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ffs-secret"), "{e}");
    }
}
