//! The requester ([`Client`]): sends requests and matches replies by id, many at once over
//! one connection, whichever end dialed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::warn;

use super::config::remote_error;
use super::conn::{AbortOnDrop, ConnHandle, run_requester};
use super::dial::{accept_one, redial};
use super::{Carrier, ERROR_TYPE, LinkConfig, LinkError, Tcp};
use crate::tobj::{Request, Tobj};

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
    /// A client that dials `addr` (host:port) over raw TCP now, and again whenever the link
    /// drops.
    pub fn dial(addr: impl Into<String>, cfg: LinkConfig) -> Client {
        Client::dial_via(Tcp::new(addr), cfg)
    }

    /// A client that dials over `carrier` now, and again whenever the link drops.
    pub fn dial_via<C: Carrier>(carrier: C, cfg: LinkConfig) -> Client {
        let addr = carrier.target().to_owned();
        let (tx, rx) = watch::channel(None);
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
                            let _ = tx2.send(Some(h));
                        }
                    })
                    .await;
                    let _ = tx.send(None);
                    set_error(&errs, format!("link to {addr} dropped: {err}"));
                }
            };
            redial(&carrier, &c, connected, |e| set_error(&errs, e)).await
        });
        Client::from_parts(cfg, rx, last_error, task)
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
                    let err = run_requester(est, c, peer.to_string(), move |h| {
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
        Client::from_parts(cfg, rx, last_error, task)
    }

    /// The client around its maintainer task (which dials, or accepts dial-ins).
    fn from_parts(
        cfg: LinkConfig,
        current: watch::Receiver<Option<ConnHandle>>,
        last_error: Arc<Mutex<String>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                cfg,
                current,
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
