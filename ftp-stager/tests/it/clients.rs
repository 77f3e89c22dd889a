//! Real clients (python3 ftplib, curl) download staged files over FTP, FTPS and HTTPS; the
//! SHA-256 of what arrives matches the catalog, and resuming from the middle works.

use crate::common::*;

fn catalog_sha(r: &Running, name: &str) -> (String, u64) {
    let cat = r.stager.catalog(false).unwrap();
    let f = cat.releases[0]
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap()
        .clone();
    (f.sha256, f.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftplib_downloads_match_catalog_and_resume() {
    let r = start().await;
    let a = r.stage(&[], None);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"
print(sorted(ftp.nlst()))
for n in ["big.bin", "docs/readme.txt", "with space.txt"]:
    print(n, hashlib.sha256(get(n)).hexdigest())
print("size", ftp.size("big.bin"))
print("mdtm", ftp.sendcmd("MDTM big.bin"))
whole = get("big.bin")
half = len(whole) // 2
tail = get("big.bin", rest=half)
print("resume", len(tail), hashlib.sha256(whole[:half] + tail).hexdigest())
print("mlsd", sorted(n for n, f in ftp.mlsd()))
"#,
    )
    .await
    .unwrap();
    for name in ["big.bin", "docs/readme.txt", "with space.txt"] {
        let (sha, _) = catalog_sha(&r, name);
        assert!(out.contains(&format!("{name} {sha}")), "{name}: {out}");
    }
    let (big_sha, big_size) = catalog_sha(&r, "big.bin");
    assert!(out.contains(&format!("size {big_size}")), "{out}");
    assert!(out.contains("mdtm 213 "), "{out}");
    assert!(
        out.contains(&format!("resume {} {big_sha}", big_size - big_size / 2)),
        "{out}"
    );
    assert!(out.contains("'big.bin'") && out.contains("'docs'"), "{out}");
    // Completed transfers were recorded as deliveries.
    let recorded = |d: &commlink::msg::stager::Deliveries| {
        d.deliveries
            .iter()
            .filter(|d| d.file == "big.bin" && d.area_id == a.area_id)
            .count()
    };
    ffs_testkit::wait::until(std::time::Duration::from_secs(10), || {
        recorded(&r.stager.deliveries(&Default::default())) >= 3
    })
    .await;
    let d = r.stager.deliveries(&Default::default());
    let big: Vec<_> = d
        .deliveries
        .iter()
        .filter(|d| d.file == "big.bin" && d.area_id == a.area_id)
        .collect();
    assert_eq!(big.len(), 3, "{:?}", d.deliveries);
    assert!(big.iter().all(|d| d.protocol == "ftp"));
    assert!(big.iter().any(|d| d.bytes == big_size - big_size / 2));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftps_explicit_tls_download_matches() {
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        true,
        r#"print("big", hashlib.sha256(get("big.bin")).hexdigest())"#,
    )
    .await
    .unwrap();
    let (sha, _) = catalog_sha(&r, "big.bin");
    assert!(out.contains(&format!("big {sha}")), "{out}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_https_download_matches_catalog_and_resumes() {
    let r = start().await;
    let a = r.stage(&[], None);
    for name in ["big.bin", "docs/readme.txt", "with%20space.txt"] {
        let (code, body) = curl(&[&format!("{}{name}", a.https_base)]).await;
        assert_eq!(code, 200, "{name}");
        let (sha, size) = catalog_sha(&r, &name.replace("%20", " "));
        assert_eq!(body.len() as u64, size);
        assert_eq!(sha_hex(&body), sha, "{name}");
    }
    let (sha, size) = catalog_sha(&r, "big.bin");
    let url = format!("{}big.bin", a.https_base);

    // curl -C -: a partial file on disk is completed from where it stopped.
    let whole = pattern(size as usize, 1);
    let d = tempfile::tempdir().unwrap();
    let part = d.path().join("big.bin");
    std::fs::write(&part, &whole[..size as usize / 3]).unwrap();
    let st = std::process::Command::new("curl")
        .args(["-k", "-s", "-S", "-C", "-", "-o"])
        .arg(&part)
        .arg(&url)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(sha_hex(&std::fs::read(&part).unwrap()), sha);

    // An explicit range: 206 with exactly those bytes.
    let (code, body) = curl(&["-r", "1000-1999", &url]).await;
    assert_eq!(code, 206);
    assert_eq!(body, &whole[1000..2000]);

    // Headers: length, type, ETag = the checksum.
    let out = std::process::Command::new("curl")
        .args(["-k", "-s", "-I", &url])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    assert!(head.contains(&format!("etag: \"{sha}\"")), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert!(
        head.contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");

    // The listing page names every file with its checksum.
    let (code, body) = curl(&[&a.https_base]).await;
    assert_eq!(code, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains("docs/readme.txt") && page.contains(&sha),
        "{page}"
    );
    assert!(page.contains("with%20space.txt"), "{page}");

    // A directory inside the area has its own listing, linked relative to itself; a
    // directory that is not there is 404, a traversal is refused.
    let (code, body) = curl(&[&format!("{}docs/", a.https_base)]).await;
    assert_eq!(code, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("href=\"readme.txt\""), "{page}");
    assert!(!page.contains("big.bin"), "{page}");
    let (code, _) = curl(&[&format!("{}nodir/", a.https_base)]).await;
    assert_eq!(code, 404);
    let (code, _) = curl(&[&format!("{}docs/%2e%2e/", a.https_base)]).await;
    assert_eq!(code, 400);

    ffs_testkit::wait::until(std::time::Duration::from_secs(10), || {
        r.stager
            .deliveries(&Default::default())
            .deliveries
            .iter()
            .any(|d| d.file == "big.bin" && d.protocol == "https" && d.bytes == size)
    })
    .await;
    let dl = r.stager.deliveries(&Default::default());
    assert!(
        dl.deliveries
            .iter()
            .any(|d| d.file == "big.bin" && d.protocol == "https" && d.bytes == size),
        "{:?}",
        dl.deliveries
    );
    assert!(dl.deliveries.iter().any(|d| d.bytes == 1000));
    r.stop().await;
}

/// A client that answers the FTPS data connection with garbage instead of a TLS handshake
/// (libunftp 0.24 unwraps that handshake inside the session's data task) disturbs only its
/// own session: the server keeps serving everyone else, over FTPS and plain FTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_an_ftps_data_connection_does_not_take_the_server_down() {
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let bad = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        true,
        r#"
import socket
resp = ftp.sendcmd("PASV")
nums = resp[resp.index("(") + 1:resp.index(")")].split(",")
s = socket.create_connection((host, int(nums[4]) * 256 + int(nums[5])), timeout=10)
ftp.putcmd("RETR big.bin")
s.sendall(b"this is not a TLS client hello\r\n" * 64)
s.close()
print("sent garbage", flush=True)
import os
os._exit(0)  # skip the helper's QUIT: this session is broken on purpose
"#,
    )
    .await
    .unwrap();
    assert!(bad.contains("sent garbage"), "{bad}");
    let (sha, _) = catalog_sha(&r, "big.bin");
    for tls in [true, false] {
        let out = ftplib(
            r.ftp,
            &a.ftp_user,
            &a.ftp_password,
            tls,
            r#"print("big", hashlib.sha256(get("big.bin")).hexdigest())"#,
        )
        .await
        .unwrap();
        assert!(out.contains(&format!("big {sha}")), "tls={tls}: {out}");
    }
    r.stop().await;
}

/// LIST shows a link count of 1, however many areas (of any customer) hold the same file as
/// a hard link: the real count would let a customer watch others' staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_shows_a_link_count_of_one() {
    let r = start().await;
    let a = r.stage(&[], None);
    let _b = r.stage(&[], None);
    let _c = r.stage(&[], None);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"
lines = []
ftp.retrlines("LIST", lines.append)
for l in lines:
    print("line", l)
"#,
    )
    .await
    .unwrap();
    let big = out
        .lines()
        .find(|l| l.starts_with("line ") && l.ends_with(" big.bin"))
        .unwrap_or_else(|| panic!("no big.bin in LIST: {out}"));
    let nlink = big.split_whitespace().nth(2);
    assert_eq!(nlink, Some("1"), "{big}");
    r.stop().await;
}

