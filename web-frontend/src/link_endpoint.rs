//! The https carrier's endpoint on the public HTTPS listener (`commlink/PROTOCOL.md` §10):
//! `GET <prefix>/v1/link` upgraded to a WebSocket with subprotocol `ffs-commlink.1`, served
//! only when `[web] link_path` is set and the db agent link is accepted. The upgraded stream
//! is handed to the db-agent client's [`Acceptor`] as a carried stream (its HELLO must
//! announce a virtual port); the commlink inside stays sealed end to end.
//!
//! Anything but a valid upgrade gets the ordinary 404 page. Bounded: upgrades per address
//! go through the login throttle (a link that ends after at most one line back, i.e. a
//! refused handshake, counts as a failure), and each address holds at most
//! [`LinkEndpoint::max_per_address`] open links (429 beyond).
//!
//! Once the `101` is written, the connection leaves actix: the response carries an
//! [`IoHandover`] (`vendor/actix-http/PATCHES.md`, patch 3), so the HTTP/1 dispatcher hands
//! the TLS stream over instead of serving it further. The socket is moved onto the runtime
//! the endpoint was made in (the commlink client's; see [`rehome`]) and handed to the
//! client as a [`WsStream::server`], so the link's reader and writers use the TLS stream
//! directly, as over raw TCP: no pipe, no dispatcher and no hop between threads in the way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_http::h1::{IoHandover, IoReceiver, io_handover};
use actix_web::http::header;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use commlink::transport::LINK_PATH;
use commlink::transport::websocket::{SUBPROTOCOL, WsStream, accept_key};
use commlink::{Acceptor, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::AppError;
use crate::state::AppState;

/// What the web's HTTPS listener hands over (actix-web over rustls 0.23).
type ActixTls = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;

/// The endpoint's shared state: where streams go, the prefix, open links per address, and
/// the runtime the links' sockets move to.
#[derive(Clone)]
pub struct LinkEndpoint {
    acceptor: Acceptor,
    prefix: String,
    max_per_address: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    home: Option<tokio::runtime::Handle>,
}

impl LinkEndpoint {
    /// Streams go to `acceptor`; served under `prefix` (`/seg…`, no trailing slash); at
    /// most `max_per_address` (at least 1) open links per client address. Made inside a
    /// Tokio runtime (the commlink client's), the links' sockets move to it.
    pub fn new(acceptor: Acceptor, prefix: &str, max_per_address: usize) -> LinkEndpoint {
        LinkEndpoint {
            acceptor,
            prefix: prefix.trim_end_matches('/').to_owned(),
            max_per_address: max_per_address.max(1),
            open: Arc::default(),
            home: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The limit of open links per client address.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// Counts a link for `ip`, or `None` when it already holds the most allowed.
    fn admit(&self, ip: IpAddr) -> Option<OpenGuard> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(OpenGuard {
            open: self.open.clone(),
            ip,
        })
    }
}

/// One open link of an address; uncounted when dropped.
struct OpenGuard {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Registers `GET <prefix>/v1/link` when the endpoint is served; nothing otherwise.
pub fn configure(cfg: &mut web::ServiceConfig, link: Option<&LinkEndpoint>) {
    let Some(link) = link else {
        return;
    };
    cfg.service(
        web::resource(format!("{}{LINK_PATH}", link.prefix))
            .app_data(web::Data::new(link.clone()))
            .route(web::get().to(upgrade))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// Whether the request is a WebSocket upgrade to some `…/v1/link` (`body.rs` then leaves
/// its payload, the upgraded stream, to the endpoint).
pub fn is_carrier_upgrade(req: &HttpRequest) -> bool {
    req.path().ends_with(LINK_PATH) && req.head().upgrade()
}

/// Whether the request asks for our WebSocket: `Connection: upgrade`, `Upgrade: websocket`,
/// version 13, a key, and `ffs-commlink.1` among the offered subprotocols.
fn is_our_upgrade(req: &HttpRequest) -> bool {
    let h = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        h.get_all(name).any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && has(header::SEC_WEBSOCKET_VERSION, "13")
        && h.contains_key(header::SEC_WEBSOCKET_KEY)
        && h.get_all(header::SEC_WEBSOCKET_PROTOCOL).any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim() == SUBPROTOCOL))
        })
}

async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    link: web::Data<LinkEndpoint>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if !is_our_upgrade(&req) {
        return Err(AppError::NotFound);
    }
    let ip = crate::routes::client_ip(&req, &state);
    if let Err(wait) = state.throttle.check(ip, Instant::now()) {
        tracing::warn!(%ip, "https carrier upgrade refused: too many failed links from this address");
        return Ok(too_many(wait, "too many failed links from this address"));
    }
    let Some(guard) = link.admit(ip) else {
        tracing::warn!(%ip, max = link.max_per_address, "https carrier upgrade refused: too many open links");
        return Ok(too_many(5, "too many open links from this address"));
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .ok_or(AppError::NotFound)?;
    if link.acceptor.is_closed() {
        return Err(AppError::Unavailable("the db agent link is shutting down"));
    }
    let peer = req
        .peer_addr()
        .map_or_else(|| ip.to_string(), |a| a.to_string());
    let (handover, taken) = io_handover();
    let end = LinkEnd {
        state: state.into_inner(),
        ip,
        lines: 0,
        _guard: guard,
    };
    actix_web::rt::spawn(take_over(taken, payload, link.get_ref().clone(), peer, end));
    let mut res = HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept_key(key.trim())))
        .insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL))
        .body(actix_web::body::None::new());
    res.extensions_mut().insert::<IoHandover>(handover);
    Ok(res)
}

