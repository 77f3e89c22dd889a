//! End-to-end: the built `ffs` binary as three separate processes (db agent, stager, web),
//! driven with real clients: HTTPS with curl, FTP with Python's ftplib.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// A configured directory with a customer, an entitlement and a published release.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) web: u16,
    agent: u16,
    agent_back: u16,
    stager_link: u16,
    ftp: u16,
    https: u16,
}

impl Site {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.web)
    }
}

/// The config for a site; `agent_mode` is "listen" (web dials in) or "dial-out".
fn config_text(s: &Site, agent_mode: &str, agent_host: &str, web_agent_host: &str) -> String {
    let passive = free_port();
    let (web_mode, agent_addr) = if agent_mode == "listen" {
        ("connect", format!("{agent_host}:{}", s.agent))
    } else {
        ("accept", format!("{agent_host}:{}", s.agent))
    };
    format!(
        r#"[link]
keys = "keys.bag"
heartbeat_secs = 1.0
connect_timeout_secs = 1.0

[db-agent]
mode = "{agent_mode}"
listen = "{agent_host}:{agent}"
dial = "{web_agent_host}:{agent_back}"
database = "sqlite://ffs.db"
argon2_memory_kib = 8192
argon2_iterations = 1

[stager]
link_listen = "127.0.0.1:{link}"
ftp_listen = "127.0.0.1:{ftp}"
passive_ports = "{passive}-{passive_end}"
https_listen = "127.0.0.1:{https}"
area_ttl_secs = 3600

[web]
listen = "127.0.0.1:{web}"
db_agent_mode = "{web_mode}"
db_agent_addr = "{agent_addr}"
db_agent_listen = "{web_agent_host}:{agent_back}"
stager_addr = "127.0.0.1:{link}"
delivery_poll_secs = 1
backend_timeout_ms = 1500
"#,
        agent = s.agent,
        agent_back = s.agent_back,
        link = s.stager_link,
        ftp = s.ftp,
        passive_end = passive.saturating_add(9),
        https = s.https,
        web = s.web,
    )
}

pub(crate) const PASSWORD: &str = "correct horse battery";

/// Keys, config, a customer entitled to `widget`, and `widget 1.0` published (including a
/// 3 MiB file so resume has something to resume).
pub(crate) fn site(agent_mode: &str, agent_host: &str, web_agent_host: &str) -> Site {
    let s = Site {
        dir: tempfile::tempdir().unwrap(),
        web: free_port(),
        agent: free_port(),
        agent_back: free_port(),
        stager_link: free_port(),
        ftp: free_port(),
        https: free_port(),
    };
    let d = s.path();
    ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
    std::fs::write(
        d.join("ffs.toml"),
        config_text(&s, agent_mode, agent_host, web_agent_host),
    )
    .unwrap();
    ffs_ok(
        d,
        &[
            "customer",
            "add",
            "alice",
            "--name",
            "Alice Example",
            "--email",
            "alice@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    ffs_ok(
        d,
        &["entitle", "alice", "widget", "--versions", ">=1.0, <2"],
        None,
    );
    let src = d.join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("README.txt"), "widget 1.0\n").unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(src.join("widget.bin"), big).unwrap();
    std::fs::write(src.join("docs/notes.md"), "# notes <&>\n").unwrap();
    ffs_ok(
        d,
        &[
            "publish",
            "widget",
            "1.0",
            src.to_str().unwrap(),
            "--notes",
            "First",
        ],
        None,
    );
    s
}

pub(crate) struct Running {
    pub(crate) agent: Daemon,
    pub(crate) stager: Daemon,
    pub(crate) web: Daemon,
}

/// Waits (up to 30 s) until the whole stack answers ready; on failure shows every log.
fn wait_ready(s: &Site, r: &Running) {
    assert!(
        eventually(Duration::from_secs(30), || ready(s)),
        "stack never became ready\nagent:\n{}\nstager:\n{}\nweb:\n{}",
        r.agent.log_text(),
        r.stager.log_text(),
        r.web.log_text()
    );
}

