//! The HTTP relay carrier end to end: an agent-side responder dials out with
//! [`commlink::Relay`] to a web-side [`RelayHub`] served by a small hyper host (plain HTTP
//! or HTTPS, under `/link/v1/relay/`), whose attachments feed an accepting [`Client`].
//! Real proxies on the way: squid with `CONNECT` denied relaying plain-HTTP requests, and
//! mitmproxy inspecting TLS. Faults (a cut receive channel, a POST cut mid-body, a POST
//! whose answer is lost, a proxy restart) during a stream of requests: every request is
//! answered exactly once or fails with an error, and a responder counts what it applied.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use commlink::{
    Client, Fields, Incoming, KeyBag, LinkConfig, LinkError, ReceiveParams, Relay, RelayError,
    RelayHub, RelayLimits, RelayOptions, Service, Tobj, Trust, serve_dialout_on_own_thread,
};
use ffs_testkit::squid::{Policy, Squid};
use ffs_testkit::wait;

/// Applies each request once per `key` (counting), echoes `text`, optionally after
/// `delay_ms`.
#[derive(Default)]
struct Counter {
    applied: Mutex<HashMap<String, usize>>,
}

impl Counter {
    fn count(&self, key: &str) -> usize {
        self.applied
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Service for Counter {
    async fn call(&self, request: Tobj) -> Tobj {
        let key = request.fields.req_text("key").unwrap_or("").to_owned();
        let text = request.fields.req_text("text").unwrap_or("").to_owned();
        if let Ok(ms) = request.fields.req_text("delay_ms")
            && let Ok(ms) = ms.parse::<u64>()
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Ok(mut m) = self.applied.lock() {
            *m.entry(key).or_default() += 1;
        }
        Tobj::with_fields("test.echo", 0, Fields::new().text("text", text))
    }
}

async fn call(client: &Client, key: &str, text: &str) -> Result<String, LinkError> {
    let reply = client
        .call(Tobj::with_fields(
            "test.apply",
            0,
            Fields::new().text("key", key).text("text", text),
        ))
        .await?;
    Ok(reply.fields.req_text("text")?.to_owned())
}

/// The web's hyper host for the hub, with switches that break things on purpose.
mod host {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::{BodyExt as _, Full, Limited};
    use hyper::body::{Body, Frame, Incoming as HyperBody};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    use super::*;

    type Out = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

    /// The receive channel as a response body.
    struct ChannelBody(commlink::ReceiveChannel);

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

    #[derive(Default)]
    pub struct Faults {
        /// Abort the next `send` before its body is read.
        pub cut_next_body: AtomicBool,
        /// Apply the next `send`, then drop the connection without answering.
        pub lose_next_answer: AtomicBool,
        /// Requests seen per kind.
        pub sends: AtomicUsize,
        pub receives: AtomicUsize,
        pub opens: AtomicUsize,
    }

    pub struct Host {
        pub port: u16,
        pub hub: RelayHub,
        pub faults: Arc<Faults>,
        recv_conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Host {
        fn drop(&mut self) {
            self.task.abort();
            if let Ok(mut v) = self.recv_conns.lock() {
                for h in v.drain(..) {
                    h.abort();
                }
            }
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

    impl Host {
        /// Serves `hub` on a loopback port, over TLS when `tls` is given.
        pub async fn start(hub: RelayHub, tls: Option<tokio_rustls::TlsAcceptor>) -> Host {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("address").port();
            let faults = Arc::new(Faults::default());
            let recv_conns = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
            let (h, f, rc) = (hub.clone(), faults.clone(), recv_conns.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = listener.accept().await else {
                        continue;
                    };
                    let (hub, faults, rc, tls) = (h.clone(), f.clone(), rc.clone(), tls.clone());
                    let is_recv = Arc::new(AtomicBool::new(false));
                    let flag = is_recv.clone();
                    let conn = tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let (hub, faults, flag) = (hub.clone(), faults.clone(), flag.clone());
                            async move { handle(req, peer.ip(), &hub, &faults, &flag).await }
                        });
                        let builder = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(tls) => {
                                if let Ok(s) = tls.accept(stream).await {
                                    let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    });
                    // Remember connections that served a receive channel, to cut them.
                    let rc2 = rc.clone();
                    let abort = conn.abort_handle();
                    tokio::spawn(async move {
                        wait::until(Duration::from_secs(3600), || {
                            is_recv.load(Ordering::SeqCst) || abort.is_finished()
                        })
                        .await;
                        if is_recv.load(Ordering::SeqCst)
                            && let Ok(mut v) = rc2.lock()
                        {
                            v.retain(|h| !h.is_finished());
                            v.push(abort);
                        }
                    });
                }
            });
            Host {
                port,
                hub,
                faults,
                recv_conns,
                task,
            }
        }

        /// Drops every connection that carries a receive channel now.
        pub fn cut_receive_channels(&self) -> usize {
            let mut v = self.recv_conns.lock().expect("lock");
            let n = v.iter().filter(|h| !h.is_finished()).count();
            for h in v.drain(..) {
                h.abort();
            }
            n
        }
    }

    async fn handle(
        req: Request<HyperBody>,
        peer: IpAddr,
        hub: &RelayHub,
        faults: &Faults,
        is_recv: &AtomicBool,
    ) -> Result<Response<Out>, std::io::Error> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let Some(rest) = path.strip_prefix("/link/v1/relay/") else {
            return Ok(text(404, "not found\n"));
        };
        if req.method() != hyper::Method::POST {
            return Ok(text(405, "POST only\n"));
        }
        if rest == "open" {
            faults.opens.fetch_add(1, Ordering::SeqCst);
            return Ok(match hub.open(peer) {
                Ok(id) => text(200, format!("{id}\r\n")),
                Err(e) => refused(e),
            });
        }
        let Some((id, verb)) = rest.split_once('/') else {
            return Ok(text(404, "not found\n"));
        };
        match verb {
            "send" => {
                faults.sends.fetch_add(1, Ordering::SeqCst);
                if faults.cut_next_body.swap(false, Ordering::SeqCst) {
                    return Err(std::io::Error::other("cut mid-body on purpose"));
                }
                let max = hub.limits().max_body;
                let body = match Limited::new(req.into_body(), max).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return Ok(refused(RelayError::TooLarge(max))),
                };
                let answer = hub.send(id, &body);
                if faults.lose_next_answer.swap(false, Ordering::SeqCst) {
                    return Err(std::io::Error::other("answer lost on purpose"));
                }
                Ok(match answer {
                    Ok(b) => text(200, b),
                    Err(e) => refused(e),
                })
            }
            "recv" => {
                faults.receives.fetch_add(1, Ordering::SeqCst);
                let params = match ReceiveParams::from_query(&query) {
                    Ok(p) => p,
                    Err(e) => return Ok(refused(e)),
                };
                Ok(match hub.receive(id, params) {
                    Ok(ch) => {
                        is_recv.store(true, Ordering::SeqCst);
                        let mut r = Response::new(ChannelBody(ch).boxed());
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain"),
                        );
                        r
                    }
                    Err(e) => refused(e),
                })
            }
            _ => Ok(text(404, "not found\n")),
        }
    }
}

