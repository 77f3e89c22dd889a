//! N per role, each role its own `ffs` process (issue 11): PostgreSQL + 2 db agents + 2
//! stagers + 2 web frontends behind a real haproxy running `deploy/haproxy.cfg`. Stager b
//! is a replication follower of stager a (`[stager] replicate_from`, through a TCP gate the
//! test can shut or slow down). A customer signs in and prepares through haproxy, and
//! downloads from each stager over HTTPS and FTP (SHA-256 checked); then, while one web, one
//! agent and one stager are SIGKILLed and then started again: every prepare succeeds or is
//! a clear 503, the history holds exactly one row per successful prepare (none lost or
//! doubled; a 503 whose history write an agent carried out after the deadline is withdrawn
//! by the web), new prepares land on the live stager, and a download from the killed
//! stager, cut short, resumes (`curl -C -`, SHA-256 checked) once it is back.
//!
//! A release published during the run (widget 2.0, on stager a while b cannot reach it):
//! every prepare of 2.0 lands on a while b is up and takes prepares of what it holds; b's
//! catalog does not list 2.0 while its objects arrive (the gate passes 1 MiB/s, so the new
//! 6 MiB object takes at least 6 s), and lists it only with every object present and of
//! the right SHA-256; then prepares of 2.0 land on b too and download with the right
//! SHA-256.
//!
//! A host that stops answering (SIGSTOP of stager b and agent 1: no connection reset): every
//! prepare is 200 or 503; the test reports (eprintln, not asserted) how long prepares waited
//! on the frozen processes and how long after SIGCONT each was used again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gate::Gate;
use crate::support::{
    Curl, Daemon, curl_download, eventually, ffs, ffs_ok, free_port, ftp_download, input_value,
    logged_fingerprint, sha256_file, urls, write_secret,
};

const PASSWORD: &str = "correct horse battery";

/// A fresh PostgreSQL schema (dropped at the end) and its URL.
struct Pg {
    base: String,
    schema: String,
}

impl Pg {
    fn new() -> Option<Pg> {
        let base = ffs_testkit::prereq::obtain(
            "postgres",
            || {
                let base = std::env::var("FFS_TEST_POSTGRES_URL")
                    .map_err(|_| "FFS_TEST_POSTGRES_URL is not set".to_owned())?;
                psql(&base, "SELECT 1").map(|_| base)
            },
            "apt-get install postgresql, start it and set FFS_TEST_POSTGRES_URL",
        )?;
        let schema = format!("ffs_scaling_{}", std::process::id());
        psql(&base, &format!("CREATE SCHEMA {schema}")).unwrap();
        Some(Pg { base, schema })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.schema)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = psql(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        );
    }
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One instance's directory with its `ffs.toml` (all roles' sections; it runs one).
fn instance(base: &Path, name: &str, body: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("ffs.toml"),
        format!(
            "[link]\nkeys = \"{}\"\nheartbeat_secs = 1.0\nconnect_timeout_secs = 1.0\n\n{body}",
            base.join("keys.bag").display()
        ),
    )
    .unwrap();
    d
}

/// Prepares widget `version` through haproxy: `Ok(page)` on 200, `Err(status)` otherwise.
fn prepare(base: &str, c: &Curl, version: &str) -> Result<String, u16> {
    let products = c.get(&format!("{base}/products"));
    if products.status != 200 {
        return Err(products.status);
    }
    let csrf = input_value(&products.body, "csrf").unwrap();
    let r = c.post(
        &format!("{base}/prepare"),
        &[("csrf", &csrf), ("product", "widget"), ("version", version)],
    );
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(r.status)
    }
}

/// Prepares widget `version` until it is a 200 (at most 10 tries): a 503 is a clear
/// answer under load (a backend reply later than the deadline), counted in `unavailable`;
/// anything else fails the test.
fn prepare_ok(base: &str, c: &Curl, version: &str, unavailable: &mut usize) -> String {
    for _ in 0..10 {
        match prepare(base, c, version) {
            Ok(page) => return page,
            Err(503) => *unavailable += 1,
            Err(s) => panic!("prepare of {version} answered {s}, not 200 or 503"),
        }
    }
    panic!("prepare of {version}: 10 x 503 in a row")
}