pub(crate) fn start(s: &Site, agent_prefix: &[&str]) -> Running {
    let d = s.path();
    let mut agent_args: Vec<&str> = agent_prefix.to_vec();
    let bin = ffs_bin();
    let agent = if agent_prefix.is_empty() {
        Daemon::start(d, "agent", &["db-agent"])
    } else {
        agent_args.extend([bin, "--config", "ffs.toml", "db-agent"]);
        Daemon::start_program(d, "agent", agent_args[0], &agent_args[1..])
    };
    let stager = Daemon::start(d, "stager", &["stager"]);
    let web = Daemon::start(d, "web", &["web"]);
    Running { agent, stager, web }
}

pub(crate) fn ready(s: &Site) -> bool {
    Curl::new(s.path(), "probe").get(&s.url("/readyz")).status == 200
}

/// Logs in as alice; returns the session.
pub(crate) fn login(s: &Site) -> Curl {
    let c = Curl::new(s.path(), &format!("alice-{}", rand_suffix()));
    let page = c.get(&s.url("/login"));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = input_value(&page.body, "csrf").expect("login form has a CSRF token");
    let r = c.post(
        &s.url("/login"),
        &[("csrf", &csrf), ("login", "alice"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 303, "login failed: {}", r.body);
    c
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Prepares widget 1.0; returns the prepared page.
pub(crate) fn prepare(s: &Site, c: &Curl) -> String {
    let products = c.get(&s.url("/products"));
    assert_eq!(products.status, 200, "{}", products.body);
    assert!(products.body.contains("widget"), "{}", products.body);
    let csrf = input_value(&products.body, "csrf").unwrap();
    let r = c.post(
        &s.url("/prepare"),
        &[("csrf", &csrf), ("product", "widget"), ("version", "1.0")],
    );
    assert_eq!(r.status, 200, "prepare failed: {}", r.body);
    r.body
}

fn catalog_sha(s: &Site, name: &str) -> String {
    let out = ffs_ok(s.path(), &["catalog", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["sha256"].as_str().unwrap().to_owned())
        .unwrap()
}

/// The area's HTTPS base and FTP credentials from a prepared page.
pub(crate) fn locators(page: &str) -> (String, String, String) {
    let base = urls(page, "https")
        .into_iter()
        .find(|u| u.contains("/d/") && u.ends_with('/'))
        .expect("prepared page has the area's HTTPS link");
    let creds = ftp_url(page)
        .trim_start_matches("ftp://")
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    let (user, pass) = creds.split_once(':').unwrap();
    (base, user.to_owned(), pass.to_owned())
}

/// The area's FTP URL (`ftp://user:pass@host:port/`) from a prepared page.
fn ftp_url(page: &str) -> String {
    urls(page, "ftp")
        .into_iter()
        .next()
        .expect("prepared page has an FTP URL")
}

/// The FTP server's host and port from a prepared page's FTP URL.
pub(crate) fn ftp_address(page: &str) -> (String, u16) {
    let url = ftp_url(page);
    let hostport = url
        .rsplit_once('@')
        .map(|(_, h)| h.trim_end_matches('/'))
        .expect("ftp://user:pass@host:port/");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("a port number"))
}

pub(crate) fn history(s: &Site) -> serde_json::Value {
    let out = ffs_ok(s.path(), &["history", "alice", "--json"], None);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn customer_downloads_over_https_and_ftp_and_survives_restarts() {
    let s = site("listen", "127.0.0.1", "127.0.0.1");
    let mut r = start(&s, &[]);
    wait_ready(&s, &r);
    // Every role made the start-up decision of `commlink::fast_copies` on what it
    // inherited: on AMD with ERMS it runs with glibc's vector copies (the same process,
    // started again), elsewhere with what it was given.
    let inherited = std::env::var(commlink::fast_copies::TUNABLES_VAR).ok();
    let decided = commlink::fast_copies::tunables_for(
        commlink::fast_copies::Cpu::detect(),
        inherited.as_deref(),
    );
    for d in [&r.agent, &r.stager, &r.web] {
        let seen = d
            .environ()
            .into_iter()
            .find(|(k, _)| k == commlink::fast_copies::TUNABLES_VAR)
            .map(|(_, v)| v);
        match &decided {
            // glibc 2.36 rewrites the variable a process sees after reading it, keeping
            // only its first tunable.
            Some(set) => {
                let first = set.split(':').next().unwrap_or_default();
                assert!(
                    seen.as_deref().is_some_and(|t| t.starts_with(first)),
                    "{}: {seen:?}, expected {set}",
                    d.name
                );
            }
            None => assert_eq!(seen.is_some(), inherited.is_some(), "{}: {seen:?}", d.name),
        }
    }

    let c = login(&s);
    let page = prepare(&s, &c);
    let (base, user, pass) = locators(&page);
    let want = catalog_sha(&s, "widget.bin");
    assert!(page.contains(&want), "prepared page shows the checksum");

    // HTTPS, whole and resumed from the middle.
    let tmp = tempfile::tempdir().unwrap();
    let got = tmp.path().join("https.bin");
    assert!(curl_download(&format!("{base}widget.bin"), &got, false));
    assert_eq!(sha256_file(&got), want);
    let data = std::fs::read(&got).unwrap();
    let partial = tmp.path().join("resume.bin");
    std::fs::write(&partial, &data[..data.len() / 2]).unwrap();
    assert!(curl_download(&format!("{base}widget.bin"), &partial, true));
    assert_eq!(sha256_file(&partial), want, "HTTPS resume");

    // FTP with ftplib, whole and resumed (REST).
    let ftp_got = tmp.path().join("ftp.bin");
    ftp_download(
        "127.0.0.1",
        s.ftp,
        &user,
        &pass,
        "widget.bin",
        &ftp_got,
        None,
    )
    .unwrap();
    assert_eq!(sha256_file(&ftp_got), want);
    let ftp_partial = tmp.path().join("ftp-resume.bin");
    std::fs::write(&ftp_partial, &data[..1_000_000]).unwrap();
    ftp_download(
        "127.0.0.1",
        s.ftp,
        &user,
        &pass,
        "widget.bin",
        &ftp_partial,
        Some(1_000_000),
    )
    .unwrap();
    assert_eq!(sha256_file(&ftp_partial), want, "FTP resume");
    let nested = tmp.path().join("notes.md");
    ftp_download(
        "127.0.0.1",
        s.ftp,
        &user,
        &pass,
        "docs/notes.md",
        &nested,
        None,
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&nested).unwrap(), "# notes <&>\n");

    // The history records the staging, then the delivered bytes.
    let h = history(&s);
    assert_eq!(h[0]["product"], "widget");
    assert_eq!(h[0]["version"], "1.0");
    assert!(
        eventually(Duration::from_secs(15), || {
            history(&s)[0]["delivered_bytes"].as_u64().unwrap_or(0) >= data.len() as u64
        }),
        "deliveries never reached the history: {}",
        history(&s)
    );

    // Kill the agent: pages say "temporarily unavailable" with 503, quickly.
    r.agent.kill();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let down = c.get(&s.url("/products"));
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "503 took {:?}",
        t.elapsed()
    );
    assert!(
        down.body.to_lowercase().contains("unavailable"),
        "{}",
        down.body
    );
    assert_eq!(
        Curl::new(s.path(), "probe").get(&s.url("/readyz")).status,
        503
    );
    // ... and recover by themselves once it is back.
    r.agent.restart();
    assert!(
        eventually(Duration::from_secs(20), || c
            .get(&s.url("/products"))
            .status
            == 200),
        "web did not recover after the agent restart:\n{}",
        r.web.log_text()
    );

    // Restart the stager: the staged area still works.
    r.stager.restart();
    assert!(wait_port(s.https, Duration::from_secs(20)));
    let again = tmp.path().join("again.bin");
    assert!(
        eventually(Duration::from_secs(10), || curl_download(
            &format!("{base}widget.bin"),
            &again,
            false
        )),
        "area lost across a stager restart:\n{}",
        r.stager.log_text()
    );
    assert_eq!(sha256_file(&again), want);
    r.web.assert_running();

    // Operators stop the roles with SIGTERM (systemd): each one exits cleanly, status 0.
    let mut r = r;
    for d in [&mut r.web, &mut r.stager, &mut r.agent] {
        let st = d.terminate(Duration::from_secs(15));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM: {st:?}\n{}",
            d.name,
            d.log_text()
        );
    }
}

/// Whether an FTP login with these one-time credentials is accepted (Python ftplib).
fn ftp_login_ok(port: u16, user: &str, pass: &str) -> bool {
    let script = "import ftplib, sys\n\
                  f = ftplib.FTP()\n\
                  f.connect('127.0.0.1', int(sys.argv[1]), timeout=20)\n\
                  f.login(sys.argv[2], sys.argv[3])\n\
                  f.nlst()\n\
                  f.quit()\n";
    std::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), user, pass])
        .output()
        .expect("python3 must be installed (apt-get install python3)")
        .status
        .success()
}