// ---------------------------------------------------------------------------------------
// FTP protocol behaviour real clients rely on (issue 16): ABOR, Telnet IP/Synch, REST, the
// banner, FTPS data connections and passive ports. The fixes live in the vendored libunftp
// (vendor/libunftp/PATCHES.md).

use std::process::Command;

use commlink::msg::stager::{StageRequest, StagedArea};

/// Size of `huge.bin` (release tool 2.0): larger than what the loopback socket buffers
/// hold, so a client that stops reading really leaves the server blocked mid-transfer.
const HUGE: usize = 48 * 1024 * 1024;

/// The usual stager, plus release tool 2.0 holding `huge.bin`.
async fn start_with_huge() -> Running {
    let (dir, cfg) = make_repo();
    let src = dir.path().join("src2");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("huge.bin"), pattern(HUGE, 7)).unwrap();
    let repo = ftp_stager::Repository::open(&cfg.repository).unwrap();
    ftp_stager::publish(
        &repo,
        "tool",
        "2.0",
        &[src],
        "huge",
        &commlink::progress::Silent,
    )
    .unwrap();
    start_with(dir, cfg, None).await
}

fn stage_huge(r: &Running) -> StagedArea {
    r.stager
        .stage(&StageRequest {
            product: "tool".into(),
            version: "2.0".into(),
            files: vec![],
            label: "test".into(),
            ttl_secs: None,
        })
        .unwrap()
}