use host::Host;

fn link_cfg() -> LinkConfig {
    let mut cfg = LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")));
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

/// The web's side: a hub whose attachments go to an accepting client, served by a host.
async fn web(
    cfg: &LinkConfig,
    limits: RelayLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (Client, Host) {
    let (client, acceptor) = Client::accepting(cfg.clone());
    let hub = RelayHub::new(
        limits,
        Arc::new(move |stream, peer| {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.hand(Incoming::carried(stream, peer)).await;
            });
        }),
    );
    (client, Host::start(hub, tls).await)
}

/// The agent's side: a counting responder dialing out over the relay, on a thread of its
/// own as `ffs agent` runs it; aborting the task stops that thread.
fn agent(
    url: &str,
    opts: RelayOptions,
    cfg: &LinkConfig,
) -> (Arc<Counter>, tokio::task::JoinHandle<()>) {
    let relay = Relay::new(url, opts).expect("a relay carrier");
    let counter = Arc::new(Counter::default());
    let (cfg, c) = (cfg.clone(), counter.clone());
    let task = tokio::spawn(async move {
        serve_dialout_on_own_thread(relay, cfg, c, std::future::pending::<()>())
            .await
            .expect("the link's thread starts");
    });
    (counter, task)
}

#[tokio::test]
async fn the_agent_on_its_own_thread_stops_with_its_task_or_its_shutdown() {
    let cfg = link_cfg();
    let (client, host) = web(&cfg, RelayLimits::default(), None).await;
    let url = format!("relay+http://127.0.0.1:{}/link", host.port);
    // Dropped (the task aborted): the thread is told to stop and the link goes down.
    let (_, agent_task) = agent(&url, quick(), &cfg);
    assert!(client.wait_up(Duration::from_secs(10)).await, "link up");
    assert_eq!(call(&client, "a", "one").await.expect("reply"), "one");
    agent_task.abort();
    assert!(
        wait::until(Duration::from_secs(5), || !client.is_up()).await,
        "the link is still up 5 s after its task was aborted"
    );
    // Its shutdown: the future returns once the thread has ended.
    let relay = Relay::new(&url, quick()).expect("a relay carrier");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve_dialout_on_own_thread(
        relay,
        cfg.clone(),
        Arc::new(Counter::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    assert!(
        client.wait_up(Duration::from_secs(10)).await,
        "link up again"
    );
    assert_eq!(call(&client, "b", "two").await.expect("reply"), "two");
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "serve_dialout_on_own_thread did not end after its shutdown: {ended:?}"
    );
}

fn quick() -> RelayOptions {
    RelayOptions {
        heartbeat: Duration::from_secs(2),
        ..RelayOptions::default()
    }
}

#[tokio::test]
async fn the_relay_carries_the_link_over_plain_http() {
    let cfg = link_cfg();
    let (client, host) = web(&cfg, RelayLimits::default(), None).await;
    let url = format!("relay+http://127.0.0.1:{}/link", host.port);
    let (counter, agent) = agent(&url, quick(), &cfg);
    assert!(client.wait_up(Duration::from_secs(10)).await, "link up");
    for i in 0..20 {
        let t = format!("hello {i}");
        assert_eq!(call(&client, &format!("k{i}"), &t).await.expect("reply"), t);
    }
    // A line far larger than one TCP segment, and many requests at once.
    let big = "x".repeat(300_000);
    assert_eq!(call(&client, "big", &big).await.expect("reply"), big);
    let calls = (0..50).map(|i| {
        let c = client.clone();
        async move { call(&c, &format!("p{i}"), &format!("v{i}")).await }
    });
    for (i, r) in futures_join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.expect("reply"), format!("v{i}"));
        assert_eq!(counter.count(&format!("p{i}")), 1);
    }
    assert_eq!(host.hub.attachments(), 1, "one attachment carried it all");
    agent.abort();
}

