//! Subcommands, one module per role; the lead's tools (keys, config, demo, bench) live here too.

pub mod agent;
pub mod bench_commlink;
pub mod demo;
pub mod stager;
pub mod web;
