//! The https carrier's round trip through the real web frontend, beside raw TCP, in one
//! run: an echo responder dials out over raw TCP to an accepting client, and over
//! [`commlink::transport::Https`] (pinned certificate) to the web's `<prefix>/v1/link`
//! (actix, the WebSocket bridge, the carried stream);
//! sequential requests, nearest-rank percentiles. Not a test; run with `--release`:
//!
//! `cargo run --release -p web-frontend --example carrier_rtt -- [REQUESTS] [PORT PROXY_URL]`
//!
//! With a port and a proxy URL the web listens on that port and the https responder dials
//! through the proxy (which must allow `CONNECT` to it) instead of directly; the tcp row is
//! measured in the same run either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commlink::transport::{Https, Tcp, Trust, parse_pin};
use commlink::{Client, Fields, Tobj};
use ffs_test_stack::Stack;

struct Echo;

impl commlink::Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        request
    }
}

async fn rtts(client: &Client, n: usize) -> Vec<Duration> {
    assert!(
        client.wait_up(Duration::from_secs(20)).await,
        "link never came up"
    );
    let msg = Tobj::with_fields("bench.echo", 0, Fields::new().text("text", "x".repeat(200)));
    for _ in 0..n / 10 {
        client.call(msg.clone()).await.expect("echo");
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.call(msg.clone()).await.expect("echo");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn row(name: &str, s: &[Duration], base: Option<f64>) -> f64 {
    let p = |q: f64| s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1];
    let p50 = p(0.50).as_secs_f64() * 1e6;
    let ratio = base.map_or(String::new(), |b| format!("  {:.2} x tcp", p50 / b));
    println!(
        "{name:<28} p50 {p50:8.1} us  p99 {:8.1} us{ratio}",
        p(0.99).as_secs_f64() * 1e6
    );
    p50
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2000, |s| s.parse().expect("REQUESTS"));
    let web_port: u16 = args.next().map_or(0, |s| s.parse().expect("PORT"));
    let proxy = args.next();
    let stack = Stack::start().await;
    let link = stack.link.clone();

    // Raw TCP: an accepting client, the echo dialing in.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tcp_addr = l.local_addr().expect("addr").to_string();
    let tcp_client = Client::accept(l, link.clone());
    tokio::spawn(commlink::serve_dialout_via(
        Tcp::new(tcp_addr),
        link.clone(),
        Arc::new(Echo),
        std::future::pending(),
    ));

    // The real web with the https carrier endpoint.
    let (https_client, acceptor) = Client::accepting(link.clone());
    let endpoint = web_frontend::link_endpoint::LinkEndpoint::new(acceptor, "/ffs-link", 4);
    let mut cfg = stack.web_config();
    cfg.workers = 2;
    let app = web_frontend::Application::build_with_carriers(
        cfg,
        vec![stack.agent_client()],
        vec![web_frontend::backend::StagerPeer::new(
            "stager",
            "",
            stack.stager_client(),
        )],
        web_frontend::Listeners {
            https: std::net::TcpListener::bind(("127.0.0.1", web_port)).expect("bind"),
            http_redirect: None,
        },
        None,
        Some(endpoint),
    )
    .expect("web builds");
    let port = app.port();
    let pin = Trust::Pin(parse_pin(app.fingerprint()).expect("fingerprint"));
    tokio::spawn(app.run_until(std::future::pending()));
    let url = format!("https://localhost:{port}/ffs-link");
    let direct = Https::new(&url, &pin, proxy.as_deref()).expect("carrier");
    tokio::spawn(commlink::serve_dialout_via(
        direct,
        link.clone(),
        Arc::new(Echo),
        std::future::pending(),
    ));

    println!("{n} sequential echo requests, 200-byte text field");
    let base = row("commlink over tcp", &rtts(&tcp_client, n).await, None);
    let name = if proxy.is_some() {
        "https carrier (via proxy)"
    } else {
        "https carrier (direct)"
    };
    row(name, &rtts(&https_client, n).await, Some(base));
}
