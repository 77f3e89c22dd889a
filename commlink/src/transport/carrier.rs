//! The carrier: how the initiator opens a byte stream to its peer. Everything above it (the
//! handshake, the sealed packets, requests and replies) is the same on every carrier.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

use super::LinkConfig;

/// One way of reaching the peer ([`super::Tcp`] is raw TCP).
pub trait Carrier: Send + Sync + 'static {
    /// The byte stream it opens.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Where it leads, as shown in messages (e.g. `web.example.com:7702`).
    fn target(&self) -> &str;

    /// Whether the number [`Carrier::open`] returns is a virtual port (the acceptor cannot
    /// see our source port through this carrier, e.g. a proxy); sent as `v<P>` in HELLO.
    fn virtual_port(&self) -> bool {
        false
    }

    /// Opens one stream to the peer. Also returns the number the key index is taken from,
    /// which the initiator announces in its hello (for raw TCP, its bound source port).
    fn open(
        &self,
        cfg: &LinkConfig,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, u16)>> + Send;
}
