//! The delivery forwarder: polls the stager's append-only delivery log (`stager.deliveries`)
//! and records each completed transfer with the agent (`agent.record-delivery`, carrying the
//! stager's seq so a repeat is recognised). Where to resume comes from the agent
//! (`agent.delivery-cursor`), so a restart of either side neither loses nor repeats
//! deliveries, and the web frontend keeps no state of its own.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendError, RefusalCode};
use crate::metrics::Metrics;

/// Forwards deliveries until the task is dropped or aborted.
pub struct Forwarder {
    backend: Backend,
    metrics: Arc<Metrics>,
    interval: Duration,
    seq: Option<u64>,
}

impl Forwarder {
    /// A forwarder that will ask the agent where to resume.
    pub fn new(backend: Backend, metrics: Arc<Metrics>, interval: Duration) -> Self {
        Forwarder {
            backend,
            metrics,
            interval,
            seq: None,
        }
    }

    /// The last sequence number forwarded, once known.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// One poll: fetches new deliveries and forwards them in order. Stops at the first
    /// failure so nothing is skipped; returns how many were forwarded.
    pub async fn poll_once(&mut self) -> Result<u64, BackendError> {
        let after = match self.seq {
            Some(s) => s,
            None => {
                let s = self.backend.delivery_cursor("").await?;
                self.seq = Some(s);
                s
            }
        };
        let batch = self.backend.deliveries(after, 500).await?;
        let mut n = 0;
        let mut last = after;
        for d in &batch {
            if d.seq <= last {
                continue;
            }
            match self.backend.record_delivery("", d).await {
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
                    self.seq = Some(last);
                    return Err(e);
                }
            }
            last = d.seq;
        }
        self.seq = Some(last);
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
                    // Re-read the cursor after an outage: the agent is the record.
                    self.seq = None;
                    tracing::debug!(error = %e, "delivery forwarding paused");
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
