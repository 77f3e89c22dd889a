//! The db agent dialing out to the real web frontend over the https carrier
//! (`web_frontend::link_endpoint`, `commlink::transport::Https`): a WebSocket upgrade of
//! `<prefix>/v1/link` on the web's own HTTPS listener, the certificate pinned; directly and
//! through a squid that allows only `CONNECT` to the web's port. Customers sign in and
//! prepare through it; strangers get 404s, and a stranger without the key bag gets the
//! commlink's refusal, then is throttled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commlink::transport::{Https, Trust, parse_pin};
use commlink::{Carrier as _, Client, KeyBag, LinkConfig};
use ffs_testkit::squid::{Policy, Squid};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::common::{PASSWORD, Stack};
use crate::https::{Running, curl, sign_in_and_prepare};

const PREFIX: &str = "/ffs-link";

/// The real web server with the https carrier served under [`PREFIX`], its links going to
/// an accepting agent client.
async fn start_web(stack: &Stack, cfg: web_frontend::WebConfig) -> Running {
    let (agent, acceptor) = Client::accepting(stack.link.clone());
    let link = web_frontend::link_endpoint::LinkEndpoint::new(acceptor, PREFIX, 2);
    let listeners = web_frontend::Listeners {
        https: std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        http_redirect: None,
    };
    let app = web_frontend::Application::build_with_carriers(
        cfg,
        vec![agent],
        vec![web_frontend::backend::StagerPeer::new(
            "stager",
            "",
            stack.stager_client(),
        )],
        listeners,
        None,
        Some(link),
    )
    .expect("builds");
    Running::spawn(app)
}

fn carrier(web: &Running, proxy: Option<&str>) -> Https {
    let trust = Trust::Pin(parse_pin(&web.fingerprint).expect("the logged fingerprint"));
    Https::new(
        &format!("https://localhost:{}{PREFIX}", web.port),
        &trust,
        proxy,
    )
    .expect("an https carrier")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_the_web_over_the_https_carrier_with_a_pinned_certificate() {
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config()).await;
    stack.serve_dialout_via(carrier(&web, None));
    let base = format!("https://127.0.0.1:{}", web.port);
    sign_in_and_prepare(&base, &stack, "pinned").await;

    // Anything but our upgrade is a 404 page; the pages are unaffected.
    let jar = stack.path().join("stranger.jar");
    let url = format!("{base}{PREFIX}/v1/link");
    for args in [
        vec![url.as_str()],
        vec!["-X", "POST", "-d", "x", url.as_str()],
        vec![
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Sec-WebSocket-Protocol: chat",
            url.as_str(),
        ],
    ] {
        let (status, _, _) = curl(&jar, &args).await;
        assert_eq!(status, 404, "{args:?}");
    }
    let (status, _, _) = curl(&jar, &[&format!("{base}{PREFIX}/v1/other")]).await;
    assert_eq!(status, 404);
    let (status, _, _) = curl(&jar, &[&format!("{base}/login")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_before_any_upgrade() {
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config()).await;
    let bag = KeyBag::generate(4).expect("bag");
    let cfg = LinkConfig::new(Arc::new(bag));
    let wrong = Https::new(
        &format!("https://localhost:{}{PREFIX}", web.port),
        &Trust::Pin([7; 32]),
        None,
    )
    .expect("builds");
    let err = wrong.open(&cfg).await.err().expect("refused");
    assert!(err.to_string().contains("not the pinned one"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_without_the_key_bag_is_refused_then_throttled() {
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.login_attempts = 2;
    let web = start_web(&stack, cfg).await;
    let https = carrier(&web, None);
    let stranger = LinkConfig::new(Arc::new(KeyBag::generate(4).expect("bag")));
    for attempt in 0..2 {
        let (stream, port) = https.open(&stranger).await.expect("upgrades");
        let mut stream = BufReader::new(stream);
        // A HELLO with another bag's fingerprint: the commlink refuses it.
        let hello = format!(
            "FFS/1 HELLO aes256-gcm v{port} {} {}\r\n",
            "ab".repeat(16),
            stranger.bag.fingerprint()
        );
        stream
            .get_mut()
            .write_all(hello.as_bytes())
            .await
            .expect("sends");
        stream.get_mut().flush().await.expect("flushes");
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("a reply");
        assert!(
            line.starts_with("FFS/1 ERROR bag-mismatch"),
            "attempt {attempt}: {line:?}"
        );
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
    }
    // Two failures from this address: the next upgrade is answered 429.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match https.open(&stranger).await {
            Err(e) if e.to_string().contains("429") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "never throttled: {:?}",
                    other.map(|_| ())
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_connect_only_squid_nothing_readable_crosses_it() {
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config()).await;
    let Some(squid) = Squid::start(web.port, Policy::Open) else {
        return;
    };
    stack.serve_dialout_via(carrier(&web, Some(&squid.url(false))));
    sign_in_and_prepare(&format!("https://127.0.0.1:{}", web.port), &stack, "squid").await;
    // squid writes a CONNECT's line when its tunnel closes: end the agent's link.
    stack.stop_agent();
    let logged = ffs_testkit::wait::until(Duration::from_secs(30), || {
        squid.log("access.log").contains("CONNECT")
    })
    .await;
    let log = squid.log("access.log");
    assert!(logged, "no CONNECT in squid's log: {log}");
    assert!(log.contains(&format!("localhost:{}", web.port)), "{log}");
    for secret in ["bob", PASSWORD, "beta-1.0.bin", PREFIX] {
        assert!(!log.contains(secret), "{secret} in squid's log");
    }
}

/// `ffs bench commlink`'s https rows: the bed comes up with the real endpoint and its
/// client's requests cross the carrier to an echo responder and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_bed_links_an_echo_responder_through_the_real_endpoint() {
    let bed = web_frontend::carrier_bed::CarrierBed::start(0, None)
        .await
        .expect("the bed starts");
    assert_ne!(bed.port, 0);
    for i in 0..5u64 {
        let msg = commlink::Tobj::with_fields(
            "bench.echo",
            0,
            commlink::Fields::new()
                .num("n", i)
                .text("text", "x".repeat(200)),
        );
        let reply = bed.client.call(msg.clone()).await.expect("an echo");
        assert_eq!(reply.kind, msg.kind);
        assert_eq!(reply.fields, msg.fields);
    }
    // A stranger's page request on the same listener gets the ordinary 404 page: the bed is
    // the real web, not a stand-in.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (status, _, _) = curl(
        &dir.path().join("stranger.jar"),
        &[&format!(
            "https://127.0.0.1:{}{PREFIX}/v1/nonsense",
            bed.port
        )],
    )
    .await;
    assert_eq!(status, 404);
}
