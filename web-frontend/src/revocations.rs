//! The revocation follower: polls the agent's revocation feed (`agent.revocations`) and
//! carries out each operator decision on this side of the firewall: a disabled customer's
//! sessions end (every session begun at or before the disable is refused from then on) and
//! the customer's staged areas are unstaged on the stager (`stager.unstage`), so FTP logins
//! and HTTPS links stop working within a poll interval.
//!
//! The web frontend keeps no state: after a restart it reads the feed from the start of the
//! agent's horizon again. Replaying is harmless: sessions begun after a disable are untouched,
//! each entry lists only areas staged up to its instant, and unstaging a gone area is a no-op.

use std::time::Duration;

use crate::backend::{BackendError, RevocationInfo};
use crate::state::AppState;
use actix_web::web;

/// Follows the feed until the task is dropped or aborted.
pub struct Revoker {
    state: web::Data<AppState>,
    interval: Duration,
    after: i64,
}

impl Revoker {
    /// A follower starting at the beginning of the agent's horizon.
    pub fn new(state: web::Data<AppState>, interval: Duration) -> Self {
        Revoker {
            state,
            interval,
            after: 0,
        }
    }

    /// One poll: applies every new entry in order; returns how many areas were removed.
    /// Stops at the first failure, leaving the cursor before that entry so the next poll
    /// retries it.
    pub async fn poll_once(&mut self) -> Result<usize, BackendError> {
        let mut removed = 0;
        loop {
            let list = self.state.backend.revocations(self.after).await?;
            for r in &list.revocations {
                removed += self.apply(r).await?;
                self.after = r.id;
            }
            if !list.more || list.revocations.is_empty() {
                return Ok(removed);
            }
        }
    }

    async fn apply(&self, r: &RevocationInfo) -> Result<usize, BackendError> {
        let now = crate::session::now_ms();
        if r.product.is_none() {
            // An unreadable instant ends every session begun until now (the safe side).
            let at = chrono::DateTime::parse_from_rfc3339(&r.at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(now);
            let keep = (self.state.cfg.session_absolute_secs as i64 + 60) * 1000;
            self.state.ended.end(r.customer_id, at, now, keep);
        }
        let mut removed = 0;
        for area in &r.area_ids {
            if self.state.backend.unstage(area).await? {
                removed += 1;
                tracing::info!(customer = r.customer_id, product = ?r.product, %area, "staged area revoked");
            }
        }
        Ok(removed)
    }

    /// Polls forever.
    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.poll_once().await {
                tracing::debug!(error = %e, "revocations paused");
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
