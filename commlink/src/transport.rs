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

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::TryRng as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::{debug, info, warn};

use crate::crypto::{self, NONCE_LEN, OpenError, Opener, Sealer, Side, Suite};
use crate::frame::{self, FrameError, LineDecoder};
use crate::handshake::{self, HandshakeError, Hello, Welcome};
use crate::keys::KeyBag;
use crate::tobj::{Fields, Limits, Request, Tobj, TobjError};

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
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_line,
            ..Limits::default()
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
const HELLO_TYPE: &str = "ffs.hello";
const PING_TYPE: &str = "ffs.ping";

/// An error reply with a code and message; a [`Service`] returns it to refuse a request.
pub fn error_reply(code: &str, message: impl Into<String>) -> Tobj {
    Tobj::with_fields(
        ERROR_TYPE,
        0,
        Fields::new().text("code", code).text("message", message),
    )
}

fn remote_error(t: &Tobj) -> LinkError {
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

/// The requester has no service; requests arriving at it are refused.
struct NoService;

impl Service for NoService {
    async fn call(&self, _request: Tobj) -> Tobj {
        error_reply(
            "bad-request",
            "this end of the link does not serve requests",
        )
    }
}

// ---------------------------------------------------------------------------------------
// Connection errors and line reading.

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad line: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("malformed tobj: {0}")]
    Tobj(#[from] TobjError),
    #[error("peer closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(String),
}

impl ConnError {
    /// The code sent to the peer before closing.
    fn code(&self) -> &'static str {
        match self {
            ConnError::Frame(_) => "bad-line",
            ConnError::Open(_) => "bad-packet",
            ConnError::Tobj(_) => "bad-request",
            _ => "protocol",
        }
    }
}

struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
    dec: LineDecoder,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(r: R, max: usize) -> Self {
        LineReader {
            r,
            buf: Vec::with_capacity(16 * 1024),
            dec: LineDecoder::new(max),
        }
    }

    fn set_max(&mut self, max: usize) {
        self.dec = LineDecoder::new(max);
    }

    async fn line(&mut self) -> Result<Vec<u8>, ConnError> {
        loop {
            if let Some(line) = self.dec.decode(&mut self.buf)? {
                return Ok(line);
            }
            self.buf.reserve(16 * 1024);
            if self.r.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &str) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(line.len() + 2);
    frame::encode(line, &mut out);
    w.write_all(&out).await?;
    w.flush().await
}

fn nonce() -> Result<[u8; NONCE_LEN], ConnError> {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut n)
        .map_err(|e| ConnError::Protocol(format!("OS random number generator failed: {e}")))?;
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Handshakes.

struct Established<S> {
    reader: LineReader<tokio::io::ReadHalf<S>>,
    writer: tokio::io::WriteHalf<S>,
    sealer: Sealer,
    opener: Opener,
}

/// Runs the initiator's handshake; `port` is our bound source port.
async fn initiate<S: AsyncRead + AsyncWrite>(
    stream: S,
    cfg: &LinkConfig,
    port: u16,
) -> Result<Established<S>, ConnError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = LineReader::new(r, handshake::MAX_HANDSHAKE_LINE);
    let nonce_i = nonce()?;
    let hello = Hello {
        suite: cfg.suite,
        port,
        nonce: nonce_i,
        bag: cfg.bag.fingerprint(),
    };
    write_line(&mut w, &hello.to_line()).await?;
    let welcome = Welcome::parse(&reader.line().await?)?;
    if welcome.suite != cfg.suite {
        return Err(ConnError::Protocol(format!(
            "peer answered with suite {} but we asked for {}",
            welcome.suite.name(),
            cfg.suite.name()
        )));
    }
    let entry = cfg.bag.entry_for_port(port);
    let (sealer, opener) = crypto::derive(
        cfg.suite,
        entry,
        port,
        &nonce_i,
        &welcome.nonce,
        Side::Initiator,
    );
    reader.set_max(cfg.max_line);
    Ok(Established {
        reader,
        writer: w,
        sealer,
        opener,
    })
}

