//! Real download managers against a real stager: `wget -c` and `curl -C -` (with and without
//! `If-Range`) resuming a partial file over HTTPS, and `aria2c -x4 -s4` fetching in parallel
//! pieces over HTTPS and over FTP; a slow HTTP/2 download lasting several keep-alive
//! intervals. Every download's SHA-256 is checked against the catalog,
//! and the stager's delivery log shows that a resume fetched only the missing part and that
//! aria2 really split the file.
//!
//! One stager serves the whole test binary (on its own runtime thread); each test stages
//! its own area, so the deliveries it looks at are its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use commlink::msg::stager::{Delivery, StagedArea};
use ftp_stager::Stager;

use crate::common::*;

struct Fixture {
    stager: Arc<Stager>,
    ftp: std::net::SocketAddr,
    /// The staged test file (big.bin, 3 MiB + 17) and its catalog SHA-256.
    size: u64,
    sha: String,
    /// Release slow 1.0's slow.bin (10 MiB) and its catalog SHA-256.
    slow_sha: String,
}

/// Where the fixture's files live, removed when the test process exits.
static FIXTURE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_fixture_dir() {
    if let Some(d) = FIXTURE_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let r = start().await;
                let src = r.dir.path().join("slow");
                std::fs::create_dir_all(&src).unwrap();
                std::fs::write(src.join("slow.bin"), pattern(10 << 20, 7)).unwrap();
                let repo = ftp_stager::Repository::open(&r.cfg.repository).unwrap();
                ftp_stager::publish(
                    &repo,
                    "slow",
                    "1.0",
                    &[src],
                    "slow",
                    &commlink::progress::Silent,
                )
                .unwrap();
                let _ = FIXTURE_DIR.set(r.dir.path().to_path_buf());
                // SAFETY: registers a plain extern "C" function with no captured state.
                unsafe { libc::atexit(remove_fixture_dir) };
                let catalog = r.stager.catalog(false).unwrap();
                let sha_of = |name: &str| {
                    catalog
                        .releases
                        .iter()
                        .flat_map(|r| &r.files)
                        .find(|f| f.name == name)
                        .unwrap()
                        .clone()
                };
                let f = sha_of("big.bin");
                let slow_sha = sha_of("slow.bin").sha256;
                tx.send(Fixture {
                    stager: r.stager.clone(),
                    ftp: r.ftp,
                    size: f.size,
                    sha: f.sha256,
                    slow_sha,
                })
                .unwrap();
                // Serve for as long as the test process lives.
                std::future::pending::<()>().await;
                drop(r);
            });
        });
        rx.recv().expect("the stager starts")
    })
}

fn stage(f: &Fixture) -> StagedArea {
    stage_file(f, "tool", "big.bin")
}

fn stage_file(f: &Fixture, product: &str, file: &str) -> StagedArea {
    f.stager
        .stage(&commlink::msg::stager::StageRequest {
            product: product.into(),
            version: "1.0".into(),
            files: vec![file.into()],
            label: "downloaders".into(),
            ttl_secs: None,
        })
        .unwrap()
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn file_sha(p: &Path) -> String {
    sha_hex(&std::fs::read(p).unwrap())
}

/// The completed transfers of big.bin from `area`, once `done` holds for them (a delivery
/// is logged when its response has been sent, which can be just after the client has
/// everything). Fails naming `what` if that never happens.
fn deliveries_once(
    f: &Fixture,
    area: &StagedArea,
    what: &str,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let mut d = Vec::new();
    for _ in 0..600 {
        d = f
            .stager
            .deliveries(&Default::default())
            .deliveries
            .into_iter()
            .filter(|d| d.area_id == area.area_id && d.file == "big.bin")
            .collect();
        if done(&d) {
            return d;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("expected {what}; the deliveries were {d:?}");
}

fn total(d: &[Delivery]) -> u64 {
    d.iter().map(|d| d.bytes).sum()
}

/// A download directory holding the first third of big.bin, as an interrupted download
/// leaves it.
fn partial(f: &Fixture) -> (tempfile::TempDir, PathBuf, u64) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.bin");
    let have = f.size / 3;
    std::fs::write(&p, &pattern(f.size as usize, 1)[..have as usize]).unwrap();
    (d, p, have)
}

#[test]
fn wget_c_resumes_a_partial_file_over_https() {
    if !ffs_testkit::prereq::require_command("wget", "wget", "apt-get install wget") {
        return;
    }
    let f = fixture();
    let a = stage(f);
    let (d, p, have) = partial(f);
    let out = run(Command::new("wget")
        .current_dir(d.path())
        .args(["-c", "--no-check-certificate", "-S"])
        .arg(format!("{}big.bin", a.https_base)));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("206 Partial Content"), "{log}");
    assert_eq!(file_sha(&p), f.sha);
    let sent = deliveries_once(f, &a, "the resumed transfer", |d| total(d) >= f.size - have);
    assert_eq!(
        sent.iter().map(|d| d.bytes).collect::<Vec<_>>(),
        [f.size - have],
        "only the missing part was sent"
    );
}

/// A customer on a slow line, over HTTP/2 (what browsers and curl negotiate), gets the whole
/// file however many keep-alive intervals (5 s) the download lasts: the stager's pings
/// wait behind the megabytes queued for the reader in the socket buffers, so their pongs
/// come back late, and a late pong used to close the connection mid-file (at 300 KB/s
/// after about 20 s; `vendor/actix-http/PATCHES.md` 2).
#[test]
fn slow_http2_download_outlives_keepalive_pings() {
    if !ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl") {
        return;
    }
    let f = fixture();
    let a = stage_file(f, "slow", "slow.bin");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("slow.bin");
    // 10 MiB at 300 KiB/s: about 34 s, seven keep-alive intervals.
    let out = run(Command::new("curl")
        .args(["-k", "-s", "-S", "-f", "--http2", "--limit-rate", "300K"])
        .args(["-w", "%{http_version}", "-o"])
        .arg(&p)
        .arg(format!("{}slow.bin", a.https_base)));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2",
        "the download went over HTTP/2"
    );
    assert_eq!(file_sha(&p), f.slow_sha, "the whole file arrived");
}

