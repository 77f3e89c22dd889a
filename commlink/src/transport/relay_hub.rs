//! The web end of the HTTP relay ([`RelayHub`]): attachments, what each holds, and the
//! answers to the agent's three requests, independent of the HTTP server that carries them
//! (the web frontend mounts them under `<prefix>/v1/relay/`, tests in a small hyper host).
//!
//! - `open` creates an attachment and hands its [`RelayStream`] to the acceptor (the
//!   commlink handshake then runs on it as on any accepted connection); the id it returns
//!   is 256 random bits in hex, a bearer secret: kept only as its SHA-256, never logged.
//! - `send` takes a POST body of records (the agent's numbered lines and its
//!   acknowledgement), delivers new lines in order, drops duplicates, and answers with the
//!   web's acknowledgement. Lines that do not fit the inbound buffer are not acknowledged;
//!   the agent sends them again.
//! - `receive` opens the receive channel: a response body that first repeats every line the
//!   agent has not acknowledged, then carries new lines as they come and `A n` heartbeats.
//!   A newer channel of the same attachment ends the older one. In poll mode the body ends
//!   once it has carried lines, or after [`RelayLimits::poll_wait`] (for proxies that hold
//!   a response until it is complete).
//!
//! Bounded: attachments per address and in all, open receive channels, POST body size, and
//! the lines held per direction. An attachment no request has touched for
//! [`RelayLimits::idle_expiry`] is closed; its stream then fails with that reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tracing::{info, warn};

use super::lock;
use super::relay_proto::{Incoming, Outgoing, Record, RelayProtoError, Verdict, Window};
use super::relay_stream::{Event, Lines, RelayStream};

/// What a hub lets outsiders make it hold, and its timing.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Open attachments per client address (a proxy's address counts once).
    pub per_address: usize,
    /// Open attachments in all.
    pub total: usize,
    /// Open receive channels in all.
    pub receive_channels: usize,
    /// Largest POST body, in bytes (must exceed the link's longest line).
    pub max_body: usize,
    /// Lines held per direction of an attachment (unacknowledged outbound, undelivered
    /// inbound).
    pub window: Window,
    /// An attachment no request touched for this long is closed.
    pub idle_expiry: Duration,
    /// Interval of `A n` heartbeats on a receive channel.
    pub heartbeat: Duration,
    /// Longest a poll-mode receive request is held without lines.
    pub poll_wait: Duration,
    /// Longest commlink line carried.
    pub max_line: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            per_address: 8,
            total: 256,
            receive_channels: 256,
            max_body: (1 << 20) + 64 * 1024,
            window: Window {
                lines: 1024,
                bytes: 4 << 20,
            },
            idle_expiry: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            poll_wait: Duration::from_secs(20),
            max_line: 1 << 20,
        }
    }
}

/// A refused relay request, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No such attachment (never existed, expired or closed): 404.
    #[error("no such relay attachment")]
    NotFound,
    /// Too many attachments or receive channels: 429.
    #[error("too many relay {0}")]
    TooMany(&'static str),
    /// Body larger than [`RelayLimits::max_body`]: 413.
    #[error("relay body larger than {0} bytes")]
    TooLarge(usize),
    /// Records that break the relay protocol: 400 (the attachment is closed).
    #[error("{0}")]
    Bad(String),
}

impl RelayError {
    /// The HTTP status code for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            RelayError::NotFound => 404,
            RelayError::TooMany(_) => 429,
            RelayError::TooLarge(_) => 413,
            RelayError::Bad(_) => 400,
        }
    }
}

/// The shortest heartbeat a receive channel may ask for.
const MIN_BEAT: Duration = Duration::from_millis(500);

/// What a receive request asks for (its query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiveParams {
    /// The agent has every line up to this number (`ack=N`).
    pub ack: u64,
    /// Long-poll: end the response once it carried lines (`poll=1`).
    pub poll: bool,
    /// The agent's heartbeat (`beat=MS`): the channel beats at least this often (not
    /// below 500 ms), and a poll ends within it.
    pub beat: Option<Duration>,
}

