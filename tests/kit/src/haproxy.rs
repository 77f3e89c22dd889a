//! The shipped haproxy configuration (`deploy/haproxy.cfg`) made runnable on loopback: only
//! addresses and file paths replaced, each replacement checked to apply, so a test runs
//! the file an operator installs, not a copy of it.

use std::path::{Path, PathBuf};

/// `deploy/haproxy.cfg` of this workspace.
pub fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg")
}

/// The shipped config listening on `127.0.0.1:port` with the certificate-and-key file
/// `pem`, trusting `ca` for the webs' certificates, and one `server` line per port in
/// `webs` (127.0.0.1). Panics (failing the test) when the shipped file no longer has a
/// line this replaces.
pub fn config(pem: &Path, ca: &Path, port: u16, webs: &[u16]) -> String {
    let path = shipped_path();
    let mut cfg = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let servers: String = webs
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server web{} 127.0.0.1:{p}\n", i + 1))
        .collect();
    for (from, to) in [
        ("    log /dev/log local0\n", String::new()),
        (
            "bind :443 ssl crt /etc/haproxy/ffs.pem",
            format!("bind 127.0.0.1:{port} ssl crt {}", pem.display()),
        ),
        ("    bind :80\n", String::new()),
        (
            "ca-file /etc/ffs/web-ca.pem",
            format!("ca-file {}", ca.display()),
        ),
        ("    server web1 10.0.1.10:8443\n", servers),
        ("    server web2 10.0.1.11:8443", String::new()),
    ] {
        assert!(
            cfg.contains(from),
            "deploy/haproxy.cfg no longer has {from:?}"
        );
        cfg = cfg.replace(from, &to);
    }
    cfg
}

/// Writes what haproxy's `crt` takes: the certificate followed by its key, to `dest`.
pub fn write_pem(cert: &Path, key: &Path, dest: &Path) -> std::io::Result<()> {
    let mut both = std::fs::read(cert)?;
    both.extend(std::fs::read(key)?);
    std::fs::write(dest, both)
}
