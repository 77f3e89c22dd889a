//! Two web frontends behind a real haproxy running the shipped `deploy/haproxy.cfg` (only
//! addresses and file paths changed): TLS re-encrypted to the webs, `/readyz` health checks,
//! one session cookie valid on either web; stopping one web loses nothing a customer sees.

use std::time::Duration;

use tokio::process::Command;

use crate::common::Stack;
use crate::https::{curl, login, prepare, start_web};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webs_behind_the_shipped_haproxy_config() {
    if !ffs_testkit::prereq::require_command("haproxy", "haproxy", "apt-get install haproxy") {
        return;
    }
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.trust_forwarded_for = true;
    // Same certificate and session key files: the first start generates them.
    let web1 = start_web(&stack, cfg.clone(), stack.agent_client()).await;
    let web2 = start_web(&stack, cfg.clone(), stack.agent_client()).await;

    let dir = stack.path().join("haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ffs.pem");
    ffs_testkit::haproxy::write_pem(&cfg.tls_cert, &cfg.tls_key, &pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        ffs_testkit::haproxy::config(&pem, &cfg.tls_cert, port, &[web1.port, web2.port]),
    )
    .unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&conf)
        .output()
        .await
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let base = format!("https://127.0.0.1:{port}");
    let jar = dir.join("alice.jar");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while curl(&jar, &[&format!("{base}/readyz")]).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "haproxy never answered /readyz with 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(login(&base, &jar, "alice").await, 303);
    let page = prepare(&base, &jar, "alpha", "2.0").await;
    assert!(page.contains("/d/"), "{page}");

    // One web goes away: the next requests (same cookie) are served by the other at once,
    // before the health check has even noticed (a refused connection is retried there).
    drop(web1);
    for _ in 0..6 {
        let (status, _, body) = curl(&jar, &[&format!("{base}/products")]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let page = prepare(&base, &jar, "alpha", "2.1").await;
    assert!(page.contains("/d/"), "{page}");
    drop(web2);
}