/// The HTTPS link to widget.bin in a prepared page.
fn bin_link(page: &str) -> String {
    urls(page, "https")
        .into_iter()
        .find(|u| u.starts_with("https://") && u.ends_with("/widget.bin"))
        .unwrap_or_else(|| panic!("no widget.bin link in {page}"))
}

/// Which stager (index into `https`) a link names.
fn stager_of(link: &str, https: [u16; 2]) -> usize {
    https
        .iter()
        .position(|p| link.contains(&format!(":{p}/")))
        .unwrap_or_else(|| panic!("{link} names neither stager"))
}

/// Downloads a link and checks the SHA-256.
fn download_ok(link: &str, dest: &Path, want: &str) {
    assert!(
        curl_download(link, dest, false),
        "download of {link} failed"
    );
    assert_eq!(sha256_file(dest), want, "{link}");
}

/// The files (name, SHA-256, size) of widget `version` in a stager's catalog
/// (`ffs catalog --json`, which reads the repository the running stager uses); `None`
/// while the catalog does not list it.
fn release_files(stager: &Path, version: &str) -> Option<Vec<(String, String, u64)>> {
    let out = ffs(stager, &["catalog", "--json"], None);
    assert!(
        out.status.success(),
        "ffs catalog: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("catalog JSON");
    let m = v
        .as_array()?
        .iter()
        .find(|m| m["product"] == "widget" && m["version"] == version)?;
    Some(
        m["files"]
            .as_array()?
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap_or_default().to_owned(),
                    f["sha256"].as_str().unwrap_or_default().to_owned(),
                    f["size"].as_u64().unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// How many times a role's log says a commlink to `port` came up.
fn links_up(d: &Daemon, port: u16) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("commlink up") && l.contains(&format!(":{port}")))
        .count()
}

#[test]
fn two_of_each_role_survive_sigkill_of_one_of_each() {
    if !ffs_testkit::prereq::require_command("haproxy", "haproxy", "apt-get install haproxy") {
        return;
    }
    let Some(pg) = Pg::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    ffs_ok(base, &["keys", "generate", "--out", "keys.bag"], None);

    // Two agents on one PostgreSQL.
    let agent_ports = [free_port(), free_port()];
    let agents: Vec<PathBuf> = (0..2)
        .map(|i| {
            instance(
                base,
                &format!("agent{i}"),
                &format!(
                    "[db-agent]\nmode = \"listen\"\nlisten = \"127.0.0.1:{}\"\ndatabase = \"{}\"\nargon2_memory_kib = 8192\nargon2_iterations = 1\n",
                    agent_ports[i],
                    pg.url()
                ),
            )
        })
        .collect();
    ffs_ok(
        &agents[0],
        &[
            "customer",
            "add",
            "alice",
            "--name",
            "Alice",
            "--email",
            "a@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    ffs_ok(
        &agents[0],
        &["entitle", "alice", "widget", "--versions", "*"],
        None,
    );

    // Two stagers: a publishes widget 1.0, b follows a (through the gate).
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    std::fs::write(src.join("widget.bin"), &big).unwrap();
    let want = sha256_file(&src.join("widget.bin"));
    let (links, https) = ([free_port(), free_port()], [free_port(), free_port()]);
    let stager_dir = |i: usize, extra: &str| {
        let passive = free_port();
        instance(
            base,
            &format!("stager{i}"),
            &format!(
                "[stager]\nlink_listen = \"127.0.0.1:{}\"\nftp_listen = \"127.0.0.1:{}\"\npassive_ports = \"{passive}-{}\"\nhttps_listen = \"127.0.0.1:{}\"\n{extra}",
                links[i],
                free_port(),
                passive.saturating_add(4),
                https[i]
            ),
        )
    };
    let a = stager_dir(0, "");
    ffs_ok(
        &a,
        &["publish", "widget", "1.0", src.to_str().unwrap()],
        None,
    );
    let token = ffs_ok(&a, &["replication-token", "create", "--name", "b"], None);
    let source = Daemon::start(&a, "stager0", &["stager"]);
    assert!(
        eventually(Duration::from_secs(60), || logged_fingerprint(
            &source.log_text()
        )
        .len()
            == 95),
        "no certificate fingerprint in:\n{}",
        source.log_text()
    );
    let pin = logged_fingerprint(&source.log_text());
    let gate = Gate::start(https[0]);
    let b = stager_dir(
        1,
        &format!(
            "replicate_from = \"https://127.0.0.1:{}\"\nreplicate_token_file = \"replication.token\"\nreplicate_pin = \"{pin}\"\nreplicate_interval_secs = 1\n",
            gate.port
        ),
    );
    write_secret(&b.join("replication.token"), token.trim());
    let stagers = [a, b];
    let mut stager_d = [source, Daemon::start(&stagers[1], "stager1", &["stager"])];
    assert!(
        eventually(Duration::from_secs(60), || release_files(
            &stagers[1],
            "1.0"
        )
        .is_some()),
        "1.0 never reached the follower:\n{}",
        stager_d[1].log_text()
    );

    // Two webs sharing certificate and session key.
    let web_ports = [free_port(), free_port()];
    let shared = |f: &str| base.join(f).display().to_string();
    let webs: Vec<PathBuf> = (0..2)
        .map(|i| {
            instance(
                base,
                &format!("web{i}"),
                &format!(
                    "[web]\nlisten = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nsession_key = \"{}\"\ntrust_forwarded_for = true\ndb_agent_addr = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nstagers = [{{ name = \"a\", addr = \"127.0.0.1:{}\" }}, {{ name = \"b\", addr = \"127.0.0.1:{}\" }}]\nbackend_timeout_ms = 1500\ndelivery_poll_secs = 1\n",
                    web_ports[i],
                    shared("web-cert.pem"),
                    shared("web-key.pem"),
                    shared("web-session.key"),
                    agent_ports[0],
                    agent_ports[1],
                    links[0],
                    links[1]
                ),
            )
        })
        .collect();

    let mut agent_d: Vec<Daemon> = agents
        .iter()
        .enumerate()
        .map(|(i, d)| Daemon::start(d, &format!("agent{i}"), &["db-agent"]))
        .collect();
    let mut web_d = vec![Daemon::start(&webs[0], "web0", &["web"])];
    let ready = |port: u16| {
        Curl::new(base, "probe")
            .get(&format!("https://127.0.0.1:{port}/readyz"))
            .status
            == 200
    };
    assert!(
        eventually(Duration::from_secs(30), || ready(web_ports[0])),
        "web0: {}",
        web_d[0].log_text()
    );
    web_d.push(Daemon::start(&webs[1], "web1", &["web"]));
    assert!(
        eventually(Duration::from_secs(30), || ready(web_ports[1])),
        "web1: {}",
        web_d[1].log_text()
    );

    // haproxy in front, from the shipped file.
    let pem = base.join("haproxy.pem");
    ffs_testkit::haproxy::write_pem(&base.join("web-cert.pem"), &base.join("web-key.pem"), &pem)
        .unwrap();
    let hport = free_port();
    let conf = base.join("haproxy.cfg");
    std::fs::write(
        &conf,
        ffs_testkit::haproxy::config(&pem, &base.join("web-cert.pem"), hport, &web_ports),
    )
    .unwrap();
    let _haproxy = Daemon::start_program(
        base,
        "haproxy",
        "haproxy",
        &["-db", "-f", conf.to_str().unwrap()],
    );
    let front = format!("https://127.0.0.1:{hport}");
    assert!(eventually(Duration::from_secs(30), || Curl::new(
        base, "probe"
    )
    .get(&format!("{front}/readyz"))
    .status
        == 200));

    let alice = Curl::new(base, "alice");
    let page = alice.get(&format!("{front}/login"));
    let csrf = input_value(&page.body, "csrf").unwrap();
    let r = alice.post(
        &format!("{front}/login"),
        &[("csrf", &csrf), ("login", "alice"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 303, "{}", r.body);

    // Prepares spread over both stagers.
    let mut ok = 0;
    let mut unavailable = 0;
    let mut links_by_stager: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut pages_by_stager: [Option<String>; 2] = [None, None];
    for _ in 0..6 {
        let t = Instant::now();
        let page = prepare_ok(&front, &alice, "1.0", &mut unavailable);
        eprintln!("all up: prepare took {:?}", t.elapsed());
        ok += 1;
        let link = bin_link(&page);
        let i = stager_of(&link, https);
        links_by_stager[i].push(link);
        pages_by_stager[i].get_or_insert(page);
    }
    assert!(
        !links_by_stager[0].is_empty() && !links_by_stager[1].is_empty(),
        "{links_by_stager:?}"
    );
    // Downloads from each stager over HTTPS and over FTP (the page's FTP locator and
    // credentials), SHA-256 checked.
    for (i, page) in pages_by_stager.iter().enumerate() {
        let page = page.as_deref().expect("a prepared page from each stager");
        let dest = base.join(format!("all-up-https-{i}.bin"));
        assert!(curl_download(&bin_link(page), &dest, false));
        assert_eq!(sha256_file(&dest), want, "HTTPS from stager {i}");
        let (_, user, pass) = crate::e2e::locators(page);
        let (host, port) = crate::e2e::ftp_address(page);
        let dest = base.join(format!("all-up-ftp-{i}.bin"));
        ftp_download(&host, port, &user, &pass, "widget.bin", &dest, None)
            .unwrap_or_else(|e| panic!("FTP from stager {i}: {e}"));
        assert_eq!(sha256_file(&dest), want, "FTP from stager {i}");
    }

    // A download from stager a cut short by its death: the first MiB fetched now (a Range
    // request), the rest resumed (`curl -C -`) once a is back.
    let old = links_by_stager[0][0].clone();
    let dest = base.join("after.bin");
    let first = std::process::Command::new("curl")
        .args(["-skf", "--max-time", "60", "-r", "0-1048575", "-o"])
        .arg(&dest)
        .arg(&old)
        .status()
        .expect("curl runs");
    assert!(first.success(), "the first MiB from stager a");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 1 << 20);

    // SIGKILL one of each (the stager killed is the replication source).
    let a_links_before: Vec<usize> = web_d.iter().map(|w| links_up(w, links[0])).collect();
    web_d[0].kill();
    agent_d[0].kill();
    stager_d[0].kill();
    let killed = Instant::now();
    let mut timings = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        let r = prepare(&front, &alice, "1.0");
        timings.push((killed.elapsed(), t.elapsed(), r.is_ok()));
        match r {
            Ok(page) => {
                ok += 1;
                let link = bin_link(&page);
                assert_eq!(
                    stager_of(&link, https),
                    1,
                    "a new prepare went to the killed stager: {link}"
                );
                download_ok(&link, &base.join("during.bin"), &want);
            }
            Err(503) => unavailable += 1,
            Err(s) => panic!("prepare answered {s}, not 200 or 503"),
        }
    }
    assert!(
        ok > 6,
        "nothing prepared after the kills ({unavailable} x 503)"
    );
    // Reported (not asserted): since the kills, how long each prepare took, and its outcome.
    for (since, took, good) in &timings {
        eprintln!("after kill +{since:?}: prepare took {took:?}, ok={good}");
    }

    // Back again: the killed stager's areas download again.
    stager_d[0].restart();
    agent_d[0].restart();
    web_d[0].restart();
    assert!(
        eventually(Duration::from_secs(30), || curl_download(&old, &dest, true)),
        "{}",
        stager_d[0].log_text()
    );
    assert_eq!(sha256_file(&dest), want);
    assert!(eventually(Duration::from_secs(30), || ready(web_ports[0])));
    for _ in 0..4 {
        prepare_ok(&front, &alice, "1.0", &mut unavailable);
        ok += 1;
    }

    // Both webs' links to the restarted source are up again (a web whose link to a is still
    // redialing knows only b, which lacks 2.0, and answers a prepare of 2.0 with 404).
    assert!(
        eventually(Duration::from_secs(60), || web_d
            .iter()
            .zip(&a_links_before)
            .all(|(w, n)| links_up(w, links[0]) > *n)),
        "the webs did not link to the restarted stager a"
    );

    // A release published during the run: 2.0 on the source while the follower cannot
    // reach it (the gate cut), a new 6 MiB widget.bin and a small file.
    gate.shut();
    let src2 = base.join("src2");
    std::fs::create_dir_all(&src2).unwrap();
    let big2: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i * 7 % 241) as u8)
        .collect();
    std::fs::write(src2.join("widget.bin"), &big2).unwrap();
    std::fs::write(src2.join("NOTES.txt"), "widget 2.0\n").unwrap();
    let want2 = sha256_file(&src2.join("widget.bin"));
    ffs_ok(
        &stagers[0],
        &["publish", "widget", "2.0", src2.to_str().unwrap()],
        None,
    );
    let files2 = release_files(&stagers[0], "2.0").expect("2.0 on the source");
    let b_repo = stagers[1].join("stager/repository");
    let b_objects = b_repo.join("objects");
    let b_part = b_repo.join("replicate").join(format!("{want2}.part"));
    let dl = base.join("v2.bin");
    // While only the source holds 2.0, every prepare of it lands there...
    let mut v2_on = [0usize; 2];
    for _ in 0..4 {
        let page = prepare_ok(&front, &alice, "2.0", &mut unavailable);
        ok += 1;
        let link = bin_link(&page);
        assert_eq!(
            stager_of(&link, https),
            0,
            "2.0 staged on the stager that lacks it: {link}"
        );
        v2_on[0] += 1;
        download_ok(&link, &dl, &want2);
    }
    assert!(
        release_files(&stagers[1], "2.0").is_none(),
        "the follower lists 2.0 though the gate is shut"
    );
    // ... while the follower is up and takes prepares of what it holds.
    let mut on_b = false;
    for _ in 0..20 {
        let page = prepare_ok(&front, &alice, "1.0", &mut unavailable);
        ok += 1;
        let link = bin_link(&page);
        download_ok(&link, &base.join("v1.bin"), &want);
        if stager_of(&link, https) == 1 {
            on_b = true;
            break;
        }
    }
    assert!(on_b, "no prepare of 1.0 went to the follower");

    // The gate opens at 1 MiB/s: the follower lists 2.0 only once every object arrived and
    // checked; meanwhile prepares of 2.0 land on the source (or on the follower only once
    // it lists 2.0, checked after the prepare).
    gate.open(1 << 20);
    let opened = Instant::now();
    let mut saw_arriving = false;
    let arrived = eventually(Duration::from_secs(180), || {
        if let Some(files) = release_files(&stagers[1], "2.0") {
            assert_eq!(
                files, files2,
                "the follower's 2.0 differs from the source's"
            );
            for (name, sha, size) in &files {
                let obj = b_objects.join(&sha[..2]).join(&sha[2..]);
                let len = std::fs::metadata(&obj).map(|m| m.len()).ok();
                assert_eq!(len, Some(*size), "{name}: listed before its object arrived");
                assert_eq!(
                    &sha256_file(&obj),
                    sha,
                    "{name}: listed with a wrong object"
                );
            }
            return true;
        }
        if b_part.exists() {
            saw_arriving = true;
        }
        let page = prepare_ok(&front, &alice, "2.0", &mut unavailable);
        ok += 1;
        let link = bin_link(&page);
        let on = stager_of(&link, https);
        assert!(
            on == 0 || release_files(&stagers[1], "2.0").is_some(),
            "2.0 staged on the follower before it listed 2.0: {link}"
        );
        v2_on[on] += 1;
        download_ok(&link, &dl, &want2);
        false
    });
    assert!(
        arrived,
        "2.0 never reached the follower:\n{}",
        stager_d[1].log_text()
    );
    assert!(
        saw_arriving,
        "never saw 2.0's widget.bin arriving on the follower while its catalog lacked 2.0"
    );
    eprintln!(
        "2.0 listed by the follower {:?} after the gate opened; prepares of 2.0 meanwhile by stager: {v2_on:?}",
        opened.elapsed()
    );
    ffs_ok(&stagers[1], &["repo", "verify"], None);
    // Once both hold it, prepares of 2.0 land on the follower too (once the webs' cached
    // views of b, reused for up to 3 s, are fetched again).
    eventually(Duration::from_secs(60), || {
        let page = prepare_ok(&front, &alice, "2.0", &mut unavailable);
        ok += 1;
        let link = bin_link(&page);
        v2_on[stager_of(&link, https)] += 1;
        download_ok(&link, &dl, &want2);
        v2_on[1] > 0
    });
    assert!(
        v2_on[0] > 0 && v2_on[1] > 0,
        "2.0 prepares by stager: {v2_on:?}"
    );

    // One history row per successful prepare: none lost, none doubled. A 503 whose history
    // write reached an agent but was answered after the deadline may have been carried out;
    // the web then withdraws it at the agent (`agent.withdraw-download`, resent until an
    // agent answers), which removes the row or refuses the late record. So the count
    // settles at exactly `ok`; the withdrawal is asynchronous, so wait for it.
    let rows = || {
        psql(&pg.url(), "SELECT count(*) FROM downloads")
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    let settled = |want: usize| {
        let mut n = rows();
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while n != want && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(500));
            n = rows();
        }
        n
    };
    let n = settled(ok);
    assert_eq!(n, ok, "history rows {n}, prepares {ok}, 503s {unavailable}");
    eprintln!("history rows {n}, successful prepares {ok}, 503s {unavailable}");

    // A host that stops answering: SIGSTOP stager b and agent 1 (no connection reset, so
    // only the commlink heartbeats notice). Every prepare is 200 or 503; timings reported.
    let frozen = Instant::now();
    stager_d[1].signal("STOP");
    agent_d[1].signal("STOP");
    let mut freeze = Vec::new();
    let mut frozen_503 = 0;
    // A prepare that waited on a frozen peer takes at least the backend timeout (1.5 s).
    let waited =
        |took: Duration, outcome: u16| took >= Duration::from_millis(1400) || outcome != 200;
    let mut run_ok = 0;
    while frozen.elapsed() < Duration::from_secs(90)
        && (frozen.elapsed() < Duration::from_secs(10) || run_ok < 8)
    {
        let t = Instant::now();
        let r = prepare(&front, &alice, "1.0");
        let took = t.elapsed();
        let outcome = match r {
            Ok(page) => {
                ok += 1;
                run_ok += 1;
                let link = bin_link(&page);
                let on = stager_of(&link, https);
                assert_eq!(on, 0, "a prepare was staged on the frozen stager: {link}");
                download_ok(&link, &base.join("frozen.bin"), &want);
                200
            }
            Err(503) => {
                frozen_503 += 1;
                run_ok = 0;
                503
            }
            Err(s) => panic!("prepare answered {s} with a frozen stager and agent"),
        };
        freeze.push((t.duration_since(frozen), took, outcome));
    }
    for (at, took, outcome) in &freeze {
        eprintln!("frozen +{at:?}: prepare took {took:?}, answered {outcome}");
    }
    let waited_until = freeze
        .iter()
        .filter(|(_, took, outcome)| waited(*took, *outcome))
        .map(|(at, took, _)| *at + *took)
        .max();
    eprintln!(
        "frozen: {} prepares, {frozen_503} x 503; the last one that waited on a frozen peer ended at +{waited_until:?}",
        freeze.len()
    );
    assert!(
        run_ok >= 8,
        "prepares kept failing with a frozen stager and agent: {freeze:?}"
    );

    // SIGCONT: how long until each is used again (its links up on both webs; the stager
    // also taking a prepare).
    let before: Vec<(usize, usize)> = web_d
        .iter()
        .map(|w| (links_up(w, links[1]), links_up(w, agent_ports[1])))
        .collect();
    let thawed = Instant::now();
    stager_d[1].signal("CONT");
    agent_d[1].signal("CONT");
    let mut stager_link = None;
    let mut agent_link = None;
    let back = eventually(Duration::from_secs(60), || {
        let now: Vec<(usize, usize)> = web_d
            .iter()
            .map(|w| (links_up(w, links[1]), links_up(w, agent_ports[1])))
            .collect();
        if stager_link.is_none() && now.iter().zip(&before).all(|(n, b)| n.0 > b.0) {
            stager_link = Some(thawed.elapsed());
        }
        if agent_link.is_none() && now.iter().zip(&before).all(|(n, b)| n.1 > b.1) {
            agent_link = Some(thawed.elapsed());
        }
        stager_link.is_some() && agent_link.is_some()
    });
    assert!(
        back,
        "links to the thawed stager/agent not up again on both webs within 60 s"
    );
    let mut staged_on_b = None;
    for _ in 0..20 {
        let page = prepare_ok(&front, &alice, "1.0", &mut unavailable);
        ok += 1;
        let link = bin_link(&page);
        download_ok(&link, &base.join("thawed.bin"), &want);
        if stager_of(&link, https) == 1 {
            staged_on_b = Some(thawed.elapsed());
            break;
        }
    }
    eprintln!(
        "after SIGCONT: stager links up on both webs at +{stager_link:?}, agent links at +{agent_link:?}, first prepare on the stager at +{staged_on_b:?}"
    );
    assert!(staged_on_b.is_some(), "the thawed stager took no prepare");
    // A history write sent to the frozen agent and answered too late was a 503 here; once
    // the agent thawed it was either refused or removed by the web's withdrawal: exact.
    let n = settled(ok);
    assert_eq!(
        n, ok,
        "history rows {n}, prepares {ok}, 503s {unavailable} + {frozen_503} while frozen"
    );
}
