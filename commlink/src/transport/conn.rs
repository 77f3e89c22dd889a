//! A running connection: the outbox senders share, heartbeats, and the reader loop, with
//! the two paths a packet can take after the hello: the requester's (replies matched to
//! waiting requests by id) and the responder's (requests answered by a [`Service`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{debug, info, warn};

use super::answer::{Offer, offering};
use super::config::{HELLO_TYPE, PING_TYPE, remote_error};
use super::handshake_io::{ConnError, Established, LineReader};
use super::warm::Warm;
use super::{ERROR_TYPE, LinkConfig, LinkError, Service, error_reply, lock};
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
    /// Requesters handed a reply they have not taken yet: woken, and likely to send their
    /// next request at once. A sender that becomes the flusher while any are due lets
    /// them run first (one yield), so their requests share its write.
    due: AtomicUsize,
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
            due: AtomicUsize::new(0),
            last_sent: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, OutState> {
        lock(&self.state)
    }

    /// Seals `msg` into the queue and sees it written: by this call when nobody else is
    /// flushing, else by the flusher at work (then this returns at once, and a write
    /// error reaches the waiting requests through the reader, as the connection goes
    /// down).
    pub(super) async fn send(self: &Arc<Self>, msg: &Tobj) -> std::io::Result<()> {
        let flush_now = self.append(msg, true)?.0;
        if flush_now {
            self.run_flusher(self.due.load(Ordering::Relaxed) > 0).await
        } else {
            Ok(())
        }
    }

    /// Seals `msg` into the queue without writing it: a flusher at work writes it, else
    /// it waits for the caller's next [`Outbox::flush`] (or any other sender's). Returns
    /// the bytes now queued. The responder queues the replies to requests it read
    /// together, and writes them in one go.
    fn queue(&self, msg: &Tobj) -> std::io::Result<usize> {
        Ok(self.append(msg, false)?.1)
    }

    /// Seals `msg` onto the queue; with `claim`, becomes the flusher if nobody is
    /// (returned `true`: the caller must then run it). Also returns the bytes queued.
    fn append(&self, msg: &Tobj, claim: bool) -> std::io::Result<(bool, usize)> {
        if self.closed.load(Ordering::SeqCst) {
            // NotConnected (only here) tells a requester that nothing was written.
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection closed",
            ));
        }
        let queued = ENCODED.with_borrow_mut(|payload| {
            payload.clear();
            msg.encode_into(payload);
            let mut st = self.lock_state();
            let st = &mut *st;
            st.sealer.seal_line_into(payload.as_bytes(), &mut st.buf);
            if payload.capacity() > KEEP_CAPACITY {
                *payload = String::new();
            }
            let claimed = claim && !std::mem::replace(&mut st.flushing, true);
            (claimed, st.buf.len())
        });
        self.last_sent
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(queued)
    }

    /// Writes out everything queued, unless a flusher is already at work.
    async fn flush(self: &Arc<Self>) -> std::io::Result<()> {
        if std::mem::replace(&mut self.lock_state().flushing, true) {
            return Ok(());
        }
        self.run_flusher(false).await
    }

    /// The flusher's loop: called only by whoever set `flushing`; clears it when the queue
    /// is empty (under the lock senders append under) or on an error. With `defer`, it
    /// first yields once, so tasks already woken can append before the first write.
    async fn run_flusher(self: &Arc<Self>, defer: bool) -> std::io::Result<()> {
        let mut guard = FlushGuard {
            out: self,
            done: false,
        };
        if defer {
            tokio::task::yield_now().await;
        }
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

    /// A reply counted in `due` was taken (or dropped untaken).
    fn untake(&self) {
        let _ = self
            .due
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_sent.load(Ordering::Relaxed)))
    }
}

/// Where a waiting request's reply (or the reason there is none) goes.
type ReplyTx = oneshot::Sender<Result<Tobj, LinkError>>;

/// What a requester holds to use a live connection.
#[derive(Clone)]
pub(super) struct ConnHandle {
    pub(super) out: Arc<Outbox>,
    pub(super) replies: Arc<Replies>,
    pub(super) alive: Arc<AtomicBool>,
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Concurrent requests one responder connection works on at once.
const MAX_IN_FLIGHT: usize = 1024;

/// When the last line arrived, for the silence watchdog (one clock for the connection
/// rather than a timer per packet).
struct Heard {
    t0: std::time::Instant,
    /// Milliseconds since `t0`.
    at: AtomicU64,
}

impl Heard {
    fn new() -> Heard {
        Heard {
            t0: std::time::Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        self.at
            .store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.t0.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.at.load(Ordering::Relaxed)))
    }
}

/// The reading end of a connection after the handshake, with who reads it.
struct ReadSide {
    reader: LineReader<Box<dyn AsyncRead + Send + Unpin>>,
    opener: Opener,
    limits: Limits,
    heard: Arc<Heard>,
    /// A caller reads for itself (requester connections; see [`Replies`]).
    leading: bool,
    /// The connection's task (requester connections), to hand the reading back to.
    conn_task: Option<Waker>,
    /// Reading failed while a caller led: the connection goes down for this reason.
    failed: Option<ConnError>,
    /// Reading has ended (an error or the end of the stream, whoever read it), for this
    /// reason: every waiting request has been told it, and nobody reads again.
    ended: Option<String>,
}