fn too_many(wait: u64, why: &str) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, wait.to_string()))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{why}\n"))
}

/// Takes the connection over once the `101` is out (on the worker that served the
/// upgrade), moves its socket home and hands it to the client as the server end of the
/// WebSocket.
async fn take_over(
    taken: IoReceiver,
    mut payload: web::Payload,
    link: LinkEndpoint,
    peer: String,
    end: LinkEnd,
) {
    let Some((io, rest)) = taken.await else {
        tracing::warn!(%peer, "https carrier: the connection ended before the upgrade was answered");
        return;
    };
    // Anything the client sent before it had the `101` went to the request's payload
    // first (a client must wait for it, RFC 6455 §4.1, and ours does); then what the
    // dispatcher had read but not yet decoded.
    let mut early = Vec::new();
    std::future::poll_fn(|cx| {
        use futures_core::Stream as _;
        while let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut payload).poll_next(cx) {
            early.extend_from_slice(&chunk);
        }
        Poll::Ready(())
    })
    .await;
    drop(payload);
    early.extend_from_slice(&rest);
    let label = format!("https upgrade from {peer}");
    let incoming = match take_home(io, link.home.as_ref(), "https carrier", &peer) {
        Some(Taken::Tls(tls)) => {
            Incoming::carried(Counted::new(WsStream::server(*tls, early), end), label)
        }
        Some(Taken::Plain(tcp)) => {
            Incoming::carried(Counted::new(WsStream::server(*tcp, early), end), label)
        }
        None => return,
    };
    if link.acceptor.hand(incoming).await.is_err() {
        tracing::warn!(%peer, "https carrier: the db agent client is gone; link closed");
        return;
    }
    tracing::info!(%peer, "https carrier: link upgraded, handed to the db agent client");
}

/// A connection taken over from actix (`IoHandover`), as the listener's stream type.
pub(crate) enum Taken {
    /// From the HTTPS listener.
    Tls(Box<ActixTls>),
    /// From a plain listener.
    Plain(Box<TcpStream>),
}