/// Python prelude for raw control-connection tests: `Ctl` speaks FTP line by line, so the
/// test sees every reply in order (ftplib would hide a reply that arrives out of step). A
/// reply that never comes ends the script with a socket timeout, failing the test.
const RAW_PRELUDE: &str = r#"
import socket, sys, ssl
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Ctl:
    def __init__(self):
        self.s = socket.create_connection((host, port), timeout=20)
        self.f = self.s.makefile("rb")
        self.reply()
    def send(self, raw, flags=0):
        self.s.sendall(raw, flags)
    def reply(self):
        line = self.f.readline().decode("latin-1")
        if not line:
            raise EOFError("control connection closed by the server")
        code = line[:3]
        if line[3:4] == "-":
            while True:
                more = self.f.readline().decode("latin-1")
                if not more:
                    raise EOFError("control connection closed inside a multi-line reply")
                line += more
                if more[:3] == code and more[3:4] == " ":
                    break
        return line
    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()
    def login(self):
        assert self.cmd("USER " + user)[:3] == "331"
        assert self.cmd("PASS " + pw)[:3] == "230"
        assert self.cmd("TYPE I")[:3] == "200"
    def pasv(self, rcvbuf=None):
        r = self.cmd("PASV")
        assert r[:3] == "227", r
        nums = r[r.index("(") + 1:r.index(")")].split(",")
        d = socket.socket()
        if rcvbuf:
            d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        d.settimeout(20)
        d.connect((host, int(nums[4]) * 256 + int(nums[5])))
        return d
"#;

/// Runs `python3 -c prelude+body host port user password`: stdout, or stderr on failure.
async fn python(addr: std::net::SocketAddr, a: &StagedArea, body: &str) -> Result<String, String> {
    let script = format!("{RAW_PRELUDE}\n{body}");
    let args = [
        addr.ip().to_string(),
        addr.port().to_string(),
        a.ftp_user.clone(),
        a.ftp_password.clone(),
    ];
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .args(&args)
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await
    .unwrap()
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// ABOR from a client that stopped reading the data connection mid-transfer: the transfer
/// is cut at once and the replies come in RFC 959 order — 426 for the transfer, then 226
/// for the ABOR — so the next command's reply is in step (NOOP → 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abor_while_not_reading_replies_426_then_226_in_step() {
    let r = start_with_huge().await;
    let a = stage_huge(&r);
    let out = python(
        r.ftp,
        &a,
        r#"
c = Ctl(); c.login()
for round in range(2):
    d = c.pasv(rcvbuf=4096)
    print("retr", c.cmd("RETR huge.bin")[:3])
    d.recv(1000)  # the transfer is under way; from now on nobody reads
    c.send(b"ABOR\r\n")
    print("first", c.reply()[:3])
    print("second", c.reply()[:3])
    print("noop", c.cmd("NOOP")[:3])
    d.close()
print("quit", c.cmd("QUIT")[:3])
"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines_with(&out, "retr "), ["retr 150", "retr 150"], "{out}");
    assert_eq!(
        lines_with(&out, "first "),
        ["first 426", "first 426"],
        "{out}"
    );
    assert_eq!(
        lines_with(&out, "second "),
        ["second 226", "second 226"],
        "{out}"
    );
    assert_eq!(lines_with(&out, "noop "), ["noop 200", "noop 200"], "{out}");
    assert!(out.contains("quit 221"), "{out}");
    r.stop().await;
}

/// ABOR preceded by the Telnet "Interrupt Process" and "Synch" signals (IAC IP, IAC DM;
/// RFC 959 §4.1.3), as lftp sends it: the DM byte as TCP urgent data on a plain connection,
/// everything in-band otherwise. The server ignores the Telnet bytes and aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abor_with_telnet_ip_and_synch_is_understood() {
    let r = start_with_huge().await;
    let a = stage_huge(&r);
    let out = python(
        r.ftp,
        &a,
        r#"
c = Ctl(); c.login()
for how in ["urgent", "inband"]:
    d = c.pasv(rcvbuf=4096)
    print(how, "retr", c.cmd("RETR huge.bin")[:3])
    d.recv(1000)
    if how == "urgent":
        c.send(b"\xff\xf4\xff")
        c.send(b"\xf2", socket.MSG_OOB)
        c.send(b"ABOR\r\n")
    else:
        c.send(b"\xff\xf4\xff\xf2ABOR\r\n")
    print(how, "replies", c.reply()[:3], c.reply()[:3])
    print(how, "noop", c.cmd("NOOP")[:3])
    d.close()
print("quit", c.cmd("QUIT")[:3])
"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for how in ["urgent", "inband"] {
        assert!(out.contains(&format!("{how} retr 150")), "{out}");
        assert!(out.contains(&format!("{how} replies 426 226")), "{out}");
        assert!(out.contains(&format!("{how} noop 200")), "{out}");
    }
    assert!(out.contains("quit 221"), "{out}");
    r.stop().await;
}

