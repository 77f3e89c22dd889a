//! The real server over rustls, driven by curl: security headers over TLS, the HTTP→HTTPS
//! redirect, a full sign-in → prepare → download straight from the stager with the SHA-256
//! checked, the delivery reaching the agent's history, and the agent in dial-out mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::common::{PASSWORD, Stack, hrefs, input_value, sha256_hex};

pub struct Running {
    pub port: u16,
    pub http_port: Option<u16>,
    pub fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts the real web server on port 0 (plus a redirect port).
pub async fn start_web(
    stack: &Stack,
    cfg: web_frontend::WebConfig,
    agent: commlink::Client,
) -> Running {
    let listeners = web_frontend::Listeners {
        https: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        http_redirect: Some(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
    };
    let app =
        web_frontend::Application::build(cfg, agent, stack.stager_client(), listeners).unwrap();
    Running::spawn(app)
}

impl Running {
    /// Runs a built server until dropped.
    pub fn spawn(app: web_frontend::Application) -> Running {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let r = Running {
            port: app.port(),
            http_port: app.http_port(),
            fingerprint: app.fingerprint().to_string(),
            stop: Some(tx),
        };
        tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        r
    }
}

/// curl with a cookie jar; returns (status, headers, body).
pub async fn curl(jar: &Path, args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = jar.parent().unwrap();
    let hdr = dir.join(format!("h-{}", rand_name()));
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-c"])
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .arg("-D")
        .arg(&hdr)
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    let status = headers
        .lines()
        .rev()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, headers, out.stdout)
}

fn rand_name() -> String {
    web_frontend::session::random_token()
}

pub async fn login(base: &str, jar: &Path, login: &str) -> u16 {
    let (_, _, body) = curl(jar, &[&format!("{base}/login")]).await;
    let csrf = input_value(&String::from_utf8_lossy(&body), "csrf").unwrap();
    let (status, _, _) = curl(
        jar,
        &[
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            &format!("login={login}"),
            "--data-urlencode",
            &format!("password={PASSWORD}"),
            &format!("{base}/login"),
        ],
    )
    .await;
    status
}

pub async fn prepare(base: &str, jar: &Path, product: &str, version: &str) -> String {
    let (_, _, body) = curl(jar, &[&format!("{base}/products")]).await;
    let csrf = input_value(&String::from_utf8_lossy(&body), "csrf").unwrap();
    let (status, _, body) = curl(
        jar,
        &[
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            &format!("product={product}"),
            "--data-urlencode",
            &format!("version={version}"),
            &format!("{base}/prepare"),
        ],
    )
    .await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{body}");
    body
}

fn jar(stack: &Stack, name: &str) -> PathBuf {
    stack.path().join(format!("{name}.jar"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_headers_redirect_and_fingerprint() {
    let stack = Stack::start().await;
    let cfg = stack.web_config();
    let cert = cfg.tls_cert.clone();
    let web = start_web(&stack, cfg, stack.agent_client()).await;
    let base = format!("https://127.0.0.1:{}", web.port);
    let j = jar(&stack, "h");
    let (status, headers, _) = curl(&j, &[&format!("{base}/login")]).await;
    assert_eq!(status, 200);
    let h = headers.to_ascii_lowercase();
    assert!(h.contains("strict-transport-security: max-age="));
    assert!(h.contains("content-security-policy: default-src 'none'"));
    assert!(h.contains("x-content-type-options: nosniff"));
    assert!(h.contains("set-cookie: ffs_session="));
    assert!(h.contains("; secure") && h.contains("; httponly") && h.contains("samesite=lax"));
    // The printed fingerprint is the served certificate's.
    let pem = std::fs::read(&cert).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(web.fingerprint, commlink::tls::fingerprint(&der));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect 127.0.0.1:{} 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            web.port
        ))
        .output()
        .await
        .unwrap();
    let served = String::from_utf8_lossy(&out.stdout);
    if !served.is_empty() {
        assert!(
            served.contains(&web.fingerprint),
            "{served} vs {}",
            web.fingerprint
        );
    }
    // Plain HTTP only redirects.
    let hp = web.http_port.unwrap();
    let (status, headers, _) = curl(&j, &[&format!("http://127.0.0.1:{hp}/products?x=1")]).await;
    assert_eq!(status, 308);
    assert!(
        headers.contains(&format!("https://127.0.0.1:{}/products?x=1", web.port)),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_prepare_and_download_from_the_stager_then_delivery_is_recorded() {
    ffs_testkit::prereq::require_command("minisign", "minisign", "apt-get install minisign");
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.delivery_poll_secs = 1;
    let web = start_web(&stack, cfg, stack.agent_client()).await;
    let base = format!("https://127.0.0.1:{}", web.port);
    let j = jar(&stack, "a");
    assert_eq!(login(&base, &j, "alice").await, 303);
    let page = prepare(&base, &j, "alpha", "2.1").await;
    let links = hrefs(&page, "https://");
    let bin = links
        .iter()
        .find(|l| l.ends_with("/alpha-2.1.bin"))
        .expect("link to the file")
        .clone();
    assert!(
        !bin.contains(&format!(":{}/", web.port)),
        "links go to the stager, not the web"
    );
    let (status, _, bytes) = curl(&j, &[&bin]).await;
    assert_eq!(status, 200);
    let want = stack.file("alpha", "2.1", "alpha-2.1.bin");
    assert_eq!(bytes.len(), want.len());
    assert_eq!(sha256_hex(&bytes), sha256_hex(want));
    assert!(page.contains(&sha256_hex(want)));
    // The copy-paste recipe works as printed (plus -k for the test's self-signed stager).
    let start = page.find("<code id=\"recipe\">").unwrap() + "<code id=\"recipe\">".len();
    let end = start + page[start..].find("</code>").unwrap();
    let recipe = crate::common::unescape(&page[start..end]).replace("curl -fSL", "curl -k -fSL");
    let work = stack.path().join("recipe-run");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(&recipe)
        .current_dir(&work)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{recipe}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("alpha-2.1.bin: OK") && stdout.contains("docs/README.txt: OK"),
        "{stdout}"
    );
    // 2.1 is signed: the recipe fetched the key from the web and minisign verified the sums.
    assert!(
        recipe.contains(&format!("/keys/{}.pub", stack.key_id("new"))),
        "{recipe}"
    );
    assert!(
        recipe.contains("minisign -Vm SHA256SUMS -p ffs.pub"),
        "{recipe}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("alpha-2.1/ffs.pub")).unwrap(),
        std::fs::read_to_string(stack.public_key("new")).unwrap()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Signature and comment signature verified")
            || stdout.contains("Signature and comment signature verified"),
        "{stdout}"
    );
    // The stager reports the delivery; the forwarder records it with the agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = curl(&j, &[&format!("{base}/downloads")]).await;
        let body = String::from_utf8_lossy(&body);
        // 68.4 KiB by the first curl, then the recipe's two files again plus SHA256SUMS
        // and its signature: 137.2 KiB.
        if body.contains("137.2 KiB") {
            break;
        }
        assert!(Instant::now() < deadline, "delivery never recorded: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_in_dial_out_mode_reaches_the_web_frontend() {
    let stack = Stack::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let agent_client = commlink::Client::accept(listener, stack.link.clone());
    stack.serve_dialout(addr);
    let web = start_web(&stack, stack.web_config(), agent_client).await;
    let base = format!("https://127.0.0.1:{}", web.port);
    let j = jar(&stack, "d");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = login(&base, &j, "bob").await;
        if s == 303 {
            break;
        }
        assert!(Instant::now() < deadline, "login never worked: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = prepare(&base, &j, "beta", "1.0").await;
    assert!(page.contains("beta-1.0.bin"));
}

/// A signed-out `POST /prepare` over HTTP/2 gets its 303 every time. The handler answers
/// without needing the body; if the unread request stream were simply dropped, h2 would
/// reset it (CANCEL) racing the response, and curl 7.88 fails with error 92. A body over
/// the 64 KiB flow-control window is still arriving when the answer is ready, so it hits
/// the race nearly every run; the small form is the everyday case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_over_http2_are_clean() {
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config(), stack.agent_client()).await;
    let url = format!("https://127.0.0.1:{}/prepare", web.port);
    let small = "csrf=x&product=alpha&version=2.1".to_string();
    let big = format!(
        "csrf=x&product=alpha&version=2.1&pad={}",
        "a".repeat(100_000)
    );
    for (what, body) in [("small", &small), ("100 kB", &big)] {
        let file = stack.path().join("body");
        std::fs::write(&file, body).unwrap();
        for i in 0..20 {
            let out = Command::new("curl")
                .args(["-sSk", "--http2", "--max-time", "20", "-o", "/dev/null"])
                .args(["-w", "%{http_version} %{http_code} %{redirect_url}"])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()))
                .arg(&url)
                .output()
                .await
                .expect("curl runs (apt-get install curl)");
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{what} body, try {i}: curl exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut parts = said.split(' ');
            assert_eq!(parts.next(), Some("2"), "{said}: HTTP/2 was used");
            assert_eq!(parts.next(), Some("303"), "{said}");
            assert!(
                parts.next().is_some_and(|l| l.ends_with("/login")),
                "{said}"
            );
        }
    }
    // A body over the 64 KiB form limit is refused as such (413), cleanly too.
    let file = stack.path().join("huge");
    std::fs::write(&file, format!("login=a&password={}", "b".repeat(300_000))).unwrap();
    for i in 0..5 {
        let out = Command::new("curl")
            .args(["-sSk", "--http2", "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_version} %{http_code}"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("https://127.0.0.1:{}/login", web.port))
            .output()
            .await
            .expect("curl runs (apt-get install curl)");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "try {i}: {said} {out:?}");
        assert_eq!(said, "2 413", "try {i}");
    }
}

/// Signs bob in at `base` (retrying while the agent's link comes up, at most 20 s) and
/// prepares beta 1.0 through it: what the carrier tests show works over their link.
pub(crate) async fn sign_in_and_prepare(base: &str, stack: &crate::common::Stack, name: &str) {
    let jar = stack.path().join(format!("{name}.jar"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = login(base, &jar, "bob").await;
        if s == 303 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "login never worked: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let page = prepare(base, &jar, "beta", "1.0").await;
    assert!(page.contains("beta-1.0.bin"), "{page}");
}

/// Every connection the web accepts, HTTPS and plain HTTP, sends small writes at once
/// (`TCP_NODELAY`). A response, or a relay line, leaves in more than one write; with Nagle
/// a later small one waited for the client's delayed ACK: the relay through the web
/// carried 1,000 requests/s with four in flight, against 19,000 with the option set
/// (`docs/benchmarks.md`, "Nagle on the web's and the stager's connections").
#[tokio::test]
async fn every_accepted_connection_sends_small_writes_at_once() {
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config(), stack.agent_client()).await;
    // HTTPS: one request answered on a connection held open.
    let server: SocketAddr = ([127, 0, 0, 1], web.port).into();
    let pin = commlink::transport::parse_pin(&web.fingerprint).unwrap();
    let (_held, me, head) = ffs_testkit::sockets::tls_exchange(
        server,
        &commlink::Trust::Pin(pin),
        b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        12,
    )
    .await;
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(
        ffs_testkit::sockets::server_nodelay(server, me),
        Some(true),
        "the web's HTTPS connection has Nagle on"
    );
    // The plain-HTTP listener (the redirect, and the relay for proxies without CONNECT).
    let plain: SocketAddr = ([127, 0, 0, 1], web.http_port.unwrap()).into();
    let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
    let me = tcp.local_addr().unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 11];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 30", "a redirect");
    assert_eq!(
        ffs_testkit::sockets::server_nodelay(plain, me),
        Some(true),
        "the web's plain-HTTP connection has Nagle on"
    );
}
