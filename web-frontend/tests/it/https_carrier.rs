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

/// A client that sends frames in the same write as its upgrade request (before it has the
/// `101`) is served all the same: the web hands the link over with the bytes it had
/// already read, answers a ping with a pong, and the commlink gets the HELLO (here refusing
/// another bag's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_along_with_the_upgrade_request_reach_the_link() {
    use commlink::transport::websocket::{encode_frame, parse_frame};
    use tokio::io::AsyncReadExt as _;
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config()).await;
    let trust = Trust::Pin(parse_pin(&web.fingerprint).expect("the logged fingerprint"));
    let mut tls_cfg = commlink::transport::trust::client_config(&trust).expect("a TLS config");
    tls_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", web.port))
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(tls_cfg))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let stranger = KeyBag::generate(4).expect("bag");
    let hello = format!(
        "FFS/1 HELLO aes256-gcm v50000 {} {}\r\n",
        "ab".repeat(16),
        stranger.fingerprint()
    );
    let mut out = format!(
        "GET {PREFIX}/v1/link HTTP/1.1\r\nHost: localhost:{}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ffs-commlink.1\r\n\r\n",
        web.port
    )
    .into_bytes();
    encode_frame(&mut out, 0x9, b"are you there", Some([4, 3, 2, 1]));
    encode_frame(&mut out, 0x2, hello.as_bytes(), Some([1, 2, 3, 4]));
    tls.write_all(&out).await.expect("sends");
    tls.flush().await.expect("flushes");

    let mut got = Vec::new();
    let mut pong = None;
    let mut data = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.expect("reads");
            assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let mut at = end + 4;
            pong = None;
            data.clear();
            while let Some(h) = parse_frame(&got[at..], 1 << 20).expect("valid frames") {
                assert_eq!(h.mask, None, "the web's frames are unmasked");
                let payload = got[at..][h.payload.clone()].to_vec();
                match h.opcode {
                    0xA => pong = Some(payload),
                    0x2 => data.extend_from_slice(&payload),
                    _ => {}
                }
                at += h.payload.end;
            }
            if data.windows(2).any(|w| w == b"\r\n") {
                return String::from_utf8_lossy(&got[..end]).into_owned();
            }
        }
    })
    .await
    .expect("an answer in time");
    assert!(read.starts_with("HTTP/1.1 101"), "{read}");
    assert_eq!(pong.as_deref(), Some(&b"are you there"[..]));
    let line = String::from_utf8_lossy(&data);
    assert!(line.starts_with("FFS/1 ERROR bag-mismatch"), "{line:?}");
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

/// `ffs bench commlink`'s "relay https via the web" row: the bed comes up with the web's
/// real relay endpoint and its client's requests, several in flight, cross the relay to an
/// echo responder (on its own thread, as the agent runs it) and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_bed_links_an_echo_responder_through_the_real_relay_endpoint() {
    use web_frontend::carrier_bed::{BedCarrier, CarrierBed};
    let bed = CarrierBed::start_with(BedCarrier::Relay, 0, None)
        .await
        .expect("the bed starts");
    let calls = (0..8u64).map(|i| {
        let client = bed.client.clone();
        tokio::spawn(async move {
            let msg = commlink::Tobj::with_fields(
                "bench.echo",
                0,
                commlink::Fields::new()
                    .num("n", i)
                    .text("text", "x".repeat(200)),
            );
            let reply = client.call(msg.clone()).await.expect("an echo");
            (reply, msg)
        })
    });
    // All eight are in flight before the first answer is awaited.
    for call in calls.collect::<Vec<_>>() {
        let (reply, msg) = call.await.expect("no panic");
        assert_eq!((reply.kind, reply.fields), (msg.kind, msg.fields));
    }
    // The web's relay endpoint itself: it opens attachments, and answers a made-up one
    // with a 404.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (status, _, body) = curl(
        &dir.path().join("stranger.jar"),
        &[
            "-X",
            "POST",
            &format!("https://127.0.0.1:{}{PREFIX}/v1/relay/open", bed.port),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body).trim().len(),
        64,
        "an attachment id"
    );
    let (status, _, _) = curl(
        &dir.path().join("stranger.jar"),
        &[
            "-X",
            "POST",
            &format!(
                "https://127.0.0.1:{}{PREFIX}/v1/relay/{}/recv",
                bed.port,
                "0".repeat(64)
            ),
        ],
    )
    .await;
    assert_eq!(status, 404);
}