/// Runs the acceptor's handshake; `seen_port` is the peer's port as this end sees it.
async fn accept_handshake<S: AsyncRead + AsyncWrite>(
    stream: S,
    cfg: &LinkConfig,
    seen_port: u16,
) -> Result<Established<S>, ConnError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = LineReader::new(r, handshake::MAX_HANDSHAKE_LINE);
    let line = reader.line().await?;
    let refuse = |code: &'static str, text: String| (code, text);
    let verdict = match Hello::parse(&line) {
        Err(HandshakeError::UnknownSuite(s)) => Err(refuse(
            "suite",
            format!(
                "this end requires suite {} and does not know the offered suite {s:?}; set the same [link] suite on both hosts",
                cfg.suite.name()
            ),
        )),
        Err(e) => Err(refuse("malformed", e.to_string())),
        Ok(h) if h.suite != cfg.suite => Err(refuse(
            "suite",
            format!(
                "this end requires suite {} but the initiator offered {}; set the same [link] suite on both hosts",
                cfg.suite.name(),
                h.suite.name()
            ),
        )),
        Ok(h) if h.bag != cfg.bag.fingerprint() => Err(refuse(
            "bag-mismatch",
            format!(
                "the initiator's key bag (fingerprint {}) differs from this end's ({}); copy the same key bag file to both hosts",
                h.bag,
                cfg.bag.fingerprint()
            ),
        )),
        Ok(h) if h.port != seen_port => Err(refuse(
            "port-mismatch",
            format!(
                "the initiator bound source port {} but this end sees port {}: something (NAT, a proxy) rewrote the port, so the two ends would pick different keys; connect directly or exempt this link from NAT",
                h.port, seen_port
            ),
        )),
        Ok(h) => Ok(h),
    };
    let hello = match verdict {
        Ok(h) => h,
        Err((code, text)) => {
            // Best effort: the peer may already be gone.
            let _ = write_line(&mut w, &handshake::error_line(code, &text)).await;
            return Err(ConnError::Handshake(HandshakeError::Refused {
                code: code.into(),
                text,
            }));
        }
    };
    let nonce_a = nonce()?;
    let welcome = Welcome {
        suite: cfg.suite,
        nonce: nonce_a,
    };
    write_line(&mut w, &welcome.to_line()).await?;
    let entry = cfg.bag.entry_for_port(hello.port);
    let (sealer, opener) = crypto::derive(
        cfg.suite,
        entry,
        hello.port,
        &hello.nonce,
        &nonce_a,
        Side::Acceptor,
    );
    reader.set_max(cfg.max_line);
    Ok(Established {
        reader,
        writer: w,
        sealer,
        opener,
    })
}

// ---------------------------------------------------------------------------------------
// A running connection.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Requester,
    Responder,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Responder => "responder",
        }
    }
}

/// Where outgoing packets go. Senders seal and append under a short lock (so packet numbers
/// match byte order) and then flush the buffer themselves, so a request or reply reaches the
/// socket without a hop through another task. Flushing is cancel-safe: bytes leave the
/// buffer only after a `write` has accepted them, so a caller dropped mid-flush loses
/// nothing; whatever it leaves is flushed by the next sender or the heartbeat.
struct Outbox {
    state: Mutex<OutState>,
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    closed: AtomicBool,
    /// Milliseconds since `epoch` of the last packet queued (for heartbeats).
    last_sent: AtomicU64,
    epoch: std::time::Instant,
}

struct OutState {
    sealer: Sealer,
    buf: Vec<u8>,
}

/// Largest piece handed to one `write` call.
const WRITE_CHUNK: usize = 64 * 1024;

