//! Helpers for the end-to-end tests: run the real `ffs` binary in a fresh directory, start
//! roles as separate processes, and drive them with real clients (curl, Python's ftplib).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `ffs` binary under test.
pub fn ffs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ffs")
}

pub use ffs_testkit::port::free_port;

/// Runs `ffs ARGS` in `dir` to completion, feeding `stdin`.
pub fn ffs(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(ffs_bin());
    cmd.current_dir(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run ffs");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("ffs did not finish")
}

/// Runs `ffs ARGS` and insists it succeeds; returns stdout.
pub fn ffs_ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = ffs(dir, args, stdin);
    assert!(
        out.status.success(),
        "ffs {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A role running as its own process; killed when dropped. Its log goes to a file.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    dir: PathBuf,
    program: String,
    args: Vec<String>,
}

impl Daemon {
    /// Starts `ffs ARGS` in `dir`, logging to `dir/<name>.log` (appending across restarts).
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Daemon {
        Self::start_program(dir, name, ffs_bin(), args)
    }

    /// Starts another program (e.g. `ip netns exec NS ffs …`) the same way.
    pub fn start_program(dir: &Path, name: &str, program: &str, args: &[&str]) -> Daemon {
        let mut d = Daemon {
            name: name.into(),
            child: None,
            log: dir.join(format!("{name}.log")),
            dir: dir.to_path_buf(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .current_dir(&self.dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start ffs");
        self.child = Some(child);
    }

    /// Sends SIGTERM (what systemd sends) and waits up to `within`; the exit status, or
    /// `None` if it had to be killed.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) to the running process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} {} failed", self.name);
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The environment the running process sees (`/proc/PID/environ`): what it was
    /// started with, or what it started itself again with.
    pub fn environ(&self) -> Vec<(String, String)> {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read(format!("/proc/{pid}/environ"))
            .expect("/proc/PID/environ")
            .split(|&b| b == 0)
            .filter_map(|v| {
                let v = String::from_utf8_lossy(v);
                v.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `f` until it returns true or the time is up.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A curl session with its own cookie jar (self-signed certificates accepted).
pub struct Curl {
    jar: PathBuf,
}

/// What curl got back.
pub struct Response {
    pub status: u16,
    pub body: String,
    pub headers: String,
}

impl Curl {
    pub fn new(dir: &Path, name: &str) -> Curl {
        Curl {
            jar: dir.join(format!("{name}.cookies")),
        }
    }

    fn run(&self, extra: &[&str], url: &str) -> Response {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "20", "-D", "-", "-b"])
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(extra)
            .arg(url)
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (headers, body) = match text.find("\r\n\r\n") {
            Some(i) => (text[..i].to_owned(), text[i + 4..].to_owned()),
            None => (text.clone(), String::new()),
        };
        let status = headers
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Response {
            status,
            body,
            headers,
        }
    }

    pub fn get(&self, url: &str) -> Response {
        self.run(&[], url)
    }

    /// POSTs form fields (URL-encoded by curl).
    pub fn post(&self, url: &str, form: &[(&str, &str)]) -> Response {
        self.post_with(url, form, &[])
    }

    /// POSTs form fields with extra request headers (`Name: value`).
    pub fn post_with(&self, url: &str, form: &[(&str, &str)], headers: &[&str]) -> Response {
        let pairs: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = Vec::new();
        for h in headers {
            args.push("-H");
            args.push(h);
        }
        for p in &pairs {
            args.push("--data-urlencode");
            args.push(p.as_str());
        }
        self.run(&args, url)
    }
}

pub use ffs_testkit::html::{input_value, urls};

/// Downloads `url` with curl into `dest` (optionally resuming), returns success.
pub fn curl_download(url: &str, dest: &Path, resume: bool) -> bool {
    let mut cmd = Command::new("curl");
    cmd.args(["-skf", "--max-time", "120", "-o"]).arg(dest);
    if resume {
        cmd.args(["-C", "-"]);
    }
    cmd.arg(url);
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Downloads `path` over FTP with Python's ftplib (passive mode), optionally from `rest`.
pub fn ftp_download(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    path: &str,
    dest: &Path,
    rest: Option<u64>,
) -> Result<(), String> {
    let script = r#"
import ftplib, sys
host, port, user, pw, path, dest, rest = sys.argv[1:8]
ftp = ftplib.FTP()
ftp.connect(host, int(port), timeout=60)
ftp.login(user, pw)
mode = 'ab' if rest != '-' else 'wb'
with open(dest, mode) as f:
    ftp.retrbinary('RETR ' + path, f.write, rest=(int(rest) if rest != '-' else None))
ftp.quit()
"#;
    let rest = rest.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([host, &port.to_string(), user, password, path])
        .arg(dest)
        .arg(&rest)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    ffs_testkit::hash::sha256_file(path).expect("read file")
}

/// The certificate fingerprint a stager logs (`tls_sha256=…`; colour codes skipped).
pub fn logged_fingerprint(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split("tls_sha256=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// Writes a secret file (mode 0600, as the roles insist).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
