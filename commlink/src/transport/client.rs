//! The requester ([`Client`]): sends requests and matches replies by id, many at once over
//! one connection, whichever end dialed. An accepting client keeps every responder that
//! dialed in and sends each request over the live one with the fewest requests waiting
//! (ties taken in turn), so losing one responder costs only the requests in flight on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::config::remote_error;
use super::conn::{AbortOnDrop, ConnHandle, run_requester};
use super::dial::{accept_stream, redial};
use super::handshake_io::SeenPort;
use super::{Carrier, ERROR_TYPE, LinkConfig, LinkError, Tcp};
use crate::tobj::{Request, Tobj};

/// The requester side of a link: sends requests, matches replies, reconnects by itself.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    cfg: LinkConfig,
    current: watch::Receiver<Vec<ConnHandle>>,
    last_error: Arc<Mutex<String>>,
    next_id: AtomicU64,
    turn: AtomicU64,
    _maintainer: AbortOnDrop,
    helpers: Vec<AbortOnDrop>,
}

/// Any byte stream a link can run over.
pub trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> LinkStream for T {}

/// One connection from a responder that dialed in, handed to an accepting [`Client`].
pub struct Incoming {
    stream: Box<dyn LinkStream>,
    seen: SeenPort,
    peer: String,
}

impl Incoming {
    /// A raw TCP connection: its HELLO's port is checked against the source port seen.
    pub fn tcp(stream: TcpStream, peer: SocketAddr) -> Incoming {
        let _ = stream.set_nodelay(true);
        Incoming {
            stream: Box::new(stream),
            seen: SeenPort::Tcp(peer.port()),
            peer: peer.to_string(),
        }
    }

    /// A stream a carrier endpoint accepted (an HTTPS upgrade, a relay attachment), where no
    /// source port is visible: its HELLO must announce a virtual port. `peer` names it in
    /// logs and errors (e.g. `https upgrade from 203.0.113.9:50312`).
    pub fn carried(stream: impl LinkStream, peer: impl Into<String>) -> Incoming {
        Incoming {
            stream: Box::new(stream),
            seen: SeenPort::Carried,
            peer: peer.into(),
        }
    }
}

/// Where a carrier endpoint hands the streams it accepted to its [`Client`]
/// ([`Client::accepting`]). Cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    tx: mpsc::Sender<Incoming>,
}

impl Acceptor {
    /// Hands one accepted stream to the client, which runs the handshake (within the
    /// connect timeout) and then uses it for requests. Fails (giving the stream back) only
    /// when the client is gone.
    pub async fn hand(&self, incoming: Incoming) -> Result<(), Incoming> {
        self.tx.send(incoming).await.map_err(|e| e.0)
    }

    /// Whether the client is gone (a stream handed now would be given back).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

fn set_error(slot: &Mutex<String>, e: String) {
    match slot.lock() {
        Ok(mut s) => *s = e,
        Err(p) => *p.into_inner() = e,
    }
}

impl Client {
    /// A client that dials `addr` (host:port) over raw TCP now, and again whenever the link
    /// drops.
    pub fn dial(addr: impl Into<String>, cfg: LinkConfig) -> Client {
        Client::dial_via(Tcp::new(addr), cfg)
    }

