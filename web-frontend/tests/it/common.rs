//! What the tests share: the in-process stack (`ffs-test-stack`) and the test kit's
//! scrapers and hashes.

pub use ffs_test_stack::{PASSWORD, Stack, stager_config};
pub use ffs_testkit::{
    hash::sha256_hex,
    html::{hrefs, input_value, unescape},
};
