//! The HTTP relay carrier ([`Relay`]): the link for an inside host whose proxy allows no
//! `CONNECT`, or inspects TLS. Seed 003's design: the agent opens an *attachment* with a
//! POST, keeps one long-lived response open as its *receive channel* (web → agent lines),
//! and sends its own lines in POST bodies (agent → web). Both directions are a reliable
//! ordered line stream (`relay_proto`): numbered, acknowledged, resent after a reconnect,
//! duplicates dropped; so when a POST or the receive channel breaks, the agent reconnects
//! at once and the same commlink session goes on. The commlink itself runs unchanged on
//! the [`RelayStream`] this carrier opens, end to end: the web's hub and any proxy see only
//! sealed packets.
//!
//! Requests are HTTP/1.1 over hyper: `relay+http://` directly or through a forward proxy
//! (absolute-form requests, Basic auth), `relay+https://` directly or through a `CONNECT`
//! tunnel, trusting the system roots, a CA file (e.g. a TLS-inspecting proxy's), or one
//! pinned certificate. The key index is a virtual port chosen per attachment.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::relay_proto::{
    Incoming, Outgoing, Record, RecordDecoder, RelayProtoError, Verdict, Window,
};
use super::relay_stream::{Event, Lines, RelayStream};
use super::trust::{self, Trust};
use super::{AddrError, Carrier, LinkAddr, LinkConfig, Proxy, lock};

/// Settings of the relay carrier.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// A forward proxy, `http://[user:pass@]host:port`.
    pub proxy: Option<String>,
    /// Certificate trust for `relay+https://`.
    pub trust: Trust,
    /// Long-poll receive channel (each response ends once it carried lines, or after one
    /// heartbeat) from the start, instead of one streamed response: for proxies that hold
    /// a response until it is complete. Without it the carrier still switches to long-poll
    /// by itself when a streamed channel brings nothing at all within a second (the web
    /// writes at once when a channel opens).
    pub poll: bool,
    /// Interval of the agent's heartbeat POST; a receive channel silent for three
    /// intervals of the web's heartbeat (taken as this) is reconnected.
    pub heartbeat: Duration,
    /// How long requests may keep failing before the attachment is given up (the web
    /// expires it after its own idle time anyway).
    pub give_up: Duration,
    /// Largest POST body sent.
    pub max_body: usize,
    /// Lines the agent holds unacknowledged before it stops reading from the commlink.
    pub window: Window,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            proxy: None,
            trust: Trust::System,
            poll: false,
            heartbeat: Duration::from_secs(10),
            give_up: Duration::from_secs(60),
            max_body: (1 << 20) + 32 * 1024,
            window: Window {
                lines: 1024,
                bytes: 4 << 20,
            },
        }
    }
}

/// Why a relay carrier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RelaySetupError {
    /// The relay URL or the proxy URL.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// The TLS trust settings.
    #[error("relay TLS: {0}")]
    Tls(String),
}

/// The relay carrier to one web frontend.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    host_port: String,
    base: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    proxy: Option<Proxy>,
    opts: RelayOptions,
    label: String,
    /// Long-poll receive channels: set from the options, or for good once a streamed
    /// channel brought nothing within [`FIRST_BYTE`] (a proxy holding the response).
    poll: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("target", &self.inner.label)
            .finish()
    }
}

/// `relay+http[s]://host[:port][/prefix]` → (tls, host, host:port, prefix without the
/// trailing slash).
fn parse_url(url: &str) -> Result<(bool, String, String, String), AddrError> {
    let bad = || AddrError::Malformed(url.to_owned());
    let v = url.trim();
    let (scheme, rest) = v.split_once("://").ok_or_else(bad)?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "relay+http" => false,
        "relay+https" => true,
        _ => {
            return Err(AddrError::UnknownScheme {
                value: url.to_owned(),
                scheme: scheme.to_owned(),
            });
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        || path.contains("//")
    {
        return Err(bad());
    }
    let default_port = if tls { 443 } else { 80 };
    let host_port = match authority.rsplit_once(':') {
        Some((_, p)) if !authority.ends_with(']') && !p.contains(']') => authority.to_owned(),
        _ => format!("{authority}:{default_port}"),
    };
    let hp = LinkAddr::parse(&host_port).map_err(|_| bad())?;
    let host_port = hp.host_port().to_owned();
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => return Err(bad()),
    };
    Ok((tls, host, host_port, path.to_owned()))
}