/// Runs futures concurrently (no futures-util here).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn through_squid_without_connect_the_relay_carries_the_link() {
    let cfg = link_cfg();
    let (client, host) = web(&cfg, RelayLimits::default(), None).await;
    let Some(squid) = Squid::start(host.port, Policy::HttpOnly) else {
        return;
    };
    let url = format!("relay+http://127.0.0.1:{}/link", host.port);
    let opts = RelayOptions {
        proxy: Some(squid.url(false)),
        ..quick()
    };
    let (counter, agent) = agent(&url, opts, &cfg);
    assert!(client.wait_up(Duration::from_secs(15)).await, "link up");
    let secret = "customer-login-alice@example.com";
    assert_eq!(call(&client, "s", secret).await.expect("reply"), secret);
    assert_eq!(counter.count("s"), 1);
    assert!(
        wait::until(Duration::from_secs(10), || squid
            .log("access.log")
            .contains("/link/v1/relay/"))
        .await,
        "squid relayed the requests: {}",
        squid.log("access.log")
    );
    let log = squid.log("access.log");
    assert!(!log.contains("CONNECT"), "{log}");
    assert!(!log.contains(secret));
    agent.abort();
}

#[tokio::test]
async fn faults_neither_lose_nor_double_a_request() {
    let cfg = link_cfg();
    let (client, host) = web(&cfg, RelayLimits::default(), None).await;
    let Some(mut squid) = Squid::start(host.port, Policy::HttpOnly) else {
        return;
    };
    let url = format!("relay+http://127.0.0.1:{}/link", host.port);
    let opts = RelayOptions {
        proxy: Some(squid.url(false)),
        ..quick()
    };
    let (counter, agent) = agent(&url, opts, &cfg);
    assert!(client.wait_up(Duration::from_secs(15)).await, "link up");
    let opens = host.faults.opens.load(Ordering::SeqCst);

    // A stream of requests in the background while faults are injected.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::<(String, Result<String, String>)>::new()));
    let streams: Vec<_> = (0..4)
        .map(|w| {
            let (c, stop, results) = (client.clone(), stop.clone(), results.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("w{w}-{i}");
                    let r = call(&c, &key, &key).await.map_err(|e| e.to_string());
                    results.lock().expect("lock").push((key, r));
                    i += 1;
                }
            })
        })
        .collect();
    let done = |n: usize| {
        let results = results.clone();
        move || results.lock().map(|r| r.len() >= n).unwrap_or(false)
    };
    let progress = |n| wait::until(Duration::from_secs(30), done(n));

    assert!(progress(20).await, "requests flow");
    // 1. The receive channel is cut.
    let cut = host.cut_receive_channels();
    assert!(cut >= 1, "a receive channel was open");
    let now = results.lock().expect("lock").len();
    assert!(progress(now + 20).await, "requests flow after the cut");
    // 2. A POST is cut before the web took its body.
    host.faults.cut_next_body.store(true, Ordering::SeqCst);
    let now = results.lock().expect("lock").len();
    assert!(progress(now + 20).await, "requests flow after a cut POST");
    assert!(
        !host.faults.cut_next_body.load(Ordering::SeqCst),
        "the cut happened"
    );
    // 3. A POST is applied but its answer lost: the agent sends the same lines again.
    host.faults.lose_next_answer.store(true, Ordering::SeqCst);
    let now = results.lock().expect("lock").len();
    assert!(
        progress(now + 20).await,
        "requests flow after a lost answer"
    );
    assert!(
        !host.faults.lose_next_answer.load(Ordering::SeqCst),
        "the loss happened"
    );
    // 4. The proxy restarts: everything through it breaks.
    squid.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    squid.restart();
    let back = Instant::now();
    let now = results.lock().expect("lock").len();
    assert!(
        wait::until(Duration::from_secs(5), done(now + 1)).await,
        "the link recovers within 5 s of the proxy returning"
    );
    println!(
        "first request after the proxy returned: {:?}",
        back.elapsed()
    );
    assert!(progress(now + 20).await, "requests flow after the restart");

    stop.store(true, Ordering::SeqCst);
    for s in streams {
        s.await.expect("stream task");
    }
    let results = results.lock().expect("lock");
    let mut failed = 0;
    for (key, r) in results.iter() {
        match r {
            Ok(echo) => {
                assert_eq!(echo, key);
                assert_eq!(counter.count(key), 1, "{key} applied once");
            }
            Err(e) => {
                failed += 1;
                assert!(counter.count(key) <= 1, "{key} applied at most once ({e})");
                assert!(!e.is_empty());
            }
        }
    }
    println!(
        "{} requests, {failed} failed with an error; attachments opened during the faults: {}",
        results.len(),
        host.faults.opens.load(Ordering::SeqCst) - opens
    );
    assert_eq!(
        host.faults.opens.load(Ordering::SeqCst),
        opens,
        "the same attachment (the same commlink session) carried on through every fault"
    );
    assert!(failed == 0, "no request failed: the session continued");
    agent.abort();
}

