//! Replication with the real binary, each stager its own `ffs stager` process configured
//! through `ffs.toml`: a release published remotely to the source reaches the follower, a
//! yank follows, a follower killed (SIGKILL) while the source publishes catches up when it
//! is started again, and an object altered on the follower's disk is reported by
//! `ffs repo verify`, withdrawn by `--quarantine` and fetched again from the source.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    Daemon, eventually, ffs, ffs_ok, free_port, logged_fingerprint, wait_port, write_secret,
};

/// One stager's directory and ports.
struct Host {
    dir: tempfile::TempDir,
    https: u16,
}

impl Host {
    /// Keys and a config with free ports; `extra` is appended to the `[stager]` section.
    fn new(extra: &str) -> Host {
        let h = Host {
            dir: tempfile::tempdir().unwrap(),
            https: free_port(),
        };
        let d = h.path();
        ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
        let passive = free_port();
        let cfg = format!(
            "[link]\nkeys = \"keys.bag\"\n\n[stager]\nlink_listen = \"127.0.0.1:{}\"\n\
             ftp_listen = \"127.0.0.1:{}\"\npassive_ports = \"{passive}-{}\"\n\
             https_listen = \"127.0.0.1:{}\"\n{extra}",
            free_port(),
            free_port(),
            passive.saturating_add(4),
            h.https
        );
        std::fs::write(d.join("ffs.toml"), cfg).unwrap();
        h
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start(&self) -> Daemon {
        let s = Daemon::start(self.path(), "stager", &["stager"]);
        assert!(
            wait_port(self.https, Duration::from_secs(30)),
            "stager did not listen:\n{}",
            s.log_text()
        );
        s
    }

    /// `ffs catalog --all --json`: (version, yanked, quarantined) of each release.
    fn catalog(&self) -> Vec<(String, bool, bool)> {
        let out = ffs(self.path(), &["catalog", "--all", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["version"].as_str().unwrap_or_default().to_owned(),
                            m["yanked"].as_bool().unwrap_or_default(),
                            !m["quarantined"].is_null(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn holds(&self, version: &str) -> bool {
        self.catalog()
            .iter()
            .any(|(v, yanked, _)| v == version && !yanked)
    }
}

#[test]
fn a_follower_process_replicates_catches_up_after_sigkill_and_repairs_its_disk() {
    let wait = Duration::from_secs(60);
    let a = Host::new("");
    let mut source = a.start();
    assert!(
        eventually(wait, || logged_fingerprint(&source.log_text()).len() == 95),
        "no fingerprint in:\n{}",
        source.log_text()
    );
    let pin = logged_fingerprint(&source.log_text());

    // A build machine publishes 1.0 to the source remotely.
    let build = tempfile::tempdir().unwrap();
    let bd = build.path();
    let publish_token = ffs_ok(a.path(), &["publish-token", "create", "--name", "ci"], None);
    write_secret(&bd.join("publish.token"), publish_token.trim());
    let publish = |version: &str, bytes: usize| {
        let src = bd.join(format!("v{version}"));
        std::fs::create_dir_all(&src).unwrap();
        let body: Vec<u8> = (0..bytes).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(src.join("widget.bin"), body).unwrap();
        std::fs::write(src.join("README.txt"), format!("widget {version}\n")).unwrap();
        ffs_ok(
            bd,
            &[
                "publish",
                "--remote",
                &format!("https://127.0.0.1:{}", a.https),
                "--token-file",
                "publish.token",
                "--pin",
                &pin,
                "widget",
                version,
                src.to_str().unwrap(),
            ],
            None,
        );
    };
    publish("1.0", 2 << 20);

    // The follower: a replication token from the source, the source's pin, 1 s polls.
    let b = Host::new(&format!(
        "replicate_from = \"https://127.0.0.1:{}\"\nreplicate_token_file = \"replication.token\"\n\
         replicate_pin = \"{pin}\"\nreplicate_interval_secs = 1\n",
        a.https
    ));
    let token = ffs_ok(
        a.path(),
        &["replication-token", "create", "--name", "stager-b"],
        None,
    );
    write_secret(&b.path().join("replication.token"), token.trim());
    ffs_ok(b.path(), &["config", "check", "--role", "stager"], None);
    let mut follower = b.start();
    assert!(
        eventually(wait, || b.holds("1.0")),
        "1.0 never reached the follower:\n{}",
        follower.log_text()
    );
    ffs_ok(b.path(), &["repo", "verify"], None);

    // A yank on the source follows.
    ffs_ok(a.path(), &["yank", "widget", "1.0"], None);
    assert!(eventually(wait, || !b.holds("1.0")), "yank did not follow");

    // The follower is killed; the source publishes meanwhile; the follower catches up.
    follower.kill();
    publish("2.0", 1 << 20);
    assert!(!b.holds("2.0"));
    follower.restart();
    assert!(
        eventually(wait, || b.holds("2.0")),
        "the follower did not catch up:\n{}",
        follower.log_text()
    );

    // An object altered on the follower's disk: `ffs repo verify` says so and exits
    // non-zero; `--quarantine` withdraws the release there, and the follower fetches the
    // object again from the source, after which verify passes.
    let objects = b.path().join("stager/repository/objects");
    let m = b.catalog();
    assert!(m.iter().any(|(v, _, _)| v == "2.0"), "{m:?}");
    let cat = ffs_ok(b.path(), &["catalog", "--json"], None);
    let cat: serde_json::Value = serde_json::from_str(&cat).unwrap();
    let sha = cat
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == "2.0")
        .and_then(|m| m["files"].as_array())
        .and_then(|f| f.iter().find(|f| f["name"] == "widget.bin"))
        .and_then(|f| f["sha256"].as_str())
        .unwrap()
        .to_owned();
    let obj = objects.join(&sha[..2]).join(&sha[2..]);
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&obj).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&obj, bytes).unwrap();
    }
    let out = ffs(b.path(), &["repo", "verify"], None);
    assert!(!out.status.success(), "verify missed the altered object");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALTERED") && text.contains("2.0"), "{text}");
    ffs(b.path(), &["repo", "verify", "--quarantine"], None);
    assert!(
        eventually(wait, || {
            b.holds("2.0") && ffs(b.path(), &["repo", "verify"], None).status.success()
        }),
        "the follower did not repair its copy:\n{}",
        follower.log_text()
    );
    assert!(follower.log_text().contains("replicated release"));
    follower.assert_running();
    source.assert_running();
    assert!(
        follower
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(
        source
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
