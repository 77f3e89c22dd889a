//! The `ffs` binary's integration tests, one test binary: the real `ffs` binary run as a
//! user and an operator would run it, each role its own process.
//!
//! - `e2e`: the whole system (web, stager, agent) through real clients;
//! - `proxy_e2e`: the db agent in a network namespace whose only way out is squid
//!   (CONNECT to the web's HTTPS port only), over the https carrier; nothing readable in
//!   squid's logs;
//! - `relay_e2e`: the agent over the HTTP relay through squid (CONNECT denied) while the
//!   receive channel, a POST mid-body and squid itself are cut during a stream of prepares;
//! - `remote`: `ffs publish --remote` against an in-process stager;
//! - `replication`: a follower `ffs stager` process replicating a source stager;
//! - `scaling`: two of each role behind haproxy on PostgreSQL, one of each SIGKILLed;
//! - `signing_keys`: passphrase-protected signing keys with the real minisign;
//! - `tools`: the operator tools (`ffs keys`, `ffs config`, `ffs customer`, …);
//! - `gate`: a TCP gate between two processes the test can shut or slow down;
//! - `support`: starting daemons, driving curl and ftplib, waiting for ports.

mod e2e;
mod gate;
mod proxy_e2e;
mod relay_e2e;
mod remote;
mod replication;
mod scaling;
mod signing_keys;
mod support;
mod tools;
