//! Remote publishing over HTTPS with `curl`, as the README shows it: objects are uploaded
//! (resumably) and checked by the stager, then the release is committed. Tokens: revoked
//! and wrong-product tokens are refused; a corrupted upload is refused. Limits: the object
//! size cap, uploads per token, and the sweeper's removal of abandoned partial uploads.

use std::fs;

use ftp_stager::tokens::TokenStore;

struct Up {
    base: String,
    token: String,
}

impl Up {
    async fn req(&self, args: &[&str]) -> (u16, String) {
        let auth = format!("Authorization: Bearer {}", self.token);
        let mut a = vec!["-H", auth.as_str()];
        a.extend_from_slice(args);
        let (code, body) = crate::common::curl(&a).await;
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    async fn put(
        &self,
        sha: &str,
        offset: u64,
        size: u64,
        file: &std::path::Path,
    ) -> (u16, String) {
        let url = format!(
            "{}/publish/v1/objects/{sha}?offset={offset}&size={size}",
            self.base
        );
        self.req(&[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            &url,
        ])
        .await
    }

    async fn commit(&self, product: &str, version: &str, body: &str) -> (u16, String) {
        let url = format!("{}/publish/v1/releases/{product}/{version}", self.base);
        self.req(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &url,
        ])
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_publishes_a_release_resumes_an_upload_and_bad_uploads_and_tokens_are_refused() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let r = crate::common::start().await;
    let store = TokenStore::new(&r.cfg.state_dir);
    let ci = store.create("ci", &[]).unwrap();
    let only_tool = store.create("tool-only", &["tool".into()]).unwrap();
    let base = format!("https://{}", r.https);
    let up = Up {
        base: base.clone(),
        token: ci.clone(),
    };
    let work = r.dir.path().join("upload");
    fs::create_dir_all(&work).unwrap();

    let content = crate::common::pattern(3 * 1024 * 1024 + 5, 42);
    let sha = crate::common::sha_hex(&content);
    let size = content.len() as u64;
    // Not there yet; nothing received.
    let url = format!("{base}/publish/v1/objects/{sha}");
    let hfile = work.join("headers");
    let h = hfile.to_str().unwrap();
    let head = up.req(&["-D", h, &url]).await;
    assert_eq!(head.0, 404, "{head:?}");
    let hdrs = fs::read_to_string(&hfile).unwrap().to_lowercase();
    assert!(hdrs.contains("x-upload-offset: 0"), "{hdrs}");

    // First part (an interrupted upload), then the rest from the offset the stager reports.
    let cut = 1_000_000usize;
    fs::write(work.join("first"), &content[..cut]).unwrap();
    fs::write(work.join("rest"), &content[cut..]).unwrap();
    assert_eq!(up.put(&sha, 0, size, &work.join("first")).await.0, 202);
    let (code, body) = up.req(&["-D", h, &url]).await;
    assert_eq!(code, 404, "{body}");
    let hdrs = fs::read_to_string(&hfile).unwrap().to_lowercase();
    assert!(hdrs.contains(&format!("x-upload-offset: {cut}")), "{hdrs}");
    // A wrong offset is refused and says where to resume.
    let (code, body) = up.put(&sha, 5, size, &work.join("rest")).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = up.put(&sha, cut as u64, size, &work.join("rest")).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(up.req(&[&url]).await.0, 200, "present now");
    let obj = r.stager.repository().object_path(&sha).unwrap();
    assert_eq!(fs::read(&obj).unwrap(), content);

    // A corrupted upload (bytes that do not hash to the name) is refused and discarded.
    let bad = crate::common::pattern(1000, 7);
    fs::write(work.join("bad"), &bad).unwrap();
    let claimed = crate::common::sha_hex(b"something else");
    let (code, body) = up.put(&claimed, 0, 1000, &work.join("bad")).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        !r.stager
            .repository()
            .object_path(&claimed)
            .unwrap()
            .exists()
    );

    // Commit: a missing object is refused; then the release appears, signed or not.
    let missing =
        format!(r#"{{"notes":"n","files":[{{"name":"a.bin","size":1000,"sha256":"{claimed}"}}]}}"#);
    assert_eq!(up.commit("tool", "5.0", &missing).await.0, 422);
    let good = format!(
        r#"{{"notes":"from CI","files":[{{"name":"bin/big.bin","size":{size},"sha256":"{sha}"}}]}}"#
    );
    // A token limited to another product is refused.
    let other = Up {
        base: base.clone(),
        token: store.create("other", &["other".into()]).unwrap(),
    };
    assert_eq!(other.commit("tool", "5.0", &good).await.0, 403);
    let (code, body) = Up {
        base: base.clone(),
        token: only_tool.clone(),
    }
    .commit("tool", "5.0", &good)
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        up.commit("tool", "5.0", &good).await.0,
        409,
        "releases are immutable"
    );
    let m = r.stager.repository().manifest("tool", "5.0").unwrap();
    assert_eq!(m.published_by, "token tool-only");
    assert_eq!(m.notes, "from CI");
    let area = r
        .stager
        .stage(&commlink::msg::stager::StageRequest {
            product: "tool".into(),
            version: "5.0".into(),
            label: "c".into(),
            ..Default::default()
        })
        .unwrap();
    let staged = r.stager.areas_dir().join(&area.area_id).join("bin/big.bin");
    assert_eq!(crate::common::sha_hex(&fs::read(staged).unwrap()), sha);

