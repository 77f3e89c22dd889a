//! The commlink settings tests use: a fresh key bag and timeouts short enough that a broken
//! link fails a test in seconds rather than minutes, long enough for a loaded CI machine.

use std::sync::Arc;
use std::time::Duration;

use commlink::{KeyBag, LinkConfig};

/// Entries in a test key bag (production bags have 128; fewer is faster to generate and
/// still exercises index = port mod N).
pub const TEST_BAG_ENTRIES: usize = 16;

/// A fresh random key bag of [`TEST_BAG_ENTRIES`] entries.
pub fn bag() -> Arc<KeyBag> {
    Arc::new(KeyBag::generate(TEST_BAG_ENTRIES).expect("generating a test key bag"))
}

/// Test settings around `bag` (both ends of a link must share it): the default suite,
/// connect timeout 2 s, request timeout 10 s, heartbeat 500 ms.
pub fn config_with(bag: Arc<KeyBag>) -> LinkConfig {
    let mut c = LinkConfig::new(bag);
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(10);
    c.heartbeat = Duration::from_millis(500);
    c
}

/// [`config_with`] a fresh [`bag`].
pub fn config() -> LinkConfig {
    config_with(bag())
}
