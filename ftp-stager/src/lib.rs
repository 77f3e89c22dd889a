//! The ffs ftp-stager: owns the repository of published releases and the per-customer
//! download areas, and serves those areas over FTP (libunftp, each login confined to its
//! own area, read-only) and HTTPS (actix-web over rustls, Range/resume).
//!
//! Staging a release is a hard link per file into `areas/<random id>/`, so it costs the same
//! for 1 KB as for 10 GB; the bytes are never copied and the web frontend never carries them.
//!
//! Main types:
//! - [`Repository`] — content-addressed objects (`objects/ab/cdef…`, SHA-256, mode 0444) and
//!   per-release [`Manifest`]s written last and atomically; [`publish()`] imports files.
//! - [`Stager`] — creates, finds and removes areas ([`AreaRecord`]), one-time FTP credentials
//!   and HTTPS capability tokens, the deliveries log, stage-latency stats, the sweeper.
//! - [`StagerService`] — the commlink [`commlink::Service`] answering `stager.*` requests.
//! - [`StagerConfig`] — the `[stager]` section of ffs.toml ([`TOML_TEMPLATE`]).
//! - [`server::run`] / [`server::Listeners`] — start everything (commlink, FTP, HTTPS,
//!   sweeper) from a config, or from listeners the caller bound (tests, `ffs demo`).
//! - [`bench`] — `ffs bench staging`: per-file stage latency by method and size.
//!
//! Modules: [`config`], [`error`], [`fsutil`], [`repository`], [`publish`](mod@publish),
//! [`signing`], [`verify`], [`tokens`], [`upload`], [`replicate`] (with [`replicate_serve`]
//! and [`replicate_follow`]), [`areas`], [`state`], [`staging`], [`catalog_tags`], [`ftp`], [`https`], [`http_client`], [`tls`], [`service`], [`server`],
//! [`bench`].

#![deny(missing_docs)]

pub mod area_dirs;
pub mod areas;
pub mod bench;
pub mod catalog_tags;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod ftp;
pub mod http_client;
pub mod https;
mod pace;
pub mod publish;
pub mod replicate;
pub mod replicate_follow;
pub mod replicate_serve;
pub mod repository;
pub mod server;
pub mod service;
pub mod signing;
pub mod staging;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod upload;
pub mod verify;

pub use areas::AreaRecord;
pub use config::{Fallback, StagerConfig, TOML_TEMPLATE};
pub use error::StagerError;
pub use publish::{publish, publish_signed};
pub use repository::{Manifest, ManifestFile, Repository};
pub use service::StagerService;
pub use signing::{ReleaseSignature, Signer};
pub use staging::{Method, Stager};
