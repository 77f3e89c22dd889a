//! A running connection: the outbox senders share, heartbeats, and the reader loop, with
//! the two paths a packet can take after the hello: the requester's (replies matched to
//! waiting requests by id) and the responder's (requests answered by a [`Service`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{debug, info, warn};

use super::config::{HELLO_TYPE, PING_TYPE, remote_error};
use super::handshake_io::{ConnError, Established, LineReader};
use super::{ERROR_TYPE, LinkConfig, LinkError, Service, error_reply};
use crate::crypto::{Opener, Sealer};
use crate::tobj::{Fields, Limits, Tobj};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
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
/// match byte order). The first sender to find nobody writing becomes the flusher and writes
/// out everything queued, its own packet and any that others append meanwhile, in as few
/// `write` calls as the socket takes; a sender that finds a flusher at work leaves its
/// packet to it and returns at once. So a lone request reaches the socket without a hop
/// through another task, and many in flight share one system call. The hand-over is decided
/// under the same lock as the append, so no packet is left behind.
///
/// Flushing is cancel-safe: the bytes being written live in the writer's state, and leave
/// it only once a `write` has accepted them, so a flusher dropped mid-write loses nothing;
/// its guard hands the rest to a new flusher task (and the heartbeat flushes too).
pub(super) struct Outbox {
    state: Mutex<OutState>,
    writer: tokio::sync::Mutex<WriterState>,
    closed: AtomicBool,
    /// Milliseconds since `epoch` of the last packet queued (for heartbeats).
    last_sent: AtomicU64,
    epoch: std::time::Instant,
}

struct OutState {
    sealer: Sealer,
    /// Sealed lines not yet handed to the writer.
    buf: Vec<u8>,
    /// Someone is flushing: lines appended now are written by them.
    flushing: bool,
}

struct WriterState {
    w: Box<dyn AsyncWrite + Send + Unpin>,
    /// Bytes taken from the queue; `pending[off..]` is not written yet.
    pending: Vec<u8>,
    off: usize,
}

/// Buffers larger than this are not kept once empty (a burst does not pin its memory).
const KEEP_CAPACITY: usize = 256 * 1024;

thread_local! {
    /// Each thread's buffer for the text of the message it is sealing (never held across
    /// an await).
    static ENCODED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Resets the flushing flag if a flusher is dropped before it finished, and starts a
/// task to write what it left.
struct FlushGuard<'a> {
    out: &'a Arc<Outbox>,
    done: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.out.lock_state().flushing = false;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let out = self.out.clone();
            rt.spawn(async move {
                let _ = out.flush().await;
            });
        }
    }
}