/// Python's `ftplib.abort()` mid-transfer (plain FTP: `ABOR\r\n` sent as urgent data; FTPS:
/// in-band), then `NOOP` is answered 200, and a whole download afterwards is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftplib_abort_mid_transfer_then_noop_answers_200() {
    let r = start_with_huge().await;
    let a = stage_huge(&r);
    let (sha, _) = {
        let cat = r.stager.catalog(false).unwrap();
        let f = cat
            .releases
            .iter()
            .flat_map(|rel| rel.files.iter())
            .find(|f| f.name == "huge.bin")
            .unwrap()
            .clone();
        (f.sha256, f.size)
    };
    for tls in [false, true] {
        let out = ftplib(
            r.ftp,
            &a.ftp_user,
            &a.ftp_password,
            tls,
            r#"
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR huge.bin")
conn.recv(65536)
resp = ftp.abort()
print("abort", resp[:3])
if resp[:3] == "426":
    print("then", ftp.getresp()[:3])
conn.close()
print("noop", ftp.sendcmd("NOOP")[:3])
print("whole", hashlib.sha256(get("huge.bin")).hexdigest())
"#,
        )
        .await
        .unwrap_or_else(|e| panic!("tls={tls}: {e}"));
        assert!(out.contains("abort 426"), "tls={tls}: {out}");
        assert!(out.contains("then 226"), "tls={tls}: {out}");
        assert!(out.contains("noop 200"), "tls={tls}: {out}");
        assert!(out.contains(&format!("whole {sha}")), "tls={tls}: {out}");
    }
    r.stop().await;
}

/// REST with a value that is not an offset (negative, not a number, at or past 2^63, which
/// no file offset can be) is refused with 501, and the session goes on: a RETR afterwards
/// sends the whole file, and a good REST still resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rest_is_refused_and_the_session_goes_on() {
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"
ftp.voidcmd("TYPE I")
for v in ["-1", "abc", "9223372036854775808", "18446744073709551616", "1e3", ""]:
    try:
        print("rest", repr(v), ftp.sendcmd(("REST " + v).strip())[:3])
    except ftplib.error_perm as e:
        print("rest", repr(v), str(e)[:3])
    print("whole", repr(v), hashlib.sha256(get("big.bin")).hexdigest())
print("resumed", hashlib.sha256(get("big.bin", rest=1000)).hexdigest())
"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (sha, size) = catalog_sha(&r, "big.bin");
    let tail_sha = sha_hex(&pattern(size as usize, 1)[1000..]);
    for v in [
        "'-1'",
        "'abc'",
        "'9223372036854775808'",
        "'18446744073709551616'",
        "'1e3'",
        "''",
    ] {
        assert!(out.contains(&format!("rest {v} 501")), "{v}: {out}");
        assert!(out.contains(&format!("whole {v} {sha}")), "{v}: {out}");
    }
    assert!(out.contains(&format!("resumed {tail_sha}")), "{out}");
    r.stop().await;
}