impl Relay {
    /// A relay carrier to the web at `url` (`relay+http://host[:port][/prefix]` or
    /// `relay+https://…`; the endpoints are `<prefix>/v1/relay/…`).
    pub fn new(url: &str, opts: RelayOptions) -> Result<Relay, RelaySetupError> {
        let (tls, host, host_port, prefix) = parse_url(url)?;
        let proxy = match &opts.proxy {
            Some(p) => Some(Proxy::new(p, host_port.clone())?),
            None => None,
        };
        let tls = if tls {
            let cfg = client_tls(&opts.trust)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| RelaySetupError::Tls(format!("{host:?}: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let label = match &proxy {
            Some(p) => format!(
                "relay {scheme}://{host_port}{prefix} via proxy {}",
                p.address()
            ),
            None => format!("relay {scheme}://{host_port}{prefix}"),
        };
        Ok(Relay {
            inner: Arc::new(Inner {
                host_port,
                base: format!("{prefix}/v1/relay"),
                tls,
                proxy,
                poll: std::sync::atomic::AtomicBool::new(opts.poll),
                opts,
                label,
            }),
        })
    }
}

fn client_tls(trust: &Trust) -> Result<rustls::ClientConfig, RelaySetupError> {
    trust::client_config(trust).map_err(|e| RelaySetupError::Tls(e.to_string()))
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One HTTP/1.1 connection to the web (or the proxy).
type Conn = SendRequest<Full<Bytes>>;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// What every request to one endpoint repeats.
struct RequestHead {
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
}

/// Why a request failed: worth retrying on a new connection, or the end.
enum Failure {
    Retry(String),
    Fatal(String),
}

impl Inner {
    async fn connect(&self, cfg: &LinkConfig) -> std::io::Result<Conn> {
        let io: Box<dyn Io> = match (&self.proxy, &self.tls) {
            (None, None) => Box::new(tcp(&self.host_port).await?),
            (Some(p), None) => Box::new(tcp(p.address()).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("proxy {}: {e}", p.address()))
            })?),
            (proxy, Some((tls, name))) => {
                let stream = match proxy {
                    Some(p) => p.open(cfg).await?.0,
                    None => tcp(&self.host_port).await?,
                };
                Box::new(tls.connect(name.clone(), stream).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS with {}: {e}", self.host_port))
                })?)
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(io_err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// The URI and headers of requests to `tail` (made once for the requests a loop
    /// repeats).
    fn head(&self, tail: &str) -> RequestHead {
        let path = format!("{}/{tail}", self.base);
        let absolute = self.proxy.is_some() && self.tls.is_none();
        let uri = if absolute {
            format!("http://{}{path}", self.host_port)
        } else {
            path
        };
        let mut b = Request::post(uri)
            .header(hyper::header::HOST, &self.host_port)
            .header(hyper::header::USER_AGENT, "ffs-commlink-relay")
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .header(hyper::header::CACHE_CONTROL, "no-store");
        if absolute && let Some(token) = self.proxy.as_ref().and_then(Proxy::basic_auth) {
            b = b.header(hyper::header::PROXY_AUTHORIZATION, format!("Basic {token}"));
        }
        match b.body(()) {
            Ok(req) => {
                let (parts, ()) = req.into_parts();
                RequestHead {
                    uri: parts.uri,
                    headers: parts.headers,
                }
            }
            // Unreachable: the prefix and the host were checked by `parse_url`, the id
            // is the hub's; the request then goes to `/` and is refused.
            Err(_) => RequestHead {
                uri: hyper::Uri::from_static("/"),
                headers: hyper::HeaderMap::new(),
            },
        }
    }

    fn request(head: &RequestHead, body: Vec<u8>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
        req
    }

    /// Sends a request on `conn` (connecting first if needed); returns the status and the
    /// response (body unread).
    async fn exchange(
        &self,
        conn: &mut Option<Conn>,
        cfg: &LinkConfig,
        head: &RequestHead,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let mut c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => tokio::time::timeout(cfg.connect_timeout, self.connect(cfg))
                .await
                .map_err(|_| {
                    Failure::Retry(format!("no connection within {:?}", cfg.connect_timeout))
                })?
                .map_err(|e| Failure::Retry(e.to_string()))?,
        };
        c.ready().await.map_err(|e| Failure::Retry(e.to_string()))?;
        let resp = c
            .send_request(Inner::request(head, body))
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = resp.status();
        *conn = Some(c);
        match status {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(Failure::Fatal(format!(
                "the web no longer knows this relay attachment ({} answered 404: expired or closed)",
                self.host_port
            ))),
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                *conn = None;
                Err(Failure::Retry(format!("HTTP {s}")))
            }
            s => Err(Failure::Fatal(format!(
                "the relay request was refused: HTTP {s}"
            ))),
        }
    }
}