impl Outbox {
    fn new(sealer: Sealer, writer: Box<dyn AsyncWrite + Send + Unpin>) -> Outbox {
        Outbox {
            state: Mutex::new(OutState {
                sealer,
                buf: Vec::with_capacity(4096),
                flushing: false,
            }),
            writer: tokio::sync::Mutex::new(WriterState {
                w: writer,
                pending: Vec::with_capacity(4096),
                off: 0,
            }),
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

    /// Seals `msg` into the queue and sees it written: by this call when nobody else is
    /// flushing, else by the flusher at work (then this returns at once, and a write
    /// error reaches the waiting requests through the reader, as the connection goes
    /// down).
    pub(super) async fn send(self: &Arc<Self>, msg: &Tobj) -> std::io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            // NotConnected (only here) tells a requester that nothing was written.
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection closed",
            ));
        }
        let flush_now = ENCODED.with_borrow_mut(|payload| {
            payload.clear();
            msg.encode_into(payload);
            let mut st = self.lock_state();
            let st = &mut *st;
            st.sealer.seal_line_into(payload.as_bytes(), &mut st.buf);
            if payload.capacity() > KEEP_CAPACITY {
                *payload = String::new();
            }
            !std::mem::replace(&mut st.flushing, true)
        });
        self.last_sent
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if flush_now {
            self.run_flusher().await
        } else {
            Ok(())
        }
    }

    /// Writes out everything queued, unless a flusher is already at work.
    async fn flush(self: &Arc<Self>) -> std::io::Result<()> {
        if std::mem::replace(&mut self.lock_state().flushing, true) {
            return Ok(());
        }
        self.run_flusher().await
    }

    /// The flusher's loop: called only by whoever set `flushing`; clears it when the queue
    /// is empty (under the lock senders append under) or on an error.
    async fn run_flusher(self: &Arc<Self>) -> std::io::Result<()> {
        let mut guard = FlushGuard {
            out: self,
            done: false,
        };
        let mut w = self.writer.lock().await;
        let w = &mut *w;
        let result = loop {
            if w.off == w.pending.len() {
                w.pending.clear();
                w.off = 0;
                let mut st = self.lock_state();
                if st.buf.is_empty() {
                    st.flushing = false;
                    if st.buf.capacity() > KEEP_CAPACITY {
                        st.buf = Vec::with_capacity(4096);
                    }
                    if w.pending.capacity() > KEEP_CAPACITY {
                        w.pending = Vec::with_capacity(4096);
                    }
                    break Ok(());
                }
                std::mem::swap(&mut st.buf, &mut w.pending);
            }
            match w.w.write(&w.pending[w.off..]).await {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => w.off += n,
                Err(e) => break Err(e),
            }
        };
        if result.is_err() {
            self.closed.store(true, Ordering::SeqCst);
            self.lock_state().flushing = false;
        }
        guard.done = true;
        result?;
        w.w.flush().await
    }

    /// Sends a last message, then closes the write side.
    async fn close_with(self: &Arc<Self>, msg: &Tobj) {
        let _ = self.send(msg).await;
        self.closed.store(true, Ordering::SeqCst);
        // Taking the writer waits for a flusher at work, which writes the queue out first.
        let _ = self.writer.lock().await.w.shutdown().await;
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_sent.load(Ordering::Relaxed)))
    }
}

pub(super) type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Tobj, LinkError>>>>>;

/// What a requester holds to use a live connection.
#[derive(Clone)]
pub(super) struct ConnHandle {
    pub(super) out: Arc<Outbox>,
    pub(super) pending: Pending,
    pub(super) alive: Arc<AtomicBool>,
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

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

/// What one role does with the packets after the hello (other than pings and a closing
/// error), and when the connection goes down.
trait Path: Send + 'static {
    const ROLE: Role;

    /// Handles one packet; an error closes the connection.
    fn packet(
        &mut self,
        tobj: Tobj,
        out: &Arc<Outbox>,
    ) -> impl Future<Output = Result<(), ConnError>> + Send;

    /// The connection is going down with `err` (called before the peer is told why).
    fn down(&mut self, err: &ConnError);
}

/// The requester's path: every packet is a reply to a waiting request.
struct RequesterPath {
    pending: Pending,
    alive: Arc<AtomicBool>,
}

impl Path for RequesterPath {
    const ROLE: Role = Role::Requester;

    async fn packet(&mut self, tobj: Tobj, _out: &Arc<Outbox>) -> Result<(), ConnError> {
        let waiter = match self.pending.lock() {
            Ok(mut p) => p.remove(&tobj.id),
            Err(poisoned) => poisoned.into_inner().remove(&tobj.id),
        };
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(tobj));
            }
            None => debug!(id = tobj.id, "reply for a request no longer waiting"),
        }
        Ok(())
    }

    fn down(&mut self, err: &ConnError) {
        self.alive.store(false, Ordering::SeqCst);
        fail_all(&self.pending, &LinkError::Down(err.to_string()));
    }
}

/// The responder's path: every packet is a request, answered by the service. The
/// service's future is polled once on the reader's task: an answer ready at once (no I/O:
/// a cached lookup, an echo) is sent from there, with no hop through another task. A
/// future that waits (a database query, work on the blocking pool) moves to a task of its
/// own and the reader goes on (at most [`MAX_IN_FLIGHT`] requests at once per connection).
struct ResponderPath<Svc> {
    service: Arc<Svc>,
    in_flight: Arc<Semaphore>,
}

impl<Svc: Service> Path for ResponderPath<Svc> {
    const ROLE: Role = Role::Responder;