impl ReadSide {
    /// Polls for the next packet, the hello and the connection's own packets included.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<Result<Tobj, ConnError>> {
        let line = match self.reader.poll_line(cx) {
            Poll::Ready(Ok(line)) => line,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.heard.now();
        Poll::Ready(open_packet(
            self.reader.at(line),
            &mut self.opener,
            &self.limits,
        ))
    }

    /// Polls for the next packet for the role's path: pings are skipped; the peer's closing
    /// error (and anything that cannot be read or opened) ends the connection.
    fn poll_packet(&mut self, cx: &mut Context<'_>) -> Poll<Result<Tobj, ConnError>> {
        loop {
            match self.poll_any(cx) {
                Poll::Ready(Ok(tobj)) => match link_level(tobj) {
                    Ok(None) => continue,
                    Ok(Some(tobj)) => return Poll::Ready(Ok(tobj)),
                    Err(e) => return Poll::Ready(Err(e)),
                },
                other => return other,
            }
        }
    }

    /// Reads every packet available now and hands each reply to its waiter; `Pending` once
    /// nothing more is there (`cx`'s task is then woken when more comes), `Ready` with the
    /// reason the connection ends.
    fn poll_replies(&mut self, cx: &mut Context<'_>, replies: &Replies) -> Poll<ConnError> {
        loop {
            match self.poll_packet(cx) {
                Poll::Ready(Ok(reply)) => replies.deliver(reply),
                Poll::Ready(Err(e)) => {
                    self.end(replies, &e);
                    return Poll::Ready(e);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reading has ended with `err`: every waiting request is told now, by whoever read
    /// it, so no other reader can tell them a later, lesser reason (the end of the stream
    /// after the peer's closing error).
    fn end(&mut self, replies: &Replies, err: &ConnError) {
        let why = err.to_string();
        replies.fail_all(&LinkError::Down(why.clone()));
        self.ended = Some(why);
    }
}

/// The connection's own packets: a ping is nothing to the path, the peer's closing error
/// (id 0) ends the connection; anything else is the path's.
fn link_level(tobj: Tobj) -> Result<Option<Tobj>, ConnError> {
    match tobj.kind.as_str() {
        PING_TYPE => Ok(None),
        ERROR_TYPE if tobj.id == 0 => Err(ConnError::Protocol(format!(
            "peer closed the link: {}",
            remote_error(&tobj)
        ))),
        _ => Ok(Some(tobj)),
    }
}

type SharedRead = Arc<Mutex<ReadSide>>;

/// A requester connection's replies: the requests waiting for one, and who reads.
///
/// A caller waiting when no other caller is reading reads the socket itself (it *leads*):
/// its reply reaches it with no hop through another task, as a plain TLS client's would,
/// and any other reply it meets goes to its waiter. Meanwhile the connection's task stands
/// back. When the lead ends (the reply came, or the caller gave up), the read side is
/// polled once on the connection's task's behalf, which hands it any packet already there
/// and leaves the stream to wake that task, not the caller, when more comes: so the
/// connection's task reads whenever no caller leads (pings, the peer's closing error,
/// replies while several wait) without being woken at every hand-back. The read side is
/// locked only within a poll, never across an await.
pub(super) struct Replies {
    waiting: Mutex<HashMap<u64, ReplyTx>>,
    read: SharedRead,
    /// The connection's outbox, whose `due` counts the replies handed over and not taken.
    out: Arc<Outbox>,
}

impl Replies {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReplyTx>> {
        lock(&self.waiting)
    }

    /// Registers a request about to be sent; its reply arrives on the receiver.
    pub(super) fn expect(&self, id: u64) -> ReplyRx {
        let (tx, rx) = oneshot::channel();
        self.lock_waiting().insert(id, tx);
        ReplyRx {
            rx,
            out: self.out.clone(),
        }
    }

    /// Forgets a request (not sent, or no longer waited for).
    pub(super) fn forget(&self, id: u64) {
        self.lock_waiting().remove(&id);
    }

    /// Requests waiting for their reply.
    pub(super) fn waiting(&self) -> usize {
        self.lock_waiting().len()
    }

    fn deliver(&self, reply: Tobj) {
        let waiter = self.lock_waiting().remove(&reply.id);
        match waiter {
            Some(w) => {
                // Counted before the waiter can take it (and uncount it).
                self.out.due.fetch_add(1, Ordering::Relaxed);
                if w.send(Ok(reply)).is_err() {
                    self.out.untake();
                }
            }
            None => debug!(id = reply.id, "reply for a request no longer waiting"),
        }
    }

    fn fail_all(&self, err: &LinkError) {
        let drained: Vec<_> = self.lock_waiting().drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Err(err.clone()));
        }
    }

    /// Waits for the reply `rx` was given by [`Replies::expect`]: reading the stream itself
    /// when no other caller is (see [`Replies`]), else until the reader delivers it.
    /// Cancel-safe: dropped mid-read, nothing read is lost and the connection's task
    /// takes the reading back.
    pub(super) async fn wait(
        &self,
        mut rx: ReplyRx,
    ) -> Result<Result<Tobj, LinkError>, oneshot::error::RecvError> {
        let lead = {
            let mut side = lock(&self.read);
            if let Some(why) = &side.ended {
                // Registered after everyone waiting was told: nobody will answer.
                return Ok(Err(LinkError::Down(why.clone())));
            }
            if side.leading {
                None
            } else {
                side.leading = true;
                Some(Lead(self))
            }
        };
        let Some(lead) = lead else {
            return rx.await;
        };
        let mine = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut rx).poll(cx) {
                return Poll::Ready(Some(r));
            }
            let mut side = lock(&self.read);
            loop {
                if side.ended.is_some() {
                    return Poll::Ready(None);
                }
                match side.poll_packet(cx) {
                    Poll::Ready(Ok(reply)) => {
                        self.deliver(reply);
                        match rx.try_recv() {
                            Ok(r) => return Poll::Ready(Some(Ok(r))),
                            Err(oneshot::error::TryRecvError::Empty) => {}
                            // Cannot happen while the waiter is registered; awaiting says.
                            Err(oneshot::error::TryRecvError::Closed) => {
                                return Poll::Ready(None);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        side.end(self, &e);
                        side.failed = Some(e);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        drop(lead);
        match mine {
            Some(r) => r,
            // Told already (the link went down), or about to be.
            None => rx.await,
        }
    }
}

/// Where a waiting request's reply arrives. A reply handed to it counts in its outbox's
/// `due` until it is taken here, or dropped untaken with the receiver.
pub(super) struct ReplyRx {
    rx: oneshot::Receiver<Result<Tobj, LinkError>>,
    out: Arc<Outbox>,
}

impl ReplyRx {
    fn try_recv(&mut self) -> Result<Result<Tobj, LinkError>, oneshot::error::TryRecvError> {
        let r = self.rx.try_recv();
        if let Ok(Ok(_)) = r {
            self.out.untake();
        }
        r
    }
}

impl Future for ReplyRx {
    type Output = Result<Result<Tobj, LinkError>, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        if let Ok(Ok(_)) = r {
            self.out.untake();
        }
        Poll::Ready(r)
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        let _ = self.try_recv();
    }
}

/// A caller leading. Ending the lead (also by dropping the caller's future) hands the
/// reading back to the connection's task (see [`Replies`]).
struct Lead<'a>(&'a Replies);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let replies = self.0;
        let mut side = lock(&replies.read);
        side.leading = false;
        let Some(task) = side.conn_task.clone() else {
            return;
        };
        if side.ended.is_some() {
            // The connection's task takes the connection down (with the reason in
            // `failed`, if the lead read it).
            drop(side);
            task.wake();
            return;
        }
        // Take what is already there for the connection's task, and leave the stream to
        // wake it when more comes.
        let mut cx = Context::from_waker(&task);
        if let Poll::Ready(e) = side.poll_replies(&mut cx, replies) {
            side.failed = Some(e);
            drop(side);
            task.wake();
        }
    }
}

/// What one role does with the packets after the hello, and when the connection goes
/// down.
trait Path: Send + 'static {
    const ROLE: Role;

    /// Reads and handles packets until the connection ends; returns why.
    fn serve(&mut self, out: &Arc<Outbox>) -> impl Future<Output = ConnError> + Send;

    /// The connection is going down with `err` (called before the peer is told why).
    fn down(&mut self, err: &ConnError);
}

/// The requester's path: every packet is a reply to a waiting request, read by this task
/// whenever no caller leads.
struct RequesterPath {
    replies: Arc<Replies>,
    alive: Arc<AtomicBool>,
}

impl Path for RequesterPath {
    const ROLE: Role = Role::Requester;

