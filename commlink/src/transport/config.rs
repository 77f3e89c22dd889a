//! Settings, errors and the [`Service`] trait: what both ends of a link share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Suite;
use crate::keys::KeyBag;
use crate::refusal::RefusalCode;
use crate::tobj::{Fields, Limits, Tobj, TobjError};

/// Settings shared by both ends of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The pre-shared key bag (same file on both hosts).
    pub bag: Arc<KeyBag>,
    /// The cipher suite this end offers and accepts.
    pub suite: Suite,
    /// Longest packet line accepted, in bytes (default 1 MiB).
    pub max_line: usize,
    /// How long a request may wait for its reply (default 10 s).
    pub request_timeout: Duration,
    /// How long to wait for a TCP connect plus handshake, and how long a request waits for
    /// a link that is down to come up (default 1.5 s).
    pub connect_timeout: Duration,
    /// Interval between heartbeats; a link silent for 3 intervals is dead (default 5 s).
    pub heartbeat: Duration,
    /// When dialing, bind the source port inside this range (inclusive), so a firewall rule
    /// can name it. `None` lets the OS choose.
    pub source_ports: Option<(u16, u16)>,
    /// As acceptor: take a HELLO's virtual port (`v<P>`, sent by an initiator behind a
    /// proxy that hides its source port) instead of refusing it with `virtual-port`.
    /// Off by default: raw TCP keeps its `port-mismatch` check and a firewall rule naming
    /// the source ports keeps naming the bag entries that can be used.
    pub accept_proxied: bool,
}

impl LinkConfig {
    /// Defaults around a bag.
    pub fn new(bag: Arc<KeyBag>) -> Self {
        LinkConfig {
            bag,
            suite: Suite::default(),
            max_line: 1 << 20,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(1500),
            heartbeat: Duration::from_secs(5),
            source_ports: None,
            accept_proxied: false,
        }
    }

    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_line,
            ..Limits::default()
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// No working connection to the peer (unreachable, handshake refused, link dropped):
    /// the request was never sent, so another peer may be asked.
    #[error("link down: {0}")]
    Down(String),
    /// The link dropped after the request was sent: the peer may or may not have carried it
    /// out, so it must not be sent again blindly.
    #[error("link lost with the request in flight: {0}")]
    Lost(String),
    /// The peer did not reply within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error reply.
    #[error("peer refused: {code}: {message}")]
    Remote {
        /// Machine-readable code as sent, e.g. `denied`, `bad-request`, `internal`; kept as
        /// text because a newer peer may send a code this version does not know (see
        /// [`LinkError::refusal_code`]).
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// The reply could not be understood as the expected message type.
    #[error("unexpected reply: {0}")]
    Decode(#[from] TobjError),
}

impl LinkError {
    /// The typed code of a [`LinkError::Remote`] refusal, if this version knows it.
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        match self {
            LinkError::Remote { code, .. } => code.parse().ok(),
            _ => None,
        }
    }
}

/// The tobj type of an error reply.
pub const ERROR_TYPE: &str = "ffs.error";
pub(super) const HELLO_TYPE: &str = "ffs.hello";
pub(super) const PING_TYPE: &str = "ffs.ping";

/// An error reply with a code and message; a [`Service`] returns it to refuse a request.
pub fn error_reply(code: RefusalCode, message: impl Into<String>) -> Tobj {
    Tobj::with_fields(
        ERROR_TYPE,
        0,
        Fields::new()
            .text("code", code.as_str())
            .text("message", message),
    )
}

pub(super) fn remote_error(t: &Tobj) -> LinkError {
    LinkError::Remote {
        code: t.fields.req_text("code").unwrap_or("unknown").to_owned(),
        message: t.fields.req_text("message").unwrap_or("").to_owned(),
    }
}

/// Something that answers requests: the responder side of a link.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. The reply's `id` is set by the transport. Return
    /// [`error_reply`] to refuse.
    fn call(&self, request: Tobj) -> impl Future<Output = Tobj> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_round_trips_into_a_remote_error() {
        let reply = error_reply(RefusalCode::Denied, "no such customer");
        assert_eq!(reply.kind, ERROR_TYPE);
        match remote_error(&reply) {
            LinkError::Remote { code, message } => {
                assert_eq!(code, "denied");
                assert_eq!(message, "no such customer");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
    }

    #[test]
    fn an_error_reply_without_fields_reads_as_unknown() {
        let bare = Tobj::new(ERROR_TYPE, 3);
        match remote_error(&bare) {
            LinkError::Remote { code, message } => {
                assert_eq!(code, "unknown");
                assert_eq!(message, "");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
    }

    #[test]
    fn the_line_limit_follows_max_line() {
        let mut cfg = LinkConfig::new(Arc::new(KeyBag::generate(4).expect("a key bag")));
        cfg.max_line = 4096;
        assert_eq!(cfg.limits().max_bytes, 4096);
    }
}
