//! Waiting for the event a test needs instead of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds or `within` has passed; returns whether it held.
/// Async, so servers running on the same runtime keep running while the test waits.
pub async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_as_soon_as_the_condition_holds_or_gives_up() {
        let mut n = 0;
        assert!(
            until(Duration::from_secs(5), || {
                n += 1;
                n == 3
            })
            .await
        );
        assert_eq!(n, 3);
        assert!(!until(Duration::from_millis(50), || false).await);
    }
}
