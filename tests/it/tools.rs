//! The operator tools as a user runs them: `ffs keys`, `ffs config init`.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::*;

#[test]
fn keys_generate_writes_a_private_bag_and_check_refuses_a_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ffs_ok(
        d,
        &["keys", "generate", "--count", "64", "--out", "k.bag"],
        None,
    );
    assert!(out.contains("64 entries"), "{out}");
    let mode = std::fs::metadata(d.join("k.bag"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(ffs_ok(d, &["keys", "check", "k.bag"], None).contains("64 entries"));
    // Never overwrites a bag.
    assert!(
        !ffs(d, &["keys", "generate", "--out", "k.bag"], None)
            .status
            .success()
    );
    // A bag others can read is refused, with the fix in the message.
    std::fs::set_permissions(d.join("k.bag"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = ffs(d, &["keys", "check", "k.bag"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("chmod 600"));
    // Too few entries.
    let few = ffs(
        d,
        &["keys", "generate", "--count", "1", "--out", "few.bag"],
        None,
    );
    assert!(!few.status.success());
    assert!(!d.join("few.bag").exists());
}

#[test]
fn config_init_writes_a_commented_working_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(d, &["config", "init"], None);
    let text = std::fs::read_to_string(d.join("ffs.toml")).unwrap();
    for section in ["[link]", "[db-agent]", "[stager]", "[web]"] {
        assert!(text.contains(section), "missing {section}");
    }
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "commented"
    );
    assert!(
        !ffs(d, &["config", "init"], None).status.success(),
        "must not overwrite"
    );
    // With a key bag next to it, the operator commands work on the defaults.
    ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
    ffs_ok(
        d,
        &[
            "customer",
            "add",
            "bob",
            "--name",
            "Bob",
            "--email",
            "b@example.com",
            "--password-stdin",
        ],
        Some("s3cret-password\n"),
    );
    let list = ffs_ok(d, &["customer", "list"], None);
    assert!(list.contains("bob"), "{list}");
    // A typo in the config is reported, not ignored.
    std::fs::write(d.join("bad.toml"), "[web]\nlisten_typo = 1\n").unwrap();
    let bad = ffs(d, &["--config", "bad.toml", "customer", "list"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("listen_typo"));
}

/// The TOML block of the README's three-host deployment section.
fn readme_host_config() -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a toml block");
    let body = &readme[start + "```toml\n".len()..];
    let end = body.find("```").expect("toml block ends");
    // Indented inside a list item in the README.
    body[..end]
        .lines()
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn config_check_passes_the_defaults_and_the_readme_and_names_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(d, &["config", "init"], None);
    // No key bag yet: said, with the fix.
    let out = ffs(d, &["config", "check"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys.bag"), "{err}");
    ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
    let ok = ffs_ok(d, &["config", "check"], None);
    for part in ["[link]", "[db-agent]", "[stager]", "[web]", "config OK"] {
        assert!(ok.contains(part), "{part} missing from:\n{ok}");
    }

    // The per-host config the README tells operators to write is accepted as written.
    let readme = format!("[link]\nkeys = \"keys.bag\"\n\n{}", readme_host_config());
    std::fs::write(d.join("readme.toml"), readme).unwrap();
    let ok = ffs_ok(d, &["--config", "readme.toml", "config", "check"], None);
    assert!(ok.contains("dials out to 10.0.1.10:7702"), "{ok}");
    assert!(
        ok.contains("waits for the db agent on 10.0.1.10:7702"),
        "{ok}"
    );
    assert!(ok.contains("passive 30000-30099"), "{ok}");

    // Each mistake is named by section and key, and nothing is started.
    let base = std::fs::read_to_string(d.join("ffs.toml")).unwrap();
    for (from, to, says) in [
        (
            "passive_ports = \"30000-30099\"",
            "passive_ports = \"30099-30000\"",
            "passive_ports",
        ),
        (
            "listen = \"127.0.0.1:8443\"",
            "listen = \"8443\"",
            "[web] listen",
        ),
        ("suite = \"aes256-gcm\"", "suite = \"aes\"", "suite"),
        (
            "[stager]",
            "[stager]\nno_such_setting = 1",
            "no_such_setting",
        ),
    ] {
        assert!(base.contains(from), "template lacks {from}");
        std::fs::write(d.join("bad.toml"), base.replacen(from, to, 1)).unwrap();
        let out = ffs(d, &["--config", "bad.toml", "config", "check"], None);
        assert!(!out.status.success(), "{to} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{to}: {err}");
    }
    // A key bag others can read fails the check too.
    std::fs::set_permissions(d.join("keys.bag"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ffs(d, &["config", "check", "--role", "web"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

/// Runs `ffs ARGS` in `dir` on a pseudo-terminal (util-linux `script`), typing `typed`;
/// whether it succeeded.
fn ffs_on_a_terminal(dir: &std::path::Path, args: &[&str], typed: &str) -> bool {
    use std::io::Write as _;
    let cmdline = std::iter::once(ffs_bin())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn util-linux `script`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

/// Whether `login` + `password` is accepted by the agent's own login path.
fn agent_accepts(dir: &std::path::Path, login: &str, password: &str) -> bool {
    use commlink::Message as _;
    let url = format!("sqlite://{}", dir.join("ffs.db").display());
    let pool = std::sync::Arc::new(internal_db_agent::db::Pool::open(&url, 1).unwrap());
    let cfg = internal_db_agent::AgentConfig::default();
    let svc = internal_db_agent::AgentService::new(pool, cfg.hasher().unwrap(), cfg.lockout());
    let req = commlink::msg::agent::Login {
        login: login.into(),
        password: password.into(),
        client_addr: "192.0.2.1".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(svc.handle(req.to_tobj(1)));
    commlink::msg::agent::LoginOk::from_tobj(&reply).is_ok()
}

#[test]
fn customer_add_and_passwd_ask_on_the_terminal_without_argv() {
    if !ffs_testkit::prereq::require_command("pty", "script", "apt-get install bsdutils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(d, &["config", "init"], None);
    let add = [
        "customer",
        "add",
        "tina",
        "--name",
        "Tina",
        "--email",
        "t@example.com",
    ];
    let ok = ffs_on_a_terminal(d, &add, "tty-pass-1234\ntty-pass-1234\n");
    assert!(ok, "customer add with a typed password failed");
    assert!(agent_accepts(d, "tina", "tty-pass-1234"));
    assert!(!agent_accepts(d, "tina", "something-else"));

    // Two different entries: refused, nothing changes.
    let passwd = ["customer", "passwd", "tina"];
    assert!(!ffs_on_a_terminal(
        d,
        &passwd,
        "new-pass-5678\nnew-pass-9999\n"
    ));
    assert!(agent_accepts(d, "tina", "tty-pass-1234"));
    // Matching entries: the new password works, the old one no longer does.
    assert!(ffs_on_a_terminal(
        d,
        &passwd,
        "new-pass-5678\nnew-pass-5678\n"
    ));
    assert!(agent_accepts(d, "tina", "new-pass-5678"));
    assert!(!agent_accepts(d, "tina", "tty-pass-1234"));
}

/// The permission bits of `path`.
fn mode_of(path: &std::path::Path) -> String {
    format!(
        "{:04o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    )
}

#[test]
fn the_customer_database_is_created_0600_and_a_readable_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(d, &["config", "init"], None);
    ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
    // Under the usual umask (022) a plain create would give 0644.
    let add = [
        "customer",
        "add",
        "tina",
        "--name",
        "Tina",
        "--email",
        "t@example.com",
        "--password-stdin",
    ];
    let umasked = std::process::Command::new("sh")
        .current_dir(d)
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(ffs_bin())
        .args(add)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b"pw-0123456789\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        umasked.status.success(),
        "{}",
        String::from_utf8_lossy(&umasked.stderr)
    );
    let db = d.join("ffs.db");
    assert_eq!(mode_of(&db), "0600", "ffs.db");
    // The WAL companions exist while a connection is open; open one and look.
    let url = format!("sqlite://{}", db.display());
    let pool = internal_db_agent::db::Pool::open(&url, 1).unwrap();
    internal_db_agent::admin::with(&pool, |c| {
        internal_db_agent::admin::set_disabled(c, "tina", false)
    })
    .unwrap();
    for companion in ["ffs.db-wal", "ffs.db-shm"] {
        assert_eq!(mode_of(&d.join(companion)), "0600", "{companion}");
    }
    drop(pool);
    ffs_ok(d, &["config", "check", "--role", "db-agent"], None);
    // The role's earlier name still works.
    ffs_ok(d, &["config", "check", "--role", "agent"], None);

    // A database others can read is refused by `config check`, the agent and the CLI,
    // each naming the chmod to run; the same for a readable companion. (The agent is run
    // under `timeout`: one that wrongly starts would otherwise serve forever.)
    for file in ["ffs.db", "ffs.db-wal"] {
        let p = d.join(file);
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let agent = std::process::Command::new("timeout")
            .current_dir(d)
            .args(["60", ffs_bin(), "db-agent"])
            .output()
            .unwrap();
        let cli = ffs(d, &["customer", "list"], None);
        let check = ffs(d, &["config", "check", "--role", "db-agent"], None);
        for (what, out) in [
            ("db-agent", agent),
            ("customer list", cli),
            ("config check", check),
        ] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what} accepted a readable {file}");
            assert!(
                err.contains(&format!("chmod 600 {}", p.display())),
                "{what}: {err}"
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ffs_ok(d, &["customer", "list"], None);
}

#[test]
fn signing_key_generate_then_publish_signs_and_catalog_shows_the_signature_state() {
    ffs_testkit::prereq::require_command("minisign", "minisign", "apt-get install minisign");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ffs_ok(
        d,
        &["keys", "signing", "generate", "--out", "ffs.key"],
        None,
    );
    assert_eq!(mode_of(&d.join("ffs.key")), "0600");
    let public = std::fs::read_to_string(d.join("ffs.pub")).unwrap();
    assert!(public.starts_with("untrusted comment: "), "{public}");
    let key_id = out
        .split("key id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(public.contains(&key_id), "{public}");
    assert!(
        !ffs(
            d,
            &["keys", "signing", "generate", "--out", "ffs.key"],
            None
        )
        .status
        .success(),
        "never overwrites a key"
    );

    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/tool.bin"), b"the tool\n").unwrap();
    std::fs::write(d.join("ffs.toml"), "").unwrap();
    ffs_ok(d, &["publish", "tool", "1.0", "in"], None);
    std::fs::write(d.join("ffs.toml"), "[stager]\nsigning_key = \"ffs.key\"\n").unwrap();
    let published = ffs_ok(d, &["publish", "tool", "2.0", "in"], None);
    assert!(
        published.contains(&format!("signed by key {key_id}")),
        "{published}"
    );
    let cat = ffs_ok(d, &["catalog"], None);
    let line = |v: &str| {
        cat.lines()
            .find(|l| l.starts_with(&format!("tool {v} ")))
            .unwrap_or_else(|| panic!("{cat}"))
            .to_owned()
    };
    assert!(
        line("2.0").ends_with(&format!("signed by key {key_id}")),
        "{cat}"
    );
    assert!(line("1.0").ends_with("unsigned"), "{cat}");
    assert!(!cat.to_lowercase().contains("verified"), "{cat}");

    // The repository's SHA256SUMS of 2.0 verifies with the real minisign and the public key.
    let json: serde_json::Value =
        serde_json::from_str(&ffs_ok(d, &["catalog", "--json"], None)).unwrap();
    let rel = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "2.0")
        .unwrap();
    let obj = |sha: &serde_json::Value| {
        let sha = sha.as_str().unwrap();
        d.join("stager/repository/objects")
            .join(&sha[..2])
            .join(&sha[2..])
    };
    let check = d.join("check");
    std::fs::create_dir_all(&check).unwrap();
    std::fs::copy(
        obj(&rel["signature"]["sums"]["sha256"]),
        check.join("SHA256SUMS"),
    )
    .unwrap();
    std::fs::copy(
        obj(&rel["signature"]["minisig"]["sha256"]),
        check.join("SHA256SUMS.minisig"),
    )
    .unwrap();
    let v = std::process::Command::new("minisign")
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(d.join("ffs.pub"))
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    let sums = std::fs::read_to_string(check.join("SHA256SUMS")).unwrap();
    assert!(sums.ends_with("  tool.bin\n"), "{sums}");
}

#[test]
fn repo_verify_reports_an_altered_file_exits_non_zero_and_quarantine_withdraws_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(
        d,
        &["keys", "signing", "generate", "--out", "ffs.key"],
        None,
    );
    std::fs::write(d.join("ffs.toml"), "[stager]\nsigning_key = \"ffs.key\"\n").unwrap();
    for v in ["1.0", "2.0"] {
        let src = d.join(format!("in-{v}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("tool.bin"), format!("the tool, version {v}\n")).unwrap();
        ffs_ok(d, &["publish", "tool", v, src.to_str().unwrap()], None);
    }
    let ok = ffs_ok(d, &["repo", "verify"], None);
    assert!(ok.contains("nothing altered"), "{ok}");
    assert_eq!(
        ok.lines()
            .filter(|l| l.starts_with("ok ") && l.contains("signature verified"))
            .count(),
        2,
        "{ok}"
    );

    // One changed byte in 2.0's file (same size, so only a re-hash can tell).
    let sha = sha256_file(&d.join("in-2.0/tool.bin"));
    let obj = d
        .join("stager/repository/objects")
        .join(&sha[..2])
        .join(&sha[2..]);
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, b"the tool, version 2.0!").unwrap();
    let bad = ffs(d, &["repo", "verify"], None);
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "exit non-zero: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("ALTERED  tool 2.0")),
        "{out}"
    );
    assert!(out.contains("tool.bin: content hashes to"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("ok       tool 1.0")),
        "{out}"
    );

    let q = ffs(d, &["repo", "verify", "--quarantine"], None);
    let out = String::from_utf8_lossy(&q.stdout);
    assert!(!q.status.success(), "still reports what it found: {out}");
    assert!(out.contains("quarantined 1 releases"), "{out}");
    let cat = ffs_ok(d, &["catalog"], None);
    assert!(
        !cat.contains("tool 2.0"),
        "withdrawn from the catalog: {cat}"
    );
    let all = ffs_ok(d, &["catalog", "--all"], None);
    assert!(
        all.contains("tool 2.0 [yanked]") && all.contains("quarantined"),
        "{all}"
    );
    // Dealt with: the next run passes, listing it as quarantined.
    let again = ffs_ok(d, &["repo", "verify"], None);
    assert!(again.contains("tool 2.0 [quarantined]"), "{again}");
}

#[test]
fn replication_tokens_are_made_once_stored_hashed_and_the_follower_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ffs_ok(d, &["config", "init"], None);
    ffs_ok(d, &["keys", "generate", "--out", "keys.bag"], None);
    let token = ffs_ok(
        d,
        &["replication-token", "create", "--name", "stager-b"],
        None,
    );
    let token = token.trim();
    assert!(
        token.starts_with("ffsrt_") && token.len() == 6 + 64,
        "{token}"
    );
    let store = d.join("stager/state/replication-tokens.json");
    assert_eq!(mode_of(&store), "0600");
    assert!(!std::fs::read_to_string(&store).unwrap().contains(token));
    let list = ffs_ok(d, &["replication-token", "list"], None);
    assert!(list.contains("stager-b") && !list.contains(token), "{list}");
    assert!(
        !d.join("stager/state/publish-tokens.json").exists(),
        "a store of its own"
    );

    // A follower's settings: each mistake named, a good one accepted.
    std::fs::write(d.join("b.token"), token).unwrap();
    std::fs::set_permissions(d.join("b.token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = std::fs::read_to_string(d.join("ffs.toml")).unwrap();
    let pin = "ab".repeat(32);
    let follow = |from: &str, file: &str, pin: &str| {
        base.replacen(
            "replicate_from = \"\"",
            &format!("replicate_from = \"{from}\""),
            1,
        )
        .replacen(
            "replicate_token_file = \"\"",
            &format!("replicate_token_file = \"{file}\""),
            1,
        )
        .replacen(
            "replicate_pin = \"\"",
            &format!("replicate_pin = \"{pin}\""),
            1,
        )
    };
    for (cfg, says) in [
        (
            follow("https://10.0.0.2:8444", "", ""),
            "replicate_token_file",
        ),
        (
            follow("http://10.0.0.2:8444", "b.token", &pin),
            "replicate_from",
        ),
        (
            follow("https://10.0.0.2:8444", "b.token", "zz"),
            "replicate_pin",
        ),
        (
            follow("https://10.0.0.2:8444", "keys.bag", &pin),
            "not a replication token",
        ),
    ] {
        std::fs::write(d.join("follower.toml"), cfg).unwrap();
        let out = ffs(d, &["--config", "follower.toml", "config", "check"], None);
        assert!(!out.status.success(), "accepted: {says}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{says}: {err}");
    }
    std::fs::write(
        d.join("follower.toml"),
        follow("https://10.0.0.2:8444", "b.token", &pin),
    )
    .unwrap();
    ffs_ok(
        d,
        &[
            "--config",
            "follower.toml",
            "config",
            "check",
            "--role",
            "stager",
        ],
        None,
    );

    let out = ffs_ok(d, &["replication-token", "revoke", "stager-b"], None);
    assert!(out.contains("revoked"), "{out}");
    assert!(ffs_ok(d, &["replication-token", "list"], None).contains("REVOKED"));
}
