//! nginx is the oracle for HTTPS downloads: a real nginx serves the very same file (a hard
//! link to the staged one: same bytes, same mtime) over plain HTTP and over HTTPS (a
//! self-signed certificate), and the stager and each nginx listener get the same matrix of
//! Range / conditional requests through curl. Status codes, bodies (the parts of a
//! `multipart/byteranges` body, compared part by part), `Content-Range` and
//! `Content-Length` must agree.
//!
//! Allowed differences, each with its reason:
//! - ETag values: each server's own ETag (taken from a first response) is used in its
//!   requests; nginx's is `mtime-size`, ours the SHA-256.
//! - The bodies of 412 and 416 responses: each server's own error text (RFC 9110 leaves
//!   the content of error responses to the server).
//! - The multipart boundary string (chosen freely by each server, RFC 9110 §14.6).
//! - nginx runs with `if_modified_since before;` (RFC 9110 §13.1.3 semantics: not modified
//!   when Last-Modified ≤ the date); its default `exact` only answers 304 on an equal date.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn fetch(url: &str, head: bool, extra: &[(String, String)]) -> Reply {
    let d = tempfile::tempdir().unwrap();
    let (hf, bf) = (d.path().join("h"), d.path().join("b"));
    let mut c = Command::new("curl");
    c.args(["-k", "-s", "-S", "--http1.1", "-D"])
        .arg(&hf)
        .arg("-o")
        .arg(&bf)
        .args(["-w", "%{http_code}"]);
    if head {
        c.arg("-I");
    }
    for (k, v) in extra {
        c.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = c.arg(url).output().expect("curl runs");
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {url}: {}", String::from_utf8_lossy(&out.stderr)));
    let headers = std::fs::read_to_string(&hf)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&bf).unwrap_or_default(),
    }
}