/// Whether the area's README.txt can be fetched over HTTPS.
fn https_ok(base: &str, dir: &Path) -> bool {
    curl_download(&format!("{base}README.txt"), &dir.join("probe.txt"), false)
}

#[test]
fn disable_and_unentitle_revoke_sessions_and_staged_areas_within_seconds() {
    let s = site("listen", "127.0.0.1", "127.0.0.1");
    let d = s.path();
    // A second product, so an unentitle --revoke is seen to revoke only its own areas.
    let src = d.join("gadget-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.txt"), "gadget 1.0\n").unwrap();
    ffs_ok(
        d,
        &["publish", "gadget", "1.0", src.to_str().unwrap()],
        None,
    );
    ffs_ok(d, &["entitle", "alice", "gadget"], None);
    let r = start(&s, &[]);
    wait_ready(&s, &r);
    let tmp = tempfile::tempdir().unwrap();
    let c = login(&s);
    let (widget, w_user, w_pass) = locators(&prepare(&s, &c));
    let products = c.get(&s.url("/products"));
    let csrf = input_value(&products.body, "csrf").unwrap();
    let g = c.post(
        &s.url("/prepare"),
        &[("csrf", &csrf), ("product", "gadget"), ("version", "1.0")],
    );
    assert_eq!(g.status, 200, "{}", g.body);
    let (gadget, g_user, g_pass) = locators(&g.body);
    for (base, user, pass) in [(&widget, &w_user, &w_pass), (&gadget, &g_user, &g_pass)] {
        assert!(https_ok(base, tmp.path()), "{base}");
        assert!(ftp_login_ok(s.ftp, user, pass), "{user}");
    }

    // Unentitle without --revoke leaves staged areas alone; with it, that product's go.
    ffs_ok(d, &["unentitle", "alice", "gadget", "--revoke"], None);
    let t = Instant::now();
    let revoked = eventually(Duration::from_secs(30), || {
        !https_ok(&gadget, tmp.path()) && !ftp_login_ok(s.ftp, &g_user, &g_pass)
    });
    assert!(
        revoked,
        "the gadget area still serves after unentitle --revoke\nweb:\n{}\nstager:\n{}",
        r.web.log_text(),
        r.stager.log_text()
    );
    println!("unentitle --revoke: area gone after {:?}", t.elapsed());
    assert!(
        https_ok(&widget, tmp.path()),
        "the widget area is not touched"
    );
    assert!(ftp_login_ok(s.ftp, &w_user, &w_pass));
    assert_eq!(
        c.get(&s.url("/products")).status,
        200,
        "the session goes on"
    );

    // Disable: "no login, no downloads" — the open session ends and the area stops serving.
    let out = ffs_ok(d, &["customer", "disable", "alice"], None);
    assert!(out.contains("disabled"), "{out}");
    let t = Instant::now();
    let ended = eventually(Duration::from_secs(30), || {
        let p = c.get(&s.url("/products"));
        p.status == 303 && p.headers.contains("/login")
    });
    assert!(
        ended,
        "the disabled customer's session goes on\n{}",
        r.web.log_text()
    );
    println!("disable: session refused after {:?}", t.elapsed());
    assert!(
        eventually(Duration::from_secs(30), || !https_ok(&widget, tmp.path())
            && !ftp_login_ok(s.ftp, &w_user, &w_pass)),
        "the disabled customer's area still serves\nweb:\n{}\nstager:\n{}",
        r.web.log_text(),
        r.stager.log_text()
    );
    println!("disable: area gone after {:?}", t.elapsed());
    let again = Curl::new(d, "alice-again");
    let page = again.get(&s.url("/login"));
    let csrf = input_value(&page.body, "csrf").unwrap();
    let r2 = again.post(
        &s.url("/login"),
        &[("csrf", &csrf), ("login", "alice"), ("password", PASSWORD)],
    );
    assert_ne!(r2.status, 303, "a disabled customer cannot sign in");

    // Enabled again: a new session and a new area work (the old revocation does not reach
    // areas staged after it).
    ffs_ok(d, &["customer", "enable", "alice"], None);
    let c = login(&s);
    let (base, user, pass) = locators(&prepare(&s, &c));
    assert!(https_ok(&base, tmp.path()));
    assert!(ftp_login_ok(s.ftp, &user, &pass));
}