    async fn packet(&mut self, tobj: Tobj, out: &Arc<Outbox>) -> Result<(), ConnError> {
        let permit: OwnedSemaphorePermit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnError::Protocol("request limiter closed".into()))?;
        let svc = self.service.clone();
        let id = tobj.id;
        let mut answer = Box::pin(async move {
            let mut reply = svc.call(tobj).await;
            reply.id = id;
            reply
        });
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(answer.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(reply) => {
                // A full socket makes this wait: back-pressure on a peer that sends
                // requests without reading the replies.
                let _ = out.send(&reply).await;
                drop(permit);
            }
            std::task::Poll::Pending => {
                let out = out.clone();
                tokio::spawn(async move {
                    let reply = answer.await;
                    let _ = out.send(&reply).await;
                    drop(permit);
                });
            }
        }
        Ok(())
    }

    fn down(&mut self, _err: &ConnError) {}
}

/// Runs an established connection as the requester until it ends. `on_up` is called once
/// the peer has proven it holds the same keys (its first packet opened) with the handle
/// requests use.
pub(super) async fn run_requester<S>(
    est: Established<S>,
    cfg: LinkConfig,
    peer: String,
    on_up: impl FnOnce(ConnHandle),
) -> ConnError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let path = RequesterPath {
        pending: Arc::new(Mutex::new(HashMap::new())),
        alive: Arc::new(AtomicBool::new(true)),
    };
    let (pending, alive) = (path.pending.clone(), path.alive.clone());
    run_connection(est, cfg, path, peer, move |out| {
        on_up(ConnHandle {
            out,
            pending,
            alive,
        })
    })
    .await
}

/// Runs an established connection as the responder, answering with `service`, until it
/// ends.
pub(super) async fn run_responder<S, Svc>(
    est: Established<S>,
    cfg: LinkConfig,
    service: Arc<Svc>,
    peer: String,
) -> ConnError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    Svc: Service,
{
    let path = ResponderPath {
        service,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    run_connection(est, cfg, path, peer, |_| {}).await
}

/// The loop both roles share: hello, heartbeats, reading and opening packets, and the
/// closing error. `on_up` gets the outbox once the peer's hello has opened.
async fn run_connection<S, P: Path>(
    est: Established<S>,
    cfg: LinkConfig,
    mut path: P,
    peer: String,
    on_up: impl FnOnce(Arc<Outbox>),
) -> ConnError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let role = P::ROLE;
    let Established {
        mut reader,
        writer,
        sealer,
        mut opener,
    } = est;
    let out = Arc::new(Outbox::new(sealer, Box::new(writer)));
    let hello = Tobj::with_fields(HELLO_TYPE, 0, Fields::new().text("role", role.name()));
    let _ = out.send(&hello).await;
    let _heartbeat_task = spawn_heartbeats(out.clone(), cfg.heartbeat);

    let limits = cfg.limits();
    let mut on_up = Some(on_up);
    let silence = cfg.heartbeat * 3;

    // When the last line arrived, in ms since `t0`, for the silence watchdog (one timer
    // for the connection rather than one per packet).
    let t0 = std::time::Instant::now();
    let heard = AtomicU64::new(0);
    let packets = async {
        loop {
            let line = match reader.line().await {
                Ok(l) => l,
                Err(e) => return e,
            };
            heard.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            let tobj = match open_packet(&line, &mut opener, &limits) {
                Ok(t) => t,
                Err(e) => return e,
            };
            if let Some(up) = on_up.take() {
                if let Err(e) = check_hello(&tobj, role.name()) {
                    return e;
                }
                info!(%peer, role = role.name(), suite = cfg.suite.name(), "commlink up");
                up(out.clone());
                continue;
            }
            match tobj.kind.as_str() {
                PING_TYPE => {}
                ERROR_TYPE if tobj.id == 0 => {
                    return ConnError::Protocol(format!(
                        "peer closed the link: {}",
                        remote_error(&tobj)
                    ));
                }
                _ => {
                    if let Err(e) = path.packet(tobj, &out).await {
                        return e;
                    }
                }
            }
        }
    };
    let watchdog = async {
        let mut tick = tokio::time::interval((silence / 8).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = t0.elapsed().as_millis() as u64;
            if now.saturating_sub(heard.load(Ordering::Relaxed)) >= silence.as_millis() as u64 {
                return ConnError::Protocol(format!(
                    "peer silent for {silence:?} (three heartbeats): link dead"
                ));
            }
        }
    };
    let err = tokio::select! {
        e = packets => e,
        e = watchdog => e,
    };
    match &err {
        ConnError::Closed => info!(%peer, "commlink closed by peer"),
        e => warn!(%peer, reason = %e, "commlink connection closed"),
    }
    path.down(&err);
    if !matches!(err, ConnError::Closed | ConnError::Io(_)) {
        tell_peer_why(&out, &mut reader, &err).await;
    }
    err
}