#[test]
fn curl_c_resumes_over_https_with_and_without_if_range() {
    if !ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl") {
        return;
    }
    let f = fixture();
    let a = stage(f);
    let url = format!("{}big.bin", a.https_base);
    let head = run(Command::new("curl").args(["-k", "-s", "-S", "-I", &url]));
    let etag = String::from_utf8_lossy(&head.stdout)
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("etag"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .expect("an ETag");

    // Without If-Range, then with the ETag the server sent: each resumes where it stopped.
    let mut expected = Vec::new();
    for if_range in [None, Some(etag.as_str())] {
        let (_d, p, have) = partial(f);
        let mut c = Command::new("curl");
        c.args(["-k", "-s", "-S", "-f", "-C", "-", "-o"]).arg(&p);
        if let Some(e) = if_range {
            c.arg("-H").arg(format!("If-Range: {e}"));
        }
        run(c.arg(&url));
        assert_eq!(file_sha(&p), f.sha, "If-Range {if_range:?}");
        expected.push(f.size - have);
    }
    let sent = deliveries_once(f, &a, "both resumed transfers", |d| {
        total(d) >= expected.iter().sum()
    });
    assert_eq!(
        sent.iter().map(|d| d.bytes).collect::<Vec<_>>(),
        expected,
        "each resume fetched only the missing part"
    );

    // With an If-Range that no longer matches, the server sends the whole file (200) and
    // curl refuses to append it to the partial file, which stays as it was.
    let (_d, p, have) = partial(f);
    let out = Command::new("curl")
        .args([
            "-k",
            "-s",
            "-S",
            "-C",
            "-",
            "-H",
            "If-Range: \"stale\"",
            "-o",
        ])
        .arg(&p)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(33), "curl: cannot resume");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), have);
}

fn aria2c(dir: &Path, url: &str) {
    run(Command::new("aria2c")
        .current_dir(dir)
        .args([
            "-x4",
            "-s4",
            // Pieces of 1 MiB, so the 3 MiB file is really fetched over several connections
            // (the default minimum piece is 20 MiB).
            "--min-split-size=1M",
            // A reader slower than loopback: on a fast link the first connection would
            // have the whole file before the others start.
            "--max-download-limit=2M",
            "--check-certificate=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "-o",
            "big.bin",
        ])
        .arg(url));
}

#[test]
fn aria2c_x4_s4_over_https() {
    if !ffs_testkit::prereq::require_command("aria2c", "aria2c", "apt-get install aria2") {
        return;
    }
    let f = fixture();
    let a = stage(f);
    let d = tempfile::tempdir().unwrap();
    aria2c(d.path(), &format!("{}big.bin", a.https_base));
    assert_eq!(file_sha(&d.path().join("big.bin")), f.sha);
    // aria2's first connection asks for the whole file (`bytes=0-`) to learn its size,
    // then others fetch the later pieces with ranges.
    deliveries_once(f, &a, "pieces fetched over several connections", |d| {
        d.len() >= 2 && d.iter().any(|d| d.bytes < f.size)
    });
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn aria2c_x4_s4_over_ftp() {
    if !ffs_testkit::prereq::require_command("aria2c", "aria2c", "apt-get install aria2") {
        return;
    }
    let f = fixture();
    let a = stage(f);
    let d = tempfile::tempdir().unwrap();
    aria2c(
        d.path(),
        &format!(
            "ftp://{}:{}@{}/big.bin",
            enc(&a.ftp_user),
            enc(&a.ftp_password),
            f.ftp
        ),
    );
    assert_eq!(file_sha(&d.path().join("big.bin")), f.sha);
    // Pieces after the first are fetched with REST on other connections and read to the
    // end (logged as completed transfers); the first connection is cut once its piece is in.
    let sent = deliveries_once(f, &a, "a piece fetched from a restart point", |d| {
        d.iter().any(|d| d.bytes < f.size)
    });
    assert!(sent.iter().all(|d| d.protocol == "ftp"), "{sent:?}");
}