#[tokio::test]
async fn an_attachment_not_seen_expires_and_its_requests_fail_clearly() {
    let cfg = link_cfg();
    let limits = RelayLimits {
        idle_expiry: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    let (client, host) = web(&cfg, limits, None).await;
    let Some(mut squid) = Squid::start(host.port, Policy::HttpOnly) else {
        return;
    };
    let url = format!("relay+http://127.0.0.1:{}/link", host.port);
    let opts = RelayOptions {
        proxy: Some(squid.url(false)),
        ..quick()
    };
    let (_counter, agent) = agent(&url, opts, &cfg);
    assert!(client.wait_up(Duration::from_secs(15)).await, "link up");
    let pending = {
        let c = client.clone();
        tokio::spawn(async move {
            c.call(Tobj::with_fields(
                "test.apply",
                0,
                Fields::new()
                    .text("key", "slow")
                    .text("text", "slow")
                    .text("delay_ms", "3000"),
            ))
            .await
        })
    };
    assert!(
        wait::until(Duration::from_secs(10), || host
            .faults
            .sends
            .load(Ordering::SeqCst)
            > 0)
        .await
    );
    squid.stop(); // the agent can no longer reach the web
    let err = pending
        .await
        .expect("task")
        .expect_err("the attachment expired under it");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(host.hub.attachments(), 0);
    agent.abort();
}

#[tokio::test]
async fn the_hub_bounds_what_an_outsider_can_make_it_hold() {
    let limits = RelayLimits {
        per_address: 2,
        total: 3,
        receive_channels: 1,
        max_body: 1000,
        ..RelayLimits::default()
    };
    let handed = Arc::new(AtomicUsize::new(0));
    // The streams stay open (a dropped stream ends its attachment).
    let streams = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, st) = (handed.clone(), streams.clone());
    let hub = RelayHub::new(
        limits,
        Arc::new(move |stream, _peer| {
            h.fetch_add(1, Ordering::SeqCst);
            st.lock().expect("streams").push(stream);
        }),
    );
    let a: IpAddr = "192.0.2.1".parse().expect("ip");
    let b: IpAddr = "192.0.2.2".parse().expect("ip");
    let id1 = hub.open(a).expect("first");
    assert_eq!(id1.len(), 64, "256 random bits in hex");
    let id2 = hub.open(a).expect("second");
    assert_ne!(id1, id2);
    assert_eq!(
        hub.open(a),
        Err(RelayError::TooMany("attachments from this address"))
    );
    hub.open(b).expect("another address");
    assert_eq!(
        hub.open("192.0.2.3".parse().expect("ip")),
        Err(RelayError::TooMany("attachments"))
    );
    assert_eq!(handed.load(Ordering::SeqCst), 3);
    // Unknown ids are 404, whatever the request.
    let unknown = "0".repeat(64);
    assert_eq!(
        hub.send(&unknown, b"A 0\r\n").err().map(|e| e.status()),
        Some(404)
    );
    assert_eq!(
        hub.receive(&unknown, ReceiveParams::default())
            .err()
            .map(|e| e.status()),
        Some(404)
    );
    // Bodies past the limit are 413; bad records close the attachment (400, then 404).
    assert_eq!(
        hub.send(&id1, &[b'A'; 1001]).err().map(|e| e.status()),
        Some(413)
    );
    assert_eq!(
        hub.send(&id1, b"A 5\r\n").err().map(|e| e.status()),
        Some(400)
    );
    assert_eq!(
        hub.send(&id1, b"A 0\r\n").err().map(|e| e.status()),
        Some(404)
    );
    // One receive channel in all.
    let _ch = hub
        .receive(&id2, ReceiveParams::default())
        .expect("a channel");
    assert_eq!(
        hub.receive(&id2, ReceiveParams::default())
            .err()
            .map(|e| e.status()),
        Some(429)
    );
    // Duplicates are dropped and acknowledged; a gap is refused.
    assert_eq!(
        hub.send(&id2, b"D 1 AAAA\r\n").expect("taken"),
        Bytes::from_static(b"A 1\r\n")
    );
    assert_eq!(
        hub.send(&id2, b"D 1 AAAA\r\nD 2 BBBB\r\n").expect("taken"),
        Bytes::from_static(b"A 2\r\n")
    );
    assert_eq!(
        hub.send(&id2, b"D 4 CCCC\r\n").err().map(|e| e.status()),
        Some(400)
    );
}

