//! The db agent (`ffs db-agent`): the only ffs role that touches the customer database.
//!
//! It lives inside the firewall and answers the web frontend's questions over the commlink
//! (login, entitlements, authorize, record download/delivery, admin reads and edits); the
//! operator manages customers with the `ffs customer|entitle|unentitle|history` commands,
//! which work on the database directly ([`admin`]).
//!
//! Main types:
//! - [`AgentConfig`]: the `[db-agent]` section of `ffs.toml` ([`TOML_TEMPLATE`]);
//! - [`db::Pool`] over [`db::AnyConnection`]: SQLite or PostgreSQL, picked from the URL
//!   scheme, with embedded per-backend migrations;
//! - [`AgentService`]: the commlink [`commlink::Service`] that dispatches requests;
//! - [`Agent`]: an opened database plus service, served with [`Agent::serve`] (listen) or
//!   [`Agent::serve_dialout`] (dial-out); [`run`] does either per the config;
//! - [`passwords::Hasher`] (argon2id), [`versions::VersionSpec`] (entitlement constraints),
//!   [`lockout::Policy`] (failed-login lockout).
//!
//! Invariants: no password or password hash leaves [`store`] in a reply or a log line; the
//! service never panics on a request (malformed ones get a `bad-request` reply).

#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod db;
pub mod lockout;
pub mod model;
pub mod passwords;
pub mod prompt;
pub mod schema;
pub mod server;
pub mod service;
pub mod store;
pub use commlink::msg::versions;

pub use config::{AgentConfig, DialCarrier, Mode, TOML_TEMPLATE};
pub use server::{Agent, AgentError, run};
pub use service::AgentService;