async fn tcp(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let s = super::tcp::connect(addr, None).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Reads a whole (small) response body, bounded.
async fn small_body(resp: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, Failure> {
    let limited = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
    limited
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| Failure::Retry(format!("response body: {e}")))
}

impl Carrier for Relay {
    type Stream = RelayStream;

    fn target(&self) -> &str {
        &self.inner.label
    }

    fn virtual_port(&self) -> bool {
        true
    }

    async fn open(&self, cfg: &LinkConfig) -> std::io::Result<(RelayStream, u16)> {
        let inner = &self.inner;
        let mut conn = None;
        let resp = inner
            .exchange(&mut conn, cfg, &self.inner.head("open"), Vec::new())
            .await
            .map_err(|f| match f {
                Failure::Retry(e) | Failure::Fatal(e) => io_err(format!("relay open: {e}")),
            })?;
        let body = small_body(resp).await.map_err(|f| match f {
            Failure::Retry(e) | Failure::Fatal(e) => io_err(format!("relay open: {e}")),
        })?;
        let id = std::str::from_utf8(&body).unwrap_or("").trim();
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io_err("relay open: the answer is not an attachment id"));
        }
        let wake_poster = Arc::new(Notify::new());
        let link_ended = Arc::new(Notify::new());
        let end_why = Arc::new(Mutex::new(None));
        let (w, l, e) = (wake_poster.clone(), link_ended.clone(), end_why.clone());
        let lines = Lines::new(
            LINK_BUFFER,
            LINK_BUFFER,
            cfg.max_line,
            Box::new(move |event| match event {
                Event::Lines => w.notify_one(),
                Event::Ended(why) => {
                    *lock(&e) = why;
                    l.notify_one();
                }
            }),
        );
        let stream = lines.stream();
        let pump = Pump {
            relay: inner.clone(),
            cfg: cfg.clone(),
            id: id.to_owned(),
            state: Arc::new(Mutex::new(State {
                out: Outgoing::new(inner.opts.window),
                inc: Incoming::default(),
                ack_sent: 0,
            })),
            lines,
            wake_poster,
            link_ended,
            end_why,
        };
        debug!(target = %inner.label, "relay attachment opened");
        tokio::spawn(pump.run(conn));
        Ok((stream, virtual_port(cfg.source_ports)))
    }
}

/// A fresh virtual port: uniformly random in the configured source-port range, or in
/// 1..=65535.
fn virtual_port(range: Option<(u16, u16)>) -> u16 {
    use rand::RngExt as _;
    let (lo, hi) = range.unwrap_or((1, u16::MAX));
    rand::rng().random_range(lo.max(1)..=hi.max(1))
}

struct State {
    out: Outgoing,
    inc: Incoming,
    /// The acknowledgement last sent to the web.
    ack_sent: u64,
}

/// The agent's end of one attachment.
struct Pump {
    relay: Arc<Inner>,
    cfg: LinkConfig,
    id: String,
    state: Arc<Mutex<State>>,
    /// What the commlink's stream shares with the attachment.
    lines: Arc<Lines>,
    /// Lines queued, an acknowledgement due, or room in the window.
    wake_poster: Arc<Notify>,
    /// The commlink ended its side, and what was wrong with its bytes if anything.
    link_ended: Arc<Notify>,
    end_why: Arc<Mutex<Option<String>>>,
}

