//! The async transport: the only part of the commlink that touches sockets.
//!
//! IMPLEMENTATION IN PROGRESS (signatures are final).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Suite;
use crate::keys::KeyBag;
use crate::tobj::{Fields, Request, Tobj, TobjError};

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
    /// How long to wait for a TCP connect plus handshake (default 2 s).
    pub connect_timeout: Duration,
    /// Interval between heartbeats; a link silent for 3 intervals is dead (default 5 s).
    pub heartbeat: Duration,
    /// When dialing, bind the source port inside this range (inclusive), so a firewall rule
    /// can name it. `None` lets the OS choose.
    pub source_ports: Option<(u16, u16)>,
}

impl LinkConfig {
    /// Defaults around a bag.
    pub fn new(bag: Arc<KeyBag>) -> Self {
        LinkConfig {
            bag,
            suite: Suite::default(),
            max_line: 1 << 20,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
            source_ports: None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// No working connection to the peer (unreachable, handshake refused, link dropped).
    #[error("link down: {0}")]
    Down(String),
    /// The peer did not reply within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error reply.
    #[error("peer refused: {code}: {message}")]
    Remote {
        /// Machine-readable code, e.g. `denied`, `bad-request`, `internal`.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// The reply could not be understood as the expected message type.
    #[error("unexpected reply: {0}")]
    Decode(#[from] TobjError),
}

/// The tobj type of an error reply.
pub const ERROR_TYPE: &str = "ffs.error";

/// An error reply with a code and message; a [`Service`] returns it to refuse a request.
pub fn error_reply(code: &str, message: impl Into<String>) -> Tobj {
    Tobj::with_fields(
        ERROR_TYPE,
        0,
        Fields::new().text("code", code).text("message", message),
    )
}

/// Something that answers requests: the responder side of a link.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. The reply's `id` is set by the transport. Return
    /// [`error_reply`] to refuse.
    fn call(&self, request: Tobj) -> impl Future<Output = Tobj> + Send;
}

/// The requester side of a link: sends requests, matches replies, reconnects by itself.
#[derive(Clone)]
pub struct Client {
    _inner: Arc<()>,
}

impl Client {
    /// A client that dials `addr` (host:port) when needed and redials after a drop.
    pub fn dial(addr: impl Into<String>, cfg: LinkConfig) -> Client {
        let _ = (addr.into(), cfg);
        todo!("in progress")
    }

    /// A client whose responder dials in (seed 000's direction): accepts connections on
    /// `listener` and sends requests over the newest live one.
    pub fn accept(listener: tokio::net::TcpListener, cfg: LinkConfig) -> Client {
        let _ = (listener, cfg);
        todo!("in progress")
    }

    /// Sends one request and waits for its reply. An `ffs.error` reply becomes
    /// [`LinkError::Remote`].
    pub async fn call(&self, request: Tobj) -> Result<Tobj, LinkError> {
        let _ = request;
        todo!("in progress")
    }

    /// Sends a typed request and decodes the typed reply.
    pub async fn request<R: Request>(&self, request: &R) -> Result<R::Response, LinkError> {
        use crate::tobj::Message as _;
        let reply = self.call(request.to_tobj(0)).await?;
        Ok(R::Response::from_tobj(&reply)?)
    }

    /// Whether a connection is up right now.
    pub fn is_up(&self) -> bool {
        todo!("in progress")
    }
}

/// Serves `service` to every requester that connects to `listener` (the patent's
/// direction), until `shutdown` completes.
pub async fn serve<S: Service>(
    listener: tokio::net::TcpListener,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let _ = (listener, cfg, service, shutdown);
    todo!("in progress")
}

/// Dials out to the requester at `addr` and serves `service` over that connection (seed
/// 000's direction: the inside host only dials out), redialing after a drop, until
/// `shutdown` completes.
pub async fn serve_dialout<S: Service>(
    addr: String,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) {
    let _ = (addr, cfg, service, shutdown);
    todo!("in progress")
}
