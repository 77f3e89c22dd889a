//! End-to-end behind a proxy-only firewall (issue 10): the db agent runs in its own network
//! namespace whose only way out is a real squid (nftables drops every other outbound packet
//! and every inbound connection), squid allows only `CONNECT` to the web's HTTPS port, and
//! the agent reaches the web over the https carrier (`dial = "https://…/ffs-link"`, the
//! self-signed certificate pinned). A customer signs in, prepares and downloads through the
//! full stack with curl; then squid's logs are searched for the customer's login, password,
//! e-mail and file names, and hold none of them.

use std::time::Duration;

use ffs_testkit::squid::{Policy, Squid};

use crate::e2e::{Netns, PASSWORD, locators, login, prepare, ready, site, start};
use crate::support::*;

const PREFIX: &str = "/ffs-link";

/// Only loopback and the proxy's port on the host's veth address go out; nothing comes in
/// but replies.
fn proxy_only(ns: &Netns, squid_port: u16) -> Result<(), String> {
    let rules = format!(
        "table inet ffsproxy {{\n chain input {{\n  type filter hook input priority 0; policy drop;\n  \
         iif lo accept\n  ct state established,related accept\n }}\n chain output {{\n  \
         type filter hook output priority 0; policy drop;\n  oif lo accept\n  \
         ip daddr {} tcp dport {squid_port} accept\n  ct state established,related accept\n }}\n}}\n",
        ns.host_ip
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A self-signed certificate for the web (as an operator would install one), returning its
/// SHA-256 fingerprint `AB:CD:…`.
fn web_certificate(dir: &std::path::Path) -> String {
    let ok = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "web-key.pem",
            "-out",
            "web-cert.pem",
        ])
        .output()
        .expect("openssl runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.join("web-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-in",
            "web-cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, f)| f.to_owned())
        .expect("a fingerprint")
}

#[test]
fn the_agent_behind_a_connect_only_proxy_serves_customers_over_the_https_carrier() {
    if !ffs_testkit::prereq::require_command("openssl", "openssl", "apt-get install openssl") {
        return;
    }
    let Some(ns) = ffs_testkit::prereq::obtain(
        "netns",
        || {
            Netns::create("https")
                .map_err(|why| format!("cannot create a network namespace: {why}"))
        },
        "apt-get install iproute2 nftables, and run the tests as root (or with CAP_NET_ADMIN)",
    ) else {
        return;
    };
    let s = site("dial-out", &ns.ns_ip, &ns.host_ip);
    let Some(squid) = Squid::start_on(&ns.host_ip, s.web, Policy::Open) else {
        return;
    };
    proxy_only(&ns, squid.port).expect("the proxy-only nftables rules");
    let pin = web_certificate(s.path());
    let cfg_path = s.path().join("ffs.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("dial = ") {
                format!(
                    "dial = \"https://127.0.0.1:{}{PREFIX}\"\nproxy = \"{}\"\nhttps_pin = \"sha256:{pin}\"",
                    s.web,
                    squid.url(false)
                )
            } else if l.starts_with("db_agent_listen = ") {
                format!("{l}\nlink_path = \"{PREFIX}\"\ntls_generate = false")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg_path, cfg).expect("config");

    let mut r = start(&s, &["ip", "netns", "exec", &ns.name]);
    assert!(
        eventually(Duration::from_secs(30), || ready(&s)),
        "the agent never came up through the proxy\nagent:\n{}\nweb:\n{}\nsquid:\n{}",
        r.agent.log_text(),
        r.web.log_text(),
        squid.log("cache.log")
    );
    assert!(
        r.agent.log_text().contains("https carrier"),
        "{}",
        r.agent.log_text()
    );
    let c = login(&s);
    let page = prepare(&s, &c);
    assert!(page.contains("widget.bin"), "{page}");
    let (base, _, _) = locators(&page);
    let dest = s.path().join("downloaded.bin");
    assert!(curl_download(&format!("{base}widget.bin"), &dest, false));
    assert_eq!(
        std::fs::metadata(&dest).expect("downloaded").len(),
        3 * 1024 * 1024
    );

    // squid writes a CONNECT's line when its tunnel closes: stop the agent.
    r.agent.terminate(Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(30), || squid
            .log("access.log")
            .contains("CONNECT")),
        "no CONNECT in squid's log: {}",
        squid.log("access.log")
    );
    let logs = format!("{}\n{}", squid.log("access.log"), squid.log("cache.log"));
    assert!(
        logs.contains(&format!("CONNECT 127.0.0.1:{}", s.web)),
        "{logs}"
    );
    for secret in [
        "alice",
        PASSWORD,
        "alice@example.com",
        "Alice Example",
        "widget.bin",
        "README.txt",
        "notes.md",
        PREFIX,
    ] {
        assert!(!logs.contains(secret), "{secret:?} in squid's logs: {logs}");
    }
}
