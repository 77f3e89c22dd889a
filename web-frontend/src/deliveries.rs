//! The delivery forwarder: polls each stager's append-only delivery log (`stager.deliveries`)
//! and records each completed transfer with the agent (`agent.record-delivery`, carrying the
//! stager's name and seq so a repeat is recognised). Where to resume comes from the agent
//! (`agent.delivery-cursor`, per stager), so a restart of either side neither loses nor
//! repeats deliveries, and the web frontend keeps no state of its own. Several web
//! frontends may forward the same log at once: the agent stores each (stager, seq) once.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendError, RefusalCode};
use crate::metrics::Metrics;

/// Forwards deliveries until the task is dropped or aborted.
pub struct Forwarder {
    backend: Backend,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// Per stager (in the back end's order): the last seq forwarded, once known.
    seqs: Vec<Option<u64>>,
}

impl Forwarder {
    /// A forwarder that will ask the agent where to resume.
    pub fn new(backend: Backend, metrics: Arc<Metrics>, interval: Duration) -> Self {
        Forwarder {
            backend,
            metrics,
            interval,
            seqs: Vec::new(),
        }
    }

    /// The last sequence number forwarded from the first stager, once known.
    pub fn seq(&self) -> Option<u64> {
        self.seqs.first().copied().flatten()
    }

    /// One poll of every stager: fetches new deliveries and forwards them in order. A
    /// stager stops at its first failure so nothing is skipped (its cursor is read again
    /// from the agent next time); the others go on. Returns how many were forwarded, or
    /// the first failure.
    pub async fn poll_once(&mut self) -> Result<u64, BackendError> {
        let n = self.backend.stagers().len();
        self.seqs.resize(n, None);
        let mut total = 0;
        let mut first_err = None;
        for i in 0..n {
            match self.poll_stager(i).await {
                Ok(k) => total += k,
                Err(e) => {
                    // Re-read the cursor after an outage: the agent is the record.
                    self.seqs[i] = None;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if total == 0 => Err(e),
            _ => Ok(total),
        }
    }

    async fn poll_stager(&mut self, i: usize) -> Result<u64, BackendError> {
        let key = self.backend.stagers()[i].delivery_key.clone();
        let after = match self.seqs[i] {
            Some(s) => s,
            None => {
                let s = self.backend.delivery_cursor(&key).await?;
                self.seqs[i] = Some(s);
                s
            }
        };
        let batch = self.backend.deliveries(i, after, 500).await?;
        let mut n = 0;
        let mut last = after;
        for d in &batch {
            if d.seq <= last {
                continue;
            }
            match self.backend.record_delivery(&key, d).await {
                Ok(()) => n += 1,
                // An area the agent never recorded (e.g. staged by a benchmark) is skipped
                // rather than blocking the log forever.
                Err(BackendError::Refused {
                    code: RefusalCode::NotFound | RefusalCode::BadRequest,
                    message,
                    ..
                }) => {
                    tracing::warn!(seq = d.seq, area = %d.area_id, %message, "delivery not recorded");
                }
                Err(e) => {
                    self.seqs[i] = Some(last);
                    return Err(e);
                }
            }
            last = d.seq;
        }
        self.seqs[i] = Some(last);
        if n > 0 {
            self.metrics.deliveries_forwarded(n);
        }
        Ok(n)
    }

    /// Polls forever.
    pub async fn run(mut self) {
        loop {
            match self.poll_once().await {
                Ok(n) if n > 0 => tracing::debug!(n, "deliveries forwarded"),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "delivery forwarding paused");
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
