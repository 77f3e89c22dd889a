//! Integration tests of the web frontend against a REAL db agent (SQLite in a temp dir) and
//! a REAL ftp-stager (temp repository), both started in-process on port-0 listeners and
//! reached over real commlink sockets. No mocks.
//!
//! - `pages`: every page and form through actix's test service (no TLS);
//! - `https`: the real server over rustls, driven by curl (headers, redirect, cookies,
//!   a download straight from the stager with its SHA-256 checked);
//! - `haproxy`: two webs behind a real haproxy running `deploy/haproxy.cfg`;
//! - `several`: two db agents on one database behind one web (failover, no resend);
//! - `relay`: the db agent over the HTTP relay (HTTPS with a pinned certificate; plain HTTP
//!   through a squid that denies `CONNECT`), sign-in and prepare through it;
//! - `https_carrier`: the db agent over the https carrier (a WebSocket upgrade on the
//!   HTTPS listener, pinned certificate), directly and through a CONNECT-only squid;
//!   strangers get 404s, a stranger without the key bag is refused, then throttled;
//! - `browser`: headless Chromium via chromedriver (fails naming the packages if absent).

mod browser;
mod common;
mod haproxy;
mod https;
mod https_carrier;
mod pages;
mod relay;
mod several;
