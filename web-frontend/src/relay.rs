//! The HTTP relay endpoint (seed 003; `commlink/PROTOCOL.md` §11) on the web's HTTPS
//! listener, under the carriers' prefix: `POST <prefix>/v1/relay/open`,
//! `…/<id>/send` and `…/<id>/recv`. A thin actix adaptor over [`commlink::RelayHub`], which
//! owns the attachments and their bounds and hands each one to the db-agent client's
//! acceptor; here only the HTTP mapping: bodies in, the receive channel as a streamed
//! response, refusals as status codes with a one-line text body (`404` for any id the hub
//! does not know, whoever asks).
//!
//! A streamed receive channel over HTTP/1.1 leaves actix once its head is out (the
//! response carries an [`IoHandover`], `vendor/actix-http/PATCHES.md` patch 3): its socket
//! moves to the runtime the hub was made in (the commlink client's, see
//! `link_endpoint::take_home`), and the web's commlink writes its lines to it on its
//! own thread: the hub's kick frames them as a chunk and writes it at once, as the commlink
//! writes to a raw TCP socket, without waking an HTTP worker on the way. A task there
//! writes the first chunk, heartbeats, the end, and whatever the kick could not write
//! without waiting. Long-poll channels, and any other HTTP version, stay ordinary streamed
//! responses.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use crate::link_endpoint::{Taken, take_home};
use actix_http::h1::{IoHandover, IoReceiver, io_handover};
use actix_web::http::{Version, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use commlink::{
    Acceptor, Incoming, ReceiveChannel, ReceiveParams, RelayError, RelayHub, RelayLimits,
};
use futures_core::Stream as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::state::AppState;

/// Bodies of `send` requests up to this size are read (the hub's `max_body`); `body.rs`
/// keeps them for the handler.
pub const MAX_BODY: usize = (1 << 20) + 64 * 1024;

/// The hub shared by every worker, and the prefix it is served under.
#[derive(Clone)]
pub struct Relay {
    /// The attachments.
    pub hub: RelayHub,
    prefix: String,
    /// Where taken-over receive channels run (the runtime the relay was made in).
    home: Option<tokio::runtime::Handle>,
}

impl Relay {
    /// A hub whose attachments go to `acceptor` (the db-agent client's), served under
    /// `prefix` (`/seg…` without a trailing slash, e.g. `/ffs-link`). Must be called inside
    /// a Tokio runtime.
    pub fn new(acceptor: Acceptor, limits: RelayLimits, prefix: &str) -> Relay {
        let limits = RelayLimits {
            max_body: limits.max_body.min(MAX_BODY),
            ..limits
        };
        let hub = RelayHub::new(
            limits,
            std::sync::Arc::new(move |stream, peer| {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if acceptor
                        .hand(Incoming::carried(stream, peer))
                        .await
                        .is_err()
                    {
                        tracing::warn!("relay attachment arrived after the agent client stopped");
                    }
                });
            }),
        );
        Relay {
            hub,
            prefix: prefix.trim_end_matches('/').to_owned(),
            home: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The prefix it is served under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Whether `path` is a relay `send` under some prefix (its body may exceed the pages'
/// limit; `body.rs` asks).
pub fn is_send_path(path: &str) -> bool {
    path.ends_with("/send") && path.contains("/v1/relay/")
}

/// Registers the relay's endpoints under its prefix, when there is one (on the HTTPS app,
/// and on the plain-HTTP one for proxies that allow no `CONNECT`: the commlink inside is
/// sealed end to end either way). Registered ahead of the pages, as three `POST` resources:
/// the link's requests skip the pages' middleware (see `startup::app`), and anything else
/// under the prefix (another path or method) falls through to the pages, and their 404.
pub fn configure(cfg: &mut web::ServiceConfig, relay: Option<&Relay>) {
    let Some(relay) = relay else { return };
    let data = web::Data::new(relay.clone());
    let base = format!("{}/v1/relay", relay.prefix);
    let resource = |tail: &str| {
        web::resource(format!("{base}/{tail}"))
            .guard(actix_web::guard::Post())
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
    };
    cfg.service(resource("open").to(open))
        .service(resource("{id}/send").to(send))
        .service(resource("{id}/recv").to(recv));
}

fn refused(e: RelayError) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(e.status())
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(format!("{e}\n"))
}

fn text(body: impl Into<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.into())
}

fn hub(req: &HttpRequest) -> Option<&Relay> {
    req.app_data::<web::Data<Relay>>().map(|d| d.get_ref())
}

// `open` and `recv` take their (normally empty) bodies too: these routes are outside
// `body.rs`'s read-ahead, and over HTTP/2 an answer sent before the request body was read
// races the stream's reset (curl then reports an error instead of the status).
async fn open(req: HttpRequest, state: Option<web::Data<AppState>>, _body: Bytes) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    let ip = match &state {
        Some(state) => crate::routes::client_ip(&req, state),
        None => req
            .peer_addr()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                a.ip()
            }),
    };
    match relay.hub.open(ip) {
        Ok(id) => text(format!("{id}\r\n")),
        Err(e) => {
            tracing::warn!(%ip, "relay attachment refused: {e}");
            refused(e)
        }
    }
}

async fn send(req: HttpRequest, path: web::Path<String>, body: Bytes) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    match relay.hub.send(&path, &body) {
        Ok(answer) => text(answer),
        Err(e) => refused(e),
    }
}

