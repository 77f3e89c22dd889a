//! Progress of long work, as libraries report it. Libraries measure and do; the `ffs`
//! binary decides how progress is shown (an indicatif bar on a terminal, nothing with
//! `--json`). Pure: no drawing here.

/// Receives progress reports. Shared between the tasks of one job, hence `Sync`.
pub trait Progress: Send + Sync {
    /// A new phase begins: `name` says what is being done, `total` how many steps it has
    /// (0 when unknown). Ends the previous phase.
    fn phase(&self, name: &str, total: u64);
    /// `n` more steps of the current phase are done.
    fn advance(&self, n: u64);
    /// The job is over (the last phase ends).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}
