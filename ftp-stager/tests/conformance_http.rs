//! The stager's HTTPS downloads against the reference: REAL nginx (HTTP and HTTPS) serves a
//! copy of the same staged file, and every request of a matrix (Range in every form,
//! If-Range with ETag and date, current and stale, If-Match, If-None-Match,
//! If-Modified-Since, HEAD) must get the same status, the same Content-Range, the same
//! Content-Length and the same body from the stager as from nginx.
//!
//! Each server is asked with its OWN validators (taken from a first plain response): the
//! ETag and Last-Modified values differ by design.
//!
//! Allowed differences, each with its reason:
//! - ETag / Last-Modified values: ours is the SHA-256 and the staged file's mtime.
//! - The boundary string of `multipart/byteranges` (any token is valid, RFC 9110 §14.6);
//!   bodies are compared with each server's boundary replaced by a placeholder, and the
//!   Content-Length of such an answer differs by the boundaries' lengths.
//! - Bodies and Content-Length/Type of 412 and 416 answers: error text is free-form.
//! - `Accept-Ranges: bytes` on 206 answers: nginx sends it only on 200; RFC 9110 §14.3
//!   lets any response carry it, and it tells a resuming client the same thing. (On 200
//!   answers it is compared.)
//! - Cache-Control: nginx sends none unless configured; ours is `private, no-transform`
//!   on file answers (asserted here).

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use ffs_testkit::prereq;

/// nginx, run as a foreground single process from a private prefix; killed on drop.
struct Nginx {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn start_nginx(nginx: &Path, file: &Path) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(file, root.join("big.bin")).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let (http, https) = (free_port(), free_port());
    let p = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log stderr warn;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n include /etc/nginx/mime.types;\n default_type application/octet-stream;\n\
          access_log off;\n client_body_temp_path {p}/cb;\n proxy_temp_path {p}/px;\n\
          fastcgi_temp_path {p}/fc;\n uwsgi_temp_path {p}/uw;\n scgi_temp_path {p}/sc;\n\
          server {{\n  listen {http};\n  listen {https} ssl;\n\
           ssl_certificate {p}/cert.pem;\n  ssl_certificate_key {p}/key.pem;\n\
           root {root};\n }}\n}}\n",
        root = root.display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx starts");
    for _ in 0..200 {
        if TcpStream::connect(http).is_ok() && TcpStream::connect(https).is_ok() {
            return Nginx {
                child,
                http,
                https,
                _dir: dir,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nginx did not start listening on {http} / {https}");
}

/// One answer: status, lower-cased header names → values, body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn ask(url: &str, head: bool, headers: &[String]) -> Answer {
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new("curl");
    c.args(["-k", "-s", "-S", "--http1.1", "-D"])
        .arg(d.path().join("h"))
        .arg("-o")
        .arg(d.path().join("b"));
    if head {
        c.arg("-I");
    }
    for h in headers {
        c.args(["-H", h]);
    }
    let out = c.arg(url).output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = std::fs::read_to_string(d.path().join("h")).unwrap();
    let mut lines = raw.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: std::fs::read(d.path().join("b")).unwrap_or_default(),
    }
}

