//! The HTTP relay carrier measured beside the others: an echo responder dials out over
//! [`crate::Relay`] (plain HTTP on loopback, directly, and through a forward proxy when
//! one is given) to a [`RelayHub`] served by a minimal hyper host, whose attachment feeds an
//! accepting client. Also how long the link takes to answer again after its receive
//! channel is cut (the host drops that connection; the agent reconnects and the web resends).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming as HyperBody};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::{BenchError, Options, TransportResult, bed, measure_client};
use crate::progress::Progress;
use crate::stats::percentile;
use crate::transport::{ReceiveParams, RelayError, RelayHub, RelayLimits};
use crate::{Client, Incoming, KeyBag, LinkConfig, Relay, RelayOptions, Tobj};

/// The reconnect measurement.
#[derive(Debug, Serialize)]
pub struct Reconnect {
    /// Cuts measured.
    pub cuts: usize,
    /// From the cut to the reply of a request sent right after it, median, ms.
    pub p50_ms: f64,
    /// The slowest, ms.
    pub max_ms: f64,
}

type Out = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

struct ChannelBody(crate::ReceiveChannel);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        futures_core::Stream::poll_next(Pin::new(&mut self.0), cx)
            .map(|c| c.map(|r| r.map(Frame::data)))
    }
}

fn text(status: u16, body: impl Into<Bytes>) -> Response<Out> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r
}

fn refused(e: RelayError) -> Response<Out> {
    text(e.status(), format!("{e}\n"))
}

/// Answers one relay request for `hub` (paths `/v1/relay/…`).
async fn handle(
    req: Request<HyperBody>,
    peer: std::net::IpAddr,
    hub: RelayHub,
    recv: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    me: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
) -> Result<Response<Out>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let Some(rest) = path.strip_prefix("/v1/relay/") else {
        return Ok(text(404, "not found\n"));
    };
    if rest == "open" {
        return Ok(match hub.open(peer) {
            Ok(id) => text(200, format!("{id}\r\n")),
            Err(e) => refused(e),
        });
    }
    let Some((id, verb)) = rest.split_once('/') else {
        return Ok(text(404, "not found\n"));
    };
    Ok(match verb {
        "send" => {
            let max = hub.limits().max_body;
            match Limited::new(req.into_body(), max).collect().await {
                Ok(b) => match hub.send(id, &b.to_bytes()) {
                    Ok(a) => text(200, a),
                    Err(e) => refused(e),
                },
                Err(_) => refused(RelayError::TooLarge(max)),
            }
        }
        "recv" => match ReceiveParams::from_query(&query).and_then(|p| hub.receive(id, p)) {
            Ok(ch) => {
                if let (Ok(mut v), Ok(m)) = (recv.lock(), me.lock())
                    && let Some(h) = m.clone()
                {
                    v.push(h);
                }
                Response::new(ChannelBody(ch).boxed())
            }
            Err(e) => refused(e),
        },
        _ => text(404, "not found\n"),
    })
}

/// Echoes every request.
struct Echo;

impl crate::Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        request
    }
}

/// The web's host and hub, the agent, and the client.
struct RelayBed {
    client: Client,
    recv: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RelayBed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RelayBed {
    async fn start(proxy: Option<String>) -> Result<RelayBed, BenchError> {
        let bag = KeyBag::generate(128)
            .map_err(|e| BenchError::Failed(format!("generating a key bag: {e}")))?;
        let mut cfg = LinkConfig::new(Arc::new(bag));
        cfg.request_timeout = Duration::from_secs(30);
        cfg.connect_timeout = Duration::from_secs(5);
        let (client, acceptor) = Client::accepting(cfg.clone());
        let hub = RelayHub::new(
            RelayLimits::default(),
            Arc::new(move |stream, peer| {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.hand(Incoming::carried(stream, peer)).await;
                });
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::io("binding the relay host"))?;
        let port = listener
            .local_addr()
            .map_err(BenchError::io("binding the relay host"))?
            .port();
        let recv = Arc::new(Mutex::new(Vec::new()));
        let r = recv.clone();
        let host = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let me = Arc::new(Mutex::new(None));
                let (hub, r, m) = (hub.clone(), r.clone(), me.clone());
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, peer.ip(), hub.clone(), r.clone(), m.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                if let Ok(mut m) = me.lock() {
                    *m = Some(conn.abort_handle());
                }
            }
        });
        let relay = Relay::new(
            &format!("relay+http://127.0.0.1:{port}"),
            RelayOptions {
                proxy,
                ..RelayOptions::default()
            },
        )
        .map_err(|e| BenchError::Failed(format!("the relay carrier: {e}")))?;
        // As the agent runs it (`ffs agent`): the relay's link on a thread of its own.
        let agent = tokio::spawn(async move {
            let _ = crate::serve_dialout_on_own_thread(
                relay,
                cfg,
                Arc::new(Echo),
                std::future::pending::<()>(),
            )
            .await;
        });
        if !client.wait_up(Duration::from_secs(10)).await {
            return Err(BenchError::Failed(
                "the relay link did not come up within 10 s".into(),
            ));
        }
        Ok(RelayBed {
            client,
            recv,
            tasks: vec![host, agent],
        })
    }

    /// Drops the connections carrying receive channels.
    fn cut(&self) {
        if let Ok(mut v) = self.recv.lock() {
            for h in v.drain(..) {
                h.abort();
            }
        }
    }
}

/// The relay rows (direct, and through `opts.relay_proxy` when set) and the reconnect
/// time after a cut receive channel (direct).
pub(super) async fn measure(
    opts: &Options,
    message: &Tobj,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<TransportResult>, Reconnect), BenchError> {
    let direct = RelayBed::start(None).await?;
    let model = format!(
        "{} concurrent calls on one relay attachment",
        opts.concurrency
    );
    let mut rows = vec![
        measure_client(
            "relay http direct",
            &model,
            &direct.client,
            opts,
            message,
            progress,
        )
        .await?,
    ];
    if let Some(proxy) = &opts.relay_proxy {
        let via = RelayBed::start(Some(proxy.clone())).await?;
        rows.push(
            measure_client(
                "relay http via proxy",
                &model,
                &via.client,
                opts,
                message,
                progress,
            )
            .await?,
        );
    }
    const CUTS: usize = 20;
    progress.phase("relay: reconnect after a cut receive channel", CUTS as u64);
    let mut times = Vec::with_capacity(CUTS);
    for _ in 0..CUTS {
        bed::call_checked(&direct.client, message).await?;
        let t = Instant::now();
        direct.cut();
        bed::call_checked(&direct.client, message).await?;
        times.push(t.elapsed());
        progress.advance(1);
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok((
        rows,
        Reconnect {
            cuts: CUTS,
            p50_ms: ms(percentile(&times, 50.0)),
            max_ms: times.last().map_or(0.0, |d| ms(*d)),
        },
    ))
}
