//! commlink's integration tests, one test binary.
//!
//! - `link`: the commlink over real loopback TCP, both dial directions;
//! - `vectors`: PROTOCOL.md's worked vectors, recomputed independently.

mod link;
mod vectors;
