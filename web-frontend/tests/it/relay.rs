//! The db agent dialing out to the real web frontend over the HTTP relay
//! (`web_frontend::relay`, `commlink::Relay`): over HTTPS with the web's certificate
//! pinned, and over plain HTTP through a squid that denies `CONNECT`. Customers sign in and
//! prepare downloads through it; squid's log shows the relay's requests but none of what
//! they carry; strangers get 404s.

use commlink::{Client, RelayLimits, RelayOptions, Trust};
use ffs_testkit::squid::{Policy, Squid};

use crate::common::{PASSWORD, Stack};
use crate::https::{Running, curl, sign_in_and_prepare};

const PREFIX: &str = "/ffs-link";

/// The real web server with the relay served under [`PREFIX`] on both listeners, its
/// attachments going to an accepting agent client.
async fn start_web(stack: &Stack) -> Running {
    let (agent, acceptor) = Client::accepting(stack.link.clone());
    let relay = web_frontend::relay::Relay::new(acceptor, RelayLimits::default(), PREFIX);
    let listeners = web_frontend::Listeners {
        https: std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        http_redirect: Some(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
    };
    let app = web_frontend::Application::build_with_relay(
        stack.web_config(),
        vec![agent],
        vec![web_frontend::backend::StagerPeer::new(
            "stager",
            "",
            stack.stager_client(),
        )],
        listeners,
        Some(relay),
    )
    .expect("builds");
    Running::spawn(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_the_web_over_the_https_relay_with_a_pinned_certificate() {
    let stack = Stack::start().await;
    let web = start_web(&stack).await;
    let carrier = commlink::Relay::new(
        &format!("relay+https://127.0.0.1:{}{PREFIX}", web.port),
        RelayOptions {
            trust: Trust::Pin(
                commlink::transport::parse_pin(&web.fingerprint).expect("the logged fingerprint"),
            ),
            ..RelayOptions::default()
        },
    )
    .expect("a relay carrier");
    stack.serve_dialout_via(carrier);
    let base = format!("https://127.0.0.1:{}", web.port);
    sign_in_and_prepare(&base, &stack, "pinned").await;

    // A stranger without an attachment id gets 404s; the pages are unaffected.
    let jar = stack.path().join("stranger.jar");
    let unknown = "0".repeat(64);
    for path in [
        format!("{PREFIX}/v1/relay/{unknown}/send"),
        format!("{PREFIX}/v1/relay/{unknown}/recv?ack=0"),
        format!("{PREFIX}/v1/relay/nonsense"),
    ] {
        let (status, _, _) =
            curl(&jar, &["-X", "POST", "-d", "A 0", &format!("{base}{path}")]).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = curl(&jar, &[&format!("{base}/login")]).await;
    assert_eq!(status, 200);

    // The relay's routes skip the pages' middleware, but nothing else under its prefix
    // does: another path or method there gets the pages' own 404, headers and all, so the
    // prefix does not stand out.
    let (status, page_head, page) = curl(&jar, &[&format!("{base}/no-such-page")]).await;
    assert_eq!(status, 404);
    for args in [
        vec!["-X", "POST"],
        vec!["-X", "GET"],
        vec!["-X", "PUT", "-d", "x"],
    ] {
        for path in ["nonsense", "open"] {
            if path == "open" && args[1] == "POST" {
                continue; // the one real route here
            }
            let url = format!("{base}{PREFIX}/v1/relay/{path}");
            let (status, head, body) =
                curl(&jar, &[args.as_slice(), &[url.as_str()]].concat()).await;
            assert_eq!(status, 404, "{args:?} {path}");
            assert_eq!(body, page, "{args:?} {path}: the pages' 404");
            for h in ["content-security-policy", "x-frame-options"] {
                assert!(
                    head.to_ascii_lowercase().contains(h),
                    "{args:?} {path}: {h}"
                );
                assert!(page_head.to_ascii_lowercase().contains(h));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_squid_without_connect_the_agent_relays_over_plain_http() {
    let stack = Stack::start().await;
    let web = start_web(&stack).await;
    let http_port = web.http_port.expect("a plain-HTTP listener");
    let Some(squid) = Squid::start(http_port, Policy::HttpOnly) else {
        return;
    };
    let carrier = commlink::Relay::new(
        &format!("relay+http://127.0.0.1:{http_port}{PREFIX}"),
        RelayOptions {
            proxy: Some(squid.url(false)),
            ..RelayOptions::default()
        },
    )
    .expect("a relay carrier");
    stack.serve_dialout_via(carrier);
    sign_in_and_prepare(&format!("https://127.0.0.1:{}", web.port), &stack, "squid").await;
    let log = squid.log("access.log");
    assert!(log.contains(&format!("{PREFIX}/v1/relay/")), "{log}");
    assert!(!log.contains("CONNECT"), "{log}");
    // What crossed the proxy is sealed: no login, password or file name in its log (and the
    // bodies, which squid does not log, carry only commlink packets).
    for secret in ["bob", PASSWORD, "beta-1.0.bin"] {
        assert!(!log.contains(secret), "{secret} in squid's log");
    }
    // The plain-HTTP listener still redirects everything else to HTTPS.
    let jar = stack.path().join("plain.jar");
    let (status, _, _) = curl(&jar, &[&format!("http://127.0.0.1:{http_port}/login")]).await;
    assert_eq!(status, 308);
}

/// A streamed receive channel leaves actix once its head is out (`relay.rs` takes the
/// connection over and writes the chunks itself): over TLS and over plain HTTP it is real
/// HTTP/1.1 chunked framing (curl decodes it, or fails), it starts with the web's
/// acknowledgement, and it ends with a `C` record, the last chunk and the connection's
/// close when the agent closes the attachment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_receive_channel_is_chunked_and_ends_with_its_attachment() {
    let stack = Stack::start().await;
    let web = start_web(&stack).await;
    let http_port = web.http_port.expect("a plain-HTTP listener");
    for base in [
        format!("https://127.0.0.1:{}", web.port),
        format!("http://127.0.0.1:{http_port}"),
    ] {
        let jar = stack.path().join("relay-raw.jar");
        let (status, _, id) = curl(
            &jar,
            &["-X", "POST", &format!("{base}{PREFIX}/v1/relay/open")],
        )
        .await;
        assert_eq!(status, 200, "{base}: open");
        let id = String::from_utf8(id).expect("ascii id").trim().to_owned();
        let recv = tokio::spawn(
            tokio::process::Command::new("curl")
                .args([
                    "-sSk",
                    "--http1.1",
                    "--max-time",
                    "20",
                    "-D",
                    "-",
                    "-X",
                    "POST",
                ])
                .arg(format!("{base}{PREFIX}/v1/relay/{id}/recv?ack=0"))
                .output(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!recv.is_finished(), "{base}: the channel stays open");
        let (status, _, body) = curl(
            &jar,
            &[
                "-X",
                "POST",
                "--data-binary",
                "C done\r\n",
                &format!("{base}{PREFIX}/v1/relay/{id}/send"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{base}: close");
        assert_eq!(body, b"C closed\r\n");
        let out = recv.await.expect("joins").expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{base}: curl read the whole channel: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(body.contains("A 0\r\n"), "{body:?}");
        assert!(
            body.ends_with("C the agent closed the relay: done\r\n"),
            "{body:?}"
        );
    }
}
