//! The one way any ffs role replaces a file all at once: a temporary file beside it, written
//! with the final mode and fsynced, renamed over the target, then the directory fsynced. A
//! reader sees the old file or the new one, never part of either, and a crash leaves one of
//! the two. Used by the TLS loader and the stager's repository and state files.

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rand::TryRng as _;

/// Replaces `path` with `bytes` (new files get `mode`). On failure the old file is untouched
/// and no temporary file is left.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("atomic write: the path has no file name"))?;
    let mut tag = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut tag)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        hex::encode(tag)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replaces_the_file_whole_never_in_place_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write(&p, b"old contents", 0o644).unwrap();
        // A reader that opened the old file keeps reading all of it: the new contents
        // arrive under the name by rename, not by truncating and rewriting the old inode.
        let mut old = std::fs::File::open(&p).unwrap();
        write(&p, b"new", 0o600).unwrap();
        let mut s = String::new();
        old.read_to_string(&mut s).unwrap();
        assert_eq!(s, "old contents");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing/x.json");
        assert!(write(&p, b"x", 0o644).is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
