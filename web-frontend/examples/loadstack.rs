//! A load-test stack: a real db agent (SQLite), stager and web frontend in one process on
//! loopback, plus N signed-in sessions written to a file for `wrk` (see `bench/run-load.sh`
//! and `bench/web-load.lua`). Not a test; run with `--release`:
//!
//! `cargo run --release -p web-frontend --example loadstack -- SESSIONS_FILE [N]`
//!
//! Prints the base URL, then serves until Ctrl-C.

use std::io::Write as _;

use ffs_test_stack::{PASSWORD, Stack};

/// The `ffs` binary's allocator, so the load runs measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As the `ffs` binary starts: glibc's vector copies on AMD first, then the runtime.
fn main() {
    commlink::fast_copies::reexec_with_vector_copies();
    run()
}

#[tokio::main]
async fn run() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: loadstack SESSIONS_FILE [N]");
    let n: usize = args.next().map_or(200, |s| s.parse().expect("N"));
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.workers = 2;
    cfg.session_idle_secs = 3600;
    let listeners = web_frontend::Listeners {
        https: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        http_redirect: None,
    };
    let app = web_frontend::Application::build(
        cfg,
        stack.agent_client(),
        stack.stager_client(),
        listeners,
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{}", app.port());
    let server = tokio::spawn(app.run_until(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut f = std::fs::File::create(&out).unwrap();
    for i in 0..n {
        let jar = stack.path().join(format!("s{i}.jar"));
        let get = |url: String| {
            std::process::Command::new("curl")
                .args(["-sk", "-c"])
                .arg(&jar)
                .arg("-b")
                .arg(&jar)
                .arg(url)
                .output()
                .unwrap()
        };
        let page = String::from_utf8_lossy(&get(format!("{base}/login")).stdout).into_owned();
        let csrf = ffs_testkit::html::input_value(&page, "csrf").unwrap();
        let status = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args([
                "--data-urlencode",
                &format!("csrf={csrf}"),
                "--data-urlencode",
                "login=alice",
                "--data-urlencode",
                &format!("password={PASSWORD}"),
                &format!("{base}/login"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "303");
        let page = String::from_utf8_lossy(&get(format!("{base}/products")).stdout).into_owned();
        let csrf = ffs_testkit::html::input_value(&page, "csrf").unwrap();
        let jar_text = std::fs::read_to_string(&jar).unwrap();
        let cookie = jar_text
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols.len() == 7 && cols[5] == "ffs_session").then(|| cols[6].to_string())
            })
            .next_back()
            .unwrap();
        writeln!(f, "{cookie} {csrf}").unwrap();
    }
    drop(f);
    println!("{base}");
    eprintln!("{n} sessions written to {out}; serving until Ctrl-C");
    let _ = server.await;
}