/// The (Content-Range, bytes) of each part of a `multipart/byteranges` body.
fn parts(r: &Reply) -> Vec<(String, Vec<u8>)> {
    let ct = r.headers.get("content-type").cloned().unwrap_or_default();
    let b = ct
        .split_once("boundary=")
        .map(|(_, b)| b.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no boundary in {ct:?}"));
    let delim = format!("\r\n--{b}");
    let body = &r.body;
    let mut out = Vec::new();
    let mut pos = 0;
    let find = |from: usize, pat: &[u8]| {
        body[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| p + from)
    };
    while let Some(start) = find(pos, delim.as_bytes()) {
        let after = start + delim.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let hdr_end = find(after, b"\r\n\r\n").expect("part headers end");
        let hdrs = String::from_utf8_lossy(&body[after..hdr_end]).to_string();
        let cr = hdrs
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-range"))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .expect("part has Content-Range");
        let data_start = hdr_end + 4;
        let next = find(data_start, delim.as_bytes()).expect("closing delimiter");
        out.push((cr, body[data_start..next].to_vec()));
        pos = next;
    }
    out
}

/// A running nginx serving one directory over plain HTTP and over HTTPS (a self-signed
/// certificate made for the test).
struct Nginx {
    http: String,
    https: String,
    child: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts nginx (as root, configured in `dir`) serving `root` on two free ports, one
/// plain and one TLS.
fn start_nginx(dir: &std::path::Path, root: &std::path::Path) -> Nginx {
    let (port, tls_port) = (free_port(), free_port());
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let d = dir.display();
    let conf = format!(
        "user root root;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{}}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/cb;\n proxy_temp_path {d}/pt;\n\
         fastcgi_temp_path {d}/ft;\n uwsgi_temp_path {d}/ut;\n scgi_temp_path {d}/st;\n\
         default_type application/octet-stream;\n if_modified_since before;\n\
         server {{ listen 127.0.0.1:{port}; listen 127.0.0.1:{tls_port} ssl;\n\
         ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; root {}; }}\n}}\n",
        root.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx = ffs_testkit::prereq::find_command("nginx").unwrap();
    let mut nginx = Nginx {
        http: format!("http://127.0.0.1:{port}/"),
        https: format!("https://127.0.0.1:{tls_port}/"),
        child: Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .spawn()
            .expect("nginx starts"),
    };
    for p in [port, tls_port] {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            if let Ok(Some(st)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited ({st}): {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    nginx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_ranges_and_preconditions_match_nginx() {
    if !ffs_testkit::prereq::require_command("nginx", "nginx", "apt-get install nginx") {
        return;
    }
    let r = start().await;
    let a = r.stage(&[], None);
    let staged = r.stager.areas_dir().join(&a.area_id).join("big.bin");
    let ndir = r.dir.path().join("nginx");
    let nroot = ndir.join("root");
    std::fs::create_dir_all(&nroot).unwrap();
    std::fs::hard_link(&staged, nroot.join("big.bin")).unwrap();
    let nginx = start_nginx(&ndir, &nroot);
    let ours = format!("{}big.bin", a.https_base);
    let oracles = [
        ("nginx over HTTP", format!("{}big.bin", nginx.http)),
        ("nginx over HTTPS", format!("{}big.bin", nginx.https)),
    ];

    let result = tokio::task::spawn_blocking(move || {
        let len = std::fs::metadata(nroot.join("big.bin")).unwrap().len();
        let first = |u: &str| {
            let r = fetch(u, true, &[]);
            (
                r.headers["etag"].clone(),
                r.headers["last-modified"].clone(),
            )
        };
        let (oe, olm) = first(&ours);
        let stale_date = "Thu, 01 Jan 1970 00:00:01 GMT".to_owned();
        let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        // Each case: (name, HEAD?, headers given (etag, last-modified)).
        type Case = (
            &'static str,
            bool,
            Box<dyn Fn(&str, &str) -> Vec<(String, String)>>,
        );
        let sd = stale_date.clone();
        let sd2 = stale_date.clone();
        let cases: Vec<Case> = vec![
            ("plain", false, Box::new(|_, _| vec![])),
            (
                "first-last",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=10-19")]),
            ),
            (
                "suffix",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=-100")]),
            ),
            (
                "open-ended",
                false,
                Box::new(move |_, _| vec![h("Range", &format!("bytes={}-", len - 1000))]),
            ),
            (
                "past-end",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=0-99999999999")]),
            ),
            (
                "multi",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=0-9,100-109,-5")]),
            ),
            (
                "unsatisfiable",
                false,
                Box::new(move |_, _| vec![h("Range", &format!("bytes={}-", len + 10))]),
            ),
            (
                "bad syntax",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=x-y")]),
            ),
            (
                "reversed",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=20-10")]),
            ),
            (
                "if-range etag current",
                false,
                Box::new(move |e, _| vec![h("Range", "bytes=10-19"), h("If-Range", e)]),
            ),
            (
                "if-range etag stale",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=10-19"), h("If-Range", "\"stale\"")]),
            ),
            (
                "if-range date current",
                false,
                Box::new(move |_, lm| vec![h("Range", "bytes=10-19"), h("If-Range", lm)]),
            ),
            (
                "if-range date stale",
                false,
                Box::new(move |_, _| vec![h("Range", "bytes=10-19"), h("If-Range", &sd)]),
            ),
            (
                "if-match current",
                false,
                Box::new(move |e, _| vec![h("If-Match", e)]),
            ),
            (
                "if-match star",
                false,
                Box::new(move |_, _| vec![h("If-Match", "*")]),
            ),
            (
                "if-match stale",
                false,
                Box::new(move |_, _| vec![h("If-Match", "\"stale\"")]),
            ),
            (
                "if-none-match current",
                false,
                Box::new(move |e, _| vec![h("If-None-Match", e)]),
            ),
            (
                "if-none-match stale",
                false,
                Box::new(move |_, _| vec![h("If-None-Match", "\"stale\"")]),
            ),
            (
                "if-modified-since current",
                false,
                Box::new(move |_, lm| vec![h("If-Modified-Since", lm)]),
            ),
            (
                "if-modified-since stale",
                false,
                Box::new(move |_, _| vec![h("If-Modified-Since", &sd2)]),
            ),
            (
                "if-unmodified-since current",
                false,
                Box::new(move |_, lm| vec![h("If-Unmodified-Since", lm)]),
            ),
            ("head", true, Box::new(|_, _| vec![])),
            (
                "head range",
                true,
                Box::new(move |_, _| vec![h("Range", "bytes=10-19")]),
            ),
        ];
        let mut failures = Vec::new();
        for (oracle, theirs) in &oracles {
            let (ne, nlm) = first(theirs);
            assert_eq!(olm, nlm, "same file, same Last-Modified ({oracle})");
            for (name, head, mk) in &cases {
                let o = fetch(&ours, *head, &mk(&oe, &olm));
                let n = fetch(theirs, *head, &mk(&ne, &nlm));
                let mut diff = |what: &str, a: String, b: String| {
                    if a != b {
                        failures.push(format!("{oracle}: {name}: {what}: ours {a:?}, nginx {b:?}"));
                    }
                };
                diff("status", o.status.to_string(), n.status.to_string());
                let hdr = |r: &Reply, k: &str| r.headers.get(k).cloned().unwrap_or_default();
                diff(
                    "Content-Range",
                    hdr(&o, "content-range"),
                    hdr(&n, "content-range"),
                );
                if o.status == n.status && matches!(o.status, 200 | 206) {
                    diff(
                        "Content-Length",
                        hdr(&o, "content-length"),
                        hdr(&n, "content-length"),
                    );
                    let multi = hdr(&n, "content-type").starts_with("multipart/byteranges");
                    if *head {
                        // curl -I writes the header block where the body would go: no body
                        // came; Content-Length (compared above) is what HEAD promises.
                    } else if multi {
                        let (po, pn) = (parts(&o), parts(&n));
                        diff(
                            "parts",
                            format!(
                                "{:?}",
                                po.iter().map(|p| (&p.0, sha_hex(&p.1))).collect::<Vec<_>>()
                            ),
                            format!(
                                "{:?}",
                                pn.iter().map(|p| (&p.0, sha_hex(&p.1))).collect::<Vec<_>>()
                            ),
                        );
                        assert!(pn.len() == 3, "nginx answered {} parts", pn.len());
                    } else {
                        diff("body", sha_hex(&o.body), sha_hex(&n.body));
                    }
                }
                if o.status == 304 {
                    diff(
                        "body",
                        format!("{}", o.body.len()),
                        format!("{}", n.body.len()),
                    );
                }
            }
        }
        failures
    })
    .await;
    drop(nginx);
    let failures = result.unwrap();
    assert!(
        failures.is_empty(),
        "differences from nginx:\n{}",
        failures.join("\n")
    );
    r.stop().await;
}