    // The README's curl recipe, as printed (with this stager, token and file; -k for the
    // self-signed test certificate).
    let readme = include_str!("../../../README.md");
    let start = readme.find("T=ffspt_...").expect("recipe in README");
    let recipe = &readme[start..start + readme[start..].find("```").unwrap()];
    let f = work.join("tool-2.2.tar.gz");
    fs::write(&f, crate::common::pattern(200_000, 3)).unwrap();
    let script = recipe
        .replacen("T=ffspt_...", &format!("T={only_tool}"), 1)
        .replacen("S=https://files.example.com:8444", &format!("S={base}"), 1)
        .replace("curl -fsS", "curl -k -fsS");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = r.stager.repository().manifest("tool", "2.2").unwrap();
    assert_eq!(m.files[0].name, "tool-2.2.tar.gz");
    assert_eq!(
        m.files[0].sha256,
        crate::common::sha_hex(&fs::read(&f).unwrap())
    );

    // No token, a made-up token, a revoked token: 401.
    assert_eq!(crate::common::curl(&[&url]).await.0, 401);
    let fake = Up {
        base: base.clone(),
        token: "ffspt_00".into(),
    };
    assert_eq!(fake.req(&[&url]).await.0, 401);
    assert!(store.revoke("ci").unwrap());
    assert_eq!(up.req(&[&url]).await.0, 401);
    assert_eq!(up.commit("tool", "6.0", &good).await.0, 401);
    r.stop().await;
}

