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
//! Actix passes a WebSocket upgrade's raw bytes as the request payload and writes a `101`
//! response's streaming body raw; a small bridge turns client frames into the bytes of a
//! [`tokio::io::duplex`] pipe and the pipe's bytes into unmasked binary frames.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use commlink::transport::LINK_PATH;
use commlink::transport::websocket::{SUBPROTOCOL, accept_key, encode_frame, parse_frame};
use commlink::{Acceptor, Incoming};
use tokio::io::{AsyncRead, AsyncWriteExt as _, DuplexStream, ReadBuf, ReadHalf};

use crate::error::AppError;
use crate::state::AppState;

/// Largest frame accepted from the agent (it sends at most 16 KiB).
const MAX_FRAME: usize = 64 * 1024;
/// The pipe between the HTTP side and the commlink.
const PIPE: usize = 64 * 1024;

/// The endpoint's shared state: where streams go, the prefix, open links per address.
#[derive(Clone)]
pub struct LinkEndpoint {
    acceptor: Acceptor,
    prefix: String,
    max_per_address: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl LinkEndpoint {
    /// Streams go to `acceptor`; served under `prefix` (`/seg…`, no trailing slash); at
    /// most `max_per_address` (at least 1) open links per client address.
    pub fn new(acceptor: Acceptor, prefix: &str, max_per_address: usize) -> LinkEndpoint {
        LinkEndpoint {
            acceptor,
            prefix: prefix.trim_end_matches('/').to_owned(),
            max_per_address: max_per_address.max(1),
            open: Arc::default(),
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
    let mut res = HttpResponse::SwitchingProtocols();
    res.upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept_key(key.trim())))
        .insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (rd, wr) = tokio::io::split(ours);
    actix_web::rt::spawn(pump_in(payload, wr));
    let lines = Arc::new(AtomicUsize::new(0));
    let peer = req
        .peer_addr()
        .map_or_else(|| ip.to_string(), |a| a.to_string());
    link.acceptor
        .hand(Incoming::carried(
            theirs,
            format!("https upgrade from {peer}"),
        ))
        .await
        .map_err(|_| AppError::Unavailable("the db agent link is shutting down"))?;
    tracing::info!(%peer, "https carrier: link upgraded, handed to the db agent client");
    Ok(res.streaming(OutFrames {
        rd,
        buf: vec![0; 16 * 1024],
        lines,
        end: Some(LinkEnd {
            state: state.into_inner(),
            ip,
            _guard: guard,
        }),
    }))
}

fn too_many(wait: u64, why: &str) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, wait.to_string()))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{why}\n"))
}

/// Client frames (masked, as RFC 6455 requires of clients) → the pipe. Ends the pipe on a
/// close frame, a protocol error or the end of the request.
async fn pump_in(mut payload: web::Payload, mut wr: tokio::io::WriteHalf<DuplexStream>) {
    use futures_core::Stream as _;
    let mut buf: Vec<u8> = Vec::new();
    'read: while let Some(chunk) =
        std::future::poll_fn(|cx| Pin::new(&mut payload).poll_next(cx)).await
    {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        let mut at = 0;
        loop {
            let head = match parse_frame(&buf[at..], MAX_FRAME) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!("https carrier: bad frame from the agent: {why}");
                    break 'read;
                }
            };
            let Some(key) = head.mask else {
                tracing::warn!("https carrier: unmasked frame from the agent");
                break 'read;
            };
            let frame = &buf[at..][head.payload.clone()];
            match head.opcode {
                0x0..=0x2 => {
                    let data: Vec<u8> = frame
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ key[i % 4])
                        .collect();
                    if wr.write_all(&data).await.is_err() {
                        break 'read;
                    }
                }
                0x8 => break 'read,
                _ => {}
            }
            at += head.payload.end;
        }
        buf.drain(..at);
    }
    let _ = wr.shutdown().await;
}

/// What happens when the link's response ends: a link that sent back at most one line (a
/// refused handshake's ERROR) counts as a failed attempt in the address's throttle.
struct LinkEnd {
    state: Arc<AppState>,
    ip: IpAddr,
    _guard: OpenGuard,
}

/// The pipe → unmasked binary frames (the `101` response's body).
struct OutFrames {
    rd: ReadHalf<DuplexStream>,
    buf: Vec<u8>,
    lines: Arc<AtomicUsize>,
    end: Option<LinkEnd>,
}

impl OutFrames {
    fn finish(&mut self) {
        if let Some(end) = self.end.take()
            && self.lines.load(Ordering::Relaxed) <= 1
        {
            tracing::warn!(ip = %end.ip, "https carrier: a link ended at its handshake; counted against the address");
            end.state.throttle.fail(end.ip, Instant::now());
        }
    }
}

impl Drop for OutFrames {
    fn drop(&mut self) {
        self.finish();
    }
}

impl futures_core::Stream for OutFrames {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.rd).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                let data = rb.filled();
                let n = data.iter().filter(|b| **b == b'\n').count();
                this.lines.fetch_add(n, Ordering::Relaxed);
                let mut out = Vec::with_capacity(data.len() + 10);
                encode_frame(&mut out, 0x2, data, None);
                Poll::Ready(Some(Ok(Bytes::from(out))))
            }
        }
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