impl Outbox {
    fn new(sealer: Sealer, writer: Box<dyn AsyncWrite + Send + Unpin>) -> Outbox {
        Outbox {
            state: Mutex::new(OutState {
                sealer,
                buf: Vec::with_capacity(4096),
            }),
            writer: tokio::sync::Mutex::new(writer),
            closed: AtomicBool::new(false),
            last_sent: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, OutState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Seals `msg` into the buffer and flushes.
    async fn send(&self, msg: &Tobj) -> std::io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "connection closed",
            ));
        }
        let payload = msg.encode();
        {
            let mut st = self.lock_state();
            let line = st.sealer.seal(payload.as_bytes());
            frame::encode(&line, &mut st.buf);
        }
        self.last_sent
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.flush().await
    }

    /// Writes out everything buffered.
    async fn flush(&self) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        let mut piece = Vec::new();
        loop {
            piece.clear();
            {
                let st = self.lock_state();
                if st.buf.is_empty() {
                    break;
                }
                let n = st.buf.len().min(WRITE_CHUNK);
                piece.extend_from_slice(&st.buf[..n]);
            }
            let written = match w.write(&piece).await {
                Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => Ok(n),
                Err(e) => Err(e),
            };
            match written {
                Ok(n) => {
                    self.lock_state().buf.drain(..n);
                }
                Err(e) => {
                    self.closed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        w.flush().await
    }

    /// Sends a last message, then closes the write side.
    async fn close_with(&self, msg: &Tobj) {
        let _ = self.send(msg).await;
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.writer.lock().await.shutdown().await;
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_sent.load(Ordering::Relaxed)))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Tobj, LinkError>>>>>;

/// What a requester holds to use a live connection.
#[derive(Clone)]
struct ConnHandle {
    out: Arc<Outbox>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn fail_all(pending: &Pending, err: &LinkError) {
    let drained: Vec<_> = match pending.lock() {
        Ok(mut p) => p.drain().collect(),
        Err(poisoned) => poisoned.into_inner().drain().collect(),
    };
    for (_, tx) in drained {
        let _ = tx.send(Err(err.clone()));
    }
}

/// Concurrent requests one responder connection works on at once.
const MAX_IN_FLIGHT: usize = 1024;

/// Runs an established connection until it ends. `on_up` is called once the peer has
/// proven it holds the same keys (its first packet opened) with the handle requests use.
async fn run_connection<S, Svc>(
    est: Established<S>,
    cfg: LinkConfig,
    role: Role,
    service: Arc<Svc>,
    peer: String,
    on_up: impl FnOnce(ConnHandle),
) -> ConnError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    Svc: Service,
{
    let Established {
        mut reader,
        writer,
        sealer,
        mut opener,
    } = est;
    let heartbeat = cfg.heartbeat;
    let out = Arc::new(Outbox::new(sealer, Box::new(writer)));
    let hello = Tobj::with_fields(HELLO_TYPE, 0, Fields::new().text("role", role.name()));
    let _ = out.send(&hello).await;
    // Heartbeats: a ping whenever nothing was sent for an interval; also flushes anything a
    // cancelled sender left behind.
    let _heartbeat_task = AbortOnDrop(tokio::spawn({
        let out = out.clone();
        async move {
            let mut tick = tokio::time::interval(heartbeat / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let r = if out.idle_for() >= heartbeat {
                    out.send(&Tobj::new(PING_TYPE, 0)).await
                } else {
                    out.flush().await
                };
                if r.is_err() {
                    break;
                }
            }
        }
    }));

    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let alive = Arc::new(AtomicBool::new(true));
    let handle = ConnHandle {
        out: out.clone(),
        pending: pending.clone(),
        alive: alive.clone(),
    };
    let limits = cfg.limits();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut on_up = Some(on_up);
    let silence = heartbeat * 3;

    let err = loop {
        let line = match tokio::time::timeout(silence, reader.line()).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => break e,
            Err(_) => {
                break ConnError::Protocol(format!(
                    "peer silent for {silence:?} (three heartbeats): link dead"
                ));
            }
        };
        let tobj = match opener
            .open(&line)
            .map_err(ConnError::from)
            .and_then(|p| {
                String::from_utf8(p).map_err(|_| ConnError::Protocol("payload is not UTF-8".into()))
            })
            .and_then(|s| Tobj::parse(&s, &limits).map_err(ConnError::from))
        {
            Ok(t) => t,
            Err(e) => break e,
        };
        if let Some(up) = on_up.take() {
            // The first packet must be the peer's hello, from the other role.
            if tobj.kind != HELLO_TYPE {
                break ConnError::Protocol(format!("expected {HELLO_TYPE}, got {}", tobj.kind));
            }
            let theirs = tobj.fields.req_text("role").unwrap_or("");
            if theirs == role.name() {
                break ConnError::Protocol(format!(
                    "both ends are {theirs}s: one end must serve (db agent, stager) and the other request (web)"
                ));
            }
            info!(%peer, role = role.name(), suite = cfg.suite.name(), "commlink up");
            up(handle.clone());
            continue;
        }
        match tobj.kind.as_str() {
            PING_TYPE => {}
            ERROR_TYPE if tobj.id == 0 => {
                break ConnError::Protocol(format!(
                    "peer closed the link: {}",
                    remote_error(&tobj)
                ));
            }
            _ if role == Role::Requester => {
                let waiter = match pending.lock() {
                    Ok(mut p) => p.remove(&tobj.id),
                    Err(poisoned) => poisoned.into_inner().remove(&tobj.id),
                };
                match waiter {
                    Some(w) => {
                        let _ = w.send(Ok(tobj));
                    }
                    None => debug!(id = tobj.id, "reply for a request no longer waiting"),
                }
            }
            _ => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break ConnError::Protocol("request limiter closed".into());
                };
                let svc = service.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    let id = tobj.id;
                    let mut reply = svc.call(tobj).await;
                    reply.id = id;
                    let _ = out.send(&reply).await;
                    drop(permit);
                });
            }
        }
    };
    alive.store(false, Ordering::SeqCst);
    match &err {
        ConnError::Closed => info!(%peer, "commlink closed by peer"),
        e => warn!(%peer, reason = %e, "commlink connection closed"),
    }
    if !matches!(err, ConnError::Closed | ConnError::Io(_)) {
        // Tell the peer why, then give the writer a moment to flush.
        let last = error_reply(err.code(), err.to_string());
        let _ = tokio::time::timeout(Duration::from_millis(200), out.close_with(&last)).await;
        // Closing a socket with unread input makes the kernel send RST, which can destroy
        // the error packet before the peer reads it; read and discard briefly instead.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                reader.buf.clear();
                reader.buf.reserve(16 * 1024);
                match reader.r.read_buf(&mut reader.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    fail_all(&pending, &LinkError::Down(err.to_string()));
    err
}

// ---------------------------------------------------------------------------------------
// Dialing.

async fn connect(addr: &str, cfg: &LinkConfig) -> std::io::Result<TcpStream> {
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for target in targets {
        let result = match cfg.source_ports {
            None => TcpStream::connect(target).await,
            Some((lo, hi)) => connect_from_range(target, lo, hi).await,
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects from a source port inside `lo..=hi`, trying random ports until one is free.
async fn connect_from_range(target: SocketAddr, lo: u16, hi: u16) -> std::io::Result<TcpStream> {
    use rand::RngExt as _;
    let span = u32::from(hi - lo) + 1;
    let tries = span.min(64);
    let mut last = std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free source port in {lo}-{hi}"),
    );
    for _ in 0..tries {
        let port = rand::rng().random_range(lo..=hi);
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        let local: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, port).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, port).into()
        };
        if let Err(e) = socket.bind(local) {
            last = e;
            continue;
        }
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Dials `addr` and runs the initiator's handshake within the connect timeout.
async fn dial(addr: &str, cfg: &LinkConfig) -> Result<(Established<TcpStream>, String), String> {
    let work = async {
        let stream = connect(addr, cfg)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let port = stream
            .local_addr()
            .map_err(|e| format!("no local address: {e}"))?
            .port();
        if cfg.suite.is_legacy() {
            warn!("commlink to {addr} uses the LEGACY single-DES suite des-cbc (56-bit key)");
        }
        debug!(
            addr,
            port,
            key_index = cfg.bag.index_for_port(port),
            "commlink dialed"
        );
        initiate(stream, cfg, port)
            .await
            .map(|e| (e, addr.to_owned()))
            .map_err(|e| format!("handshake with {addr} failed: {e}"))
    };
    match tokio::time::timeout(cfg.connect_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {addr} within {:?}",
            cfg.connect_timeout
        )),
    }
}