/// The offset the stager reports for an object it does not hold yet.
async fn offset_of(up: &Up, sha: &str, hfile: &std::path::Path) -> u64 {
    let url = format!("{}/publish/v1/objects/{sha}", up.base);
    let (code, body) = up.req(&["-D", hfile.to_str().unwrap(), &url]).await;
    assert_eq!(code, 404, "{body}");
    let hdrs = fs::read_to_string(hfile).unwrap().to_lowercase();
    hdrs.lines()
        .find_map(|l| l.strip_prefix("x-upload-offset:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no X-Upload-Offset in {hdrs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_size_cap_uploads_per_token_and_abandoned_age_come_from_the_config() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let (dir, mut cfg) = crate::common::make_repo();
    cfg.publish_max_object_bytes = 4 << 20;
    cfg.publish_uploads_per_token = 1;
    cfg.publish_abandoned_after_secs = 0;
    let r = crate::common::start_with(dir, cfg, None).await;
    let store = TokenStore::new(&r.cfg.state_dir);
    let base = format!("https://{}", r.https);
    let ci = Up {
        base: base.clone(),
        token: store.create("ci", &[]).unwrap(),
    };
    let other = Up {
        base: base.clone(),
        token: store.create("other", &[]).unwrap(),
    };
    let work = r.dir.path().join("upload");
    fs::create_dir_all(&work).unwrap();
    let hfile = work.join("headers");

    // Over the cap: refused before any byte is stored.
    let big = crate::common::pattern((4 << 20) + 1, 9);
    fs::write(work.join("big"), &big).unwrap();
    let big_sha = crate::common::sha_hex(&big);
    let (code, body) = ci
        .put(&big_sha, 0, big.len() as u64, &work.join("big"))
        .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(offset_of(&ci, &big_sha, &hfile).await, 0);

    // One upload of "ci" in progress: curl streams stdin, which the test feeds in halves.
    let slow = crate::common::pattern(3 << 20, 10);
    let slow_sha = crate::common::sha_hex(&slow);
    let url = format!(
        "{base}/publish/v1/objects/{slow_sha}?offset=0&size={}",
        slow.len()
    );
    let mut child = std::process::Command::new("curl")
        .args([
            "-k",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
            "-",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", ci.token), &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let first = slow[..2 << 20].to_vec();
    let mut stdin = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        stdin.write_all(&first).unwrap();
        stdin.flush().unwrap();
        stdin
    })
    .await
    .unwrap();
    // The stager writes what arrives in 1 MiB pieces: wait until it has some.
    let mut polls = 0;
    while offset_of(&ci, &slow_sha, &hfile).await < 1 << 20 {
        polls += 1;
        assert!(polls < 2000, "the held upload never reached the stager");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A second upload with the same token is turned away (429, Retry-After); another
    // token is not limited by it.
    let small = crate::common::pattern(1000, 11);
    fs::write(work.join("small"), &small).unwrap();
    let small_sha = crate::common::sha_hex(&small);
    let (code, body) = ci
        .req(&[
            "-D",
            hfile.to_str().unwrap(),
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", work.join("small").display()),
            &format!("{base}/publish/v1/objects/{small_sha}?offset=0&size=1000"),
        ])
        .await;
    assert_eq!(code, 429, "{body}");
    let hdrs = fs::read_to_string(&hfile).unwrap().to_lowercase();
    assert!(hdrs.contains("retry-after:"), "{hdrs}");
    assert_eq!(
        offset_of(&ci, &small_sha, &hfile).await,
        0,
        "nothing stored"
    );
    let (code, body) = other.put(&small_sha, 0, 1000, &work.join("small")).await;
    assert_eq!(code, 201, "{body}");

    // The held upload finishes; its slot is free again.
    let rest = slow[2 << 20..].to_vec();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        stdin.write_all(&rest).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    let obj = r.stager.repository().object_path(&slow_sha).unwrap();
    assert_eq!(crate::common::sha_hex(&fs::read(&obj).unwrap()), slow_sha);
    let more = crate::common::pattern(2000, 12);
    fs::write(work.join("more"), &more).unwrap();
    let (code, body) = ci
        .put(&crate::common::sha_hex(&more), 0, 1000, &work.join("more"))
        .await;
    assert_eq!(code, 400, "more bytes than announced: {body}");
    let part = r
        .stager
        .repository()
        .root()
        .join("uploads")
        .join(format!("{}.part", crate::common::sha_hex(&more)));
    assert!(part.exists(), "a partial upload is kept for resuming");

    // publish_abandoned_after_secs = 0: the stager's sweeper removes it.
    r.stager.sweep().unwrap();
    assert!(
        !part.exists(),
        "the sweeper removes abandoned partial uploads"
    );
    r.stop().await;
}

#[test]
fn abandoned_partial_uploads_are_removed_and_live_ones_kept() {
    let (dir, cfg) = crate::common::make_repo();
    let repo = ftp_stager::Repository::open(&cfg.repository).unwrap();
    let uploads = repo.root().join("uploads");
    fs::create_dir_all(&uploads).unwrap();
    let old = uploads.join(format!("{}.part", "ab".repeat(32)));
    fs::write(&old, b"half").unwrap();
    // Nothing is that old yet with a one-hour limit; with a zero limit it goes.
    assert_eq!(
        ftp_stager::upload::remove_abandoned(&repo, std::time::Duration::from_secs(3600)),
        0
    );
    assert!(old.exists());
    // One being written (locked) stays even when stale.
    let busy = uploads.join(format!("{}.part", "cd".repeat(32)));
    fs::write(&busy, b"busy").unwrap();
    let _held = nix::fcntl::Flock::lock(
        fs::File::open(&busy).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap();
    assert_eq!(
        ftp_stager::upload::remove_abandoned(&repo, std::time::Duration::ZERO),
        1
    );
    assert!(!old.exists() && busy.exists());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_runs_at_most_four_uploads_at_once() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let r = crate::common::start().await;
    let store = TokenStore::new(&r.cfg.state_dir);
    let token = store.create("ci", &[]).unwrap();
    let base = format!("https://{}", r.https);
    let work = r.dir.path().join("slow");
    fs::create_dir_all(&work).unwrap();
    let uploads = r.stager.repository().root().join("uploads");
    // Four uploads that crawl (curl --limit-rate), each holding a slot.
    let mut slow = Vec::new();
    let mut parts = Vec::new();
    for i in 0..4u8 {
        let body = crate::common::pattern(1 << 20, 100 + i);
        let sha = crate::common::sha_hex(&body);
        let f = work.join(format!("s{i}"));
        fs::write(&f, &body).unwrap();
        parts.push(uploads.join(format!("{sha}.part")));
        slow.push(
            std::process::Command::new("curl")
                .args([
                    "-k",
                    "-s",
                    "-o",
                    "/dev/null",
                    "--limit-rate",
                    "4k",
                    "-X",
                    "PUT",
                ])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .args(["--data-binary", &format!("@{}", f.display())])
                .arg(format!(
                    "{base}/publish/v1/objects/{sha}?offset=0&size={}",
                    body.len()
                ))
                .spawn()
                .unwrap(),
        );
    }
    // They are running once the stager has opened their upload files.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !parts.iter().all(|p| p.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow uploads never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let body = crate::common::pattern(1000, 1);
    let sha = crate::common::sha_hex(&body);
    fs::write(work.join("fifth"), &body).unwrap();
    let up = Up {
        base: base.clone(),
        token: token.clone(),
    };
    let (code, text) = up.put(&sha, 0, 1000, &work.join("fifth")).await;
    assert_eq!(code, 429, "{text}");
    // Another token is not affected.
    let other = Up {
        base,
        token: store.create("other", &[]).unwrap(),
    };
    assert_eq!(
        other
            .req(&[&format!("{}/publish/v1/objects/{sha}", other.base)])
            .await
            .0,
        404
    );
    for mut c in slow {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Once the stager notices the closed connections the slots are free again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, text) = up.put(&sha, 0, 1000, &work.join("fifth")).await;
        if code == 201 {
            break;
        }
        assert_eq!(code, 429, "{text}");
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    r.stop().await;
}

/// `/publish/v1/uploads/ID`: an upload named by the client before it knows the hash. The
/// bytes arrive in two requests (the second continues the hash the first left), the
/// complete upload waits for its declared SHA-256, a wrong declaration is refused and the
/// upload discarded, a right one becomes the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_named_by_the_client_becomes_an_object_only_with_its_true_hash() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let r = crate::common::start().await;
    let token = TokenStore::new(&r.cfg.state_dir).create("ci", &[]).unwrap();
    let up = Up {
        base: format!("https://{}", r.https),
        token,
    };
    let work = r.dir.path().join("upload");
    fs::create_dir_all(&work).unwrap();
    let content = crate::common::pattern(3 * 1024 * 1024 + 11, 77);
    let sha = crate::common::sha_hex(&content);
    let size = content.len();
    let cut = 1024 * 1024 + 5;
    fs::write(work.join("head"), &content[..cut]).unwrap();
    fs::write(work.join("tail"), &content[cut..]).unwrap();
    fs::write(work.join("all"), &content).unwrap();
    fs::write(work.join("empty"), b"").unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let (up, work) = (&up, &work);
    let put = |offset: usize, file: &str, declare: &str| {
        let url = format!(
            "{}/publish/v1/uploads/{id}?offset={offset}&size={size}{declare}",
            up.base
        );
        let data = format!("@{}", work.join(file).display());
        async move {
            up.req(&[
                "-X",
                "PUT",
                "--data-binary",
                &data,
                "-H",
                "Content-Type: application/octet-stream",
                &url,
            ])
            .await
        }
    };
    let (code, _) = up
        .req(&[&format!("{}/publish/v1/uploads/not-hex", up.base)])
        .await;
    assert_eq!(code, 400);

    assert_eq!(put(0, "head", "").await.0, 202);
    // Complete, but no hash declared yet: still an upload, not an object.
    let (code, body) = put(cut, "tail", "").await;
    assert_eq!(code, 202, "{body}");
    let obj = r.stager.repository().object_path(&sha).unwrap();
    assert!(!obj.exists());
    // A wrong declaration: refused, the upload discarded.
    let wrong = crate::common::sha_hex(b"something else");
    let (code, body) = put(size, "empty", &format!("&sha256={wrong}")).await;
    assert_eq!(code, 422, "{body}");
    assert!(!r.stager.repository().object_path(&wrong).unwrap().exists());
    let hfile = work.join("h");
    let url = format!("{}/publish/v1/uploads/{id}", up.base);
    let (code, _) = up.req(&["-D", hfile.to_str().unwrap(), &url]).await;
    assert_eq!(code, 200);
    let headers = fs::read_to_string(&hfile).unwrap().to_lowercase();
    assert!(headers.contains("x-upload-offset: 0"), "{headers}");
    // Again, and declared: stored under its hash, the same bytes.
    assert_eq!(put(0, "head", "").await.0, 202);
    assert_eq!(put(cut, "tail", "").await.0, 202);
    let (code, body) = put(size, "empty", &format!("&sha256={sha}")).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(fs::read(&obj).unwrap(), content);
    // The hash may also come with the bytes.
    let content2 = crate::common::pattern(200_000, 78);
    fs::write(work.join("all"), &content2).unwrap();
    let sha2 = crate::common::sha_hex(&content2);
    let url = format!(
        "{}/publish/v1/uploads/fedcba9876543210fedcba9876543210?offset=0&size={}&sha256={sha2}",
        up.base,
        content2.len()
    );
    let data = format!("@{}", work.join("all").display());
    let (code, body) = up.req(&["-X", "PUT", "--data-binary", &data, &url]).await;
    assert_eq!(code, 201, "{body}");
    assert!(r.stager.repository().object_path(&sha2).unwrap().exists());
    r.stop().await;
}
