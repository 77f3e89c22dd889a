//! What a dialing end logs about failed dials: every new cause at once, repeats of the same
//! cause at most once per interval with how many there were, and the recovery with the
//! number of failed attempts before it. Pure (the caller passes the time), so it is tested
//! without clocks.

use std::time::{Duration, Instant};

/// How often a cause that keeps repeating is reported again.
pub(super) const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// The log state of one dialing loop.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// The current cause (see [`cause`]) and when it was last reported.
    current: Option<(String, Instant)>,
    /// Failures of the current cause since it was last reported.
    unreported: u64,
    /// Failures since the link was last up.
    streak: u64,
}

/// The cause of a failure: its message without digits, so that a port number, an address or
/// a duration that changes from one attempt to the next does not make a repeat look new
/// ("NAT rewrote port 40001 to 51234" is the same cause as with 40002 and 51240).
fn cause(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl RefusalLog {
    /// A dial failed with `message` at `now`; returns the line to log, if any.
    pub(super) fn failed(&mut self, message: &str, now: Instant) -> Option<String> {
        self.streak += 1;
        let key = cause(message);
        match &mut self.current {
            Some((k, last)) if *k == key => {
                self.unreported += 1;
                if now.saturating_duration_since(*last) < REPEAT_INTERVAL {
                    return None;
                }
                *last = now;
                let n = std::mem::take(&mut self.unreported);
                Some(format!(
                    "{message}; still failing, {n} more time{} since the last report; retrying",
                    if n == 1 { "" } else { "s" }
                ))
            }
            _ => {
                let before = std::mem::take(&mut self.unreported);
                self.current = Some((key, now));
                Some(if before > 0 {
                    format!(
                        "{message}; retrying (the cause changed; the previous one repeated {before} more time{} unreported)",
                        if before == 1 { "" } else { "s" }
                    )
                } else {
                    format!("{message}; retrying")
                })
            }
        }
    }

    /// The link came up; returns the line to log if dials had failed before. The next
    /// failure is reported at once.
    pub(super) fn succeeded(&mut self) -> Option<String> {
        let streak = std::mem::take(&mut self.streak);
        self.current = None;
        self.unreported = 0;
        (streak > 0).then(|| {
            format!(
                "connected after {streak} failed attempt{}",
                if streak == 1 { "" } else { "s" }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cause_is_reported_at_once_and_repeats_are_counted() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let nat = |p: u32| {
            format!(
                "handshake failed: port-mismatch: bound {p} but seen {}",
                p + 7
            )
        };
        assert_eq!(
            log.failed(&nat(40001), t0),
            Some(format!("{}; retrying", nat(40001)))
        );
        for i in 1..=9 {
            assert_eq!(
                log.failed(&nat(40001 + i), t0 + Duration::from_secs(u64::from(i))),
                None
            );
        }
        // A different cause is logged at once, naming the unreported repeats before it.
        let bag = "handshake failed: bag-mismatch: the key bags differ";
        let line = log
            .failed(bag, t0 + Duration::from_secs(10))
            .expect("logged at once");
        assert!(line.starts_with(bag), "{line}");
        assert!(line.contains("repeated 9 more times unreported"), "{line}");
        // Its repeats: silent within the interval, then one line with the count.
        assert_eq!(log.failed(bag, t0 + Duration::from_secs(11)), None);
        assert_eq!(log.failed(bag, t0 + Duration::from_secs(12)), None);
        let line = log
            .failed(bag, t0 + Duration::from_secs(10) + REPEAT_INTERVAL)
            .expect("reported again after the interval");
        assert!(
            line.contains("3 more times since the last report"),
            "{line}"
        );
        assert_eq!(log.failed(bag, t0 + Duration::from_secs(71)), None);
    }

    #[test]
    fn success_reports_the_streak_and_rearms() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.succeeded(), None);
        assert!(log.failed("cannot connect: refused", t0).is_some());
        assert_eq!(log.failed("cannot connect: refused", t0), None);
        assert_eq!(
            log.succeeded().as_deref(),
            Some("connected after 2 failed attempts")
        );
        // The next outage is reported at once, even with the same cause.
        assert!(log.failed("cannot connect: refused", t0).is_some());
    }

    #[test]
    fn digits_do_not_make_a_cause_new_but_words_do() {
        assert_eq!(
            cause("port 40001 seen 51234"),
            cause("port 40002 seen 61234")
        );
        assert_ne!(cause("bag-mismatch"), cause("port-mismatch"));
    }
}