impl ReceiveParams {
    /// Parses `ack=N[&poll=1][&beat=MS]`; unknown keys are ignored, a malformed number is
    /// refused.
    pub fn from_query(query: &str) -> Result<ReceiveParams, RelayError> {
        let mut p = ReceiveParams::default();
        let bad = || {
            RelayError::Bad(format!(
                "bad receive query {:?}",
                query.chars().take(80).collect::<String>()
            ))
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("ack", v)) => p.ack = v.parse().map_err(|_| bad())?,
                Some(("poll", v)) => p.poll = v == "1",
                Some(("beat", v)) => {
                    p.beat = Some(Duration::from_millis(v.parse().map_err(|_| bad())?));
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// What is done with each new attachment's stream (the web hands it to its acceptor),
/// with a description of the peer for logs.
pub type OnAttach = Arc<dyn Fn(RelayStream, String) + Send + Sync>;

/// The web end of the relay. Cheap to clone.
#[derive(Clone)]
pub struct RelayHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    limits: RelayLimits,
    attachments: Mutex<HashMap<[u8; 32], Arc<Attachment>>>,
    channels: Arc<AtomicUsize>,
    on_attach: OnAttach,
}

struct Attachment {
    key: [u8; 32],
    tag: String,
    peer: IpAddr,
    /// What the commlink's stream shares with this attachment.
    lines: Arc<Lines>,
    state: Mutex<State>,
}

struct State {
    out: Outgoing,
    inc: Incoming,
    last_seen: Instant,
    generation: u64,
    closed: bool,
    /// The current receive channel, waiting for something to carry.
    channel: Option<Waker>,
    /// The current receive channel's writer, told of the commlink's new lines instead
    /// ([`ReceiveChannel::set_kick`]).
    kick: Option<Kick>,
}

/// Called, on the thread of the commlink's write and outside the hub's locks, when new
/// lines wait for a receive channel whose writer registered it.
pub type Kick = Arc<dyn Fn() + Send + Sync>;

impl Attachment {
    /// Moves the commlink's queued lines into the window; wakes the receive channel when
    /// some moved. Called with the state locked.
    fn refill(&self, st: &mut State) {
        if self.lines.take_up(&mut st.out) > 0
            && let Some(w) = st.channel.take()
        {
            w.wake();
        }
    }
}

/// A waker woken when dropped (after the locks taken after it are let go).
struct WakeLater(Option<std::task::Waker>);

impl Drop for WakeLater {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.wake();
        }
    }
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl RelayHub {
    /// A hub with these limits; each new attachment's stream goes to `on_attach`. Must be
    /// created inside a Tokio runtime (it starts the expiry sweeper, which ends with the last
    /// clone of the hub).
    pub fn new(limits: RelayLimits, on_attach: OnAttach) -> RelayHub {
        let inner = Arc::new(HubInner {
            limits,
            attachments: Mutex::new(HashMap::new()),
            channels: Arc::new(AtomicUsize::new(0)),
            on_attach,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        RelayHub { inner }
    }

    /// The limits in force.
    pub fn limits(&self) -> &RelayLimits {
        &self.inner.limits
    }

    /// How many attachments are open.
    pub fn attachments(&self) -> usize {
        lock(&self.inner.attachments).len()
    }

    /// Opens an attachment for a client at `peer`; returns its id.
    pub fn open(&self, peer: IpAddr) -> Result<String, RelayError> {
        use rand::RngExt as _;
        let limits = &self.inner.limits;
        let id = hex::encode(rand::rng().random::<[u8; 32]>());
        let key = key_of(&id);
        let tag = hex::encode(&key[..4]);
        let hub = Arc::downgrade(&self.inner);
        let att = Arc::new_cyclic(|me: &Weak<Attachment>| {
            let me = me.clone();
            let hook = Box::new(move |event| {
                let (Some(att), Some(hub)) = (me.upgrade(), hub.upgrade()) else {
                    return;
                };
                match event {
                    Event::Lines => {
                        let kick = {
                            let mut st = lock(&att.state);
                            match st.kick.clone() {
                                Some(kick) => {
                                    att.lines.take_up(&mut st.out);
                                    Some(kick)
                                }
                                None => {
                                    att.refill(&mut st);
                                    None
                                }
                            }
                        };
                        if let Some(kick) = kick {
                            kick();
                        }
                    }
                    Event::Ended(why) => close(
                        &hub,
                        &att,
                        why.unwrap_or_else(|| "the web ended the link".into()),
                    ),
                }
            });
            Attachment {
                key,
                tag: tag.clone(),
                peer,
                lines: Lines::new(
                    limits.window.bytes.min(UP_QUEUE),
                    limits.window.bytes,
                    limits.max_line,
                    hook,
                ),
                state: Mutex::new(State {
                    out: Outgoing::new(limits.window),
                    inc: Incoming::default(),
                    last_seen: Instant::now(),
                    generation: 0,
                    closed: false,
                    channel: None,
                    kick: None,
                }),
            }
        });
        {
            let mut all = lock(&self.inner.attachments);
            if all.len() >= limits.total {
                return Err(RelayError::TooMany("attachments"));
            }
            if all.values().filter(|a| a.peer == peer).count() >= limits.per_address {
                return Err(RelayError::TooMany("attachments from this address"));
            }
            all.insert(key, att.clone());
        }
        info!(%peer, attachment = %tag, "relay attachment opened");
        (self.inner.on_attach)(att.lines.stream(), format!("relay {peer} #{tag}"));
        Ok(id)
    }

    fn find(&self, id: &str) -> Result<Arc<Attachment>, RelayError> {
        let att = lock(&self.inner.attachments)
            .get(&key_of(id))
            .cloned()
            .ok_or(RelayError::NotFound)?;
        lock(&att.state).last_seen = Instant::now();
        Ok(att)
    }

    /// Takes a POST body of records; returns the response body (`A n`, the web's
    /// acknowledgement).
    pub fn send(&self, id: &str, body: &[u8]) -> Result<Bytes, RelayError> {
        let limits = &self.inner.limits;
        if body.len() > limits.max_body {
            return Err(RelayError::TooLarge(limits.max_body));
        }
        let att = self.find(id)?;
        let records = match super::relay_proto::decode_body(body, limits.max_line) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(&att, e)),
        };
        // The web's commlink, if it waits for these lines, is woken once the attachment's
        // lock is let go: its next write takes that lock.
        let mut reader = WakeLater(None);
        let ack = {
            let mut st = lock(&att.state);
            let mut full = false;
            for r in records {
                match r {
                    Record::Ack(n) => {
                        if let Err(e) = st.out.ack(n) {
                            drop(st);
                            return Err(self.fail(&att, e));
                        }
                        att.refill(&mut st);
                    }
                    Record::Data { seq, line } if !full => match st.inc.check(seq) {
                        Ok(Verdict::Duplicate) => {}
                        Ok(Verdict::Deliver) => {
                            if att.lines.try_deliver(&line, &mut reader.0) {
                                st.inc.delivered();
                            } else {
                                full = true; // not acknowledged: sent again later
                            }
                        }
                        Err(e) => {
                            drop(st);
                            return Err(self.fail(&att, e));
                        }
                    },
                    Record::Data { .. } => {}
                    Record::Close(why) => {
                        drop(st);
                        self.close_att(&att, format!("the agent closed the relay: {why}"));
                        return Ok(Bytes::from_static(b"C closed\r\n"));
                    }
                }
            }
            st.inc.ack()
        };
        drop(reader);
        let mut out = Vec::with_capacity(24);
        Record::Ack(ack).encode(&mut out);
        Ok(out.into())
    }

    /// Opens the receive channel of an attachment, as its query asks
    /// ([`ReceiveParams::from_query`]).
    pub fn receive(&self, id: &str, params: ReceiveParams) -> Result<ReceiveChannel, RelayError> {
        let ReceiveParams { ack, poll, beat } = params;
        let mut limits = self.inner.limits.clone();
        if let Some(beat) = beat {
            limits.heartbeat = beat.clamp(MIN_BEAT, limits.heartbeat);
            limits.poll_wait = limits.poll_wait.min(limits.heartbeat);
        }
        let att = self.find(id)?;
        let channels = &self.inner.channels;
        if channels.fetch_add(1, Ordering::SeqCst) >= limits.receive_channels {
            channels.fetch_sub(1, Ordering::SeqCst);
            return Err(RelayError::TooMany("receive channels"));
        }
        let guard = ChannelGuard(channels.clone());
        let (generation, older) = {
            let mut st = lock(&att.state);
            if let Err(e) = st.out.ack(ack) {
                drop(st);
                return Err(self.fail(&att, e));
            }
            att.refill(&mut st);
            st.generation += 1;
            st.kick = None;
            (st.generation, st.channel.take())
        };
        if let Some(w) = older {
            w.wake(); // it sees the newer generation and ends
        }
        Ok(ReceiveChannel {
            att,
            generation,
            carried: Carried {
                sent: ack,
                first: true,
            },
            poll,
            done: false,
            beat: None,
            poll_end: None,
            poll_wait: poll.then_some(limits.poll_wait),
            heartbeat: limits.heartbeat,
            _guard: guard,
        })
    }

    /// Closes an attachment at the agent's request.
    pub fn close(&self, id: &str) -> Result<(), RelayError> {
        let att = self.find(id)?;
        self.close_att(&att, "the agent closed the relay".into());
        Ok(())
    }

    fn fail(&self, att: &Arc<Attachment>, e: RelayProtoError) -> RelayError {
        warn!(peer = %att.peer, attachment = %att.tag, "relay protocol violation: {e}");
        self.close_att(att, format!("relay protocol violation: {e}"));
        RelayError::Bad(e.to_string())
    }

    fn close_att(&self, att: &Arc<Attachment>, why: String) {
        close(&self.inner, att, why);
    }
}

/// Outbound bytes the web's commlink may queue beyond the window before its writes wait.
const UP_QUEUE: usize = 256 * 1024;

fn close(hub: &HubInner, att: &Arc<Attachment>, why: String) {
    lock(&hub.attachments).remove(&att.key);
    let channel = {
        let mut st = lock(&att.state);
        if st.closed {
            return;
        }
        st.closed = true;
        st.channel.take()
    };
    info!(peer = %att.peer, attachment = %att.tag, "relay attachment closed: {why}");
    att.lines.close(why);
    if let Some(w) = channel {
        w.wake();
    }
}

/// Counts an open receive channel until dropped.
struct ChannelGuard(Arc<AtomicUsize>);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A receive channel's body, chunk by chunk: first the lines the agent has not
/// acknowledged and the web's acknowledgement, then new lines as the commlink writes them
/// and `A n` heartbeats; `C reason` and the end when the attachment closes, nothing more
/// once a newer channel took over. Polled by the HTTP server's connection itself (no task
/// in between); dropping it ends the channel.
pub struct ReceiveChannel {
    att: Arc<Attachment>,
    generation: u64,
    /// How far it has carried the attachment's lines.
    carried: Carried,
    poll: bool,
    done: bool,
    /// The heartbeat's and a poll's timers, made at the first poll: on the runtime of
    /// whoever carries the channel (the web may move it off the HTTP worker).
    beat: Option<Pin<Box<tokio::time::Sleep>>>,
    poll_end: Option<Pin<Box<tokio::time::Sleep>>>,
    poll_wait: Option<Duration>,
    heartbeat: Duration,
    _guard: ChannelGuard,
}

impl ReceiveChannel {
    /// The next chunk of the body, or `None` at its end.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Lets the channel's writer carry new lines at once, on the thread that wrote them
    /// (`kick` then takes them with [`ReceiveChannel::try_chunk`]), instead of waking
    /// whoever polls the channel. Ends with a newer channel of the attachment.
    pub fn set_kick(&self, kick: Kick) {
        let mut st = lock(&self.att.state);
        if st.generation == self.generation {
            st.kick = Some(kick);
        }
    }

