//! The revocation follower: polls the agent's revocation feed (`agent.revocations`) and
//! carries out each operator decision on this side of the firewall: a disabled customer's
//! sessions end (every session begun at or before the disable is refused from then on) and
//! the customer's staged areas are unstaged on the stager (`stager.unstage`), so FTP logins
//! and HTTPS links stop working within a poll interval.
//!
//! With several stagers each area is unstaged on every stager (the one that holds it removes
//! it; `not-found` from the others is done). When no stager removed it and one could not be
//! asked, the area may be on that one: it is kept in a bounded retry list, tried again every
//! poll until a stager removes it or all say `not-found`, while the feed goes on.
//!
//! The web frontend keeps no state: after a restart it reads the feed from the start of the
//! agent's horizon again. Replaying is harmless: sessions begun after a disable are untouched,
//! each entry lists only areas staged up to its instant, and unstaging a gone area is a no-op.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::backend::{BackendError, RevocationInfo};
use crate::state::AppState;
use actix_web::web;

/// Follows the feed until the task is dropped or aborted.
pub struct Revoker {
    state: web::Data<AppState>,
    interval: Duration,
    after: i64,
    /// Areas a stager that was down may still hold.
    retry: BTreeSet<String>,
}

/// The most areas kept for retrying (a restart replays the feed anyway).
const MAX_RETRY: usize = 100_000;

impl Revoker {
    /// A follower starting at the beginning of the agent's horizon.
    pub fn new(state: web::Data<AppState>, interval: Duration) -> Self {
        Revoker {
            state,
            interval,
            after: 0,
            retry: BTreeSet::new(),
        }
    }

    /// One poll: applies every new entry in order; returns how many areas were removed.
    /// Stops at the first failure, leaving the cursor before that entry so the next poll
    /// retries it.
    pub async fn poll_once(&mut self) -> Result<usize, BackendError> {
        let mut removed = 0;
        for area in std::mem::take(&mut self.retry) {
            removed += self.unstage(&area, None).await;
        }
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

    /// Unstages `area` everywhere: 1 if removed; 0 if gone (or kept for a retry).
    async fn unstage(&mut self, area: &str, r: Option<&RevocationInfo>) -> usize {
        match self.state.backend.unstage(area).await {
            Ok(true) => {
                tracing::info!(customer = ?r.map(|r| r.customer_id), product = ?r.and_then(|r| r.product.as_deref()), %area, "staged area revoked");
                1
            }
            Ok(false) => 0,
            Err(e) => {
                tracing::debug!(%area, error = %e, "area not revoked yet; retrying");
                if self.retry.len() < MAX_RETRY {
                    self.retry.insert(area.to_owned());
                }
                0
            }
        }
    }

    async fn apply(&mut self, r: &RevocationInfo) -> Result<usize, BackendError> {
        let now = crate::session::now_ms();
        if r.product.is_none() {
            // An unreadable instant ends every session begun until now (the safe side).
            let at = chrono::DateTime::parse_from_rfc3339(&r.at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(now);
            let keep = (self.state.cfg.session_absolute_secs as i64 + 60) * 1000;
            self.state.ended.end(r.customer_id, at, now, keep);
        }
        if !self.state.backend.stager_up() {
            // Nothing to ask: keep the cursor before this entry.
            return Err(BackendError::Unreachable(
                crate::backend::Peer::Stager,
                "no stager is up".into(),
            ));
        }
        let mut removed = 0;
        for area in &r.area_ids {
            removed += self.unstage(area, Some(r)).await;
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