#[test]
fn dial_out_agent_serves_the_web_without_any_inbound_connection() {
    let s = site("dial-out", "127.0.0.1", "127.0.0.1");
    let r = start(&s, &[]);
    assert!(
        eventually(Duration::from_secs(30), || ready(&s)),
        "stack never became ready\nagent:\n{}\nweb:\n{}",
        r.agent.log_text(),
        r.web.log_text()
    );
    // The agent listens on nothing in dial-out mode.
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.agent)).is_err());
    let c = login(&s);
    let page = prepare(&s, &c);
    let (base, _, _) = locators(&page);
    let tmp = tempfile::tempdir().unwrap();
    let got = tmp.path().join("r.txt");
    assert!(curl_download(&format!("{base}README.txt"), &got, false));
    assert_eq!(std::fs::read_to_string(got).unwrap(), "widget 1.0\n");
}

#[test]
fn demo_sets_up_and_reuses_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let first = ffs_ok(
        dir.path(),
        &["demo", "--dir", demo.to_str().unwrap(), "--setup-only"],
        None,
    );
    assert!(first.contains("Login  admin  password "), "{first}");
    assert!(first.contains("Login  demo   password "), "{first}");
    let catalog = ffs_ok(&demo, &["catalog", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        4,
        "two products, two releases each"
    );
    let big = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["files"].as_array().unwrap().iter())
        .map(|f| f["size"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(big >= 100_000_000, "one file of at least 100 MB");
    let cfg = std::fs::read_to_string(demo.join("ffs.toml")).unwrap();
    assert!(cfg.contains("mode = \"dial-out\"") && cfg.contains("db_agent_mode = \"accept\""));
    // A second run reuses everything and does not reset the passwords.
    let second = ffs_ok(
        dir.path(),
        &["demo", "--dir", demo.to_str().unwrap(), "--setup-only"],
        None,
    );
    assert!(second.contains("as printed on the first run"), "{second}");
    let again: serde_json::Value =
        serde_json::from_str(&ffs_ok(&demo, &["catalog", "--json"], None)).unwrap();
    assert_eq!(again, v, "the repository was not republished");
}

/// A network namespace with a veth link to the host; deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
    pub(crate) host_ip: String,
    pub(crate) ns_ip: String,
}