    /// The lines ready to carry, as the next chunk, or `None` when there are none; never
    /// waits and registers nothing (for a streamed channel; a long poll ends through the
    /// poller). The channel's end (closed, or a newer channel) is left
    /// to the poller, which is woken for it.
    pub fn try_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut chunk = Vec::new();
        let mut st = lock(&self.att.state);
        if st.generation != self.generation || st.closed {
            return None;
        }
        self.carried.next(&self.att, &mut st, &mut chunk);
        (!chunk.is_empty()).then(|| chunk.into())
    }

    fn ack_chunk(&self) -> Bytes {
        let ack = lock(&self.att.state).inc.ack();
        let mut c = Vec::new();
        Record::Ack(ack).encode(&mut c);
        c.into()
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        let heartbeat = self.heartbeat;
        let mut beat = self
            .beat
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(heartbeat)))
            .as_mut();
        if let Some(wait) = self.poll_wait.take() {
            self.poll_end = Some(Box::pin(tokio::time::sleep(wait)));
        }
        let mut chunk = Vec::new();
        {
            let mut st = lock(&self.att.state);
            if st.generation != self.generation {
                self.done = true;
                return Poll::Ready(None); // a newer channel took over
            }
            if st.closed {
                drop(st);
                self.done = true;
                let why = self.att.lines.reason().unwrap_or_else(|| "closed".into());
                Record::Close(why).encode(&mut chunk);
                return Poll::Ready(Some(chunk.into()));
            }
            self.carried.next(&self.att, &mut st, &mut chunk);
            if chunk.is_empty() {
                st.channel = Some(cx.waker().clone());
            }
        }
        if !chunk.is_empty() {
            if self.poll && chunk.starts_with(b"D ") {
                self.done = true; // a poll ends once it carried lines
            }
            beat.reset(tokio::time::Instant::now() + heartbeat);
            return Poll::Ready(Some(chunk.into()));
        }
        if beat.as_mut().poll(cx).is_ready() {
            beat.reset(tokio::time::Instant::now() + heartbeat);
            return Poll::Ready(Some(self.ack_chunk()));
        }
        if let Some(end) = self.poll_end.as_mut()
            && end.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            return Poll::Ready(Some(self.ack_chunk()));
        }
        Poll::Pending
    }
}

