//! Passphrase-protected release signing keys (issue 12 item 1, "passphrase optional"):
//! `ffs keys signing generate --passphrase-file` writes minisign's encrypted format (the
//! real `minisign` signs with it given the passphrase), `ffs publish` opens it with
//! `[stager] signing_key_passphrase_file` and the real `minisign -V` verifies the release;
//! a key made by the real `minisign -G` serves ffs the same way; a wrong or missing
//! passphrase is refused with nothing published; on a terminal the passphrase is asked
//! twice (no-echo prompts).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::support::{ffs, ffs_ok};

fn need_minisign() {
    ffs_testkit::prereq::require_command("minisign", "minisign", "apt-get install minisign");
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Whether a minisign secret key file is passphrase-protected (KDF "Sc").
fn protected(key: &Path) -> bool {
    ftp_stager::signing::is_encrypted(key).unwrap()
}

/// Publishes `version` of `tool` from `in/`, and checks its SHA256SUMS with the real
/// minisign and the public key `public`. Returns the publish output.
fn publish_and_verify(d: &Path, version: &str, public: &str) -> String {
    let out = ffs_ok(d, &["publish", "tool", version, "in"], None);
    let json: serde_json::Value =
        serde_json::from_str(&ffs_ok(d, &["catalog", "--json"], None)).unwrap();
    let rel = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .unwrap()
        .clone();
    let obj = |sha: &serde_json::Value| {
        let sha = sha.as_str().unwrap();
        d.join("stager/repository/objects")
            .join(&sha[..2])
            .join(&sha[2..])
    };
    let check = d.join(format!("check-{version}"));
    std::fs::create_dir_all(&check).unwrap();
    for (what, name) in [("sums", "SHA256SUMS"), ("minisig", "SHA256SUMS.minisig")] {
        std::fs::copy(obj(&rel["signature"][what]["sha256"]), check.join(name)).unwrap();
    }
    let v = std::process::Command::new("minisign")
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(d.join(public))
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    out
}

fn not_published(d: &Path, version: &str) -> bool {
    let cat = ffs_ok(d, &["catalog"], None);
    !cat.lines()
        .any(|l| l.starts_with(&format!("tool {version} ")))
}

#[test]
fn a_passphrase_protected_key_signs_what_minisign_verifies_and_a_wrong_or_missing_passphrase_is_refused()
 {
    need_minisign();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_secret(&d.join("pass"), "correct horse battery staple\n");
    let out = ffs_ok(
        d,
        &[
            "keys",
            "signing",
            "generate",
            "--out",
            "ffs.key",
            "--passphrase-file",
            "pass",
        ],
        None,
    );
    assert!(out.contains("protected by its passphrase"), "{out}");
    assert!(protected(&d.join("ffs.key")));
    let key_id = out
        .split("key id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();

    // The real minisign signs with it, given the passphrase: it is minisign's own format.
    std::fs::write(d.join("note.txt"), b"hello\n").unwrap();
    let mut s = std::process::Command::new("minisign")
        .args(["-S", "-s", "ffs.key", "-m", "note.txt"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        s.stdin
            .take()
            .unwrap()
            .write_all(b"correct horse battery staple\n")
            .unwrap();
    }
    let s = s.wait_with_output().unwrap();
    assert!(s.status.success(), "{s:?}");
    let v = std::process::Command::new("minisign")
        .args(["-Vm", "note.txt", "-p", "ffs.pub"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");

    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/tool.bin"), b"the tool\n").unwrap();
    // No passphrase configured and no terminal: refused, saying what to set.
    std::fs::write(d.join("ffs.toml"), "[stager]\nsigning_key = \"ffs.key\"\n").unwrap();
    let o = ffs(d, &["publish", "tool", "1.0", "in"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("signing_key_passphrase_file"), "{err}");
    assert!(not_published(d, "1.0"));

    // A wrong passphrase: refused as such.
    write_secret(&d.join("wrong"), "Tr0ub4dor&3\n");
    std::fs::write(
        d.join("ffs.toml"),
        "[stager]\nsigning_key = \"ffs.key\"\nsigning_key_passphrase_file = \"wrong\"\n",
    )
    .unwrap();
    let o = ffs(d, &["publish", "tool", "1.0", "in"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(not_published(d, "1.0"));

    // A passphrase file others can read is refused like every secret file.
    std::fs::set_permissions(d.join("wrong"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ffs(d, &["publish", "tool", "1.0", "in"], None);
    assert!(!o.status.success());

    // The right one: signed, and the real minisign verifies the release.
    std::fs::write(
        d.join("ffs.toml"),
        "[stager]\nsigning_key = \"ffs.key\"\nsigning_key_passphrase_file = \"pass\"\n",
    )
    .unwrap();
    let out = publish_and_verify(d, "1.0", "ffs.pub");
    assert!(out.contains(&format!("signed by key {key_id}")), "{out}");
    let verified = ffs_ok(d, &["repo", "verify"], None);
    assert!(verified.contains("nothing altered"), "{verified}");

    // `ffs config init` documents the setting.
    ffs_ok(d, &["config", "init", "--out", "fresh.toml"], None);
    let fresh = std::fs::read_to_string(d.join("fresh.toml")).unwrap();
    assert!(
        fresh.contains("signing_key_passphrase_file = \"\""),
        "{fresh}"
    );
}

#[test]
fn a_key_made_by_minisign_g_signs_releases_with_its_passphrase() {
    need_minisign();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // minisign reads the password twice from standard input when it is not a terminal.
    let mut g = std::process::Command::new("minisign")
        .args(["-G", "-p", "mg.pub", "-s", "mg.key"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        g.stdin
            .take()
            .unwrap()
            .write_all(b"s3cret pass\ns3cret pass\n")
            .unwrap();
    }
    let g = g.wait_with_output().unwrap();
    assert!(g.status.success(), "{g:?}");
    std::fs::set_permissions(d.join("mg.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(protected(&d.join("mg.key")));
    write_secret(&d.join("pass"), "s3cret pass\n");
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/tool.bin"), b"built by CI\n").unwrap();
    std::fs::write(
        d.join("ffs.toml"),
        "[stager]\nsigning_key = \"mg.key\"\nsigning_key_passphrase_file = \"pass\"\n",
    )
    .unwrap();
    let out = publish_and_verify(d, "1.0", "mg.pub");
    // The key id ffs reports is the one minisign put in the public key's comment (which
    // minisign writes without leading zeros, so compare them as numbers).
    let public = std::fs::read_to_string(d.join("mg.pub")).unwrap();
    let id = out
        .split("signed by key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let theirs = public
        .split("minisign public key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    assert_eq!(
        u64::from_str_radix(id, 16).ok(),
        u64::from_str_radix(theirs, 16).ok(),
        "{public} / {out}"
    );
    assert_eq!(
        id.len(),
        16,
        "ffs writes the key id as 16 hex digits: {out}"
    );
}

#[test]
fn on_a_terminal_the_new_keys_passphrase_is_asked_twice() {
    need_minisign();
    if !ffs_testkit::prereq::require_command("pty", "script", "apt-get install bsdutils") {
        return; // only when FFS_TEST_SKIP names "pty"
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `script` gives ffs a terminal; what we write to its input is typed there, each
    // answer once its prompt is shown. (Echo is turned off by rpassword just after the
    // prompt is printed, so whether an answer typed at once is echoed is a race: not
    // asserted here.)
    let run = |answers: &[(&str, &str)], out: &str| -> (bool, String) {
        use std::io::{Read as _, Write as _};
        let mut c = std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!(
                "{} keys signing generate --out {out}",
                crate::support::ffs_bin()
            ))
            .arg("/dev/null")
            .current_dir(d)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = c.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut shown = String::new();
        let mut input = c.stdin.take().unwrap();
        for (prompt, answer) in answers {
            while !shown.contains(prompt) {
                let piece = rx
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .unwrap_or_else(|_| panic!("no prompt {prompt:?}: {shown}"));
                shown.push_str(&String::from_utf8_lossy(&piece));
            }
            shown = shown.replacen(prompt, "", 1);
            input.write_all(format!("{answer}\n").as_bytes()).unwrap();
            input.flush().unwrap();
        }
        let ok = c.wait().unwrap().success();
        drop(input);
        reader.join().unwrap();
        while let Ok(piece) = rx.try_recv() {
            shown.push_str(&String::from_utf8_lossy(&piece));
        }
        (ok, shown)
    };
    let first = "Passphrase for the new signing key";
    let (ok, shown) = run(
        &[(first, "pass phrase"), ("Repeat it", "pass phrase")],
        "t.key",
    );
    assert!(ok, "{shown}");
    assert!(shown.contains("protected by its passphrase"), "{shown}");
    assert!(protected(&d.join("t.key")));
    let (ok, shown) = run(&[(first, "one"), ("Repeat it", "other")], "u.key");
    assert!(!ok);
    assert!(shown.contains("do not match"), "{shown}");
    assert!(!d.join("u.key").exists());
}