/// The multipart body with the server's boundary replaced.
fn normalized(a: &Answer) -> Vec<u8> {
    let ct = a.headers.get("content-type").cloned().unwrap_or_default();
    let Some(b) = ct.split("boundary=").nth(1) else {
        return a.body.clone();
    };
    let body = String::from_utf8_lossy(&a.body).into_owned();
    body.replace(b.trim(), "BOUNDARY").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_answers_like_nginx() {
    let Some(nginx) = prereq::obtain(
        "nginx",
        || prereq::find_command("nginx").ok_or("nginx is not installed"),
        "apt-get install nginx",
    ) else {
        return;
    };
    if !prereq::require_command("curl", "curl", "apt-get install curl") {
        return;
    }
    let r = start().await;
    let a = r.stage(&[], None);
    let staged = r.stager.areas_dir().join(&a.area_id).join("big.bin");
    let len = std::fs::metadata(&staged).unwrap().len();
    let ng = start_nginx(&nginx, &staged);
    let servers = [
        ("stager", format!("{}big.bin", a.https_base)),
        ("nginx-http", format!("http://{}/big.bin", ng.http)),
        ("nginx-https", format!("https://{}/big.bin", ng.https)),
    ];
    let stale_date = "Thu, 01 Jan 1998 00:00:00 GMT";
    let matrix = tokio::task::spawn_blocking(move || {
        let mut results: Vec<Vec<(String, Answer)>> = Vec::new();
        for (server, url) in &servers {
            let first = ask(url, false, &[]);
            assert_eq!(first.status, 200, "{server}");
            assert_eq!(first.body.len() as u64, len, "{server}");
            let etag = first.headers["etag"].clone();
            let lm = first.headers["last-modified"].clone();
            let cases: Vec<(String, bool, Vec<String>)> = vec![
                ("plain GET".into(), false, vec![]),
                ("HEAD".into(), true, vec![]),
                (
                    "range first-last".into(),
                    false,
                    vec!["Range: bytes=10-19".into()],
                ),
                (
                    "range suffix".into(),
                    false,
                    vec!["Range: bytes=-100".into()],
                ),
                (
                    "range open-ended".into(),
                    false,
                    vec![format!("Range: bytes={}-", len - 50)],
                ),
                (
                    "range past the end clipped".into(),
                    false,
                    vec![format!("Range: bytes={}-{}", len - 5, len + 500)],
                ),
                (
                    "range multi".into(),
                    false,
                    vec!["Range: bytes=0-9,100-109,-5".into()],
                ),
                (
                    "range multi, one unsatisfiable".into(),
                    false,
                    vec![format!("Range: bytes=0-9,{}-", len + 10)],
                ),
                (
                    "range unsatisfiable".into(),
                    false,
                    vec![format!("Range: bytes={}-", len)],
                ),
                (
                    "HEAD with range".into(),
                    true,
                    vec!["Range: bytes=10-19".into()],
                ),
                (
                    "If-Range current ETag".into(),
                    false,
                    vec!["Range: bytes=10-19".into(), format!("If-Range: {etag}")],
                ),
                (
                    "If-Range stale ETag".into(),
                    false,
                    vec!["Range: bytes=10-19".into(), "If-Range: \"stale\"".into()],
                ),
                (
                    "If-Range current date".into(),
                    false,
                    vec!["Range: bytes=10-19".into(), format!("If-Range: {lm}")],
                ),
                (
                    "If-Range stale date".into(),
                    false,
                    vec![
                        "Range: bytes=10-19".into(),
                        format!("If-Range: {stale_date}"),
                    ],
                ),
                (
                    "If-Match current".into(),
                    false,
                    vec![format!("If-Match: {etag}")],
                ),
                ("If-Match star".into(), false, vec!["If-Match: *".into()]),
                (
                    "If-Match stale".into(),
                    false,
                    vec!["If-Match: \"stale\"".into()],
                ),
                (
                    "If-Match current with range".into(),
                    false,
                    vec![format!("If-Match: {etag}"), "Range: bytes=0-3".into()],
                ),
                (
                    "If-None-Match current".into(),
                    false,
                    vec![format!("If-None-Match: {etag}")],
                ),
                (
                    "If-None-Match current, HEAD".into(),
                    true,
                    vec![format!("If-None-Match: {etag}")],
                ),
                (
                    "If-None-Match stale".into(),
                    false,
                    vec!["If-None-Match: \"stale\"".into()],
                ),
                (
                    "If-Modified-Since current".into(),
                    false,
                    vec![format!("If-Modified-Since: {lm}")],
                ),
                (
                    "If-Modified-Since stale".into(),
                    false,
                    vec![format!("If-Modified-Since: {stale_date}")],
                ),
                (
                    "If-Unmodified-Since stale".into(),
                    false,
                    vec![format!("If-Unmodified-Since: {stale_date}")],
                ),
                (
                    "If-Unmodified-Since current".into(),
                    false,
                    vec![format!("If-Unmodified-Since: {lm}")],
                ),
            ];
            results.push(
                cases
                    .into_iter()
                    .map(|(name, head, h)| {
                        let ans = ask(url, head, &h);
                        (name, ans)
                    })
                    .collect(),
            );
        }
        results
    })
    .await
    .unwrap();

    let stager = &matrix[0];
    let mut diffs = Vec::new();
    for (i, reference) in matrix[1..].iter().enumerate() {
        let rname = ["nginx-http", "nginx-https"][i];
        for ((case, ours), (_, theirs)) in stager.iter().zip(reference) {
            if ours.status != theirs.status {
                diffs.push(format!(
                    "{case}: stager {} vs {rname} {}",
                    ours.status, theirs.status
                ));
                continue;
            }
            if ours.headers.get("content-range") != theirs.headers.get("content-range") {
                diffs.push(format!(
                    "{case}: Content-Range {:?} vs {rname} {:?}",
                    ours.headers.get("content-range"),
                    theirs.headers.get("content-range")
                ));
            }
            if matches!(ours.status, 412 | 416) {
                continue; // error text is free-form
            }
            for h in ["accept-ranges", "content-type"] {
                if h == "accept-ranges" && ours.status == 206 {
                    continue; // allowed difference: see the module doc
                }
                let (o, t) = (ours.headers.get(h), theirs.headers.get(h));
                let multipart = o.is_some_and(|v| v.starts_with("multipart/byteranges"))
                    && t.is_some_and(|v| v.starts_with("multipart/byteranges"));
                if o != t && !multipart && ours.status != 304 {
                    diffs.push(format!("{case}: {h} {o:?} vs {rname} {t:?}"));
                }
            }
            let head = case.starts_with("HEAD") || case.ends_with("HEAD");
            let multipart = ours
                .headers
                .get("content-type")
                .is_some_and(|v| v.starts_with("multipart/"));
            // HEAD: curl -I writes the headers where the body would go; there is no body.
            if !head && normalized(ours) != normalized(theirs) {
                diffs.push(format!(
                    "{case}: bodies differ ({} vs {rname} {} bytes)",
                    ours.body.len(),
                    theirs.body.len()
                ));
            } else if !multipart
                && ours.headers.get("content-length") != theirs.headers.get("content-length")
            {
                diffs.push(format!(
                    "{case}: Content-Length {:?} vs {rname} {:?}",
                    ours.headers.get("content-length"),
                    theirs.headers.get("content-length")
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "differences from nginx:\n{}",
        diffs.join("\n")
    );

    // What the matrix means for clients (so agreeing with a broken nginx would still fail).
    let by = |case: &str| &stager.iter().find(|(c, _)| c == case).unwrap().1;
    assert_eq!(by("If-Range current ETag").status, 206);
    assert_eq!(by("If-Range stale ETag").status, 200);
    assert_eq!(by("If-Match current").status, 200);
    assert_eq!(by("If-None-Match current").status, 304);
    assert_eq!(
        by("range unsatisfiable").headers["content-range"],
        format!("bytes */{len}")
    );
    assert!(by("range multi").headers["content-type"].starts_with("multipart/byteranges"));
    for case in ["plain GET", "range first-last", "If-None-Match current"] {
        assert_eq!(
            by(case).headers["cache-control"],
            "private, no-transform",
            "{case}"
        );
    }
    for case in ["range unsatisfiable", "If-Match stale"] {
        assert_eq!(by(case).headers["cache-control"], "no-store", "{case}");
    }
    let missing = ask(&format!("{}nothing.bin", a.https_base), false, &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["cache-control"], "no-store");
    drop(ng);
    r.stop().await;
}