async fn recv(req: HttpRequest, path: web::Path<String>, _body: Bytes) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    let params = match ReceiveParams::from_query(req.query_string()) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let channel = match relay.hub.receive(&path, params) {
        Ok(channel) => channel,
        Err(e) => return refused(e),
    };
    let mut res = HttpResponse::Ok();
    res.content_type("text/plain")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Proxies that honour it (nginx) pass the channel on as it is written.
        .insert_header(("X-Accel-Buffering", "no"));
    match &relay.home {
        Some(home) if !params.poll && req.version() == Version::HTTP_11 => {
            let (handover, taken) = io_handover();
            let peer = req
                .peer_addr()
                .map_or_else(|| "?".to_owned(), |a| a.to_string());
            actix_web::rt::spawn(take_over(taken, channel, home.clone(), peer));
            // The head says chunked; the body is written by `carry`, and the connection
            // ends with the channel.
            let mut res = res
                .force_close()
                .streaming(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
            res.extensions_mut().insert::<IoHandover>(handover);
            res
        }
        _ => res.streaming(channel),
    }
}

/// Takes the receive channel's connection over once its head is out (on the worker that
/// served it), moves the socket home and carries the channel there.
async fn take_over(
    taken: IoReceiver,
    channel: ReceiveChannel,
    home: tokio::runtime::Handle,
    peer: String,
) {
    let Some((io, _)) = taken.await else {
        tracing::debug!(%peer, "relay receive channel: the connection ended before its head was out");
        return;
    };
    match take_home(io, Some(&home), "relay receive channel", &peer) {
        Some(Taken::Tls(tls)) => {
            home.spawn(carry(*tls, channel));
        }
        Some(Taken::Plain(tcp)) => {
            home.spawn(carry(*tcp, channel));
        }
        None => {}
    }
}

/// A taken-over receive channel: its connection, the channel, and the framed bytes not
/// yet accepted by the connection.
struct Carried<S> {
    io: S,
    channel: ReceiveChannel,
    out: Vec<u8>,
    /// The last chunk is framed: once it is out, the connection closes.
    last: bool,
}

impl<S: AsyncWrite + Unpin> Carried<S> {
    /// Writes out what is framed and flushes it.
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// What the carrying task shares with the channel's kick.
struct Shared<S> {
    carried: Mutex<Carried<S>>,
    /// The carrying task, woken for whatever the kick could not finish.
    task: Mutex<Option<Waker>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The channel's kick: on the thread of the commlink's write, frames the new lines and
/// writes them straight to the connection, as the commlink does over raw TCP. Anything
/// that would wait (the connection busy or full, or the task holding it) is left to the
/// carrying task, which is woken.
fn kick<S: AsyncWrite + Unpin>(shared: &Weak<Shared<S>>) {
    let Some(shared) = shared.upgrade() else {
        return; // the channel ended
    };
    let done = match shared.carried.try_lock() {
        Ok(mut c) => {
            if let Some(chunk) = c.channel.try_chunk() {
                chunked(&mut c.out, &chunk);
            }
            let mut cx = Context::from_waker(Waker::noop());
            matches!(c.write_out(&mut cx), Poll::Ready(Ok(())))
        }
        Err(_) => false,
    };
    if !done && let Some(task) = locked(&shared.task).as_ref() {
        task.wake_by_ref();
    }
}

/// Carries the channel on `io` in HTTP/1.1 chunked framing until the channel ends (then the
/// last chunk, and the connection closes) or the agent closes the connection (the channel
/// is dropped: the hub counts it closed). New lines are mostly written by the kick; this
/// task writes the first chunk, heartbeats, the end, and what the kick left.
async fn carry<S>(io: S, channel: ReceiveChannel)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        carried: Mutex::new(Carried {
            io,
            channel,
            out: Vec::new(),
            last: false,
        }),
        task: Mutex::new(None),
    });
    let weak = Arc::downgrade(&shared);
    locked(&shared.carried)
        .channel
        .set_kick(Arc::new(move || kick(&weak)));
    let mut scratch = [0u8; 64];
    std::future::poll_fn(|cx| {
        {
            let mut task = locked(&shared.task);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut guard = locked(&shared.carried);
        let c = &mut *guard;
        // The agent sends nothing more on this connection: end of stream, an error or
        // stray bytes all end the channel.
        if Pin::new(&mut c.io)
            .poll_read(cx, &mut ReadBuf::new(&mut scratch))
            .is_ready()
        {
            return Poll::Ready(());
        }
        while !c.last {
            match Pin::new(&mut c.channel).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunked(&mut c.out, &chunk),
                Poll::Ready(Some(Err(_)) | None) => {
                    c.out.extend_from_slice(b"0\r\n\r\n");
                    c.last = true;
                }
                Poll::Pending => break,
            }
        }
        match c.write_out(cx) {
            Poll::Ready(Ok(())) if c.last => Pin::new(&mut c.io).poll_shutdown(cx).map(|_| ()),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(()),
        }
    })
    .await;
}

/// `chunk` in HTTP/1.1 chunked framing (never empty: an empty chunk would end the body).
fn chunked(frame: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.is_empty() {
        return;
    }
    frame.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    frame.extend_from_slice(chunk);
    frame.extend_from_slice(b"\r\n");
}
