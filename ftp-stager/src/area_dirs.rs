//! [`AreaDirs`]: empty area directories made ahead of the stage requests that use them.
//!
//! `mkdir` is the dearest step of a stage request after the links themselves (ext4
//! allocates an inode and a directory block for each), and it does not depend on the
//! request. So a thread keeps a few empty directories ready under their random area ids,
//! and a stage request takes one, keeping only the `link(2)` calls on its path (it still
//! makes its own directory when none is ready).
//!
//! A ready directory is empty and has no area record, so no FTP login or HTTPS token leads
//! to it. One is handed out only while younger than [`FRESH`] (the sweeper removes unknown
//! directories older than a minute, so a directory being staged into is never old enough
//! to look abandoned); older ones are replaced. On drop the ready directories are removed;
//! after a crash the sweeper removes them as strays.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::fsutil;

/// Directories kept ready.
const READY: usize = 32;
/// A ready directory is handed out only while younger than this.
pub const FRESH: Duration = Duration::from_secs(30);
/// The filler replaces ready directories older than this (before they stop being fresh).
const REFRESH: Duration = Duration::from_secs(20);

/// The ready directories of one areas directory, and the thread that makes them.
#[derive(Debug)]
pub struct AreaDirs {
    inner: Arc<Inner>,
    filler: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    ready: Mutex<VecDeque<(String, Instant)>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl AreaDirs {
    /// Starts keeping directories ready in `areas_dir`. If the thread cannot start, every
    /// request makes its own directory.
    pub fn new(areas_dir: &Path) -> AreaDirs {
        let inner = Arc::new(Inner {
            dir: areas_dir.to_path_buf(),
            ready: Mutex::new(VecDeque::with_capacity(READY)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let filler = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("ffs-stager-dirs".into())
            .spawn(move || filler.fill());
        let filler = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the area directory thread; making each on request");
                None
            }
        };
        AreaDirs { inner, filler }
    }

    /// A new, empty area directory: its id (the name) and path.
    pub fn take(&self) -> std::io::Result<(String, PathBuf)> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let taken = {
            let mut ready = lock(&self.inner.ready);
            let mut taken = None;
            while let Some((id, made)) = ready.pop_front() {
                if now.duration_since(made) < FRESH {
                    taken = Some(id);
                    break;
                }
                stale.push(id);
            }
            if ready.len() < READY / 2 {
                self.inner.wake.notify_one();
            }
            taken
        };
        for id in stale {
            let _ = std::fs::remove_dir(self.inner.dir.join(id));
        }
        match taken {
            Some(id) => {
                let p = self.inner.dir.join(&id);
                Ok((id, p))
            }
            None => {
                let id = fsutil::random_hex(16);
                let p = self.inner.dir.join(&id);
                std::fs::create_dir(&p)?;
                Ok((id, p))
            }
        }
    }

    /// The ids of the directories ready now (the sweeper leaves them alone).
    pub fn ready_ids(&self) -> Vec<String> {
        lock(&self.inner.ready)
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl Drop for AreaDirs {
    fn drop(&mut self) {
        {
            let _ready = lock(&self.inner.ready);
            self.inner.stop.store(true, Ordering::SeqCst);
            self.inner.wake.notify_one();
        }
        if let Some(h) = self.filler.take() {
            let _ = h.join();
        }
        let left: Vec<(String, Instant)> = lock(&self.inner.ready).drain(..).collect();
        for (id, _) in left {
            let _ = std::fs::remove_dir(self.inner.dir.join(id));
        }
    }
}

impl Inner {
    /// The filler thread: tops the ready directories up to [`READY`] when woken (a take
    /// left fewer than half) and every few seconds, replacing those about to go stale.
    fn fill(&self) {
        loop {
            let (need, stale) = {
                let mut ready = lock(&self.ready);
                if ready.len() >= READY && !self.stop.load(Ordering::SeqCst) {
                    ready = match self.wake.wait_timeout(ready, REFRESH / 4) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let now = Instant::now();
                let mut stale = Vec::new();
                while ready
                    .front()
                    .is_some_and(|(_, made)| now.duration_since(*made) >= REFRESH)
                {
                    if let Some((id, _)) = ready.pop_front() {
                        stale.push(id);
                    }
                }
                (READY.saturating_sub(ready.len()), stale)
            };
            for id in stale {
                let _ = std::fs::remove_dir(self.dir.join(id));
            }
            for _ in 0..need {
                let id = fsutil::random_hex(16);
                let p = self.dir.join(&id);
                if let Err(e) = std::fs::create_dir(&p) {
                    tracing::warn!(dir = %p.display(), error = %e, "cannot make an area directory ahead");
                    // Requests make their own meanwhile; try again later.
                    let g = lock(&self.ready);
                    let _ = self.wake.wait_timeout(g, REFRESH / 4);
                    break;
                }
                if self.stop.load(Ordering::SeqCst) {
                    let _ = std::fs::remove_dir(&p);
                    return;
                }
                lock(&self.ready).push_back((id, Instant::now()));
            }
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the queue is
/// consistent between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_empty_directories_and_removes_the_rest_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let dirs = AreaDirs::new(d.path());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * READY) {
            let (id, p) = dirs.take().unwrap();
            assert_eq!(p, d.path().join(&id));
            assert!(p.is_dir() && std::fs::read_dir(&p).unwrap().next().is_none());
            assert!(seen.insert(id.clone()), "{id} handed out twice");
            assert!(!dirs.ready_ids().contains(&id));
        }
        drop(dirs);
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !seen.contains(n))
            .collect();
        assert!(left.is_empty(), "ready directories left behind: {left:?}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), seen.len());
    }
}
