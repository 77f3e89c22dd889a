//! Real clients (python3 ftplib, curl) download staged files over FTP, FTPS and HTTPS; the
//! SHA-256 of what arrives matches the catalog, and resuming from the middle works.

mod common;

use common::*;

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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
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

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
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
