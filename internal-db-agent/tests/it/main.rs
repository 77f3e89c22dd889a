//! The agent's integration tests, one test binary.
//!
//! - `agent`: behaviour on SQLite and PostgreSQL, directly and over real commlink sockets;
//! - `concurrent`: two agents on one database at once (deliveries once, lockout counts,
//!   history rows; dial-out agents each serving two webs);
//! - `no_secrets_in_logs`: every log line captured while logging in, checked for secrets;
//! - `statements`: the prepare path's queries stay prepared statements (no re-prepare);
//! - `bench`: throughput and login cost (ignored by default; run in release);
//! - `common`: fresh databases, seeded customers, agents served over real sockets.

mod agent;
mod bench;
mod common;
mod concurrent;
mod no_secrets_in_logs;
mod statements;
