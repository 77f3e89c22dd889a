//! The ffs web frontend: the only public web UI. Customers sign in, see the products they are
//! entitled to, and prepare downloads; admins see the catalog, live download areas, history,
//! customers and staging latency. It holds no customer data and never carries (or reads)
//! product bytes: it asks the db agent who someone is and what they may have, asks
//! the ftp-stager to stage, and hands the browser resource locators that point straight at
//! the stager.
//!
//! Main types:
//! - [`Application`]: builds the actix-web HTTPS server (rustls) around bound listeners and
//!   two commlink [`commlink::Client`]s; [`Listeners`] holds the sockets; `ffs web`,
//!   `ffs demo` and the tests all start it this way.
//! - [`WebConfig`]: the `[web]` section of `ffs.toml` ([`TOML_TEMPLATE`] is its commented
//!   default).
//! - [`error::AppError`]: the one error type handlers return; it implements
//!   `ResponseError`, so every fault is a page (503 when a back end is unreachable).
//! - [`backend::Backend`]: both commlinks with deadlines and metrics; the only module that
//!   speaks the commlink message types.
//! - [`session`]: signed + encrypted cookie sessions with idle/absolute timeouts, logout
//!   revocation and CSRF tokens; [`throttle::LoginThrottle`]: per-address login throttling.
//!
//! Pure logic (no I/O) lives in [`views`], [`version`], [`format`], [`throttle`] and
//! [`metrics`]; handlers (one per file) live in `routes`; templates in the top-level
//! `templates/` directory (askama).

#![deny(missing_docs)]

pub mod backend;
pub mod body;
pub mod carrier_bed;
pub mod config;
pub mod deliveries;
pub mod error;
pub mod format;
pub mod link_endpoint;
pub mod metrics;
pub mod pages;
pub mod relay;
pub mod revocations;
mod routes;
pub mod secrets;
pub mod session;
pub mod signing;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod version;
pub mod views;

pub use config::{AgentMode, TOML_TEMPLATE, WebConfig};
pub use startup::{Application, Listeners, agent_client, agent_clients};
