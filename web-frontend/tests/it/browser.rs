//! Headless Chromium through chromedriver (fantoccini): sign in, prepare a download, follow
//! the HTTPS link to the stager, check the downloaded bytes' SHA-256; screenshots of the main
//! pages at desktop (1280x800) and phone (390x844) width are taken on every run, and written
//! to `docs/screenshots/` when `FFS_UPDATE_SCREENSHOTS=1` (otherwise to the test's scratch
//! directory under `target/`, so a test run leaves the checkout clean).
//! Fails, naming the packages, when chromedriver or chromium is not installed (unless
//! FFS_TEST_SKIP names `browser`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use ffs_testkit::prereq::find_command;

use crate::common::{PASSWORD, Stack, sha256_hex};
use crate::https::start_web;

struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn screenshots_dir() -> PathBuf {
    if std::env::var_os("FFS_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

async fn shoot(c: &fantoccini::Client, name: &str) {
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (w, h, tag) in [(1280u32, 800u32, "desktop"), (390, 844, "phone")] {
        c.set_window_size(w, h).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}-{tag}.png")), png).unwrap();
    }
    c.set_window_size(1280, 800).await.unwrap();
}

/// Waits (up to 15 s) until the page at `path` shows `text`: clicks return before the
/// navigation they start has finished.
async fn wait_for(c: &fantoccini::Client, path: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.unwrap();
        let src = c.source().await.unwrap_or_default();
        if url.path() == path && src.contains(text) {
            return src;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {text:?} at {path}, at {url}: {src}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &fantoccini::Client, base: &str, login: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .send_keys(login)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("form.stack button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "/products", "My products").await;
}

async fn sign_out(c: &fantoccini::Client) {
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "/login", "Sign in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_prepares_downloads_and_checks_sha256() {
    let Some((driver, chromium)) = ffs_testkit::prereq::obtain(
        "browser",
        || {
            let driver = find_command("chromedriver").ok_or("`chromedriver` is not on PATH")?;
            let chromium = ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .find_map(find_command)
                .ok_or("`chromium` is not on PATH")?;
            Ok::<_, &str>((driver, chromium))
        },
        "apt-get install chromium chromium-driver",
    ) else {
        return;
    };
    let stack = Stack::start().await;
    let web = start_web(&stack, stack.web_config(), stack.agent_client()).await;
    let base = format!("https://127.0.0.1:{}", web.port);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profile = stack.path().join("chromium-profile");
    let downloads = stack.path().join("chromium-downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium.to_string_lossy(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--ignore-certificate-errors", "--disable-dev-shm-usage",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads.to_string_lossy(),
                "download.prompt_for_download": false,
                "safebrowsing.enabled": false
            }
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver session");

    // Sign-in page, then a wrong password, then the real one.
    c.goto(&format!("{base}/login")).await.unwrap();
    shoot(&c, "login").await;
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("wrong password")
        .await
        .unwrap();
    c.find(Locator::Css("form.stack button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The refusal is a new /login page: wait for it (the old one is still there at first).
    wait_for(&c, "/login", "Wrong login or password.").await;
    sign_in(&c, &base, "alice").await;
    let src = c.source().await.unwrap();
    assert!(src.contains("alpha-2.1.bin") && !src.contains("beta-1.0.bin"));
    // The signing key and the two-line recipe, as the browser renders them.
    let new_key = std::fs::read_to_string(stack.public_key("new")).unwrap();
    let shown = c
        .find(Locator::Id("public-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown.trim(), new_key.trim(), "the public key is shown");
    let recipe = c
        .find(Locator::Id("verify-recipe"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        recipe.trim(),
        "minisign -Vm SHA256SUMS -p ffs.pub\nsha256sum -c SHA256SUMS"
    );
    let key_link = c
        .find(Locator::Css("#signing-key a[download]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key_link, format!("/keys/{}.pub", stack.key_id("new")));
    let signed_by: Vec<String> = {
        let mut v = Vec::new();
        for e in c
            .find_all(Locator::Css("article.release .signature"))
            .await
            .unwrap()
        {
            v.push(e.text().await.unwrap());
        }
        v
    };
    assert_eq!(
        signed_by,
        [
            format!("Signed by key {}", stack.key_id("new")),
            format!("Signed by key {}", stack.key_id("old")),
        ],
        "2.1 by the current key, 2.0 by the older one"
    );
    shoot(&c, "products").await;

    // Prepare the newest release (the first form on the page).
    c.find(Locator::Css("article.release form button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "/prepare", "is ready").await;
    let shown = c
        .find(Locator::Id("public-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        shown.trim(),
        new_key.trim(),
        "the prepared page shows the key"
    );
    c.find(Locator::Css("a.dl[href$='/SHA256SUMS.minisig']"))
        .await
        .expect("the signature is among the downloads");
    shoot(&c, "prepared").await;
    let link = c
        .find(Locator::Css("a.dl[href$='/alpha-2.1.bin']"))
        .await
        .unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(
        !href.starts_with(&base),
        "the link points at the stager: {href}"
    );
    let want = stack.file("alpha", "2.1", "alpha-2.1.bin");

    // Follow the link in the browser: the file lands in the download directory.
    link.click().await.unwrap();
    let target = downloads.join("alpha-2.1.bin");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read(&target)
            && b.len() == want.len()
        {
            assert_eq!(sha256_hex(&b), sha256_hex(want), "browser download SHA-256");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the browser did not download {href}: {:?}",
            std::fs::read_dir(&downloads)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.goto(&format!("{base}/downloads")).await.unwrap();
    assert!(c.source().await.unwrap().contains("Prepare again"));
    shoot(&c, "downloads").await;
    sign_out(&c).await;

    // Admin pages.
    sign_in(&c, &base, "root").await;
    c.goto(&format!("{base}/admin")).await.unwrap();
    assert!(c.source().await.unwrap().contains("Staging latency"));
    shoot(&c, "admin").await;
    c.goto(&format!("{base}/admin/areas")).await.unwrap();
    assert!(c.source().await.unwrap().contains("alice"));
    shoot(&c, "admin-areas").await;
    c.goto(&format!("{base}/admin/catalog")).await.unwrap();
    shoot(&c, "admin-catalog").await;
    c.goto(&format!("{base}/admin/customers/alice"))
        .await
        .unwrap();
    shoot(&c, "admin-customer").await;
    c.close().await.unwrap();
}
