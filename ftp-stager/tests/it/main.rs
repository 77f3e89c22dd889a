//! ftp-stager's integration tests, one test binary (each module starts what it needs).
//!
//! - `clients`: real FTP/FTPS/HTTPS clients (ftplib, curl, lftp) against a running stager;
//! - `conformance`: nginx (HTTP, HTTPS) and vsftpd as oracles, same requests, same answers;
//! - `downloaders`: wget, curl and aria2c resuming and splitting downloads;
//! - `escapes`: hostile paths over FTP and HTTPS never leave an area;
//! - `crash`: a publish killed at any point leaves nothing half-visible;
//! - `privileges`: the privilege drop after binding;
//! - `service`: the `stager.*` requests over a real commlink;
//! - `signing`: signed releases verified with the real minisign and sha256sum;
//! - `verify`: `ffs repo verify` and the size check at staging;
//! - `remote`: remote publishing over the stager's HTTPS;
//! - `http_client`: `ftp_stager::http_client` against the stager's HTTPS listener;
//! - `replication`: a follower stager pulling releases from a source stager;
//! - `common`: a repository with a release and a stager running in this process.

mod clients;
mod common;
mod conformance;
mod crash;
mod downloaders;
mod escapes;
mod http_client;
mod privileges;
mod remote;
mod replication;
mod service;
mod signing;
mod verify;
