//! The harness itself: a missing prerequisite fails naming the install hint, a present one
//! is recorded as exercised, and only FFS_TEST_SKIP turns a missing one into a recorded
//! skip. Each case runs `prereq-probe` in a child process with its own PATH and variables.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    out: Output,
    dir: tempfile::TempDir,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn marker(&self, kind: &str, component: &str) -> bool {
        self.dir.path().join(kind).join(component).is_file()
    }
}

/// Runs the probe with PATH = `path` and the given extra variables; the markers go to a
/// fresh directory.
fn probe(args: &[&str], path: &Path, vars: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prereq-probe"));
    cmd.args(args)
        .env_clear()
        .env("PATH", path)
        .env("FFS_TEST_COMPONENTS_DIR", dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run { out, dir }
}

fn bin_dir_with(programs: &[&str], mode: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let d = tempfile::tempdir().unwrap();
    for p in programs {
        let f = d.path().join(p);
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    d
}

const HINT: &str = "apt-get install nftables";

#[test]
fn missing_program_fails_naming_the_install_hint() {
    let empty = bin_dir_with(&[], 0o755);
    let r = probe(&["command", "netns", "nft", HINT], empty.path(), &[]);
    assert_eq!(r.out.status.code(), Some(101), "stderr: {}", r.stderr());
    let err = r.stderr();
    assert!(err.contains("missing test prerequisite `netns`"), "{err}");
    assert!(err.contains("`nft` is not on PATH"), "{err}");
    assert!(
        err.contains("Install it: apt-get install nftables"),
        "{err}"
    );
    assert!(err.contains("./test.sh"), "{err}");
    assert!(err.contains("FFS_TEST_SKIP=netns"), "{err}");
    assert!(!r.marker("exercised", "netns") && !r.marker("skipped", "netns"));
}

#[test]
fn a_non_executable_file_does_not_count() {
    let bins = bin_dir_with(&["nft"], 0o644);
    let r = probe(&["command", "netns", "nft", HINT], bins.path(), &[]);
    assert_eq!(r.out.status.code(), Some(101), "stderr: {}", r.stderr());
}

#[test]
fn present_program_is_recorded_as_exercised() {
    let bins = bin_dir_with(&["nft"], 0o755);
    let r = probe(&["command", "netns", "nft", HINT], bins.path(), &[]);
    assert!(r.out.status.success(), "stderr: {}", r.stderr());
    assert_eq!(r.stdout().trim(), "present");
    assert!(r.marker("exercised", "netns"));
    assert!(!r.marker("skipped", "netns"));
}

#[test]
fn ffs_test_skip_turns_a_missing_prerequisite_into_a_recorded_skip() {
    let empty = bin_dir_with(&[], 0o755);
    let r = probe(
        &["command", "netns", "nft", HINT],
        empty.path(),
        &[("FFS_TEST_SKIP", "browser, netns,postgres")],
    );
    assert!(r.out.status.success(), "stderr: {}", r.stderr());
    assert_eq!(r.stdout().trim(), "skipped");
    assert!(r.stderr().contains("SKIPPED `netns`"), "{}", r.stderr());
    assert!(r.marker("skipped", "netns"));
    assert!(!r.marker("exercised", "netns"));
}

#[test]
fn ffs_test_skip_naming_another_component_does_not_excuse_this_one() {
    let empty = bin_dir_with(&[], 0o755);
    let r = probe(
        &["command", "netns", "nft", HINT],
        empty.path(),
        &[("FFS_TEST_SKIP", "browser,netns-extra")],
    );
    assert_eq!(r.out.status.code(), Some(101), "stderr: {}", r.stderr());
    assert!(r.stderr().contains(HINT));
}

#[test]
fn unset_database_url_fails_with_the_hint_unless_skipped() {
    let empty = bin_dir_with(&[], 0o755);
    let hint = "apt-get install postgresql and set FFS_TEST_POSTGRES_URL";
    let args = ["env", "postgres", "FFS_TEST_POSTGRES_URL", hint];

    let r = probe(&args, empty.path(), &[]);
    assert_eq!(r.out.status.code(), Some(101), "stderr: {}", r.stderr());
    assert!(
        r.stderr().contains("FFS_TEST_POSTGRES_URL is not set"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains(hint), "{}", r.stderr());

    let r = probe(
        &args,
        empty.path(),
        &[("FFS_TEST_POSTGRES_URL", "postgres://x")],
    );
    assert!(r.out.status.success(), "stderr: {}", r.stderr());
    assert!(r.marker("exercised", "postgres"));

    let r = probe(&args, empty.path(), &[("FFS_TEST_SKIP", "postgres")]);
    assert!(r.out.status.success(), "stderr: {}", r.stderr());
    assert!(r.marker("skipped", "postgres"));
}
