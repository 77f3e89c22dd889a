//! The delivery forwarder: polls the stager's append-only delivery log (`stager.deliveries`)
//! and records each completed transfer with the agent (`agent.record_delivery`). The last
//! forwarded sequence number is kept in a small state file so a restart neither loses nor
//! repeats deliveries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use commlink::msg::stager::DeliveriesRequest;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Peer};
use crate::metrics::Metrics;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    delivery_seq: u64,
}

/// Forwards deliveries until the task is dropped or aborted.
pub struct Forwarder {
    backend: Backend,
    metrics: Arc<Metrics>,
    state_file: PathBuf,
    interval: Duration,
    seq: u64,
}

impl Forwarder {
    /// Reads the last forwarded sequence number (0 when the file is missing).
    pub fn new(
        backend: Backend,
        metrics: Arc<Metrics>,
        state_file: PathBuf,
        interval: Duration,
    ) -> Self {
        let seq = read_seq(&state_file);
        Forwarder {
            backend,
            metrics,
            state_file,
            interval,
            seq,
        }
    }

    /// The last sequence number forwarded.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// One poll: fetches new deliveries and forwards them in order. Stops at the first
    /// failure so nothing is skipped; returns how many were forwarded.
    pub async fn poll_once(&mut self) -> Result<u64, BackendError> {
        let batch = self
            .backend
            .request(
                Peer::Stager,
                &DeliveriesRequest {
                    after_seq: self.seq,
                    limit: Some(500),
                },
            )
            .await?;
        let mut n = 0;
        for d in &batch.deliveries {
            if d.seq <= self.seq {
                continue;
            }
            match self.backend.record_delivery(d).await {
                Ok(()) => {}
                // An area the agent does not know (e.g. staged by `ffs bench`) is skipped
                // rather than blocking the log forever.
                Err(BackendError::Refused { code, message, .. })
                    if code == "not-found" || code == "bad-request" =>
                {
                    tracing::warn!(seq = d.seq, area = %d.area_id, %message, "delivery not recorded");
                }
                Err(e) => {
                    self.save();
                    return Err(e);
                }
            }
            self.seq = d.seq;
            n += 1;
        }
        if n > 0 {
            self.metrics.deliveries_forwarded(n);
            self.save();
        }
        Ok(n)
    }

    /// Polls forever.
    pub async fn run(mut self) {
        loop {
            match self.poll_once().await {
                Ok(n) if n > 0 => tracing::debug!(n, "deliveries forwarded"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "delivery forwarding paused"),
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    fn save(&self) {
        let text = match serde_json::to_string(&StateFile {
            delivery_seq: self.seq,
        }) {
            Ok(t) => t,
            Err(_) => return,
        };
        let tmp = self.state_file.with_extension("tmp");
        let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = r {
            tracing::warn!(file = %self.state_file.display(), error = %e, "cannot save the delivery position");
        }
    }
}

fn read_seq(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<StateFile>(&t).ok())
        .map(|s| s.delivery_seq)
        .unwrap_or(0)
}
