//! Ports for servers a test starts, without the bind-release race.
//!
//! The usual trick — bind port 0, read the port, close, hand the number to a server — races
//! twice: the kernel hands the same ephemeral range to every outgoing connection on the
//! machine, and nextest runs many test processes at once, each doing the same. Here a port
//! comes from below the kernel's ephemeral range (so no outgoing connection takes it), is
//! checked free by binding it on all addresses, and is **reserved across processes** by an
//! exclusive `flock` on a file named for it, held until this process exits. Servers this
//! workspace starts in-process should still bind port 0 themselves and report the port;
//! this is for external programs (nginx, vsftpd, squid) and child daemons that need a
//! number up front.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::Mutex;

/// Lowest port handed out.
const LOW: u16 = 20_000;
/// One past the highest port handed out (Linux's default ephemeral range starts at 32768).
const HIGH: u16 = 32_000;

/// Lock files of the ports this process holds (kept open: closing drops the lock).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("ffs-test-ports")
}

/// A TCP port on 127.0.0.1 (and every other address) that no other test process of this
/// user holds and nothing listens on; reserved for this process's lifetime. Panics only
/// when the whole range is taken.
pub fn free_port() -> u16 {
    let dir = lock_dir();
    let _ = std::fs::create_dir_all(&dir);
    // Start at a point that differs per process, then walk the range.
    let span = u32::from(HIGH - LOW);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos();
    for i in 0..span {
        let port = LOW + ((seed.wrapping_add(i)) % span) as u16;
        // A port in use by something else drops its lock and the walk goes on.
        if let Some(lock) = reserve(&dir, port)
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free TCP port in {LOW}..{HIGH} (all reserved or in use)");
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// An exclusive, non-blocking lock on the port's file, or `None` when another process
/// holds it.
fn reserve(dir: &std::path::Path, port: u16) -> Option<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((LOW..HIGH).contains(&p));
            TcpListener::bind(("127.0.0.1", p)).expect("still free");
        }
    }

    #[test]
    fn a_held_port_is_not_handed_out_again() {
        let a = free_port();
        // Another "process" (another descriptor) cannot lock it while we hold it.
        assert!(reserve(&lock_dir(), a).is_none());
    }
}