impl Netns {
    /// Creates it, or says why it cannot be created here.
    pub(crate) fn create(tag: &str) -> Result<Netns, String> {
        let pid = std::process::id();
        let n = pid % 200 + 20;
        let sub = format!(
            "10.{}.{}",
            100 + match tag {
                "listen" => 1,
                "https" => 2,
                _ => 0,
            },
            n
        );
        let ns = Netns {
            name: format!("ffsfw{tag}{pid}"),
            host_ip: format!("{sub}.1"),
            ns_ip: format!("{sub}.2"),
        };
        let host_if = format!("vh{pid}{}", &tag[..1]);
        let ns_if = format!("vn{pid}{}", &tag[..1]);
        let steps: Vec<Vec<String>> = vec![
            vec!["ip".into(), "netns".into(), "add".into(), ns.name.clone()],
            vec![
                "ip".into(),
                "link".into(),
                "add".into(),
                host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec![
                "ip".into(),
                "link".into(),
                "set".into(),
                ns_if.clone(),
                "netns".into(),
                ns.name.clone(),
            ],
            vec![
                "ip".into(),
                "addr".into(),
                "add".into(),
                format!("{}/24", ns.host_ip),
                "dev".into(),
                host_if.clone(),
            ],
            vec![
                "ip".into(),
                "link".into(),
                "set".into(),
                host_if.clone(),
                "up".into(),
            ],
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                ns.name.clone(),
                "ip".into(),
                "addr".into(),
                "add".into(),
                format!("{}/24", ns.ns_ip),
                "dev".into(),
                ns_if.clone(),
            ],
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                ns.name.clone(),
                "ip".into(),
                "link".into(),
                "set".into(),
                ns_if.clone(),
                "up".into(),
            ],
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                ns.name.clone(),
                "ip".into(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let out = std::process::Command::new(&step[0])
                .args(&step[1..])
                .output()
                .map_err(|e| format!("{}: {e}", step[0]))?;
            if !out.status.success() {
                return Err(format!(
                    "`{}` failed: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(ns)
    }

    /// Drops every inbound connection into the namespace (established replies still pass).
    fn firewall(&self) -> Result<(), String> {
        let rules = "table inet ffsfw {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif lo accept\n  ct state established,related accept\n }\n}\n";
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn open_firewall(&self) {
        let _ = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "delete", "table", "inet", "ffsfw",
            ])
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The agent in its own namespace with all inbound connections dropped. Fails the test,
/// naming what to install, when namespaces or nftables are not available; `None` only when
/// FFS_TEST_SKIP names `netns`.
fn firewalled(tag: &str) -> Option<Netns> {
    ffs_testkit::prereq::obtain(
        "netns",
        || {
            for program in ["ip", "nft"] {
                if ffs_testkit::prereq::find_command(program).is_none() {
                    return Err(format!("`{program}` is not on PATH"));
                }
            }
            let ns = Netns::create(tag)
                .map_err(|why| format!("cannot create a network namespace: {why}"))?;
            ns.firewall()
                .map_err(|why| format!("cannot install the nftables rule: {why}"))?;
            Ok(ns)
        },
        "apt-get install iproute2 nftables, and run the tests as root (or with CAP_NET_ADMIN)",
    )
}

#[test]
fn firewall_dial_out_works_through_a_drop_all_inbound_rule() {
    let Some(ns) = firewalled("dialout") else {
        return;
    };
    let s = site("dial-out", &ns.ns_ip, &ns.host_ip);
    let r = start(&s, &["ip", "netns", "exec", &ns.name]);
    assert!(
        eventually(Duration::from_secs(30), || ready(&s)),
        "dial-out through the firewall never came up\nagent:\n{}\nweb:\n{}",
        r.agent.log_text(),
        r.web.log_text()
    );
    let c = login(&s);
    let page = prepare(&s, &c);
    assert!(page.contains("widget"));
    let h = history(&s);
    assert_eq!(
        h[0]["product"], "widget",
        "the inside agent recorded the download"
    );
}

#[test]
fn firewall_listen_mode_fails_cleanly_and_works_once_opened() {
    let Some(ns) = firewalled("listen") else {
        return;
    };
    let s = site("listen", &ns.ns_ip, &ns.host_ip);
    let r = start(&s, &["ip", "netns", "exec", &ns.name]);
    assert!(wait_port(s.web, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(2));
    // The web cannot reach the agent: a clear 503, not a hang or a crash.
    let c = Curl::new(s.path(), "blocked");
    let page = c.get(&s.url("/login"));
    let csrf = input_value(&page.body, "csrf").unwrap_or_default();
    let t = Instant::now();
    let resp = c.post(
        &s.url("/login"),
        &[("csrf", &csrf), ("login", "alice"), ("password", PASSWORD)],
    );
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(resp.body.to_lowercase().contains("unavailable"));
    assert_eq!(
        Curl::new(s.path(), "probe").get(&s.url("/readyz")).status,
        503
    );
    // Opening the firewall is all it takes: the rule was what blocked it.
    ns.open_firewall();
    assert!(
        eventually(Duration::from_secs(20), || ready(&s)),
        "web did not reach the agent once the firewall opened:\n{}",
        r.web.log_text()
    );
    let c = login(&s);
    assert!(prepare(&s, &c).contains("widget"));
}

/// The README's run command as a user runs it: `ffs demo` comes up, serves the login page,
/// the printed password signs the demo customer in to their products, and Ctrl-C (SIGINT)
/// stops everything cleanly. Ports are moved to free ones so parallel runs do not collide.
#[test]
fn demo_serves_the_login_page_signs_in_and_stops_on_ctrl_c() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let setup = ffs_ok(
        dir.path(),
        &["demo", "--dir", demo.to_str().unwrap(), "--setup-only"],
        None,
    );
    let password = setup
        .lines()
        .find_map(|l| l.trim().strip_prefix("Login  demo   password "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the demo password is printed")
        .to_owned();
    let web = free_port();
    let passive = free_port();
    let mut cfg = std::fs::read_to_string(demo.join("ffs.toml")).unwrap();
    for (old, new) in [
        (":8443\"", web),
        (":7701\"", free_port()),
        (":7702\"", free_port()),
        (":7711\"", free_port()),
        (":2121\"", free_port()),
        (":8444\"", free_port()),
    ] {
        assert!(cfg.contains(old), "demo config lacks {old}");
        cfg = cfg.replace(old, &format!(":{new}\""));
    }
    cfg = cfg.replace(
        "passive_ports = \"30000-30099\"",
        &format!("passive_ports = \"{passive}-{passive}\""),
    );
    std::fs::write(demo.join("ffs.toml"), cfg).unwrap();

    let mut child = std::process::Command::new(ffs_bin())
        .args(["demo", "--dir", demo.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !printed.contains("Ctrl-C stops everything") && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    assert!(
        printed.contains("ready in"),
        "demo not ready in 60 s:\n{printed}"
    );
    let base = format!("https://127.0.0.1:{web}");
    assert!(printed.contains(&format!("{base}/")), "{printed}");
    assert!(
        printed.contains("password as printed on the first run"),
        "{printed}"
    );

    let c = Curl::new(dir.path(), "demo-user");
    let page = c.get(&format!("{base}/login"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign in"), "{}", page.body);
    let ready = c.get(&format!("{base}/readyz"));
    assert_eq!(ready.status, 200, "{}", ready.body);
    let csrf = input_value(&page.body, "csrf").unwrap();
    let r = c.post(
        &format!("{base}/login"),
        &[("csrf", &csrf), ("login", "demo"), ("password", &password)],
    );
    assert_eq!(
        r.status, 303,
        "the printed password did not sign in: {}",
        r.body
    );
    let products = c.get(&format!("{base}/products"));
    assert!(products.body.contains("acme-studio"), "{}", products.body);

    // Ctrl-C: every role stops and the process exits 0.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stop_by = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > stop_by {
            let _ = child.kill();
            panic!("ffs demo did not stop within 15 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