/// A self-signed certificate for `localhost` and a TLS acceptor with it.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// mitmdump as a TLS-inspecting proxy (its own CA in `dir`), flows written to `dir/flows`.
struct Mitm {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mitm {
    fn start() -> Option<Mitm> {
        if !ffs_testkit::prereq::require_command("mitmdump", "mitmdump", "pip install mitmproxy") {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = ffs_testkit::port::free_port();
        let child = std::process::Command::new("mitmdump")
            .args([
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &port.to_string(),
            ])
            .args(["--set", &format!("confdir={}", dir.path().display())])
            .args(["--ssl-insecure", "-q", "-w"])
            .arg(dir.path().join("flows"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mitmdump");
        let m = Mitm { child, port, dir };
        let ca = m.ca();
        for _ in 0..300 {
            if ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mitmdump never listened");
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("mitmproxy-ca-cert.pem")
    }

    fn flows(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("flows")).unwrap_or_default()
    }
}

/// mitmproxy (by default) holds a response until it ends, so a streamed receive channel
/// delivers nothing through it: the carrier notices and long-polls (`poll` not set here).
#[tokio::test]
async fn through_a_tls_inspecting_mitmproxy_the_relay_long_polls() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let cfg = link_cfg();
    let (client, host) = web(&cfg, RelayLimits::default(), Some(tls_acceptor())).await;
    let Some(mitm) = Mitm::start() else { return };
    let url = format!("relay+https://localhost:{}/link", host.port);
    let opts = RelayOptions {
        proxy: Some(format!("http://127.0.0.1:{}", mitm.port)),
        trust: Trust::CaFile(mitm.ca()),
        ..quick()
    };
    let (counter, agent) = agent(&url, opts, &cfg);
    assert!(client.wait_up(Duration::from_secs(20)).await, "link up");
    let secret = "password-hunter2-alice@example.com";
    for i in 0..10 {
        let key = format!("m{i}");
        assert_eq!(call(&client, &key, secret).await.expect("reply"), secret);
        assert_eq!(counter.count(&key), 1);
    }
    // mitmproxy saw the relay's requests in clear HTTP, but only sealed commlink packets.
    assert!(
        wait::until(Duration::from_secs(10), || {
            let f = mitm.flows();
            f.windows(14).any(|w| w == b"/link/v1/relay")
        })
        .await,
        "mitmproxy recorded the relay's flows"
    );
    let flows = mitm.flows();
    assert!(!flows.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert!(!flows.windows(7).any(|w| w == b"hunter2"));
    agent.abort();
}

/// A receive channel's writer that registered a kick is told of the commlink's new lines
/// on the writing thread and takes them with `try_chunk`, numbered as the poller would
/// carry them; a newer channel of the attachment silences the older channel's kick.
#[tokio::test]
async fn a_kicked_channel_takes_new_lines_at_once_until_a_newer_channel_opens() {
    use tokio::io::AsyncWriteExt as _;
    let streams = Arc::new(std::sync::Mutex::new(Vec::new()));
    let st = streams.clone();
    let hub = RelayHub::new(
        RelayLimits::default(),
        Arc::new(move |stream, _peer| st.lock().expect("streams").push(stream)),
    );
    let id = hub.open("192.0.2.1".parse().expect("ip")).expect("open");
    let mut stream = streams.lock().expect("streams").pop().expect("handed");
    let mut channel = hub.receive(&id, ReceiveParams::default()).expect("channel");
    // Before any line: the first chunk is the web's acknowledgement alone.
    assert_eq!(channel.try_chunk().as_deref(), Some(&b"A 0\r\n"[..]));
    assert_eq!(channel.try_chunk(), None, "nothing new");
    let kicks = Arc::new(AtomicUsize::new(0));
    let k = kicks.clone();
    channel.set_kick(Arc::new(move || {
        k.fetch_add(1, Ordering::SeqCst);
    }));
    stream.write_all(b"hello\r\n").await.expect("write");
    assert_eq!(
        kicks.load(Ordering::SeqCst),
        1,
        "kicked by the write itself"
    );
    assert_eq!(channel.try_chunk().as_deref(), Some(&b"D 1 hello\r\n"[..]));
    stream.write_all(b"again\r\n").await.expect("write");
    assert_eq!(kicks.load(Ordering::SeqCst), 2);
    assert_eq!(channel.try_chunk().as_deref(), Some(&b"D 2 again\r\n"[..]));
    // A newer channel takes over: the old kick is not called again, and the old channel
    // carries nothing more.
    let mut newer = hub
        .receive(
            &id,
            ReceiveParams {
                ack: 2,
                ..ReceiveParams::default()
            },
        )
        .expect("newer");
    stream.write_all(b"third\r\n").await.expect("write");
    assert_eq!(kicks.load(Ordering::SeqCst), 2, "the old kick is gone");
    assert_eq!(channel.try_chunk(), None);
    let first = newer.try_chunk().expect("the newer channel carries it");
    assert!(first.starts_with(b"D 3 third\r\n"), "{first:?}");
}