    /// A client that dials over `carrier` now, and again whenever the link drops.
    pub fn dial_via<C: Carrier>(carrier: C, cfg: LinkConfig) -> Client {
        let addr = carrier.target().to_owned();
        let (tx, rx) = watch::channel(Vec::new());
        let last_error = Arc::new(Mutex::new(format!("not yet connected to {addr}")));
        let errs = last_error.clone();
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            let connected = |est, peer| {
                let (tx, c, errs, addr) = (tx.clone(), c.clone(), errs.clone(), addr.clone());
                async move {
                    let tx2 = tx.clone();
                    let err = run_requester(est, c, peer, {
                        move |h| {
                            let _ = tx2.send(vec![h]);
                        }
                    })
                    .await;
                    let _ = tx.send(Vec::new());
                    set_error(&errs, format!("link to {addr} dropped: {err}"));
                }
            };
            redial(&carrier, &c, connected, |e| set_error(&errs, e)).await
        });
        Client::from_parts(cfg, rx, last_error, task)
    }

    /// A client whose responders dial in (seed 000's direction): accepts connections on
    /// `listener` and sends each request over a live one (the one with the fewest requests
    /// waiting; several responders, e.g. db agents, share the load).
    pub fn accept(listener: TcpListener, cfg: LinkConfig) -> Client {
        Client::accept_and_carry(listener, cfg).0
    }

    /// [`Client::accept`] that also takes streams a carrier endpoint of this process accepts
    /// (handed in through the returned [`Acceptor`]), e.g. a web frontend whose agents dial
    /// in over raw TCP or through its HTTPS listener.
    pub fn accept_and_carry(listener: TcpListener, cfg: LinkConfig) -> (Client, Acceptor) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let (client, acceptor) = Client::accepting_on(cfg, &addr);
        let feed = acceptor.clone();
        let pump = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if feed.hand(Incoming::tcp(stream, peer)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!("accept on {addr} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        (client.with_helper(pump), acceptor)
    }

    /// A client whose responders dial in over a carrier this process serves itself (the
    /// web's HTTPS upgrade endpoint, a relay attachment): each stream the endpoint accepts
    /// is handed in through the returned [`Acceptor`], and each request goes over a live
    /// one (fewest waiting first). [`Client::accept`] is this with a TCP listener feeding it.
    pub fn accepting(cfg: LinkConfig) -> (Client, Acceptor) {
        Client::accepting_on(cfg, "this endpoint")
    }

    fn accepting_on(cfg: LinkConfig, addr: &str) -> (Client, Acceptor) {
        let (tx, rx) = watch::channel(Vec::<ConnHandle>::new());
        let tx = Arc::new(tx);
        let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(16);
        let last_error = Arc::new(Mutex::new(format!(
            "no responder has dialed in to {addr} yet"
        )));
        let errs = last_error.clone();
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Some(incoming) = in_rx.recv().await {
                let (c, tx, errs) = (c.clone(), tx.clone(), errs.clone());
                conns.spawn(async move {
                    let Incoming { stream, seen, peer } = incoming;
                    let est = match accept_stream(stream, seen, &peer, &c).await {
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
                    let err = run_requester(est, c, peer.clone(), move |h| {
                        if let Ok(mut m) = mine2.lock() {
                            *m = Some(h.alive.clone());
                        }
                        // Keep every live connection (dropping the ones already dead).
                        tx2.send_modify(|all| {
                            all.retain(|o| o.alive.load(Ordering::SeqCst));
                            all.push(h);
                        });
                    })
                    .await;
                    // Forget this connection only; the others stay in use.
                    let ours = mine.lock().ok().and_then(|m| m.clone());
                    tx.send_if_modified(|all| {
                        let before = all.len();
                        all.retain(|h| {
                            !ours.as_ref().is_some_and(|a| Arc::ptr_eq(&h.alive, a))
                                && h.alive.load(Ordering::SeqCst)
                        });
                        all.len() != before
                    });
                    set_error(&errs, format!("link from {peer} dropped: {err}"));
                });
                while conns.try_join_next().is_some() {}
            }
        });
        (
            Client::from_parts(cfg, rx, last_error, task),
            Acceptor { tx: in_tx },
        )
    }

    /// Ties a helper task (e.g. the TCP accept pump) to this client's lifetime.
    fn with_helper(mut self, task: tokio::task::JoinHandle<()>) -> Client {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.helpers.push(AbortOnDrop(task));
        }
        self
    }

    /// The client around its maintainer task (which dials, or accepts dial-ins).
    fn from_parts(
        cfg: LinkConfig,
        current: watch::Receiver<Vec<ConnHandle>>,
        last_error: Arc<Mutex<String>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                cfg,
                current,
                last_error,
                next_id: AtomicU64::new(1),
                turn: AtomicU64::new(0),
                _maintainer: AbortOnDrop(task),
                helpers: Vec::new(),
            }),
        }
    }

    /// A live connection: the one with the fewest requests waiting, ties taken in turn.
    fn live(&self) -> Option<ConnHandle> {
        let all = self.inner.current.borrow();
        let live: Vec<&ConnHandle> = all
            .iter()
            .filter(|h| h.alive.load(Ordering::SeqCst))
            .collect();
        if live.len() <= 1 {
            return live.first().map(|h| (*h).clone());
        }
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed) as usize;
        let waiting = |h: &ConnHandle| h.replies.waiting();
        (0..live.len())
            .map(|i| live[(turn + i) % live.len()])
            .min_by_key(|h| waiting(h))
            .cloned()
    }

    /// How many responders are connected and live right now (0 or 1 for a dialing client).
    pub fn live_connections(&self) -> usize {
        self.inner
            .current
            .borrow()
            .iter()
            .filter(|h| h.alive.load(Ordering::SeqCst))
            .count()
    }

    /// Waits up to the connect timeout for a live connection.
    async fn connection(&self) -> Result<ConnHandle, LinkError> {
        if let Some(h) = self.live() {
            return Ok(h);
        }
        let mut rx = self.inner.current.clone();
        let wait = rx.wait_for(|all| all.iter().any(|h| h.alive.load(Ordering::SeqCst)));
        match tokio::time::timeout(self.inner.cfg.connect_timeout, wait).await {
            Ok(Ok(_)) => self.live().ok_or_else(|| self.down()),
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
    /// [`LinkError::Remote`]. [`LinkError::Down`] means the request was never sent (no live
    /// connection); once it was sent, a dropped link is [`LinkError::Lost`] and no reply in
    /// time [`LinkError::Timeout`].
    pub async fn call(&self, mut request: Tobj) -> Result<Tobj, LinkError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        // A connection found closed before anything was written is skipped for another
        // live one (an accepting client may hold several); a few tries at most.
        let mut tries = 0;
        let (conn, orx, sent) = loop {
            tries += 1;
            let conn = self.connection().await?;
            let orx = conn.replies.expect(id);
            match conn.out.send(&request).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                    conn.replies.forget(id);
                    if tries >= 4 {
                        return Err(self.down());
                    }
                }
                sent => break (conn, orx, sent.is_ok()),
            }
        };
        let remove = || conn.replies.forget(id);
        let lost = |e: LinkError| match e {
            LinkError::Down(why) => LinkError::Lost(why),
            e => e,
        };
        // If the write fails the connection is going down; its reader will tell every
        // waiting request why (e.g. the peer's refusal), so wait briefly for that.
        let wait = if sent {
            self.inner.cfg.request_timeout
        } else {
            Duration::from_millis(500).min(self.inner.cfg.request_timeout)
        };
        match tokio::time::timeout(wait, conn.replies.wait(orx)).await {
            Ok(Ok(Ok(reply))) if reply.kind == ERROR_TYPE => Err(remote_error(&reply)),
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(lost(e)),
            Ok(Err(_)) => Err(lost(self.down())),
            Err(_) if wait < self.inner.cfg.request_timeout => {
                remove();
                Err(lost(self.down()))
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
        let wait = rx.wait_for(|all| all.iter().any(|h| h.alive.load(Ordering::SeqCst)));
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }
}
