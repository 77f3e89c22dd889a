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

/// Starts writing `len` bytes of `file` from `offset` to the disk without waiting for
/// them (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later fsync finds
/// little left to write. Only a head start: it promises nothing about durability (the
/// fsync still does), so a failure is logged and otherwise ignored (the fsync reports a
/// real I/O error). Does nothing on other systems.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a system call on a descriptor `file` keeps open; no memory is passed.
        let rc =
            unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Reads up to `max` bytes of `file` (from its position) into the unused capacity of
/// `buf`, appending them: no zero-filling of a buffer about to be overwritten. Returns the
/// count; 0 at the end of the file.
pub fn read_append(file: &File, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    loop {
        // SAFETY: `read(2)` writes at most `want` bytes into the spare capacity, which
        // `reserve` made at least that large; it reads no memory from it.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n >= 0 {
            let n = n.unsigned_abs();
            // SAFETY: the first `n` bytes after the buffer's length were just written.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads what of `buf.len()` bytes of `file` at `offset` the page cache already holds,
/// without waiting for the disk (Linux `preadv2(RWF_NOWAIT)`): `Some(n)` with `n > 0` bytes
/// read (possibly fewer than asked), or `None` when nothing could be read that way (not
/// cached, the end of the file, an error, or no such call here), so the caller reads with
/// a blocking `pread` off the I/O thread instead. Lets a download of a cached file read on
/// its connection's thread, as nginx does, with no hop to a blocking pool and back, while
/// a cold read still never stalls that thread.
pub fn read_cached_at(file: &File, buf: &mut [u8], offset: u64) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let off = i64::try_from(offset).ok()?;
        if buf.is_empty() {
            return None;
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec describing `buf`, which outlives the call; the kernel writes at
        // most `buf.len()` bytes into it.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        usize::try_from(n).ok().filter(|n| *n > 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, buf, offset);
        None
    }
}

/// Writes every byte of `pieces` to `w` in as few `writev` calls as the system allows.
pub fn write_all_vectored(mut w: impl io::Write, pieces: &[impl AsRef<[u8]>]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = pieces
        .iter()
        .map(|p| io::IoSlice::new(p.as_ref()))
        .filter(|s| !s.is_empty())
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn a_cached_read_takes_what_the_page_cache_holds() {
        use std::fs::File;
        use std::io::Write as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = File::create(&path).expect("creates");
        f.write_all(b"0123456789").expect("writes");
        drop(f);
        let f = File::open(&path).expect("opens");
        // Just written: the page cache holds it.
        let mut b = [0u8; 4];
        assert_eq!(read_cached_at(&f, &mut b, 3), Some(4));
        assert_eq!(&b, b"3456");
        let mut b = [0u8; 8];
        assert_eq!(read_cached_at(&f, &mut b, 6), Some(4), "short at the end");
        assert_eq!(&b[..4], b"6789");
        assert_eq!(read_cached_at(&f, &mut b, 10), None, "nothing past the end");
    }

    /// Takes at most 5 bytes per call, as a slow pipe might.
    struct Trickle(Vec<u8>);
    impl io::Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(5);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn appending_reads_fill_the_buffer_with_the_files_bytes_and_stop_at_its_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = bytes::BytesMut::from(&b"head"[..]);
        let mut total = 0;
        loop {
            let n = read_append(&f, &mut buf, 70_000).unwrap();
            assert!(n <= 70_000);
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, data.len());
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[..]);
    }

    #[test]
    fn vectored_writes_keep_every_byte_in_order_across_short_writes_and_many_pieces() {
        let pieces: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 256) as u8; (i % 7) as usize])
            .collect();
        let whole: Vec<u8> = pieces.concat();
        let mut t = Trickle(Vec::new());
        write_all_vectored(&mut t, &pieces).unwrap();
        assert_eq!(t.0, whole, "short writes resume where they stopped");
        // More pieces than one writev takes (IOV_MAX is 1024 on Linux), to a real file.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = File::create(&p).unwrap();
        write_all_vectored(&f, &pieces).unwrap();
        start_writeback(&f, 0, whole.len() as u64);
        f.sync_all().unwrap();
        assert_eq!(fs::read(&p).unwrap(), whole);
    }

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
