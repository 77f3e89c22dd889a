//! The async transport: the only part of the commlink that touches sockets.
//!
//! Two roles are independent of who dials whom:
//! - the **requester** ([`Client`]) sends requests and matches replies by id, many at once
//!   over one connection;
//! - the **responder** ([`serve`], [`serve_dialout`]) answers them with a [`Service`].
//!
//! Either may be the TCP dialer (the *initiator*, whose source port picks the key) or the
//! listener (the *acceptor*). Seed 002 has the requester dial; seed 000 has the inside host
//! (the responder) dial out so its firewall admits nothing inbound. Dialing ends keep the link
//! up by themselves: they redial after any failure with a capped backoff, and both ends send
//! heartbeats so a dead peer is noticed within three intervals.
//!
//! Any protocol violation (bad line, failed MAC, wrong packet number, malformed tobj) is
//! logged with its reason and closes the connection; the peer is told why when possible.
//!
//! The pieces, one file each:
//! - `config`: [`LinkConfig`], [`LinkError`], the [`Service`] trait and error replies;
//! - `handshake_io`: line reading and writing, and both ends of the plaintext handshake;
//! - `answer`: [`answer_blocking`], a reply made by blocking work and written from the
//!   blocking thread (no hand-off back to a task); `warm`: a responder connection's own
//!   few threads for that work ([`Warm`](warm::Warm)), tokio's blocking pool as overflow;
//! - `conn`: a running connection (outbox, heartbeats, reader loop) with its requester and
//!   responder paths;
//! - `addr`: link addresses as written in `ffs.toml` ([`LinkAddr`]: `tcp://host:port` or
//!   a bare `host:port`; unknown schemes refused);
//! - `carrier` and `tcp`: how a byte stream to the peer is opened ([`Carrier`]); raw TCP,
//!   with source-port ranges;
//! - `proxy`: through an HTTP forward proxy with `CONNECT` ([`Proxy`], virtual ports);
//! - `relay` (the agent's [`Relay`] carrier, HTTP requests over hyper), `relay_hub` (the
//!   web's end, [`RelayHub`]), `relay_proto` (the relay's records and its reliable-stream
//!   state, pure) and `relay_stream` ([`RelayStream`], what the commlink runs on): the HTTP
//!   relay of seed 003 for proxies without `CONNECT`;
//! - `https`: inside TLS to the web frontend's HTTPS listener, upgraded to a
//!   WebSocket ([`Https`]), directly or through a [`Proxy`]; `websocket`: that upgrade and
//!   the client end of the WebSocket as a byte stream;
//! - `dial`: dialing and accepting within the connect timeout, and the redial loop;
//! - `refusals`: what the redial loop logs (each new cause at once, repeats counted);
//! - `client`: the requester ([`Client`]);
//! - `trust`: how TLS clients check the server ([`Trust`]: system CAs, a CA file, a pin),
//!   shared by the https carrier, the relay and the stager's HTTPS client;
//! - `server`: the responders ([`serve`], [`serve_dialout`]).

mod addr;
mod answer;
mod carrier;
mod client;
mod config;
mod conn;
mod dial;
mod handshake_io;
mod https;
mod proxy;
mod refusals;
mod relay;
mod relay_hub;
mod relay_proto;
mod relay_stream;
mod server;
mod tcp;
pub mod trust;
mod warm;
pub mod websocket;

pub use addr::{AddrError, HttpsAddr, LinkAddr};
pub use answer::answer_blocking;
pub use carrier::Carrier;
pub use client::{Acceptor, Client, Incoming, LinkStream};
pub use config::{ERROR_TYPE, LinkConfig, LinkError, Service, error_reply};
pub use https::{Https, HttpsError, LINK_PATH};
pub use proxy::{Proxy, no_proxy_matches};
pub use relay::{Relay, RelayOptions, RelaySetupError};
pub use relay_hub::{
    Kick, OnAttach, ReceiveChannel, ReceiveParams, RelayError, RelayHub, RelayLimits,
};
pub use relay_proto::Window as RelayWindow;
pub use relay_stream::RelayStream;
pub use server::{serve, serve_dialout, serve_dialout_on_own_thread, serve_dialout_via};
pub use tcp::Tcp;
pub use trust::{Trust, TrustError, parse_pin};

/// Locks `m`, taking the data over from a holder that panicked (the relay's shared state
/// stays usable: every update it makes is complete under the lock).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