/// Heartbeats: a ping whenever nothing was sent for an interval; also flushes anything a
/// cancelled sender left behind. Stops when the task is dropped or a send fails.
fn spawn_heartbeats(out: Arc<Outbox>, heartbeat: Duration) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
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
    }))
}

/// Opens and parses one packet.
fn open_packet(line: &[u8], opener: &mut Opener, limits: &Limits) -> Result<Tobj, ConnError> {
    let payload = opener.open_in_place(line)?;
    let text = std::str::from_utf8(payload)
        .map_err(|_| ConnError::Protocol("payload is not UTF-8".into()))?;
    Ok(Tobj::parse(text, limits)?)
}

/// The first packet must be the peer's hello, from the other role.
fn check_hello(tobj: &Tobj, ours: &str) -> Result<(), ConnError> {
    if tobj.kind != HELLO_TYPE {
        return Err(ConnError::Protocol(format!(
            "expected {HELLO_TYPE}, got {}",
            tobj.kind
        )));
    }
    let theirs = tobj.fields.req_text("role").unwrap_or("");
    if theirs == ours {
        return Err(ConnError::Protocol(format!(
            "both ends are {theirs}s: one end must serve (db agent, stager) and the other request (web)"
        )));
    }
    Ok(())
}

/// Sends the peer the reason the link ends, then drains its input briefly.
async fn tell_peer_why<R: AsyncRead + Unpin>(
    out: &Arc<Outbox>,
    reader: &mut LineReader<R>,
    err: &ConnError,
) {
    // Tell the peer why, then give the writer a moment to flush.
    let last = error_reply(err.code(), err.to_string());
    let _ = tokio::time::timeout(Duration::from_millis(200), out.close_with(&last)).await;
    // Closing a socket with unread input makes the kernel send RST, which can destroy
    // the error packet before the peer reads it; read and discard briefly instead.
    reader.discard(Duration::from_millis(200)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyBag;
    use crate::transport::handshake_io::{accept_handshake, initiate};

    struct Echo;

    impl Service for Echo {
        async fn call(&self, request: Tobj) -> Tobj {
            let said = request.fields.req_text("say").unwrap_or("").to_owned();
            Tobj::with_fields("test.echoed", 0, Fields::new().text("said", said))
        }
    }

    async fn pair() -> (
        LinkConfig,
        Established<tokio::io::DuplexStream>,
        Established<tokio::io::DuplexStream>,
    ) {
        let cfg = LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 9000, false),
            accept_handshake(b, &cfg, crate::transport::handshake_io::SeenPort::Tcp(9000))
        );
        (cfg, i.expect("initiator"), r.expect("acceptor"))
    }

    #[tokio::test]
    async fn the_requester_path_matches_replies_to_requests() {
        let (cfg, i, r) = pair().await;
        let responder = tokio::spawn(run_responder(r, cfg.clone(), Arc::new(Echo), "r".into()));
        let (up_tx, up_rx) = oneshot::channel();
        let requester = tokio::spawn(run_requester(i, cfg, "i".into(), move |h| {
            let _ = up_tx.send(h);
        }));
        let handle = up_rx.await.expect("the link comes up");
        let mut waiting = Vec::new();
        for id in 1..=20u64 {
            let (tx, rx) = oneshot::channel();
            handle.pending.lock().expect("lock").insert(id, tx);
            let req =
                Tobj::with_fields("test.echo", id, Fields::new().text("say", format!("n{id}")));
            handle.out.send(&req).await.expect("sent");
            waiting.push((id, rx));
        }
        for (id, rx) in waiting {
            let reply = rx.await.expect("answered").expect("a reply");
            assert_eq!(reply.id, id);
            assert_eq!(
                reply.fields.req_text("said").ok(),
                Some(format!("n{id}").as_str())
            );
        }
        responder.abort();
        let err = requester.await.expect("joined");
        assert!(matches!(err, ConnError::Closed | ConnError::Io(_)), "{err}");
        assert!(!handle.alive.load(Ordering::SeqCst));
    }

    /// Answers `test.wait` only once `release` is notified, anything else at once.
    struct Gate {
        release: Arc<tokio::sync::Notify>,
    }

    impl Service for Gate {
        async fn call(&self, request: Tobj) -> Tobj {
            if request.kind == "test.wait" {
                self.release.notified().await;
            }
            Tobj::with_fields("test.done", 0, Fields::new().text("kind", request.kind))
        }
    }

    #[tokio::test]
    async fn a_waiting_service_does_not_hold_up_the_requests_behind_it() {
        let (cfg, i, r) = pair().await;
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(Gate {
            release: release.clone(),
        });
        let _responder = tokio::spawn(run_responder(r, cfg.clone(), gate, "r".into()));
        let (up_tx, up_rx) = oneshot::channel();
        let _requester = tokio::spawn(run_requester(i, cfg, "i".into(), move |h| {
            let _ = up_tx.send(h);
        }));
        let handle = up_rx.await.expect("the link comes up");
        /// Sends a request; the receiver its reply arrives on.
        async fn ask(
            handle: &ConnHandle,
            id: u64,
            kind: &str,
        ) -> oneshot::Receiver<Result<Tobj, LinkError>> {
            let (tx, rx) = oneshot::channel();
            handle.pending.lock().expect("lock").insert(id, tx);
            let req = Tobj::with_fields(kind, id, Fields::new());
            handle.out.send(&req).await.expect("sent");
            rx
        }
        /// The reply `rx` brings within 5 s (`what` names it if none comes).
        async fn answered(rx: oneshot::Receiver<Result<Tobj, LinkError>>, what: &str) -> Tobj {
            match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(Ok(reply))) => reply,
                other => panic!("{what} was not answered: {other:?}"),
            }
        }
        let slow = ask(&handle, 1, "test.wait").await;
        // Answered at once on the reader's task, while request 1 still waits.
        for id in 2..=4 {
            let fast = answered(ask(&handle, id, "test.now").await, "a quick request").await;
            assert_eq!(
                (fast.id, fast.fields.req_text("kind").ok()),
                (id, Some("test.now"))
            );
        }
        release.notify_one();
        let slow = answered(slow, "the released request").await;
        assert_eq!(
            (slow.id, slow.fields.req_text("kind").ok()),
            (1, Some("test.wait"))
        );
    }

    #[tokio::test]
    async fn a_request_waiting_when_the_link_drops_fails_as_down() {
        let (cfg, i, r) = pair().await;
        let (up_tx, up_rx) = oneshot::channel();
        let requester = tokio::spawn(run_requester(i, cfg.clone(), "i".into(), move |h| {
            let _ = up_tx.send(h);
        }));
        // A responder that says hello and then goes away.
        let responder = tokio::spawn(run_responder(r, cfg, Arc::new(Echo), "r".into()));
        let handle = up_rx.await.expect("the link comes up");
        let (tx, rx) = oneshot::channel();
        handle.pending.lock().expect("lock").insert(77, tx);
        responder.abort();
        let _ = requester.await;
        assert!(matches!(rx.await, Ok(Err(LinkError::Down(_)))));
    }

    #[tokio::test]
    async fn two_responders_refuse_each_other() {
        let (cfg, i, r) = pair().await;
        let (a, b) = tokio::join!(
            run_responder(i, cfg.clone(), Arc::new(Echo), "i".into()),
            run_responder(r, cfg, Arc::new(Echo), "r".into())
        );
        for err in [a, b] {
            assert!(
                err.to_string().contains("both ends are responders")
                    || err.to_string().contains("peer closed the link"),
                "{err}"
            );
        }
    }
}