/// HELP and STAT answer without naming the FTP library or its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn help_and_stat_do_not_announce_the_library() {
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let out = python(
        r.ftp,
        &a,
        r#"
c = Ctl()
print("help-before-login", repr(c.cmd("HELP")))
c.login()
print("help", repr(c.cmd("HELP")))
print("stat", repr(c.cmd("STAT")))
print("syst", repr(c.cmd("SYST")))
print("quit", c.cmd("QUIT")[:3])
"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let help = lines_with(&out, "help ");
    let stat = lines_with(&out, "stat ");
    assert!(help.len() == 1 && help[0].starts_with("help '214"), "{out}");
    assert!(stat.len() == 1 && stat[0].starts_with("stat '211"), "{out}");
    let lower = out.to_lowercase();
    for leak in ["unftp", "0.24", "powered by", "ftp_stager", "areafs"] {
        assert!(!lower.contains(leak), "{leak:?} in {out}");
    }
    assert!(out.contains("quit 221"), "{out}");
    r.stop().await;
}

/// An FTPS session (PROT P) whose client opens the data connection without TLS is refused
/// cleanly: 425 for the transfer, and the session still answers NOOP and downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftps_plain_data_connection_is_refused_and_the_session_goes_on() {
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let (sha, _) = catalog_sha(&r, "big.bin");
    for how in ["garbage", "close"] {
        let out = ftplib(
            r.ftp,
            &a.ftp_user,
            &a.ftp_password,
            true,
            &format!(
                r#"
import socket
ftp.voidcmd("TYPE I")
resp = ftp.sendcmd("PASV")
nums = resp[resp.index("(") + 1:resp.index(")")].split(",")
s = socket.create_connection((host, int(nums[4]) * 256 + int(nums[5])), timeout=20)
print("retr", ftp.sendcmd("RETR big.bin")[:3])
if "{how}" == "garbage":
    s.sendall(b"this is not a TLS client hello\r\n" * 8)
s.close()
try:
    print("after", ftp.getresp()[:3])
except ftplib.all_errors as e:
    print("after", str(e)[:3])
print("noop", ftp.sendcmd("NOOP")[:3])
print("big", hashlib.sha256(get("big.bin")).hexdigest())
"#
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert!(out.contains("retr 150"), "{how}: {out}");
        assert!(out.contains("after 425"), "{how}: {out}");
        assert!(out.contains("noop 200"), "{how}: {out}");
        assert!(out.contains(&format!("big {sha}")), "{how}: {out}");
    }
    r.stop().await;
}

/// When every passive port is taken, PASV and EPSV say so (425 "No passive port available,
/// try again"), and the session goes on; once a port is free again, PASV works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passive_port_exhaustion_answers_a_clear_425() {
    // A one-port passive range, and that port held by someone else.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let (dir, mut cfg) = make_repo();
    cfg.passive_ports = format!("{port}-{port}");
    let r = start_with(dir, cfg, None).await;
    let a = r.stage(&["big.bin"], None);
    let out = python(
        r.ftp,
        &a,
        r#"
c = Ctl(); c.login()
print("pasv", repr(c.cmd("PASV")))
print("epsv", repr(c.cmd("EPSV")))
print("noop", c.cmd("NOOP")[:3])
print("quit", c.cmd("QUIT")[:3])
"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for verb in ["pasv", "epsv"] {
        assert!(
            out.contains(&format!(
                "{verb} '425 No passive port available, try again\\r\\n'"
            )),
            "{out}"
        );
    }
    assert!(
        out.contains("noop 200") && out.contains("quit 221"),
        "{out}"
    );

    // The port is free again: a passive download works.
    drop(holder);
    let (sha, _) = catalog_sha(&r, "big.bin");
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"print("big", hashlib.sha256(get("big.bin")).hexdigest())"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains(&format!("big {sha}")), "{out}");
    r.stop().await;
}

