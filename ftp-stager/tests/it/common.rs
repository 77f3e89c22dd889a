//! Shared set-up for the integration tests: a repository with one release, and a running
//! stager (FTP + HTTPS on 127.0.0.1, OS-chosen ports) in this process.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use commlink::msg::stager::{StageRequest, StagedArea};
use ftp_stager::server::{Listeners, StagerServer};
use ftp_stager::{Repository, Stager, StagerConfig};
use sha2::{Digest as _, Sha256};

pub struct Running {
    pub dir: tempfile::TempDir,
    pub cfg: StagerConfig,
    pub stager: Arc<Stager>,
    pub ftp: SocketAddr,
    pub https: SocketAddr,
    pub link: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) -> (tempfile::TempDir, StagerConfig) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        (self.dir, self.cfg)
    }

    pub fn stage(&self, files: &[&str], ttl: Option<u64>) -> StagedArea {
        self.stager
            .stage(&StageRequest {
                product: "tool".into(),
                version: "1.0".into(),
                files: files.iter().map(|s| s.to_string()).collect(),
                label: "test".into(),
                ttl_secs: ttl,
            })
            .unwrap()
    }

    pub fn secret_outside(&self) -> PathBuf {
        self.dir.path().join("outside-secret.txt")
    }
}

pub fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic but incompressible-looking content.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn test_config(root: &Path) -> StagerConfig {
    // Each test process gets its own passive range, so parallel tests do not collide.
    let base = 30000 + (std::process::id() % 300) as u16 * 100;
    StagerConfig {
        repository: root.join("repo"),
        areas_dir: root.join("areas"),
        state_dir: root.join("state"),
        passive_ports: format!("{}-{}", base, base + 99),
        sweep_interval_secs: 3600,
        ..Default::default()
    }
}

/// A fresh repository with release tool 1.0: big.bin (3 MiB + 17), docs/readme.txt,
/// "with space.txt"; and a secret file outside everything.
pub fn make_repo() -> (tempfile::TempDir, StagerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("big.bin"), pattern(3 * 1024 * 1024 + 17, 1)).unwrap();
    fs::write(src.join("docs/readme.txt"), b"read me first\n").unwrap();
    fs::write(src.join("with space.txt"), b"spaced\n").unwrap();
    fs::write(
        dir.path().join("outside-secret.txt"),
        b"TOP SECRET OUTSIDE\n",
    )
    .unwrap();
    let cfg = test_config(dir.path());
    let repo = Repository::open(&cfg.repository).unwrap();
    ftp_stager::publish(
        &repo,
        "tool",
        "1.0",
        &[src],
        "first release",
        &commlink::progress::Silent,
    )
    .unwrap();
    (dir, cfg)
}

pub async fn start_with(
    dir: tempfile::TempDir,
    cfg: StagerConfig,
    link: Option<commlink::LinkConfig>,
) -> Running {
    let listeners = Listeners::loopback(link.is_some()).await.unwrap();
    let (l, f, h) = listeners.addrs();
    let server = StagerServer::new(&cfg).unwrap();
    let stager = server.stager().clone();
    server.use_listener_ports(&listeners);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(link, listeners, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        dir,
        cfg,
        stager,
        ftp: f.unwrap(),
        https: h.unwrap(),
        link: l,
        stop: Some(tx),
        task: Some(task),
    }
}

pub async fn start() -> Running {
    let (dir, cfg) = make_repo();
    start_with(dir, cfg, None).await
}

/// Runs curl (insecure: the stager's certificate is self-signed) and returns
/// (http status, body bytes).
pub async fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let d = tempfile::tempdir().unwrap();
        let body = d.path().join("body");
        let out = Command::new("curl")
            .args(["-k", "-s", "-S", "--path-as-is", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(&args)
            .output()
            .expect("curl runs");
        let code: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if code == 0 {
            // curl itself failed: hand back its error text to show in the assertion.
            let mut e = format!("curl failed ({:?}): ", out.status).into_bytes();
            e.extend_from_slice(&out.stderr);
            e.extend_from_slice(&out.stdout);
            return (0, e);
        }
        (code, fs::read(&body).unwrap_or_default())
    })
    .await
    .unwrap()
}

/// Runs a python3 ftplib script. `ftp` is a logged-in `ftplib.FTP` (or FTP_TLS with
/// `tls`); the script's stdout is returned; a Python exception fails the call.
pub async fn ftplib(
    addr: SocketAddr,
    user: &str,
    password: &str,
    tls: bool,
    body: &str,
) -> Result<String, String> {
    let script = format!(
        r#"
import ftplib, hashlib, sys, io, ssl
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if {tls}:
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    ftp = ftplib.FTP_TLS(context=ctx, timeout=20)
else:
    ftp = ftplib.FTP(timeout=20)
ftp.connect(host, port)
ftp.login(user, pw)
if {tls}:
    ftp.prot_p()
def attempt(label, fn):
    try:
        fn()
        print(label, "OK")
    except ftplib.all_errors as e:
        print(label, "ERR", str(e)[:3])
def get(name, rest=None):
    buf = io.BytesIO()
    ftp.retrbinary("RETR " + name, buf.write, rest=rest)
    return buf.getvalue()
{body}
ftp.quit()
"#,
        tls = if tls { "True" } else { "False" },
    );
    let args = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        user.to_owned(),
        password.to_owned(),
    ];
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .args(&args)
            .output()
            .expect("python3 runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}
