//! A real squid (HTTP forward proxy) as a child process, for tests of the commlink through a
//! `CONNECT` proxy: its config and logs live in a temp dir; it is killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::port::free_port;
use crate::prereq;

/// How the squid answers `CONNECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `CONNECT` to the link port only, no authentication.
    Open,
    /// `CONNECT` to the link port only, Basic auth as [`USER`] / [`PASS`] (a tiny helper).
    Auth,
    /// Every `CONNECT` denied (403).
    DenyConnect,
    /// Every `CONNECT` denied, plain HTTP requests to the link port relayed (the HTTP
    /// relay carrier's proxy).
    HttpOnly,
}

/// The user name the [`Policy::Auth`] squid accepts.
pub const USER: &str = "linkuser";
/// Its password.
pub const PASS: &str = "s3cret-pw";

/// A squid child on a free loopback port, with its logs in a temp dir; killed on drop.
pub struct Squid {
    child: Child,
    ip: String,
    /// The proxy's port (on 127.0.0.1 unless started with [`Squid::start_on`]).
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, it leaves its shared-memory segments behind.
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            let prefix = format!("{}-", self.service());
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Squid {
    /// Starts squid for a link listening on `link_port`, as `policy` says; `None` when
    /// `FFS_TEST_SKIP` names `squid` (a missing squid fails the test, naming the package).
    pub fn start(link_port: u16, policy: Policy) -> Option<Squid> {
        Squid::start_on("127.0.0.1", link_port, policy)
    }

    /// [`Squid::start`] listening on `ip` (e.g. a veth address a network namespace reaches).
    pub fn start_on(ip: &str, link_port: u16, policy: Policy) -> Option<Squid> {
        if !prereq::require_command("squid", "squid", "apt-get install squid") {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let d = dir.path();
        // squid drops to its own user: it must write its logs here and run the helper.
        chmod(d, 0o777);
        let port = free_port();
        let access = if policy == Policy::HttpOnly {
            "http_access deny CONNECT\nhttp_access allow link_port\nhttp_access deny all\n"
                .to_owned()
        } else if policy == Policy::DenyConnect {
            "http_access deny CONNECT\nhttp_access deny all\n".to_owned()
        } else if policy == Policy::Auth {
            let helper = d.join("auth.sh");
            std::fs::write(
                &helper,
                format!(
                    "#!/bin/sh\nwhile read -r u p; do\n  if [ \"$u\" = {USER} ] && [ \"$p\" = {PASS} ]; \
                     then echo OK; else echo ERR; fi\ndone\n"
                ),
            )
            .expect("write the auth helper");
            chmod(&helper, 0o755);
            format!(
                "auth_param basic program /bin/sh {}\nauth_param basic realm ffs-test\n\
                 acl authed proxy_auth REQUIRED\n\
                 http_access deny CONNECT !link_port\nhttp_access allow CONNECT link_port authed\n\
                 http_access deny all\n",
                helper.display()
            )
        } else {
            "http_access deny CONNECT !link_port\nhttp_access allow CONNECT link_port\n\
             http_access deny all\n"
                .to_owned()
        };
        let conf = format!(
            "http_port {ip}:{port}\n\
             pid_filename {d}/squid.pid\ncache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log squid\ncoredump_dir {d}\n\
             netdb_filename none\nlogfile_rotate 0\nshutdown_lifetime 0 seconds\ncache deny all\n\
             acl link_port port {link_port}\nacl CONNECT method CONNECT\n{access}",
            d = d.display()
        );
        let conf_path = d.join("squid.conf");
        std::fs::write(&conf_path, conf).expect("write squid.conf");
        let child = spawn(&conf_path, &service(port));
        let mut squid = Squid {
            child,
            ip: ip.to_owned(),
            port,
            dir,
        };
        squid.wait_until_listening();
        Some(squid)
    }

    fn service(&self) -> String {
        service(self.port)
    }

    /// Kills squid (every connection through it breaks).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.path().join("squid.pid"));
        self.child = spawn(&self.dir.path().join("squid.conf"), &self.service());
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("squid exited ({status}): {}", self.log("cache.log"));
            }
            if std::net::TcpStream::connect((self.ip.as_str(), self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("squid never listened: {}", self.log("cache.log"));
    }

    /// The text of one of its logs (`access.log`, `cache.log`), empty when absent.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Its URL, with the [`Policy::Auth`] credentials when `with_auth`.
    pub fn url(&self, with_auth: bool) -> String {
        if with_auth {
            format!("http://{USER}:{PASS}@{}:{}", self.ip, self.port)
        } else {
            format!("http://{}:{}", self.ip, self.port)
        }
    }
}

/// Each squid's service name, which names its shared-memory segments: with the default
/// ("squid"), two squids starting at once race to create the same segment and one exits
/// ("shm_open(/squid-cf__metadata.shm): File exists").
fn service(port: u16) -> String {
    format!("ffs{port}")
}

fn spawn(conf_path: &Path, service: &str) -> Child {
    Command::new("squid")
        .arg("-N")
        .args(["-n", service])
        .arg("-f")
        .arg(conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start squid")
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
