//! Crash safety: a publish killed at any point never leaves a partial file or release
//! visible, and the next publish succeeds.
//!
//! The publish runs in a child process (this test binary re-executed to run the ignored
//! `crash_child` test). Two ways of killing it: (1) deterministically at its N-th durable
//! step, N = 1, 2, … until the publish completes (the child SIGKILLs itself through
//! `FFS_STAGER_TEST_KILL_AT_STEP`); (2) SIGKILL from outside after random delays.

use std::fs;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ftp_stager::Repository;
use ftp_stager::publish::KILL_AT_STEP_ENV;
use sha2::{Digest as _, Sha256};

/// The child: publish tool 1.0 from $FFS_CRASH_SRC into $FFS_CRASH_REPO.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child() {
    let repo = PathBuf::from(std::env::var("FFS_CRASH_REPO").unwrap());
    let src = PathBuf::from(std::env::var("FFS_CRASH_SRC").unwrap());
    let repo = Repository::open(&repo).unwrap();
    ftp_stager::publish(
        &repo,
        "tool",
        "1.0",
        &[src],
        "crash test",
        &commlink::progress::Silent,
    )
    .unwrap();
    println!("STEPS {}", ftp_stager::publish::steps_taken());
}

fn child(repo: &Path, src: &Path, kill_at: Option<u64>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "crash::crash_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FFS_CRASH_REPO", repo)
    .env("FFS_CRASH_SRC", src)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    match kill_at {
        Some(n) => c.env(KILL_AT_STEP_ENV, n.to_string()),
        None => c.env_remove(KILL_AT_STEP_ENV),
    };
    c
}

/// Source tree: four files (two multi-chunk), one of them already published in 0.9
/// (the dedup path), in nested directories.
fn source(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(
        src.join("a/b/big.bin"),
        crate::common::pattern(2 * 1024 * 1024 + 123, 7),
    )
    .unwrap();
    fs::write(
        src.join("mid.bin"),
        crate::common::pattern(1024 * 1024 + 5, 8),
    )
    .unwrap();
    fs::write(src.join("shared.txt"), b"already in 0.9\n").unwrap();
    fs::write(src.join("a/small.txt"), b"small\n").unwrap();
    src
}

fn fresh_repo(root: &Path, n: usize) -> Repository {
    let path = root.join(format!("repo-{n}"));
    let repo = Repository::open(&path).unwrap();
    let old = root.join("old");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("shared.txt"), b"already in 0.9\n").unwrap();
    ftp_stager::publish(
        &repo,
        "tool",
        "0.9",
        &[old],
        "",
        &commlink::progress::Silent,
    )
    .unwrap();
    repo
}

/// Every invariant a crashed publish must keep.
fn check_consistent(repo: &Repository, what: &str, files: usize) -> bool {
    // Every object's bytes hash to its name and it is read-only: no partial object.
    for (sha, path) in repo.objects().unwrap() {
        let bytes = fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha,
            "{what}: partial object {path:?}"
        );
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444,
            "{what}: writable object"
        );
    }
    // Every visible release is complete: all its objects exist.
    let cat = repo.catalog(true).unwrap();
    for m in &cat {
        for f in &m.files {
            let p = repo.object_path(&f.sha256).unwrap();
            assert_eq!(
                fs::metadata(&p).map(|m| m.len()).ok(),
                Some(f.size),
                "{what}: release {} names a missing object",
                m.version
            );
        }
    }
    assert!(
        cat.iter().any(|m| m.version == "0.9"),
        "{what}: old release lost"
    );
    // Nothing outside the layout.
    for e in fs::read_dir(repo.root()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ["objects", "releases", "tmp", "twins", ".lock"].contains(&n.as_str()),
            "{what}: stray {n}"
        );
    }
    let visible = cat.iter().any(|m| m.version == "1.0");
    if visible {
        assert_eq!(
            cat.iter().find(|m| m.version == "1.0").unwrap().files.len(),
            files,
            "{what}: release visible with files missing"
        );
    }
    visible
}

fn finish_and_verify(repo: &Repository, src: &Path, visible: bool, what: &str) {
    if !visible {
        ftp_stager::publish(
            repo,
            "tool",
            "1.0",
            &[src.to_path_buf()],
            "",
            &commlink::progress::Silent,
        )
        .unwrap_or_else(|e| panic!("{what}: next publish failed: {e}"));
    }
    check_consistent(repo, what, 4);
    assert_eq!(
        fs::read_dir(repo.tmp_dir()).unwrap().count(),
        0,
        "{what}: tmp not cleaned"
    );
    let m = repo.manifest("tool", "1.0").unwrap();
    let big = m.files.iter().find(|f| f.name == "a/b/big.bin").unwrap();
    assert_eq!(
        fs::read(repo.object_path(&big.sha256).unwrap()).unwrap(),
        crate::common::pattern(2 * 1024 * 1024 + 123, 7)
    );
}

#[test]
fn publish_killed_at_every_step_leaves_nothing_partial() {
    let root = tempfile::tempdir().unwrap();
    let src = source(root.path());
    let mut killed = 0;
    for n in 1..200u64 {
        let repo = fresh_repo(root.path(), n as usize);
        let out = child(repo.root(), &src, Some(n)).output().unwrap();
        let what = format!("kill at step {n}");
        if out.status.success() {
            // Past the last step: the publish completed.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("STEPS"), "{text}");
            assert!(
                check_consistent(&repo, &what, 4),
                "{what}: completed but not visible"
            );
            break;
        }
        assert_eq!(out.status.signal(), Some(9), "{what}: {:?}", out.status);
        killed += 1;
        let visible = check_consistent(&repo, &what, 4);
        finish_and_verify(&repo, &src, visible, &what);
        fs::remove_dir_all(repo.root()).unwrap();
    }
    assert!(killed >= 20, "only {killed} kill points");
    eprintln!("killed at {killed} distinct steps");
}

#[test]
fn publish_sigkilled_at_random_times_leaves_nothing_partial() {
    let root = tempfile::tempdir().unwrap();
    let src = source(root.path());
    // A bigger file so the publish takes long enough to be hit mid-way.
    fs::write(
        src.join("huge.bin"),
        crate::common::pattern(6 * 1024 * 1024, 9),
    )
    .unwrap();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut hit_midway = 0;
    for n in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_millis(5 + seed % 700);
        let repo = fresh_repo(root.path(), 1000 + n);
        let mut c = child(repo.root(), &src, None).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = c.kill();
        let status = c.wait().unwrap();
        let what = format!("SIGKILL after {delay:?}");
        let visible = check_consistent(&repo, &what, 5);
        if status.signal() == Some(9) && !visible {
            hit_midway += 1;
        }
        if !visible {
            ftp_stager::publish(
                &repo,
                "tool",
                "1.0",
                std::slice::from_ref(&src),
                "",
                &commlink::progress::Silent,
            )
            .unwrap();
        }
        let m = repo.manifest("tool", "1.0").unwrap();
        assert_eq!(m.files.len(), 5, "{what}");
        fs::remove_dir_all(repo.root()).unwrap();
    }
    eprintln!("{hit_midway}/20 kills landed before the release became visible");
}