    async fn serve(&mut self, _out: &Arc<Outbox>) -> ConnError {
        let replies = &self.replies;
        std::future::poll_fn(|cx| {
            let mut side = lock(&replies.read);
            if let Some(e) = side.failed.take() {
                return Poll::Ready(e);
            }
            if !side
                .conn_task
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                side.conn_task = Some(cx.waker().clone());
            }
            if side.leading {
                // Woken again when the lead ends.
                return Poll::Pending;
            }
            side.poll_replies(cx, replies)
        })
        .await
    }

    fn down(&mut self, err: &ConnError) {
        self.alive.store(false, Ordering::SeqCst);
        let mut side = lock(&self.replies.read);
        if side.ended.is_none() {
            side.end(&self.replies, err);
        }
    }
}

/// The responder's path: every packet is a request, answered by the service. The
/// service's future is polled once on the reader's task: an answer ready at once (no I/O:
/// a cached lookup, an echo) is queued from there, with no hop through another task, and
/// the answers to requests read together leave in one write once nothing more is there
/// to read (or [`CORK_BYTES`] are queued); an
/// answer taken to a blocking thread by `answer_blocking` in that poll is sent from that
/// thread. Any other future that waits moves to a task of its own, which goes on offering
/// the request to `answer_blocking` at each poll (a request that first waits for a pool
/// place is still answered from its blocking thread). Either way the reader goes on (at
/// most [`MAX_IN_FLIGHT`] requests at once per connection).
struct ResponderPath<Svc> {
    service: Arc<Svc>,
    in_flight: Arc<Semaphore>,
    read: SharedRead,
    /// The threads that run `answer_blocking` work for this connection.
    warm: Arc<Warm>,
    /// Replies queued by this path and not yet flushed.
    unwritten: bool,
}

/// Replies a responder queues before it writes them, whatever is still to read.
const CORK_BYTES: usize = 64 * 1024;

impl<Svc: Service> ResponderPath<Svc> {
    /// Writes the replies queued by this path (and anything else queued).
    async fn write_queued(&mut self, out: &Arc<Outbox>) {
        self.unwritten = false;
        let _ = out.flush().await;
    }