/// How far a receive channel has carried its attachment's lines.
struct Carried {
    /// The last line number carried.
    sent: u64,
    /// Nothing carried yet: the next chunk also carries the web's acknowledgement.
    first: bool,
}

impl Carried {
    /// Appends to `chunk` what the channel carries next: the commlink's queued lines moved
    /// into the window, the lines after `sent` (up to 64 KiB), and on its first chunk the
    /// web's acknowledgement. Shared by the channel's poller and its kick.
    fn next(&mut self, att: &Attachment, st: &mut State, chunk: &mut Vec<u8>) {
        att.refill(st);
        self.sent = st.out.encode_from(self.sent, 64 * 1024, chunk);
        if self.first {
            Record::Ack(st.inc.ack()).encode(chunk);
            self.first = false;
        }
    }
}

impl futures_core::Stream for ReceiveChannel {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_chunk(cx).map(|c| c.map(Ok))
    }
}

/// Closes attachments no request has touched for the idle expiry; ends with the hub.
async fn sweep(hub: Weak<HubInner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let expiry = hub.limits.idle_expiry;
        let stale: Vec<Arc<Attachment>> = lock(&hub.attachments)
            .values()
            .filter(|a| lock(&a.state).last_seen.elapsed() > expiry)
            .cloned()
            .collect();
        for att in stale {
            warn!(peer = %att.peer, attachment = %att.tag, "relay attachment expired");
            close(
                &hub,
                &att,
                format!(
                    "relay attachment expired: the agent sent no request for {} s",
                    expiry.as_secs_f64()
                ),
            );
        }
    }
}