/// Bytes buffered between the commlink and the attachment, each way.
const LINK_BUFFER: usize = 256 * 1024;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// How long a streamed receive channel may stay without its first byte before the
/// carrier concludes the proxy holds responses and long-polls instead.
const FIRST_BYTE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long an acknowledgement may wait to ride on a data POST.
const ACK_DELAY: Duration = Duration::from_millis(200);

impl Pump {
    async fn run(self, conn: Option<Conn>) {
        let reason = tokio::select! {
            () = self.link_ended.notified() => lock(&self.end_why).take(),
            r = self.post_loop(conn) => r,
            r = self.receive_loop() => r,
        };
        let local = reason.is_none();
        let reason = reason.unwrap_or_else(|| "the agent's link ended".into());
        if local {
            // Tell the web at once instead of letting the attachment expire.
            let mut body = Vec::new();
            Record::Close("link ended".into()).encode(&mut body);
            let mut conn = None;
            let head = self.relay.head(&format!("{}/send", self.id));
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.relay.exchange(&mut conn, &self.cfg, &head, body),
            )
            .await;
        } else {
            warn!(target = %self.relay.label, "relay attachment lost: {reason}");
        }
        self.lines.close(format!("{}: {reason}", self.relay.label));
    }

    /// Sends the unacknowledged lines and acknowledgements in POSTs, one at a time.
    async fn post_loop(&self, mut conn: Option<Conn>) -> Option<String> {
        let head = self.relay.head(&format!("{}/send", self.id));
        let mut backoff = BACKOFF_MIN;
        let mut last_ok = Instant::now();
        let mut last_post = Instant::now();
        loop {
            // Wait for something to send: lines, an acknowledgement due (for ACK_DELAY
            // from when it was first seen), or the heartbeat.
            let mut ack_seen: Option<Instant> = None;
            loop {
                let woken = self.wake_poster.notified();
                let (lines, ack_due) = {
                    let mut st = lock(&self.state);
                    self.lines.take_up(&mut st.out);
                    (st.out.unacked() > 0, st.inc.ack() > st.ack_sent)
                };
                if lines {
                    break;
                }
                let beat = self
                    .relay
                    .opts
                    .heartbeat
                    .saturating_sub(last_post.elapsed());
                let wait = if ack_due {
                    let since = *ack_seen.get_or_insert_with(Instant::now);
                    ACK_DELAY.saturating_sub(since.elapsed()).min(beat)
                } else {
                    beat
                };
                if wait.is_zero() {
                    break;
                }
                if tokio::time::timeout(wait, woken).await.is_err() {
                    break;
                }
            }
            let (body, ack) = {
                let st = lock(&self.state);
                let mut body = Vec::new();
                let ack = st.inc.ack();
                Record::Ack(ack).encode(&mut body);
                st.out.encode_from(0, self.relay.opts.max_body, &mut body);
                (body, ack)
            };
            last_post = Instant::now();
            let result = match self.relay.exchange(&mut conn, &self.cfg, &head, body).await {
                Ok(resp) => small_body(resp).await,
                Err(f) => Err(f),
            };
            match result {
                Ok(answer) => {
                    backoff = BACKOFF_MIN;
                    last_ok = Instant::now();
                    let records = match super::relay_proto::decode_body(&answer, 64) {
                        Ok(r) => r,
                        Err(e) => return Some(format!("bad answer to a relay POST: {e}")),
                    };
                    let mut progressed = false;
                    for r in records {
                        match r {
                            Record::Ack(n) => {
                                let mut st = lock(&self.state);
                                let before = st.out.unacked();
                                if let Err(e) = st.out.ack(n) {
                                    return Some(e.to_string());
                                }
                                progressed = st.out.unacked() < before;
                                st.ack_sent = st.ack_sent.max(ack);
                            }
                            Record::Close(why) => {
                                return Some(format!("the web closed the relay: {why}"));
                            }
                            Record::Data { .. } => {
                                return Some("unexpected data in a POST answer".into());
                            }
                        }
                    }
                    if !progressed && lock(&self.state).out.unacked() > 0 {
                        // The web's inbound buffer is full: give it a moment.
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                }
                Err(Failure::Fatal(e)) => return Some(e),
                Err(Failure::Retry(e)) => {
                    conn = None;
                    if last_ok.elapsed() > self.relay.opts.give_up {
                        return Some(format!(
                            "no relay POST got through for {:?}: {e}",
                            self.relay.opts.give_up
                        ));
                    }
                    debug!(target = %self.relay.label, "relay POST failed, again in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Keeps a receive channel open and delivers its lines into the commlink.
    async fn receive_loop(&self) -> Option<String> {
        let mut conn: Option<Conn> = None;
        let mut backoff = BACKOFF_MIN;
        let mut last_ok = Instant::now();
        let silence = self.relay.opts.heartbeat * 3;
        let mut cuts = 0u64;
        loop {
            let ack = lock(&self.state).inc.ack();
            let tail = format!(
                "{}/recv?ack={ack}&beat={}{}",
                self.id,
                self.relay.opts.heartbeat.as_millis(),
                if self.relay.poll.load(std::sync::atomic::Ordering::Relaxed) {
                    "&poll=1"
                } else {
                    ""
                }
            );
            // A streamed channel's head comes at once; a proxy that holds responses until
            // they end holds it too.
            let polling = self.relay.poll.load(std::sync::atomic::Ordering::Relaxed);
            let head_wait = if polling {
                silence
            } else {
                FIRST_BYTE.min(silence)
            };
            let head = self.relay.head(&tail);
            let exchange = self.relay.exchange(&mut conn, &self.cfg, &head, Vec::new());
            let answer = match tokio::time::timeout(head_wait, exchange).await {
                Ok(a) => a,
                Err(_) => {
                    conn = None;
                    if !polling {
                        self.switch_to_poll();
                    }
                    continue;
                }
            };
            let failure = match answer {
                Err(Failure::Fatal(e)) => return Some(e),
                Err(Failure::Retry(e)) => e,
                Ok(resp) => {
                    backoff = BACKOFF_MIN;
                    last_ok = Instant::now();
                    match self.read_channel(resp, silence).await {
                        Ok(Ended::Complete) => continue,
                        Ok(Ended::Closed(why)) => {
                            return Some(format!("the web closed the relay: {why}"));
                        }
                        Err(ChannelError::Fatal(e)) => return Some(e),
                        Err(ChannelError::Cut(e)) => {
                            cuts += 1;
                            conn = None;
                            info!(target = %self.relay.label, cuts, "relay receive channel cut ({e}); reconnecting");
                            continue; // at once
                        }
                    }
                }
            };
            conn = None;
            if last_ok.elapsed() > self.relay.opts.give_up {
                return Some(format!(
                    "no relay receive channel for {:?}: {failure}",
                    self.relay.opts.give_up
                ));
            }
            debug!(target = %self.relay.label, "relay receive channel failed, again in {backoff:?}: {failure}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn switch_to_poll(&self) {
        if !self
            .relay
            .poll
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            warn!(
                target = %self.relay.label,
                "a streamed relay receive channel brought nothing within {FIRST_BYTE:?}: the proxy seems to hold responses until they end; long-polling from now on"
            );
        }
    }

    async fn read_channel(
        &self,
        resp: hyper::Response<hyper::body::Incoming>,
        silence: Duration,
    ) -> Result<Ended, ChannelError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut body = resp.into_body();
        let mut dec = RecordDecoder::new(self.cfg.max_line);
        let mut first = !self.relay.poll.load(Relaxed);
        loop {
            let wait = if first {
                FIRST_BYTE.min(silence)
            } else {
                silence
            };
            let frame = match tokio::time::timeout(wait, body.frame()).await {
                Err(_) if first => {
                    self.switch_to_poll();
                    return Err(ChannelError::Cut("no first byte".into()));
                }
                Err(_) => return Err(ChannelError::Cut(format!("silent for {silence:?}"))),
                Ok(None) => {
                    // A record cut in half at the end is dropped; the web sends it again.
                    return if dec.partial() {
                        Err(ChannelError::Cut("ended inside a record".into()))
                    } else {
                        Ok(Ended::Complete)
                    };
                }
                Ok(Some(Err(e))) => return Err(ChannelError::Cut(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            first = false;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            dec.push(&data);
            loop {
                let record = match dec.next_record() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => return Err(ChannelError::Fatal(e.to_string())),
                };
                match record {
                    Record::Data { seq, line } => {
                        let verdict = lock(&self.state).inc.check(seq);
                        match verdict {
                            Ok(Verdict::Duplicate) => {}
                            Ok(Verdict::Deliver) => {
                                if self.lines.deliver(&line).await.is_err() {
                                    return Err(ChannelError::Fatal(
                                        "the agent's link ended".into(),
                                    ));
                                }
                                let newly_due = {
                                    let mut st = lock(&self.state);
                                    let due = st.inc.ack() > st.ack_sent;
                                    st.inc.delivered();
                                    !due
                                };
                                // An acknowledgement now due: the poster sends it within
                                // ACK_DELAY (with the reply, mostly). One already due has
                                // its delay running, and the poster looks again after
                                // each POST, so it is not woken for every line.
                                if newly_due {
                                    self.wake_poster.notify_one();
                                }
                            }
                            Err(e @ RelayProtoError::Gap { .. }) => {
                                return Err(ChannelError::Cut(e.to_string()));
                            }
                            Err(e) => return Err(ChannelError::Fatal(e.to_string())),
                        }
                    }
                    Record::Ack(n) => {
                        if let Err(e) = lock(&self.state).out.ack(n) {
                            return Err(ChannelError::Fatal(e.to_string()));
                        }
                        self.wake_poster.notify_one(); // room in the window
                    }
                    Record::Close(why) => return Ok(Ended::Closed(why)),
                }
            }
        }
    }
}

enum Ended {
    Complete,
    Closed(String),
}

enum ChannelError {
    Cut(String),
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let (tls, host, hp, prefix) =
            parse_url("relay+https://web.example.com/link/").expect("parses");
        assert!(tls);
        assert_eq!(
            (host.as_str(), hp.as_str(), prefix.as_str()),
            ("web.example.com", "web.example.com:443", "/link")
        );
        let (tls, host, hp, prefix) = parse_url("relay+http://127.0.0.1:8080").expect("parses");
        assert!(!tls);
        assert_eq!(
            (host.as_str(), hp.as_str(), prefix.as_str()),
            ("127.0.0.1", "127.0.0.1:8080", "")
        );
        let (_, host, hp, _) = parse_url("RELAY+HTTP://[::1]:81/x").expect("parses");
        assert_eq!((host.as_str(), hp.as_str()), ("::1", "[::1]:81"));
        assert!(matches!(
            parse_url("https://web/"),
            Err(AddrError::UnknownScheme { .. })
        ));
        for bad in [
            "relay+http://",
            "relay+http://web:0/",
            "relay+http://web/a?b",
            "relay+http://u@web/",
            "relay+http://web//x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn requests_through_a_proxy_use_the_absolute_form_and_its_credentials() {
        let opts = RelayOptions {
            proxy: Some("http://al:pw@proxy:3128".into()),
            ..RelayOptions::default()
        };
        let r = Relay::new("relay+http://web:8080/l", opts).expect("builds");
        let req = Inner::request(&r.inner.head("open"), Vec::new());
        assert_eq!(req.method(), hyper::Method::POST);
        assert_eq!(req.uri().to_string(), "http://web:8080/l/v1/relay/open");
        assert_eq!(req.headers()[hyper::header::HOST], "web:8080");
        assert!(
            req.headers()
                .contains_key(hyper::header::PROXY_AUTHORIZATION)
        );
        assert_eq!(r.target(), "relay http://web:8080/l via proxy proxy:3128");
        let direct =
            Relay::new("relay+http://web:8080/l", RelayOptions::default()).expect("builds");
        let req = Inner::request(&direct.inner.head("x/send"), Vec::new());
        assert_eq!(req.uri().to_string(), "/l/v1/relay/x/send");
        assert!(
            !req.headers()
                .contains_key(hyper::header::PROXY_AUTHORIZATION)
        );
    }
}