    async fn request(&mut self, tobj: Tobj, out: &Arc<Outbox>) -> Result<(), ConnError> {
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
        // Every poll offers the request to a blocking thread (`answer_blocking`): if the
        // service takes it, that thread writes the reply and carries the permit.
        let mut offer = Some(Offer {
            id,
            out: out.clone(),
            permit,
            warm: self.warm.clone(),
        });
        let first =
            std::future::poll_fn(|cx| Poll::Ready(poll_offering(answer.as_mut(), &mut offer, cx)))
                .await;
        match first {
            // Taken: the blocking thread answers; the answer's future is not needed.
            Poll::Ready(None) => {}
            Poll::Ready(Some(reply)) => {
                // Queued only: the serve loop writes it with the replies to the requests
                // read with it, before it waits for more.
                if let Ok(queued) = out.queue(&reply) {
                    self.unwritten = true;
                    if queued >= CORK_BYTES {
                        // A full socket makes this wait: back-pressure on a peer that
                        // sends requests without reading the replies.
                        self.write_queued(out).await;
                    }
                }
                drop(offer);
            }
            Poll::Pending => {
                // The answer waits (for a pool place, say) in a task of its own, still
                // offering the request at every poll: when it reaches `answer_blocking`,
                // the blocking thread answers and the task ends.
                let out = out.clone();
                tokio::spawn(async move {
                    let reply =
                        std::future::poll_fn(|cx| poll_offering(answer.as_mut(), &mut offer, cx))
                            .await;
                    if let Some(reply) = reply {
                        let _ = out.send(&reply).await;
                    }
                    drop(offer);
                });
            }
        }
        Ok(())
    }
}

/// Polls a request's answer once with the request on offer (`offer` holds it until a
/// blocking thread takes it): `Ready(None)` once taken (that thread answers),
/// `Ready(Some(reply))` when the answer is here, `Pending` otherwise.
fn poll_offering(
    answer: Pin<&mut (impl Future<Output = Tobj> + ?Sized)>,
    offer: &mut Option<Offer>,
    cx: &mut Context<'_>,
) -> Poll<Option<Tobj>> {
    let Some(o) = offer.take() else {
        return Poll::Ready(None);
    };
    let (polled, left) = offering(o, || answer.poll(cx));
    if left.is_none() {
        return Poll::Ready(None);
    }
    *offer = left;
    polled.map(Some)
}

impl<Svc: Service> Path for ResponderPath<Svc> {
    const ROLE: Role = Role::Responder;