/// Readies a taken-over connection (`io`, what the `IoReceiver` gave) for a link or a
/// relay channel, request and reply traffic: its stream type, no Nagle delay, and its
/// socket [`rehome`]d when there is a `home` runtime. `None` (logged, with `what` and
/// `peer`) for a stream of an unknown kind.
pub(crate) fn take_home(
    io: Box<dyn std::any::Any>,
    home: Option<&tokio::runtime::Handle>,
    what: &str,
    peer: &str,
) -> Option<Taken> {
    let ready = |tcp: &mut TcpStream| {
        let _ = tcp.set_nodelay(true);
        if let Some(home) = home
            && let Err(e) = rehome(tcp, home)
        {
            tracing::warn!(%peer, "{what}: the connection stays on the HTTP worker's reactor ({e})");
        }
    };
    match io.downcast::<ActixTls>() {
        Ok(mut tls) => {
            ready(tls.get_mut().0);
            Some(Taken::Tls(tls))
        }
        Err(io) => match io.downcast::<TcpStream>() {
            Ok(mut tcp) => {
                ready(&mut tcp);
                Some(Taken::Plain(tcp))
            }
            Err(_) => {
                tracing::error!(%peer, "{what}: the taken-over connection is of an unknown kind; closed");
                None
            }
        },
    }
}

/// Moves `tcp`'s socket from the HTTP worker's reactor to `home`'s: a duplicate of the
/// descriptor is registered there and the original closed. Then the link's reader and
/// writers, which run on `home`, are woken by their own runtime, not through the worker.
#[cfg(unix)]
fn rehome(tcp: &mut TcpStream, home: &tokio::runtime::Handle) -> std::io::Result<()> {
    use std::os::fd::AsFd as _;
    let dup = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
    dup.set_nonblocking(true)?;
    let moved = {
        let _home = home.enter();
        TcpStream::from_std(dup)?
    };
    drop(std::mem::replace(tcp, moved));
    Ok(())
}

#[cfg(not(unix))]
fn rehome(_: &mut TcpStream, _: &tokio::runtime::Handle) -> std::io::Result<()> {
    Ok(())
}

/// What happens when the link ends: a link that sent back at most one line (a refused
/// handshake's ERROR) counts as a failed attempt in the address's throttle; its place
/// among the address's open links is freed.
struct LinkEnd {
    state: Arc<AppState>,
    ip: IpAddr,
    lines: usize,
    _guard: OpenGuard,
}

impl Drop for LinkEnd {
    fn drop(&mut self) {
        if self.lines <= 1 {
            tracing::warn!(ip = %self.ip, "https carrier: a link ended at its handshake; counted against the address");
            self.state.throttle.fail(self.ip, Instant::now());
        }
    }
}

/// The link's stream, counting the lines written back to the agent for [`LinkEnd`].
struct Counted<S> {
    inner: S,
    end: LinkEnd,
}

impl<S> Counted<S> {
    fn new(inner: S, end: LinkEnd) -> Counted<S> {
        Counted { inner, end }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if this.end.lines <= 1 {
            this.end.lines += buf[..n].iter().filter(|b| **b == b'\n').count();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_links_are_bounded_per_address() {
        let bag = commlink::KeyBag::generate(2).expect("bag");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_client, acceptor) =
                commlink::Client::accepting(commlink::LinkConfig::new(Arc::new(bag)));
            let ep = LinkEndpoint::new(acceptor, "/ffs-link/", 2);
            assert_eq!(ep.prefix, "/ffs-link");
            let a: IpAddr = "10.0.0.1".parse().expect("ip");
            let b: IpAddr = "10.0.0.2".parse().expect("ip");
            let g1 = ep.admit(a).expect("first");
            let _g2 = ep.admit(a).expect("second");
            assert!(ep.admit(a).is_none(), "third refused");
            assert!(ep.admit(b).is_some(), "other addresses unaffected");
            drop(g1);
            assert!(ep.admit(a).is_some(), "a closed link frees its place");
        });
    }
}