/// Accepts one TCP connection's handshake within the connect timeout.
async fn accept_one(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &LinkConfig,
) -> Result<Established<TcpStream>, String> {
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(
        cfg.connect_timeout,
        accept_handshake(stream, cfg, peer.port()),
    )
    .await
    {
        Ok(Ok(e)) => {
            if cfg.suite.is_legacy() {
                warn!(%peer, "commlink uses the LEGACY single-DES suite des-cbc (56-bit key)");
            }
            Ok(e)
        }
        Ok(Err(e)) => Err(format!("handshake from {peer} refused: {e}")),
        Err(_) => Err(format!(
            "no handshake from {peer} within {:?}",
            cfg.connect_timeout
        )),
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The dialing side of a link, in either direction: dials `addr`, hands each established
/// connection to `connected` (which returns when it drops), and dials again. Failed dials
/// go to `failed` and back off exponentially (50 ms up to 2 s); each outage warns once.
async fn redial<F>(
    addr: &str,
    cfg: &LinkConfig,
    mut connected: impl FnMut(Established<TcpStream>, String) -> F,
    mut failed: impl FnMut(String),
) where
    F: Future<Output = ()>,
{
    let mut backoff = BACKOFF_MIN;
    let mut reported = false;
    loop {
        match dial(addr, cfg).await {
            Ok((est, peer)) => {
                backoff = BACKOFF_MIN;
                reported = false;
                connected(est, peer).await;
            }
            Err(e) => {
                if !reported {
                    warn!("{e}; retrying");
                    reported = true;
                }
                failed(e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The requester.

/// The requester side of a link: sends requests, matches replies, reconnects by itself.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    cfg: LinkConfig,
    current: watch::Receiver<Option<ConnHandle>>,
    last_error: Arc<Mutex<String>>,
    next_id: AtomicU64,
    _maintainer: AbortOnDrop,
}

fn set_error(slot: &Mutex<String>, e: String) {
    match slot.lock() {
        Ok(mut s) => *s = e,
        Err(p) => *p.into_inner() = e,
    }
}

impl Client {
    /// A client that dials `addr` (host:port) now, and again whenever the link drops.
    pub fn dial(addr: impl Into<String>, cfg: LinkConfig) -> Client {
        let addr = addr.into();
        let (tx, rx) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(format!("not yet connected to {addr}")));
        let errs = last_error.clone();
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            let connected = |est, peer| {
                let (tx, c, errs, addr) = (tx.clone(), c.clone(), errs.clone(), addr.clone());
                async move {
                    let tx2 = tx.clone();
                    let err = run_connection(est, c, Role::Requester, Arc::new(NoService), peer, {
                        move |h| {
                            let _ = tx2.send(Some(h));
                        }
                    })
                    .await;
                    let _ = tx.send(None);
                    set_error(&errs, format!("link to {addr} dropped: {err}"));
                }
            };
            redial(&addr, &c, connected, |e| set_error(&errs, e)).await
        });
        Client {
            inner: Arc::new(ClientInner {
                cfg,
                current: rx,
                last_error,
                next_id: AtomicU64::new(1),
                _maintainer: AbortOnDrop(task),
            }),
        }
    }

    /// A client whose responder dials in (seed 000's direction): accepts connections on
    /// `listener` and sends requests over the newest live one.
    pub fn accept(listener: TcpListener, cfg: LinkConfig) -> Client {
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let last_error = Arc::new(Mutex::new(format!(
            "no responder has dialed in to {addr} yet"
        )));
        let errs = last_error.clone();
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("accept on {addr} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (c, tx, errs) = (c.clone(), tx.clone(), errs.clone());
                conns.spawn(async move {
                    let est = match accept_one(stream, peer, &c).await {
                        Ok(e) => e,
                        Err(e) => {
                            warn!("{e}");
                            set_error(&errs, e);
                            return;
                        }
                    };
                    let mine: Arc<Mutex<Option<Arc<AtomicBool>>>> = Arc::new(Mutex::new(None));
                    let mine2 = mine.clone();
                    let tx2 = tx.clone();
                    let err = run_connection(est, c, Role::Requester, Arc::new(NoService), peer.to_string(), move |h| {
                        if let Ok(mut m) = mine2.lock() {
                            *m = Some(h.alive.clone());
                        }
                        let _ = tx2.send(Some(h));
                    })
                    .await;
                    // Clear the current handle only if it is still this connection's.
                    let ours = mine.lock().ok().and_then(|m| m.clone());
                    tx.send_if_modified(|cur| {
                        let same = matches!((cur.as_ref(), ours.as_ref()), (Some(h), Some(a)) if Arc::ptr_eq(&h.alive, a));
                        if same {
                            *cur = None;
                        }
                        same
                    });
                    set_error(&errs, format!("link from {peer} dropped: {err}"));
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Client {
            inner: Arc::new(ClientInner {
                cfg,
                current: rx,
                last_error,
                next_id: AtomicU64::new(1),
                _maintainer: AbortOnDrop(task),
            }),
        }
    }

    fn live(&self) -> Option<ConnHandle> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .filter(|h| h.alive.load(Ordering::SeqCst))
            .cloned()
    }

    /// Waits up to the connect timeout for a live connection.
    async fn connection(&self) -> Result<ConnHandle, LinkError> {
        if let Some(h) = self.live() {
            return Ok(h);
        }
        let mut rx = self.inner.current.clone();
        let wait = rx.wait_for(|h| h.as_ref().is_some_and(|h| h.alive.load(Ordering::SeqCst)));
        match tokio::time::timeout(self.inner.cfg.connect_timeout, wait).await {
            Ok(Ok(h)) => h.clone().ok_or_else(|| self.down()),
            _ => Err(self.down()),
        }
    }

    fn down(&self) -> LinkError {
        let e = match self.inner.last_error.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        LinkError::Down(e)
    }

    /// Sends one request and waits for its reply. An `ffs.error` reply becomes
    /// [`LinkError::Remote`].
    pub async fn call(&self, mut request: Tobj) -> Result<Tobj, LinkError> {
        let conn = self.connection().await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        let (otx, orx) = oneshot::channel();
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(id, otx);
        }
        let remove = || {
            if let Ok(mut p) = conn.pending.lock() {
                p.remove(&id);
            }
        };
        // If the write fails the connection is going down; its reader will tell every
        // waiting request why (e.g. the peer's refusal), so wait briefly for that.
        let wait = if conn.out.send(&request).await.is_err() {
            Duration::from_millis(500).min(self.inner.cfg.request_timeout)
        } else {
            self.inner.cfg.request_timeout
        };
        match tokio::time::timeout(wait, orx).await {
            Ok(Ok(Ok(reply))) if reply.kind == ERROR_TYPE => Err(remote_error(&reply)),
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.down()),
            Err(_) if wait < self.inner.cfg.request_timeout => {
                remove();
                Err(self.down())
            }
            Err(_) => {
                remove();
                Err(LinkError::Timeout(self.inner.cfg.request_timeout))
            }
        }
    }

    /// Sends a typed request and decodes the typed reply.
    pub async fn request<R: Request>(&self, request: &R) -> Result<R::Response, LinkError> {
        use crate::tobj::Message as _;
        let reply = self.call(request.to_tobj(0)).await?;
        Ok(R::Response::from_tobj(&reply)?)
    }

    /// Whether a connection is up right now.
    pub fn is_up(&self) -> bool {
        self.live().is_some()
    }

    /// Waits until a connection is up (for start-up ordering and tests).
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.current.clone();
        let wait = rx.wait_for(|h| h.as_ref().is_some_and(|h| h.alive.load(Ordering::SeqCst)));
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }
}

// ---------------------------------------------------------------------------------------
// The responder.

/// Serves `service` to every requester that connects to `listener` (the patent's
/// direction), until `shutdown` completes; open connections are then closed.
pub async fn serve<S: Service>(
    listener: TcpListener,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!("commlink accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (cfg, service) = (cfg.clone(), service.clone());
                conns.spawn(async move {
                    match accept_one(stream, peer, &cfg).await {
                        Ok(est) => {
                            run_connection(est, cfg, Role::Responder, service, peer.to_string(), |_| {}).await;
                        }
                        Err(e) => warn!("{e}"),
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }
    }
    conns.shutdown().await;
    Ok(())
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
    tokio::pin!(shutdown);
    let connected = |est, peer| {
        let (cfg, service) = (cfg.clone(), service.clone());
        async move {
            run_connection(est, cfg, Role::Responder, service, peer, |_| {}).await;
        }
    };
    let work = redial(&addr, &cfg, connected, |_| {});
    tokio::select! {
        _ = &mut shutdown => {}
        _ = work => {}
    }
}

#[doc(hidden)]
/// Test hooks: run the handshake and a connection over any byte stream (not a stable API).
pub mod testing {
    use super::*;

    /// Runs the responder over an arbitrary stream as the acceptor, with `port` as the
    /// initiator's port.
    pub async fn serve_stream<S, Svc>(stream: S, cfg: LinkConfig, port: u16, service: Arc<Svc>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        Svc: Service,
    {
        if let Ok(est) = accept_handshake(stream, &cfg, port).await {
            run_connection(est, cfg, Role::Responder, service, "stream".into(), |_| {}).await;
        }
    }
}
