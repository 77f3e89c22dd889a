//! The operator tools as a user runs them: `ffs keys`, `ffs config init`.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use support::*;

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
    for section in ["[link]", "[agent]", "[stager]", "[web]"] {
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
