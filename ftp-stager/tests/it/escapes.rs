//! Escape attempts, one test each: every one must fail, and no byte of the secret file
//! outside the areas (or of another area) may come back.

use crate::common::*;
use commlink::Message as _;

const SECRET: &[u8] = b"TOP SECRET OUTSIDE";

fn leaked(body: &[u8]) -> bool {
    body.windows(SECRET.len()).any(|w| w == SECRET) || body.windows(5).any(|w| w == b"root:")
}

/// Asserts each path (appended raw to https_base) is refused without leaking.
async fn refused(r: &Running, token_base: &str, paths: &[&str]) {
    for p in paths {
        let (code, body) = curl(&[&format!("{token_base}{p}")]).await;
        assert!(
            code == 400 || code == 404,
            "{p:?} answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!leaked(&body), "{p:?} leaked");
    }
    let _ = r;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_plain_dotdot_is_refused() {
    let r = start().await;
    let a = r.stage(&[], None);
    refused(
        &r,
        &a.https_base,
        &[
            "..",
            "../",
            "../../outside-secret.txt",
            "../../../../../../etc/passwd",
            "docs/../../../outside-secret.txt",
            "docs/../big.bin",
            "./big.bin",
        ],
    )
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_percent_encoded_dotdot_is_refused() {
    let r = start().await;
    let a = r.stage(&[], None);
    refused(
        &r,
        &a.https_base,
        &[
            "%2e%2e/%2e%2e/outside-secret.txt",
            "%2E%2E%2F%2E%2E%2Foutside-secret.txt",
            "..%2f..%2foutside-secret.txt",
            "docs%2f..%2f..%2f..%2foutside-secret.txt",
            "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            ".%2e/.%2e/outside-secret.txt",
        ],
    )
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_double_encoded_dotdot_is_refused() {
    let r = start().await;
    let a = r.stage(&[], None);
    refused(
        &r,
        &a.https_base,
        &[
            "%252e%252e%252f%252e%252e%252foutside-secret.txt",
            "%252e%252e/%252e%252e/outside-secret.txt",
            "..%252f..%252foutside-secret.txt",
            "%25%32%65%25%32%65/outside-secret.txt",
        ],
    )
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_backslash_dotdot_is_refused() {
    let r = start().await;
    let a = r.stage(&[], None);
    refused(
        &r,
        &a.https_base,
        &[
            "..\\..\\outside-secret.txt",
            "..%5c..%5coutside-secret.txt",
            "docs%5c..%5c..%5c..%5coutside-secret.txt",
            "%5cetc%5cpasswd",
        ],
    )
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_absolute_paths_are_refused() {
    let r = start().await;
    let a = r.stage(&[], None);
    let abs = r.secret_outside().display().to_string();
    refused(
        &r,
        &a.https_base,
        &[
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "%2Fetc/passwd",
            &abs,
            &abs.replace('/', "%2f"),
        ],
    )
    .await;
    // And outside /d/<token>/ entirely.
    let root = a.https_base.split("/d/").next().unwrap().to_owned();
    for p in ["/etc/passwd", "/d/../etc/passwd", "/d/", "/"] {
        let (code, body) = curl(&[&format!("{root}{p}")]).await;
        assert_eq!(code, 404, "{p}");
        assert!(!leaked(&body));
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn symlink_planted_in_area_is_not_followed() {
    let r = start().await;
    let a = r.stage(&[], None);
    let area = r.stager.areas_dir().join(&a.area_id);
    // A new name pointing outside, and a staged file replaced by a link outside.
    std::os::unix::fs::symlink(r.secret_outside(), area.join("evil.txt")).unwrap();
    std::fs::remove_file(area.join("docs/readme.txt")).unwrap();
    std::os::unix::fs::symlink(r.secret_outside(), area.join("docs/readme.txt")).unwrap();
    std::os::unix::fs::symlink("../../../outside-secret.txt", area.join("rel.txt")).unwrap();
    refused(
        &r,
        &a.https_base,
        &["evil.txt", "docs/readme.txt", "rel.txt"],
    )
    .await;
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"
attempt("evil", lambda: print(get("evil.txt")))
attempt("readme", lambda: print(get("docs/readme.txt")))
attempt("rel", lambda: print(get("rel.txt")))
attempt("big", lambda: get("big.bin"))
"#,
    )
    .await
    .unwrap();
    assert!(out.contains("evil ERR 550"), "{out}");
    assert!(out.contains("readme ERR 550"), "{out}");
    assert!(out.contains("rel ERR 550"), "{out}");
    assert!(out.contains("big OK"), "{out}");
    assert!(!leaked(out.as_bytes()), "{out}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn symlink_planted_in_repository_is_not_staged() {
    let r = start().await;
    let cat = r.stager.catalog(false).unwrap();
    let readme = cat.releases[0]
        .files
        .iter()
        .find(|f| f.name == "docs/readme.txt")
        .unwrap()
        .clone();
    let obj = r.stager.repository().object_path(&readme.sha256).unwrap();
    std::fs::remove_file(&obj).unwrap();
    std::os::unix::fs::symlink(r.secret_outside(), &obj).unwrap();
    let err = r
        .stager
        .stage(&commlink::msg::stager::StageRequest {
            product: "tool".into(),
            version: "1.0".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, ftp_stager::StagerError::Damaged(_)), "{err}");
    assert!(
        r.stager.areas().areas.is_empty(),
        "no half-staged area left"
    );
    // Only empty directories (made ahead for coming requests) remain.
    assert!(
        std::fs::read_dir(r.stager.areas_dir())
            .unwrap()
            .all(|e| std::fs::read_dir(e.unwrap().path())
                .unwrap()
                .next()
                .is_none()),
        "area directory removed"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftp_cwd_root_and_parent_stay_in_the_area() {
    let r = start().await;
    let a = r.stage(&["docs/readme.txt"], None);
    let other = r.stage(&["big.bin"], None);
    let script = format!(
        r#"
ftp.cwd("/")
print("root", sorted(ftp.nlst()))
ftp.cwd("..")
print("parent", ftp.pwd(), sorted(ftp.nlst()))
ftp.cwd("/docs")
attempt("cwdup", lambda: ftp.cwd("../../.."))
print("after", sorted(ftp.nlst()))
attempt("other", lambda: get("../{other}/big.bin"))
attempt("other_abs", lambda: get("/../{other}/big.bin"))
attempt("passwd", lambda: get("/etc/passwd"))
attempt("secret", lambda: get("../../outside-secret.txt"))
attempt("cwd_etc", lambda: ftp.cwd("/etc"))
attempt("cwd_areas", lambda: ftp.cwd("/../.."))
print("final", sorted(ftp.nlst()))
"#,
        other = other.area_id
    );
    let out = ftplib(r.ftp, &a.ftp_user, &a.ftp_password, false, &script)
        .await
        .unwrap();
    assert!(out.contains("root ['docs']"), "{out}");
    assert!(out.contains("parent / ['docs']"), "{out}");
    for l in [
        "other ERR",
        "other_abs ERR",
        "passwd ERR",
        "secret ERR",
        "cwd_etc ERR",
    ] {
        assert!(out.contains(l), "{l}: {out}");
    }
    assert!(!out.contains("big.bin"), "{out}");
    assert!(
        out.contains("final ['docs']") || out.contains("final ['readme.txt']"),
        "{out}"
    );
    assert!(!leaked(out.as_bytes()), "{out}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftp_is_read_only() {
    let r = start().await;
    let a = r.stage(&[], None);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"
attempt("stor", lambda: ftp.storbinary("STOR new.txt", io.BytesIO(b"x")))
attempt("over", lambda: ftp.storbinary("STOR big.bin", io.BytesIO(b"x")))
attempt("appe", lambda: ftp.storbinary("APPE big.bin", io.BytesIO(b"x")))
attempt("dele", lambda: ftp.delete("big.bin"))
attempt("mkd", lambda: ftp.mkd("newdir"))
attempt("rmd", lambda: ftp.rmd("docs"))
attempt("rename", lambda: ftp.rename("big.bin", "x.bin"))
print("size", ftp.size("big.bin"))
"#,
    )
    .await
    .unwrap();
    for op in ["stor", "over", "appe", "dele", "mkd", "rmd", "rename"] {
        assert!(out.contains(&format!("{op} ERR 5")), "{op}: {out}");
    }
    assert!(out.contains("size 3145745"), "{out}");
    let area = r.stager.areas_dir().join(&a.area_id);
    assert!(!area.join("new.txt").exists() && !area.join("newdir").exists());
    assert!(area.join("docs").is_dir());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_areas_token_or_credentials_do_not_work() {
    let r = start().await;
    let a = r.stage(&["docs/readme.txt"], None);
    let b = r.stage(&["big.bin"], None);
    // A's token cannot reach B's file, by name or by B's id.
    let (code, _) = curl(&[&format!("{}big.bin", a.https_base)]).await;
    assert_eq!(code, 404);
    let (code, _) = curl(&[&format!("{}../{}/big.bin", a.https_base, b.area_id)]).await;
    assert!(code == 400 || code == 404);
    // The area id is not a token.
    let root = a.https_base.split("/d/").next().unwrap().to_owned();
    let (code, _) = curl(&[&format!("{root}/d/{}/big.bin", b.area_id)]).await;
    assert_eq!(code, 404);
    // A token with one character changed.
    let mut t = b.token.clone().into_bytes();
    t[10] = if t[10] == b'a' { b'b' } else { b'a' };
    let (code, _) = curl(&[&format!(
        "{root}/d/{}/big.bin",
        String::from_utf8(t).unwrap()
    )])
    .await;
    assert_eq!(code, 404);
    // Crossed FTP credentials.
    for (u, p) in [
        (&a.ftp_user, &b.ftp_password),
        (&b.ftp_user, &a.ftp_password),
        (&a.ftp_user, &String::new()),
    ] {
        let err = ftplib(r.ftp, u, p, false, "print('in')").await.unwrap_err();
        assert!(err.contains("530"), "{err}");
    }
    // The right pairs work.
    let (code, _) = curl(&[&format!("{}big.bin", b.https_base)]).await;
    assert_eq!(code, 200);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_or_revoked_tokens_and_credentials_are_refused() {
    let r = start().await;
    let short = r.stage(&["docs/readme.txt"], Some(1));
    let revoked = r.stage(&["docs/readme.txt"], None);
    let (code, _) = curl(&[&format!("{}docs/readme.txt", short.https_base)]).await;
    assert_eq!(code, 200, "works before expiry");
    assert!(r.stager.unstage(&revoked.area_id).unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    for a in [&short, &revoked] {
        let (code, _) = curl(&[&format!("{}docs/readme.txt", a.https_base)]).await;
        assert_eq!(code, 404);
        let (code, _) = curl(&[&a.https_base]).await;
        assert_eq!(code, 404);
        let err = ftplib(r.ftp, &a.ftp_user, &a.ftp_password, false, "print('in')")
            .await
            .unwrap_err();
        assert!(err.contains("530"), "{err}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn yanked_release_cannot_be_staged() {
    let r = start().await;
    let before = r.stage(&[], None);
    r.stager.repository().yank("tool", "1.0").unwrap();
    let svc = ftp_stager::StagerService::new(r.stager.clone());
    let req = commlink::msg::stager::StageRequest {
        product: "tool".into(),
        version: "1.0".into(),
        ..Default::default()
    };
    let reply = svc.handle(req.to_tobj(1)).await;
    assert_eq!(reply.kind, "ffs.error");
    assert_eq!(reply.fields.req_text("code").unwrap(), "denied");
    let cat = svc
        .handle(commlink::msg::stager::CatalogRequest::default().to_tobj(2))
        .await;
    let cat = commlink::msg::stager::Catalog::from_tobj(&cat).unwrap();
    assert!(cat.releases.is_empty(), "customers no longer see it");
    // An area staged before the yank keeps working until it expires.
    let (code, _) = curl(&[&format!("{}docs/readme.txt", before.https_base)]).await;
    assert_eq!(code, 200);
    r.stop().await;
}
