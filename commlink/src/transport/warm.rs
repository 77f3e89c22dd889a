//! [`Warm`]: a responder connection's own few threads for [`answer_blocking`] work.
//!
//! tokio's blocking pool is one queue behind one lock for the whole runtime: every
//! `spawn_blocking` takes it, every idle thread re-takes it to wait on a shared condition
//! variable, and the thread woken is the one idle the longest (its caches cold). Under the
//! closed-loop prepare load that machinery took about a tenth of the CPU (threads spinning
//! on and waking through that one lock; docs/benchmarks.md). A `Warm` hands each job to one
//! idle thread of its own directly: the submitter takes the most recently idle thread off a
//! short stack, puts the job in that thread's slot and unparks it; no queue, no condition
//! variable, and the same few threads stay hot.
//!
//! The threads are tokio blocking tasks (started with `spawn_blocking` on the responder's
//! runtime), so work on them sees the runtime as any blocking work does, and a runtime
//! shutting down waits for them as for any blocking work. At most [`MAX_THREADS`] per
//! connection; with all of them busy a job goes to tokio's pool as before. An idle thread
//! ends after [`KEEP_ALIVE`] without work, and at once when its connection ends.
//!
//! [`answer_blocking`]: super::answer_blocking

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Threads one connection keeps for blocking answers (more jobs at once go to tokio's
/// blocking pool).
pub(super) const MAX_THREADS: usize = 8;
/// An idle thread ends after this long without work.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// One connection's warm threads. Dropping it (the connection ended) ends the idle ones;
/// busy ones end after their job.
#[derive(Debug)]
pub(super) struct Warm {
    shared: Arc<Shared>,
    max: usize,
    keep_alive: Duration,
}

#[derive(Debug, Default)]
struct Shared {
    /// Idle threads, the most recently idle last.
    idle: Mutex<Vec<Arc<Slot>>>,
    /// Threads started and not ended.
    live: AtomicUsize,
    /// The `Warm` is gone: no job will come.
    closed: AtomicBool,
}

struct Slot {
    job: Mutex<Option<Job>>,
    thread: std::thread::Thread,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("thread", &self.thread.id())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job never runs under these locks, so a poisoned one holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Warm {
    pub(super) fn new() -> Warm {
        Warm::with_limits(MAX_THREADS, KEEP_ALIVE)
    }

    pub(super) fn with_limits(max: usize, keep_alive: Duration) -> Warm {
        Warm {
            shared: Arc::new(Shared::default()),
            max,
            keep_alive,
        }
    }

    /// Runs `job` on an idle warm thread, on a new one if fewer than the limit run, or else
    /// on tokio's blocking pool. Must be called within a tokio runtime.
    pub(super) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let slot = lock(&self.shared.idle).pop();
        if let Some(slot) = slot {
            // Off the idle stack under its lock: the thread cannot end now, it waits for this.
            *lock(&slot.job) = Some(job);
            slot.thread.unpark();
            return;
        }
        let started = self
            .shared
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if started {
            /// Counts the thread out when it ends, or when its closure is dropped unrun (a
            /// runtime shutting down drops new blocking tasks).
            struct Live(Arc<Shared>);
            impl Drop for Live {
                fn drop(&mut self) {
                    self.0.live.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let live = Live(self.shared.clone());
            let keep_alive = self.keep_alive;
            drop(tokio::task::spawn_blocking(move || {
                work(&live.0, job, keep_alive);
                drop(live);
            }));
        } else {
            drop(tokio::task::spawn_blocking(job));
        }
    }

    /// Threads started and not yet ended (for tests).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *lock(&self.shared.idle));
        for slot in idle {
            slot.thread.unpark();
        }
    }
}

/// A warm thread's life: its first job, then each job handed to it while idle, until it
/// has waited `keep_alive` for one or its `Warm` is gone.
fn work(shared: &Shared, first: Job, keep_alive: Duration) {
    let me = Arc::new(Slot {
        job: Mutex::new(None),
        thread: std::thread::current(),
    });
    let mut job = first;
    loop {
        // A job that panics ends itself, not the thread (answers catch their own panics).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a blocking answer's job panicked");
        }
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        lock(&shared.idle).push(me.clone());
        let give_up = Instant::now() + keep_alive;
        job = loop {
            if let Some(next) = lock(&me.job).take() {
                break next;
            }
            if shared.closed.load(Ordering::Acquire) {
                // A job handed over before the `Warm` went is in the slot by now (the
                // hand-over ends before the drop begins); none comes after.
                match lock(&me.job).take() {
                    Some(next) => break next,
                    None => return,
                }
            }
            let now = Instant::now();
            if now < give_up {
                std::thread::park_timeout(give_up - now);
                continue;
            }
            // Idle too long: end, unless a submitter has just taken this thread off the
            // stack (its job and unpark are on the way).
            let mut idle = lock(&shared.idle);
            if let Some(at) = idle.iter().position(|s| Arc::ptr_eq(s, &me)) {
                idle.remove(at);
                return;
            }
            drop(idle);
            std::thread::park();
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime")
    }

    #[test]
    fn jobs_run_on_the_same_warm_thread_one_after_another() {
        let rt = rt();
        let _g = rt.enter();
        let warm = Warm::new();
        let (tx, rx) = mpsc::channel();
        let mut threads = std::collections::HashSet::new();
        for i in 0..50 {
            let tx = tx.clone();
            warm.spawn(move || {
                let _ = tx.send((i, std::thread::current().id()));
            });
            let (got, thread) = rx.recv_timeout(Duration::from_secs(10)).expect("job ran");
            assert_eq!(got, i);
            threads.insert(thread);
            // Let the thread get back on the idle stack before the next job.
            for _ in 0..1000 {
                if !lock(&warm.shared.idle).is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            threads.len(),
            1,
            "one warm thread served jobs that came one at a time"
        );
        assert_eq!(warm.live(), 1);
    }

    #[test]
    fn at_most_the_limit_run_warm_and_the_rest_go_to_tokios_pool() {
        let rt = rt();
        let _g = rt.enter();
        let warm = Warm::with_limits(3, KEEP_ALIVE);
        let gate = Arc::new(std::sync::Barrier::new(7));
        let (tx, rx) = mpsc::channel();
        for _ in 0..6 {
            let gate = gate.clone();
            let tx = tx.clone();
            warm.spawn(move || {
                // All six must be running at once to pass the barrier.
                gate.wait();
                let _ = tx.send(());
            });
        }
        gate.wait();
        for _ in 0..6 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("every job ran");
        }
        assert_eq!(
            warm.live(),
            3,
            "three warm threads, three jobs on tokio's pool"
        );
    }

    #[test]
    fn idle_threads_end_after_the_keep_alive_and_when_the_connection_ends() {
        let rt = rt();
        let _g = rt.enter();
        let warm = Warm::with_limits(4, Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        warm.spawn(move || {
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("ran");
        let ended = |w: &Warm| {
            (0..2000).any(|_| {
                std::thread::sleep(Duration::from_millis(1));
                w.live() == 0
            })
        };
        assert!(ended(&warm), "the idle thread ended after its keep-alive");

        let warm = Warm::with_limits(4, KEEP_ALIVE);
        let shared = warm.shared.clone();
        let (tx, rx) = mpsc::channel();
        warm.spawn(move || {
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("ran");
        while lock(&shared.idle).is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(warm);
        let gone = (0..2000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            shared.live.load(Ordering::Acquire) == 0
        });
        assert!(
            gone,
            "dropping the Warm ended its idle thread long before the keep-alive"
        );
    }

    #[test]
    fn a_runtime_shutting_down_waits_for_a_busy_warm_thread() {
        let rt = rt();
        let done = Arc::new(AtomicBool::new(false));
        {
            let _g = rt.enter();
            let warm = Warm::new();
            let d = done.clone();
            warm.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                d.store(true, Ordering::Release);
            });
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(rt);
        assert!(
            done.load(Ordering::Acquire),
            "the job finished before the runtime was gone"
        );
    }
}