/// Runs lftp (debug output on) with `commands` against the stager as `a`; returns
/// (success, combined output). `net:timeout 5` and `net:max-retries 1` make a hang end the
/// run with an error instead of a long wait.
fn lftp(
    r: &Running,
    a: &StagedArea,
    tls: bool,
    home: &std::path::Path,
    commands: &str,
) -> (bool, String) {
    let tls_settings = if tls {
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate false;"
    } else {
        "set ftp:ssl-allow false;"
    };
    let script = format!(
        "set net:timeout 5; set net:max-retries 1; set net:reconnect-interval-base 1; \
         set cmd:fail-exit true; set pget:min-chunk-size 65536; set ftp:passive-mode true; \
         {tls_settings} open -u {},{} ftp://{}:{}; {commands}",
        a.ftp_user,
        a.ftp_password,
        r.ftp.ip(),
        r.ftp.port()
    );
    let out = Command::new("lftp")
        .env("HOME", home)
        .args(["-d", "-c", &script])
        .output()
        .expect("lftp runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_no_timeout(ok: bool, out: &str, what: &str) {
    assert!(ok, "{what}: lftp failed:\n{out}");
    for sign in ["Timeout", "max-retries", "reconnecting"] {
        assert!(
            !out.contains(sign),
            "{what}: {sign:?} in lftp output:\n{out}"
        );
    }
}

/// lftp `pget -n 4` (a parallel download: each connection ABORs its chunk once it has its
/// share) and `pget -c` (resuming a partial download from lftp's own status file), over
/// plain FTP and FTPS, ten times each: every run ends without lftp hitting its 5 s timeout,
/// and every download has the catalog's SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lftp_pget_parallel_and_resume_never_hit_the_timeout() {
    if !ffs_testkit::prereq::require_command("lftp", "lftp", "apt-get install lftp") {
        return;
    }
    let r = start().await;
    let a = r.stage(&["big.bin"], None);
    let (sha, size) = catalog_sha(&r, "big.bin");
    let whole = pattern(size as usize, 1);
    let d = tempfile::tempdir().unwrap();
    for tls in [false, true] {
        // Runs in which lftp ABORed a chunk (the path that used to hang).
        let mut aborted_runs = 0;
        for round in 0..10 {
            let what = format!("tls={tls} round {round}");
            let out_path = d.path().join(format!("pget-{tls}-{round}.bin"));
            let (ok, out) = lftp(
                &r,
                &a,
                tls,
                d.path(),
                // A per-connection rate limit, so that the four chunks overlap on loopback.
                &format!(
                    "set net:limit-rate 2M; pget -n 4 big.bin -o {}",
                    out_path.display()
                ),
            );
            assert_no_timeout(ok, &out, &format!("pget -n 4, {what}"));
            if out.contains("---> ABOR") {
                aborted_runs += 1;
            }
            assert_eq!(sha_hex(&std::fs::read(&out_path).unwrap()), sha, "{what}");

            // A download interrupted earlier: four chunks, each a third done, the rest of the
            // file garbage; lftp's status file says where each chunk stands.
            let part = d.path().join(format!("part-{tls}-{round}.bin"));
            let chunk = size / 4;
            let mut bytes = vec![0xAA; size as usize];
            let mut status = format!("size={size}\n");
            let mut resumes = vec![];
            for i in 0..4u64 {
                let start = i * chunk;
                let limit = if i == 3 { size } else { start + chunk };
                let pos = start + (limit - start) / 3;
                bytes[start as usize..pos as usize]
                    .copy_from_slice(&whole[start as usize..pos as usize]);
                status.push_str(&format!("{i}.pos={pos}\n{i}.limit={limit}\n"));
                resumes.push(pos);
            }
            std::fs::write(&part, &bytes).unwrap();
            std::fs::write(
                d.path()
                    .join(format!("part-{tls}-{round}.bin.lftp-pget-status")),
                status,
            )
            .unwrap();
            let (ok, out) = lftp(
                &r,
                &a,
                tls,
                d.path(),
                &format!("pget -c -n 4 big.bin -o {}", part.display()),
            );
            assert_no_timeout(ok, &out, &format!("pget -c, {what}"));
            // lftp picks how many of the chunks it fetches in parallel; the first one
            // resumes where the status file says.
            assert!(
                out.contains(&format!("REST {}", resumes[0])),
                "{what}: not resumed at {}:\n{out}",
                resumes[0]
            );
            assert_eq!(sha_hex(&std::fs::read(&part).unwrap()), sha, "{what}");
        }
        assert!(aborted_runs > 0, "tls={tls}: lftp never ABORed a chunk");
    }
    r.stop().await;
}