    async fn serve(&mut self, out: &Arc<Outbox>) -> ConnError {
        let read = self.read.clone();
        loop {
            // Replies queued for the requests read so far are written once nothing more is
            // there to read: requests that arrived together are answered in one write.
            let unwritten = self.unwritten;
            let request = std::future::poll_fn(|cx| match lock(&read).poll_packet(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if unwritten => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let request = match request {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    self.write_queued(out).await;
                    return e;
                }
                None => {
                    self.write_queued(out).await;
                    continue;
                }
            };
            if let Err(e) = self.request(request, out).await {
                return e;
            }
        }
    }

    fn down(&mut self, _err: &ConnError) {}
}

/// A connection after the handshake: its outbox (hello sent, heartbeats running) and its
/// read side.
struct Started {
    out: Arc<Outbox>,
    read: SharedRead,
    heard: Arc<Heard>,
    _heartbeats: AbortOnDrop,
}

fn start<S>(est: Established<S>, cfg: &LinkConfig) -> Started
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Established {
        reader,
        writer,
        sealer,
        opener,
    } = est;
    let out = Arc::new(Outbox::new(sealer, Box::new(writer)));
    let heard = Arc::new(Heard::new());
    let read = Arc::new(Mutex::new(ReadSide {
        reader: reader.boxed(),
        opener,
        limits: cfg.limits(),
        heard: heard.clone(),
        leading: false,
        conn_task: None,
        failed: None,
        ended: None,
    }));
    let _heartbeats = spawn_heartbeats(out.clone(), cfg.heartbeat);
    Started {
        out,
        read,
        heard,
        _heartbeats,
    }
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
    let started = start(est, &cfg);
    let replies = Arc::new(Replies {
        waiting: Mutex::new(HashMap::new()),
        read: started.read.clone(),
        out: started.out.clone(),
    });
    let path = RequesterPath {
        replies: replies.clone(),
        alive: Arc::new(AtomicBool::new(true)),
    };
    let alive = path.alive.clone();
    run_connection(started, cfg, path, peer, move |out| {
        on_up(ConnHandle {
            out,
            replies,
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
    let started = start(est, &cfg);
    let path = ResponderPath {
        service,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        read: started.read.clone(),
        warm: Arc::new(Warm::new()),
        unwritten: false,
    };
    run_connection(started, cfg, path, peer, |_| {}).await
}

/// The loop both roles share: the hello, the silence watchdog, the role's path, and the
/// closing error. `on_up` gets the outbox once the peer's hello has opened.
async fn run_connection<P: Path>(
    started: Started,
    cfg: LinkConfig,
    mut path: P,
    peer: String,
    on_up: impl FnOnce(Arc<Outbox>),
) -> ConnError {
    let role = P::ROLE;
    let Started {
        out,
        read,
        heard,
        _heartbeats,
    } = started;
    let hello = Tobj::with_fields(HELLO_TYPE, 0, Fields::new().text("role", role.name()));
    let _ = out.send(&hello).await;
    let silence = cfg.heartbeat * 3;

    let work = async {
        // The peer's hello comes first; only then do requests flow.
        let first = std::future::poll_fn(|cx| lock(&read).poll_any(cx)).await;
        if let Err(e) = first.and_then(|t| check_hello(&t, role.name())) {
            return e;
        }
        info!(%peer, role = role.name(), suite = cfg.suite.name(), "commlink up");
        on_up(out.clone());
        path.serve(&out).await
    };
    let watchdog = async {
        let mut tick = tokio::time::interval((silence / 8).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if heard.silent_for() >= silence {
                return ConnError::Protocol(format!(
                    "peer silent for {silence:?} (three heartbeats): link dead"
                ));
            }
        }
    };
    let err = tokio::select! {
        e = work => e,
        e = watchdog => e,
    };
    match &err {
        ConnError::Closed => info!(%peer, "commlink closed by peer"),
        e => warn!(%peer, reason = %e, "commlink connection closed"),
    }
    path.down(&err);
    if !matches!(err, ConnError::Closed | ConnError::Io(_)) {
        tell_peer_why(&out, &read, &err).await;
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
async fn tell_peer_why(out: &Arc<Outbox>, read: &SharedRead, err: &ConnError) {
    // Tell the peer why, then give the writer a moment to flush.
    let last = error_reply(err.code(), err.to_string());
    let _ = tokio::time::timeout(Duration::from_millis(200), out.close_with(&last)).await;
    // Closing a socket with unread input makes the kernel send RST, which can destroy
    // the error packet before the peer reads it; read and discard briefly instead.
    let discard = std::future::poll_fn(|cx| lock(read).reader.poll_discard(cx));
    let _ = tokio::time::timeout(Duration::from_millis(200), discard).await;
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

    /// Runs the requester end `i` in a task; its handle once the link is up, and the task.
    async fn requester<S>(
        i: Established<S>,
        cfg: LinkConfig,
    ) -> (ConnHandle, tokio::task::JoinHandle<ConnError>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (up_tx, up_rx) = oneshot::channel();
        let task = tokio::spawn(run_requester(i, cfg, "i".into(), move |h| {
            let _ = up_tx.send(h);
        }));
        (up_rx.await.expect("the link comes up"), task)
    }

    /// An echo responder and a requester linked to it: the requester's handle, and both
    /// tasks.
    async fn echo_link() -> (
        ConnHandle,
        tokio::task::JoinHandle<ConnError>,
        tokio::task::JoinHandle<ConnError>,
    ) {
        let (cfg, i, r) = pair().await;
        let responder = tokio::spawn(run_responder(r, cfg.clone(), Arc::new(Echo), "r".into()));
        let (handle, requester) = requester(i, cfg).await;
        (handle, requester, responder)
    }

    /// A bare responder end, its hello written: the test reads, opens, seals and writes
    /// with these itself.
    struct Bare<S> {
        reader: LineReader<tokio::io::ReadHalf<S>>,
        writer: tokio::io::WriteHalf<S>,
        sealer: Sealer,
        opener: Opener,
    }

    async fn bare_responder<S: AsyncRead + AsyncWrite>(r: Established<S>) -> Bare<S> {
        let Established {
            reader,
            mut writer,
            mut sealer,
            opener,
        } = r;
        let hello = Tobj::with_fields(HELLO_TYPE, 0, Fields::new().text("role", "responder"));
        writer
            .write_all(&sealed(&mut sealer, &[hello]))
            .await
            .expect("hello written");
        Bare {
            reader,
            writer,
            sealer,
            opener,
        }
    }

    #[tokio::test]
    async fn the_requester_path_matches_replies_to_requests() {
        let (handle, requester, responder) = echo_link().await;
        let mut waiting = Vec::new();
        for id in 1..=20u64 {
            let rx = handle.replies.expect(id);
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
        let (handle, _requester) = requester(i, cfg).await;
        /// Sends a request; the receiver its reply arrives on.
        async fn ask(handle: &ConnHandle, id: u64, kind: &str) -> ReplyRx {
            let rx = handle.replies.expect(id);
            let req = Tobj::with_fields(kind, id, Fields::new());
            handle.out.send(&req).await.expect("sent");
            rx
        }
        /// The reply `rx` brings within 5 s (`what` names it if none comes).
        async fn answered(rx: ReplyRx, what: &str) -> Tobj {
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

    /// Sends `kind` with `id` over `handle` and waits for the reply as a caller does.
    async fn call(handle: &ConnHandle, id: u64, kind: &str, say: &str) -> Result<Tobj, String> {
        let rx = handle.replies.expect(id);
        let req = Tobj::with_fields(kind, id, Fields::new().text("say", say));
        handle.out.send(&req).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), handle.replies.wait(rx)).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            other => Err(format!("request {id}: {other:?}")),
        }
    }

    /// A requester whose connection task runs on a thread of its own, held up inside
    /// `on_up` until `release` is sent: the handle, and the sender that releases it.
    fn requester_on_a_held_thread(
        i: Established<tokio::io::DuplexStream>,
        cfg: LinkConfig,
    ) -> (
        std::sync::mpsc::Receiver<ConnHandle>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(run_requester(i, cfg, "i".into(), move |h| {
                let _ = handle_tx.send(h);
                // Blocks this runtime's only thread: the connection's task cannot run.
                let _ = release_rx.recv();
            }));
        });
        (handle_rx, release_tx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_waiting_alone_reads_its_own_reply() {
        let (cfg, i, r) = pair().await;
        let _responder = tokio::spawn(run_responder(r, cfg.clone(), Arc::new(Echo), "r".into()));
        let (handle_rx, release) = requester_on_a_held_thread(i, cfg);
        let handle = tokio::task::spawn_blocking(move || handle_rx.recv())
            .await
            .expect("joined")
            .expect("the link comes up");
        // The connection's task is held: only the callers themselves can read these.
        for id in 1..=5u64 {
            let reply = call(&handle, id, "test.echo", &format!("n{id}"))
                .await
                .expect("answered while the connection's task cannot run");
            assert_eq!(
                (reply.id, reply.fields.req_text("said").ok()),
                (id, Some(format!("n{id}").as_str()))
            );
        }
        let _ = release.send(());
        // Many at once: one leads, the others are answered by it or by the connection's
        // task; every reply reaches its own caller.
        let mut calls = tokio::task::JoinSet::new();
        for id in 10..60u64 {
            let h = handle.clone();
            calls.spawn(async move { (id, call(&h, id, "test.echo", &format!("m{id}")).await) });
        }
        while let Some(done) = calls.join_next().await {
            let (id, reply) = done.expect("joined");
            let reply = reply.expect("answered");
            assert_eq!(
                (reply.id, reply.fields.req_text("said").ok()),
                (id, Some(format!("m{id}").as_str()))
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_hands_the_reading_back() {
        let (mut cfg, i, r) = pair().await;
        // No heartbeat wakes the connection's task in this test's time.
        cfg.heartbeat = Duration::from_secs(60);
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(Gate {
            release: release.clone(),
        });
        let _responder = tokio::spawn(run_responder(r, cfg.clone(), gate, "r".into()));
        let (handle, _requester) = requester(i, cfg).await;
        // A caller leads while its request waits at the responder, then gives up.
        let rx = handle.replies.expect(1);
        let req = Tobj::with_fields("test.wait", 1, Fields::new());
        handle.out.send(&req).await.expect("sent");
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), handle.replies.wait(rx)).await;
        assert!(
            gave_up.is_err(),
            "the held request was answered: {gave_up:?}"
        );
        // A request whose caller only listens (never leads): the connection's task must be
        // reading again to deliver its reply.
        let rx = handle.replies.expect(2);
        handle
            .out
            .send(&Tobj::with_fields("test.now", 2, Fields::new()))
            .await
            .expect("sent");
        let reply = tokio::time::timeout(Duration::from_secs(3), rx).await;
        assert!(
            matches!(&reply, Ok(Ok(Ok(t))) if t.id == 2),
            "the connection's task did not take the reading back: {reply:?}"
        );
        release.notify_one();
    }

    #[tokio::test]
    async fn a_caller_reading_when_the_link_drops_fails_as_down() {
        let (cfg, i, r) = pair().await;
        // A bare responder end: says hello, then never answers, then goes away.
        let Bare { reader, writer, .. } = bare_responder(r).await;
        let (handle, requester) = requester(i, cfg).await;
        let rx = handle.replies.expect(5);
        handle
            .out
            .send(&Tobj::with_fields("test.wait", 5, Fields::new()))
            .await
            .expect("sent");
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.replies.wait(rx).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop((reader, writer));
        let told = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("told in time")
            .expect("joined");
        assert!(matches!(told, Ok(Err(LinkError::Down(_)))), "{told:?}");
        let err = tokio::time::timeout(Duration::from_secs(3), requester)
            .await
            .expect("the connection ends")
            .expect("joined");
        assert!(matches!(err, ConnError::Closed | ConnError::Io(_)), "{err}");
        assert!(!handle.alive.load(Ordering::SeqCst));
    }

    /// The peer's closing error, then the end of its stream: whoever reads them (a caller
    /// leading or the connection's task), the waiting caller is told the error, never the
    /// bare end of the stream that follows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_peers_closing_error_reaches_the_caller() {
        for round in 0..200 {
            let (cfg, i, r) = pair().await;
            let Bare {
                reader,
                mut writer,
                mut sealer,
                ..
            } = bare_responder(r).await;
            let mut refusal = Vec::new();
            let closing = error_reply(
                crate::refusal::RefusalCode::BadLine,
                "line longer than 10 bytes",
            );
            sealer.seal_line_into(closing.encode().as_bytes(), &mut refusal);
            let (handle, _requester) = requester(i, cfg).await;
            let rx = handle.replies.expect(1);
            // Odd rounds: the caller leads when they arrive. Even rounds: they arrive first,
            // so the connection's task reads the error while the caller comes to wait.
            let waiting = (round % 2 == 1).then(|| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.replies.wait(rx).await })
            });
            writer.write_all(&refusal).await.expect("refusal written");
            drop((reader, writer));
            let told = match waiting {
                Some(waiting) => tokio::time::timeout(Duration::from_secs(3), waiting)
                    .await
                    .expect("told in time")
                    .expect("joined"),
                None => {
                    tokio::task::yield_now().await;
                    let rx = handle.replies.expect(2);
                    tokio::time::timeout(Duration::from_secs(3), handle.replies.wait(rx))
                        .await
                        .expect("told in time")
                }
            };
            assert!(
                matches!(&told, Ok(Err(LinkError::Down(why))) if why.contains("longer than")),
                "round {round}: {told:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_waiting_when_the_link_drops_fails_as_down() {
        // A responder that says hello and then goes away.
        let (handle, requester, responder) = echo_link().await;
        let rx = handle.replies.expect(77);
        responder.abort();
        let _ = requester.await;
        assert!(matches!(rx.await, Ok(Err(LinkError::Down(_)))));
    }

    /// Answers with `answer_blocking`: `test.hold` waits on the blocking thread until
    /// `release` gets a message, `test.panic` panics there, `test.wait-first` yields to the
    /// runtime once before, anything else is echoed. Counts
    /// the answers whose future completed (none should, under a responder).
    struct OnBlocking {
        release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
        completed: Arc<AtomicU64>,
    }

    impl Service for OnBlocking {
        async fn call(&self, request: Tobj) -> Tobj {
            let release = self.release.clone();
            if request.kind == "test.wait-first" {
                // Pending at the first poll, as a request waiting for a pool place is.
                tokio::task::yield_now().await;
            }
            let reply = crate::transport::answer_blocking(move || {
                match request.kind.as_str() {
                    "test.hold" => {
                        let _ = lock(&release).recv_timeout(Duration::from_secs(5));
                    }
                    "test.panic" => panic!("a handler bug"),
                    _ => {}
                }
                let said = request.fields.req_text("say").unwrap_or("").to_owned();
                Tobj::with_fields("test.echoed", 0, Fields::new().text("said", said))
            })
            .await;
            self.completed.fetch_add(1, Ordering::SeqCst);
            reply
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_answer_is_written_by_the_thread_that_made_it() {
        let (cfg, i, r) = pair().await;
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let completed = Arc::new(AtomicU64::new(0));
        let svc = Arc::new(OnBlocking {
            release: Arc::new(Mutex::new(release_rx)),
            completed: completed.clone(),
        });
        let _responder = tokio::spawn(run_responder(r, cfg.clone(), svc.clone(), "r".into()));
        let (handle, _requester) = requester(i, cfg).await;
        // A request held on its blocking thread does not hold up the ones behind it.
        let held = {
            let handle = handle.clone();
            tokio::spawn(async move { call(&handle, 1, "test.hold", "held").await })
        };
        let mut calls = tokio::task::JoinSet::new();
        for id in 2..=41u64 {
            let h = handle.clone();
            calls.spawn(async move { (id, call(&h, id, "test.echo", &format!("m{id}")).await) });
        }
        while let Some(done) = calls.join_next().await {
            let (id, reply) = done.expect("joined");
            let reply = reply.expect("answered while request 1 is held");
            assert_eq!(reply.id, id);
            assert_eq!(
                reply.fields.req_text("said").ok(),
                Some(format!("m{id}").as_str())
            );
        }
        assert!(!held.is_finished(), "the held request was answered early");
        release_tx.send(()).expect("released");
        let reply = held
            .await
            .expect("joined")
            .expect("the held request is answered");
        assert_eq!(
            (reply.id, reply.fields.req_text("said").ok()),
            (1, Some("held"))
        );
        // A panic on the blocking thread is still answered, as an internal error.
        let reply = call(&handle, 42, "test.panic", "").await.expect("answered");
        assert_eq!(reply.id, 42);
        match remote_error(&reply) {
            LinkError::Remote { code, .. } => assert_eq!(code, "internal"),
            other => panic!("expected an internal error, got {other:?}"),
        }
        // A request that waits before it reaches `answer_blocking` is answered too.
        let reply = call(&handle, 43, "test.wait-first", "waited")
            .await
            .expect("answered");
        assert_eq!(
            (reply.id, reply.fields.req_text("said").ok()),
            (43, Some("waited"))
        );
        // Every reply went out from its blocking thread, the one that waited first too: no
        // answer's future completed.
        assert_eq!(completed.load(Ordering::SeqCst), 0);
        // Called outside a responder, the same service returns its reply.
        let direct = svc
            .call(Tobj::with_fields(
                "test.echo",
                7,
                Fields::new().text("say", "direct"),
            ))
            .await;
        assert_eq!(direct.fields.req_text("said").ok(), Some("direct"));
        assert_eq!(completed.load(Ordering::SeqCst), 1);
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

    /// A stream that counts the writes made on it.
    struct Counting {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(_)) = r {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A linked pair (initiator, acceptor) whose ends count their writes; with the counts.
    async fn counted_pair() -> (
        LinkConfig,
        (Established<Counting>, Arc<AtomicUsize>),
        (Established<Counting>, Arc<AtomicUsize>),
    ) {
        let cfg = LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let counted = |inner| {
            let writes = Arc::new(AtomicUsize::new(0));
            let end = Counting {
                inner,
                writes: writes.clone(),
            };
            (end, writes)
        };
        let ((a, a_writes), (b, b_writes)) = (counted(a), counted(b));
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 9000, false),
            accept_handshake(b, &cfg, crate::transport::handshake_io::SeenPort::Tcp(9000))
        );
        (
            cfg,
            (i.expect("initiator"), a_writes),
            (r.expect("acceptor"), b_writes),
        )
    }

    /// Seals `msgs` into one buffer, as lines.
    fn sealed(sealer: &mut Sealer, msgs: &[Tobj]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            sealer.seal_line_into(m.encode().as_bytes(), &mut out);
        }
        out
    }

    /// Reads and opens the next packet off a bare end.
    async fn next_packet<R: AsyncRead + Unpin>(
        reader: &mut LineReader<R>,
        opener: &mut Opener,
    ) -> Tobj {
        let line = std::future::poll_fn(|cx| reader.poll_line(cx));
        let line = tokio::time::timeout(Duration::from_secs(5), line)
            .await
            .expect("a packet within 5 s")
            .expect("a line");
        open_packet(reader.at(line), opener, &Limits::default()).expect("a packet")
    }

    /// Requests that arrive together are answered together: the responder writes their
    /// replies in one write, not one each (one system call instead of ten on a socket).
    #[tokio::test]
    async fn requests_read_together_are_answered_in_one_write() {
        let (cfg, (i, _), (r, writes)) = counted_pair().await;
        let _responder = tokio::spawn(run_responder(r, cfg, Arc::new(Echo), "r".into()));
        let Established {
            mut reader,
            mut writer,
            mut sealer,
            mut opener,
        } = i;
        let hello = next_packet(&mut reader, &mut opener).await;
        assert_eq!(hello.kind, HELLO_TYPE);
        let hellos_writes = writes.load(Ordering::SeqCst);
        let mut msgs = vec![Tobj::with_fields(
            HELLO_TYPE,
            0,
            Fields::new().text("role", "requester"),
        )];
        for id in 1..=10u64 {
            msgs.push(Tobj::with_fields(
                "test.echo",
                id,
                Fields::new().text("say", format!("n{id}")),
            ));
        }
        writer
            .write_all(&sealed(&mut sealer, &msgs))
            .await
            .expect("written");
        for id in 1..=10u64 {
            let reply = next_packet(&mut reader, &mut opener).await;
            assert_eq!(reply.id, id);
            assert_eq!(
                reply.fields.req_text("said").ok(),
                Some(format!("n{id}").as_str())
            );
        }
        assert_eq!(
            writes.load(Ordering::SeqCst) - hellos_writes,
            1,
            "ten replies in one write"
        );
    }

    /// Callers handed their replies together send their next requests together: the first
    /// to write lets the others queue theirs first, so they share one write.
    #[tokio::test]
    async fn callers_woken_together_send_their_next_requests_in_one_write() {
        let (cfg, (i, writes), (r, _)) = counted_pair().await;
        let Bare {
            mut reader,
            mut writer,
            mut sealer,
            mut opener,
        } = bare_responder(r).await;
        let (handle, _requester) = requester(i, cfg).await;
        assert_eq!(next_packet(&mut reader, &mut opener).await.kind, HELLO_TYPE);
        // Ten callers, each making two calls in a row.
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..10u64 {
            let h = handle.clone();
            calls.spawn(async move {
                call(&h, 100 + n, "test.echo", "first").await?;
                call(&h, 200 + n, "test.echo", "second").await
            });
        }
        // Answer the ten first requests in one write, as a responder does.
        let mut replies = Vec::new();
        for _ in 0..10 {
            let req = next_packet(&mut reader, &mut opener).await;
            assert_eq!(req.fields.req_text("say").ok(), Some("first"));
            replies.push(Tobj::with_fields("test.echoed", req.id, Fields::new()));
        }
        let before = writes.load(Ordering::SeqCst);
        writer
            .write_all(&sealed(&mut sealer, &replies))
            .await
            .expect("replies written");
        let mut second = Vec::new();
        for _ in 0..10 {
            let req = next_packet(&mut reader, &mut opener).await;
            assert_eq!(req.fields.req_text("say").ok(), Some("second"));
            second.push(Tobj::with_fields("test.echoed", req.id, Fields::new()));
        }
        assert_eq!(
            writes.load(Ordering::SeqCst) - before,
            1,
            "the ten second requests in one write"
        );
        writer
            .write_all(&sealed(&mut sealer, &second))
            .await
            .expect("replies written");
        while let Some(r) = calls.join_next().await {
            r.expect("joined").expect("answered");
        }
        assert_eq!(
            handle.out.due.load(Ordering::SeqCst),
            0,
            "every reply taken"
        );
    }

    /// A reply handed to a caller that then gives up without taking it is not left
    /// counted as due (else every later write would wait a yield for nobody).
    #[tokio::test]
    async fn a_reply_dropped_untaken_is_not_left_due() {
        let (handle, _requester, _responder) = echo_link().await;
        let rx = handle.replies.expect(5);
        let req = Tobj::with_fields("test.echo", 5, Fields::new().text("say", "x"));
        handle.out.send(&req).await.expect("sent");
        // Nobody waits through `wait`, so the connection's task reads the reply and hands
        // it over.
        let handed = async {
            while handle.out.due.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), handed)
            .await
            .expect("the reply is handed over within 5 s");
        assert_eq!(handle.out.due.load(Ordering::SeqCst), 1);
        drop(rx);
        assert_eq!(handle.out.due.load(Ordering::SeqCst), 0);
    }

    /// A sender dropped while it yields before writing (replies were due) leaves nothing
    /// behind: its request is still written.
    #[tokio::test]
    async fn a_sender_dropped_while_it_yields_leaves_its_request_written() {
        let (cfg, i, r) = pair().await;
        // The write half is kept: dropped, it would end the link.
        let Bare {
            mut reader,
            writer: _writer,
            mut opener,
            ..
        } = bare_responder(r).await;
        let (handle, _requester) = requester(i, cfg).await;
        assert_eq!(next_packet(&mut reader, &mut opener).await.kind, HELLO_TYPE);
        // As if a reply had been handed to a caller that has not run yet.
        handle.out.due.store(1, Ordering::SeqCst);
        let req = Tobj::with_fields("test.echo", 9, Fields::new().text("say", "kept"));
        {
            let mut send = std::pin::pin!(handle.out.send(&req));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                send.as_mut().poll(&mut cx).is_pending(),
                "the flusher yields before it writes"
            );
        }
        let got = next_packet(&mut reader, &mut opener).await;
        assert_eq!((got.id, got.fields.req_text("say").ok()), (9, Some("kept")));
    }
}
