//! Failed-login lockout policy (pure: the counters live in the `login_failures` table).
//!
//! Failures are counted per login as typed, whether or not such a customer exists, so the
//! lockout itself does not reveal which logins are real.
//!
//! A successful login clears its own login's counter (unlike the web's per-address
//! throttle, which only time clears): only someone holding the account's password can
//! produce that success, so it cannot be used to buy a guesser more attempts, while
//! keeping the count would lock the owner out for typos made before they got it right.

use chrono::{Duration, NaiveDateTime};

/// When to lock and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window` that lock the login.
    pub threshold: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a lock lasts.
    pub lock: Duration,
}

/// The stored counter for one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureState {
    /// Failures in the current window.
    pub failures: i32,
    /// When the current window began.
    pub first_failure_at: NaiveDateTime,
    /// Locked until then, if locked.
    pub locked_until: Option<NaiveDateTime>,
}

impl Policy {
    /// Until when the login is locked at `now`, if it is.
    pub fn locked_until(
        &self,
        state: Option<&FailureState>,
        now: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        state.and_then(|s| s.locked_until).filter(|&t| t > now)
    }

    /// The state after one more failure at `now`.
    pub fn after_failure(&self, state: Option<&FailureState>, now: NaiveDateTime) -> FailureState {
        let fresh = match state {
            None => true,
            Some(s) => {
                s.first_failure_at + self.window <= now || s.locked_until.is_some_and(|t| t <= now)
            }
        };
        let (failures, first) = match state {
            Some(s) if !fresh => (s.failures.saturating_add(1), s.first_failure_at),
            _ => (1, now),
        };
        let locked_until = (failures >= i32::try_from(self.threshold).unwrap_or(i32::MAX))
            .then(|| now + self.lock);
        FailureState {
            failures,
            first_failure_at: first,
            locked_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    fn policy() -> Policy {
        Policy {
            threshold: 3,
            window: Duration::seconds(60),
            lock: Duration::seconds(300),
        }
    }

    #[test]
    fn locks_after_threshold_within_window() {
        let p = policy();
        let s1 = p.after_failure(None, t(0));
        let s2 = p.after_failure(Some(&s1), t(10));
        assert_eq!(p.locked_until(Some(&s2), t(11)), None);
        let s3 = p.after_failure(Some(&s2), t(20));
        assert_eq!(s3.failures, 3);
        assert_eq!(p.locked_until(Some(&s3), t(21)), Some(t(320)));
        assert_eq!(p.locked_until(Some(&s3), t(320)), None, "lock ends");
    }

    #[test]
    fn old_failures_stop_counting() {
        let p = policy();
        let s1 = p.after_failure(None, t(0));
        let s2 = p.after_failure(Some(&s1), t(10));
        let s3 = p.after_failure(Some(&s2), t(61));
        assert_eq!(s3.failures, 1);
        assert_eq!(s3.locked_until, None);
    }

    #[test]
    fn after_a_lock_expires_counting_starts_over() {
        let p = policy();
        let mut s = p.after_failure(None, t(0));
        for i in 1..3 {
            s = p.after_failure(Some(&s), t(i));
        }
        assert!(s.locked_until.is_some());
        let s = p.after_failure(Some(&s), t(400));
        assert_eq!((s.failures, s.locked_until), (1, None));
    }
}
