//! `run_as_user`: started as root, the stager binds first and then drops to the configured
//! user for good. Runs in a child process (this binary re-executed) so the test process
//! keeps its privileges. Needs root: fails otherwise, unless FFS_TEST_SKIP names `root`.

use std::process::Command;

#[test]
#[ignore = "run by drops_root_after_binding in a child process"]
fn drop_child() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = ftp_stager::StagerConfig {
        run_as_user: "nobody".into(),
        ..Default::default()
    };
    ftp_stager::server::drop_privileges(&cfg).unwrap();
    // Still serving on the socket bound as root.
    assert!(l.local_addr().is_ok());
    println!(
        "UID {} EUID {} GID {}",
        nix::unistd::getuid(),
        nix::unistd::geteuid(),
        nix::unistd::getgid()
    );
    // Root cannot be regained.
    assert!(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err());
    assert!(std::fs::read("/etc/shadow").is_err());
}

/// Root, for the privilege drop (`false` only when FFS_TEST_SKIP names `root`).
fn needs_root() -> bool {
    ffs_testkit::prereq::require(
        "root",
        || {
            if nix::unistd::Uid::effective().is_root() {
                Ok(())
            } else {
                Err("the tests are not running as root")
            }
        },
        "run the tests as root (sudo ./test.sh): the stager's privilege drop needs it",
    )
}

#[test]
fn drops_root_after_binding() {
    if !needs_root() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "privileges::drop_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = nobody.uid.as_raw();
    assert!(
        text.contains(&format!("UID {uid} EUID {uid} GID {}", nobody.gid.as_raw())),
        "{text}"
    );
}

#[test]
fn unknown_user_is_a_clear_error() {
    if !needs_root() {
        return;
    }
    let cfg = ftp_stager::StagerConfig {
        run_as_user: "no-such-user-ffs".into(),
        ..Default::default()
    };
    let e = ftp_stager::server::drop_privileges(&cfg).unwrap_err();
    assert!(e.to_string().contains("no such user"), "{e}");
}
