//! Per-address login throttling (on top of the agent's per-login lockout). Pure logic: the
//! caller passes the clock, so tests need no sleeping.
//!
//! Only failures count, and only time forgets them: a successful login does not clear the
//! address's record, or a password sprayer holding one valid account of their own could
//! reset the count by signing in between guesses. (The agent's per-login lockout does
//! clear on success: there only the account's owner can produce one.)

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failed logins per client address in a sliding window.
pub struct LoginThrottle {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `limit` failures per `window` per address; more are refused until the oldest ages out.
    pub fn new(limit: u32, window: Duration) -> Self {
        LoginThrottle {
            limit: limit.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when the address has used up its attempts.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = map.get_mut(&addr) else {
            return Ok(());
        };
        prune(q, now, self.window);
        if q.len() as u32 >= self.limit {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = self
                .window
                .saturating_sub(now.saturating_duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    /// Records one failed login.
    pub fn fail(&self, addr: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a spray from many addresses: drop entries that aged out.
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, q| {
                prune(q, now, window);
                !q.is_empty()
            });
        }
        let q = map.entry(addr).or_default();
        prune(q, now, self.window);
        q.push_back(now);
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while let Some(&t) = q.front() {
        if now.saturating_duration_since(t) >= window {
            q.pop_front();
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_ages_out() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.check(a, t0).is_ok(), "attempt {i}");
            t.fail(a, t0);
        }
        let wait = t.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert!(t.check(b, t0).is_ok(), "other addresses unaffected");
        assert!(t.check(a, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn only_time_forgets_a_failure() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let a: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        t.fail(a, t0);
        t.fail(a, t0 + Duration::from_secs(30));
        assert_eq!(t.check(a, t0 + Duration::from_secs(31)), Err(29));
        assert!(
            t.check(a, t0 + Duration::from_secs(60)).is_ok(),
            "first aged out"
        );
        assert!(t.check(a, t0 + Duration::from_secs(90)).is_ok());
    }
}
