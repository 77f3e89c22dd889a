//! Small filesystem helpers: atomic writes, directory fsync, random ids, hex SHA-256.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

/// Writes `bytes` to `path` atomically (the one implementation, [`commlink::atomic_file`]).
pub use commlink::atomic_file::write as atomic_write;

/// fsyncs a directory so a rename or link inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `n` random bytes from the OS-seeded CSPRNG, hex encoded.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of everything `r` yields, read through `buf` (files here reach
/// gigabytes: never whole in memory); `on_read` is told each piece's length. Returns the
/// hash and the number of bytes.
pub fn sha256_read(
    r: &mut impl io::Read,
    buf: &mut [u8],
    mut on_read: impl FnMut(u64),
) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        on_read(n as u64);
    }
    Ok((hex::encode(h.finalize()), total))
}

/// Feeds everything `r` yields into `h`, read through `buf`; returns the byte count.
pub fn sha256_update(r: &mut impl io::Read, buf: &mut [u8], h: &mut Sha256) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// Lower-case hex SHA-256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    sha256_read(&mut f, &mut vec![0u8; 1 << 20], |_| {}).map(|(h, _)| h)
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The device id of the filesystem holding `path`.
pub fn device_of(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(fs::metadata(path)?.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_matches_the_in_memory_hash_and_counts_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(&data));
        let mut seen = 0;
        let (h, n) = sha256_read(&mut &data[..], &mut [0u8; 4096], |k| seen += k).unwrap();
        assert_eq!((h, n, seen), (sha256_hex(&data), 3_000_000, 3_000_000));
    }

    #[test]
    fn random_hex_is_random() {
        assert_eq!(random_hex(16).len(), 32);
        assert_ne!(random_hex(16), random_hex(16));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
