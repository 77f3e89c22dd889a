//! `ffs publish --remote`: the real binary publishing to a stager over HTTPS with a publish
//! token, from a directory with no ffs.toml (a build machine). Only missing objects are
//! sent, an interrupted upload resumes where it stopped, and a revoked token is refused.
//! `--pin` trusts only the stager certificate with that fingerprint; a publish whose token
//! has no free upload slot (429) waits instead of failing.

use std::path::Path;

use crate::support::ffs;

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

async fn publish(dir: &Path, args: Vec<String>) -> (bool, serde_json::Value, String) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ffs(&dir, &a, None);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
        (out.status.success(), json, text)
    })
    .await
    .unwrap()
}

/// A stager in this process, with a signing key, serving HTTPS on a loopback port.
struct TestStager {
    tmp: tempfile::TempDir,
    cfg: ftp_stager::StagerConfig,
    https: std::net::SocketAddr,
    stager: std::sync::Arc<ftp_stager::Stager>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ftp_stager::error::Result<()>>,
}

impl TestStager {
    async fn start() -> TestStager {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut ftp_stager::StagerConfig)) -> TestStager {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let key = root.join("stager/ffs.key");
        std::fs::create_dir_all(root.join("stager")).unwrap();
        // The stager's key is passphrase-protected, opened with the passphrase file.
        let pass = root.join("stager/key-pass");
        commlink::secret_file::write_new_private(&pass, b"stager key pass\n").unwrap();
        let p = ftp_stager::signing::Passphrase::read_file(&pass).unwrap();
        ftp_stager::signing::generate_with(&key, &root.join("ffs.pub"), Some(&p)).unwrap();
        let cfg = ftp_stager::StagerConfig {
            repository: root.join("stager/repository"),
            areas_dir: root.join("stager/areas"),
            state_dir: root.join("stager/state"),
            passive_ports: "47300-47399".into(),
            ftps: false,
            signing_key: key,
            signing_key_passphrase_file: pass,
            ..Default::default()
        };
        let mut cfg = cfg;
        tweak(&mut cfg);
        let listeners = ftp_stager::server::Listeners::loopback(false)
            .await
            .unwrap();
        let https = listeners.addrs().2.unwrap();
        let server = ftp_stager::server::StagerServer::new(&cfg).unwrap();
        let stager = server.stager().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(None, listeners, async {
            let _ = stopped.await;
        }));
        TestStager {
            tmp,
            cfg,
            https,
            stager,
            stop,
            task,
        }
    }

    /// `ffs publish --remote … --json` arguments for a token file in `build`.
    fn args(&self, version: &str, dir: &str) -> Vec<String> {
        vec![
            "publish".to_string(),
            "--remote".into(),
            format!("https://127.0.0.1:{}", self.https.port()),
            "--token-file".into(),
            "token".into(),
            "--ca-cert".into(),
            self.cfg
                .state_dir
                .join("tls-cert.pem")
                .display()
                .to_string(),
            "--json".into(),
            "tool".into(),
            version.into(),
            dir.into(),
        ]
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_publish_sends_only_missing_bytes_resumes_and_is_signed_by_the_stager() {
    let st = TestStager::start().await;
    let (root, cfg, stager) = (st.tmp.path(), &st.cfg, st.stager.clone());
    let store = ftp_stager::tokens::TokenStore::new(&cfg.state_dir);
    let token = store.create("ci", &["tool".into()]).unwrap();
    let build = root.join("build");
    std::fs::create_dir_all(&build).unwrap();
    commlink::secret_file::write_new_private(&build.join("token"), token.as_bytes()).unwrap();
    let args = |v: &str, d: &str| st.args(v, d);

    // 1.0: everything is new.
    let (a, shared) = (pattern(3 << 20, 1), pattern(2 << 20, 2));
    std::fs::create_dir_all(build.join("r1/lib")).unwrap();
    std::fs::write(build.join("r1/a.bin"), &a).unwrap();
    std::fs::write(build.join("r1/lib/shared.bin"), &shared).unwrap();
    let (ok, j, text) = publish(&build, args("1.0", "r1")).await;
    assert!(ok, "{text}");
    assert_eq!(j["bytes_sent"], (a.len() + shared.len()) as u64, "{j}");
    assert_eq!(j["objects_present"], 0);
    let key_id = j["signed_by"].as_str().unwrap().to_owned();
    assert_eq!(key_id.len(), 16, "signed by the stager's key: {j}");
    let m = stager.repository().manifest("tool", "1.0").unwrap();
    assert_eq!(m.published_by, "token ci");
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.signed_by(), key_id);

    // 2.0 shares lib/shared.bin: only the new file travels.
    let b = pattern(1 << 20, 3);
    std::fs::create_dir_all(build.join("r2/lib")).unwrap();
    std::fs::write(build.join("r2/b.bin"), &b).unwrap();
    std::fs::write(build.join("r2/lib/shared.bin"), &shared).unwrap();
    let (ok, j, text) = publish(&build, args("2.0", "r2")).await;
    assert!(ok, "{text}");
    assert_eq!(j["bytes_sent"], b.len() as u64, "{j}");
    assert_eq!(j["objects_present"], 1);

    // 3.0 after an interrupted upload: the stager holds the first 1.5 MiB of c.bin.
    let c = pattern(4 << 20, 4);
    let cut = 3 << 19;
    let uploads = cfg.repository.join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join(format!("{}.part", sha(&c))), &c[..cut]).unwrap();
    std::fs::create_dir_all(build.join("r3")).unwrap();
    std::fs::write(build.join("r3/c.bin"), &c).unwrap();
    let (ok, j, text) = publish(&build, args("3.0", "r3")).await;
    assert!(ok, "{text}");
    assert_eq!(
        j["bytes_sent"],
        (c.len() - cut) as u64,
        "only the missing bytes: {j}"
    );
    let obj = stager.repository().object_path(&sha(&c)).unwrap();
    assert_eq!(sha(&std::fs::read(obj).unwrap()), sha(&c));

    // Releases are immutable; a revoked token is refused.
    let (ok, _, text) = publish(&build, args("3.0", "r3")).await;
    assert!(!ok && text.contains("409"), "{text}");
    store.revoke("ci").unwrap();
    let (ok, _, text) = publish(&build, args("4.0", "r3")).await;
    assert!(!ok && text.contains("refused the token"), "{text}");
    assert!(stager.repository().manifest("tool", "4.0").is_err());

    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_publish_killed_halfway_resumes_sending_only_what_was_missing() {
    let st = TestStager::start().await;
    let store = ftp_stager::tokens::TokenStore::new(&st.cfg.state_dir);
    let token = store.create("ci", &[]).unwrap();
    let build = st.tmp.path().join("build");
    std::fs::create_dir_all(build.join("big")).unwrap();
    commlink::secret_file::write_new_private(&build.join("token"), token.as_bytes()).unwrap();
    // 1 GiB: a 1 MiB pattern with each MiB stamped with its index (all of it distinct).
    let file = build.join("big/image.iso");
    let size: u64 = 1 << 30;
    {
        use std::io::Write as _;
        let block = pattern(1 << 20, 9);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut b = block.clone();
        for i in 0..(size >> 20) as u32 {
            b[..4].copy_from_slice(&i.to_le_bytes());
            f.write_all(&b).unwrap();
        }
        f.flush().unwrap();
    }
    let want = {
        use sha2::Digest as _;
        use std::io::Read as _;
        let mut h = sha2::Sha256::new();
        let mut f = std::fs::File::open(&file).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex::encode(h.finalize())
    };
    // A file this large is hashed while it is sent, so its partial upload is named by the
    // client's upload id (`uploads/u-ID.part`), not by its hash.
    let uploads = st.cfg.repository.join("uploads");
    let part_now = || {
        std::fs::read_dir(&uploads).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "part"))
        })
    };

    // Start, and kill the client once the stager holds at least 300 MiB.
    let mut child = std::process::Command::new(crate::support::ffs_bin())
        .args(st.args("1.0", "big"))
        .current_dir(&build)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let part = loop {
        let part = part_now();
        let have = part
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if have >= 300 << 20 {
            break part.unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the publish ended before it could be interrupted"
        );
        assert!(std::time::Instant::now() < deadline, "no upload progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        part.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("u-"),
        "{part:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The stager keeps what arrived (it notices the broken stream and syncs the file).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let kept = loop {
        let kept = std::fs::metadata(&part).map_or(0, |m| m.len());
        let free = std::fs::File::open(&part).ok().is_some_and(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
        });
        if free {
            break kept;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(kept >= 300 << 20 && kept < size, "{kept}");
    assert!(
        st.stager.repository().manifest("tool", "1.0").is_err(),
        "nothing visible yet"
    );

    // Rerun: only the missing bytes travel.
    let (ok, j, text) = publish(&build, st.args("1.0", "big")).await;
    assert!(ok, "{text}");
    assert_eq!(j["bytes_sent"], size - kept, "{j}");
    let m = st.stager.repository().manifest("tool", "1.0").unwrap();
    assert_eq!(m.files[0].sha256, want);
    assert_eq!(m.files[0].size, size);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_stager_certificate_is_trusted_and_a_wrong_pin_is_refused() {
    let st = TestStager::start().await;
    let store = ftp_stager::tokens::TokenStore::new(&st.cfg.state_dir);
    let token = store.create("ci", &[]).unwrap();
    let build = st.tmp.path().join("build");
    std::fs::create_dir_all(build.join("r")).unwrap();
    commlink::secret_file::write_new_private(&build.join("token"), token.as_bytes()).unwrap();
    let data = pattern(100_000, 5);
    std::fs::write(build.join("r/tool.tar.gz"), &data).unwrap();
    // The fingerprint the stager logs (tls_sha256): SHA-256 of its certificate, AB:CD:…
    let pem = std::fs::read(st.cfg.state_dir.join("tls-cert.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let fingerprint = commlink::tls::fingerprint(&der);
    let pinned = |v: &str, pin: &str| {
        let mut a = st.args(v, "r");
        let i = a.iter().position(|x| x == "--ca-cert").unwrap();
        a.splice(i..i + 2, ["--pin".to_string(), pin.to_string()]);
        a
    };

    // A wrong pin: the handshake fails, nothing is published.
    let wrong = "00".repeat(32);
    let (ok, _, text) = publish(&build, pinned("1.0", &wrong)).await;
    assert!(!ok, "{text}");
    assert!(text.contains("pinned"), "{text}");
    assert!(st.stager.repository().manifest("tool", "1.0").is_err());

    // The right pin (colon form, as logged), with no CA file at all.
    let (ok, j, text) = publish(&build, pinned("1.0", &fingerprint)).await;
    assert!(ok, "{text}");
    assert_eq!(j["bytes_sent"], data.len() as u64, "{j}");
    let m = st.stager.repository().manifest("tool", "1.0").unwrap();
    assert_eq!(m.files[0].sha256, sha(&data));
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waits_while_the_tokens_upload_slots_are_taken() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let st = TestStager::start_with(|c| c.publish_uploads_per_token = 1).await;
    let store = ftp_stager::tokens::TokenStore::new(&st.cfg.state_dir);
    let token = store.create("ci", &[]).unwrap();
    let build = st.tmp.path().join("build");
    std::fs::create_dir_all(build.join("r")).unwrap();
    commlink::secret_file::write_new_private(&build.join("token"), token.as_bytes()).unwrap();
    let data = pattern(300_000, 6);
    std::fs::write(build.join("r/tool.bin"), &data).unwrap();

    // Another pipeline with the same token holds its only slot: curl streaming stdin.
    let held = pattern(2 << 20, 7);
    let held_sha = sha(&held);
    let mut curl = std::process::Command::new("curl")
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
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "https://127.0.0.1:{}/publish/v1/objects/{held_sha}?offset=0&size={}",
            st.https.port(),
            held.len()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut feed = curl.stdin.take().unwrap();
    let first = held[..1 << 16].to_vec();
    let mut feed = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        feed.write_all(&first).unwrap();
        feed.flush().unwrap();
        feed
    })
    .await
    .unwrap();
    // The stager opens the upload file once the request holds the slot.
    let part = st
        .cfg
        .repository
        .join("uploads")
        .join(format!("{held_sha}.part"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !part.exists() {
        assert!(std::time::Instant::now() < deadline, "curl never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // ffs publish is told 429 and says it waits, instead of failing.
    let mut child = std::process::Command::new(crate::support::ffs_bin())
        .args(st.args("1.0", "r"))
        .current_dir(&build)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (stderr, said) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut r = std::io::BufReader::new(stderr);
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                return (r, all);
            }
            all.push_str(&line);
            if line.contains("busy") {
                return (r, all);
            }
        }
    })
    .await
    .unwrap();
    assert!(said.contains("busy"), "{said}");
    assert!(
        st.stager.repository().manifest("tool", "1.0").is_err(),
        "nothing published while waiting"
    );

    // The other upload ends; the waiting publish goes through.
    let rest = held[1 << 16..].to_vec();
    let code = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        feed.write_all(&rest).unwrap();
        drop(feed);
        curl.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "201");
    let (out, said) = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let (mut stderr, mut said) = (stderr, said);
        stderr.read_to_string(&mut said).unwrap();
        (child.wait_with_output().unwrap(), said)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{said}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bytes_sent"], data.len() as u64, "{j}");
    let m = st.stager.repository().manifest("tool", "1.0").unwrap();
    assert_eq!(m.files[0].sha256, sha(&data));
    st.stop().await;
}

/// A file of 64 MiB or more is hashed while it is sent (`/publish/v1/uploads/ID`, the hash
/// declared last and checked by the stager); a release sharing it finds the object there
/// once the hash is known and does not finish sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_hashed_while_sent_and_a_shared_one_is_not_stored_twice() {
    let st = TestStager::start().await;
    let store = ftp_stager::tokens::TokenStore::new(&st.cfg.state_dir);
    let token = store.create("ci", &[]).unwrap();
    let build = st.tmp.path().join("build");
    std::fs::create_dir_all(build.join("r1")).unwrap();
    std::fs::create_dir_all(build.join("r2")).unwrap();
    commlink::secret_file::write_new_private(&build.join("token"), token.as_bytes()).unwrap();
    let big = pattern((64 << 20) + 3, 21);
    std::fs::write(build.join("r1/big.img"), &big).unwrap();
    std::fs::write(build.join("r2/big.img"), &big).unwrap();
    std::fs::write(build.join("r2/notes.txt"), b"2.0\n").unwrap();

    let (ok, j, text) = publish(&build, st.args("1.0", "r1")).await;
    assert!(ok, "{text}");
    assert_eq!(j["bytes_sent"], big.len() as u64, "{j}");
    let m = st.stager.repository().manifest("tool", "1.0").unwrap();
    assert_eq!(
        m.files[0].sha256,
        sha(&big),
        "declared hash checked and kept"
    );
    let obj = st.stager.repository().object_path(&sha(&big)).unwrap();
    assert_eq!(sha(&std::fs::read(&obj).unwrap()), sha(&big));

    let (ok, j, text) = publish(&build, st.args("2.0", "r2")).await;
    assert!(ok, "{text}");
    assert_eq!(j["objects_present"], 1, "{j}");
    let m = st.stager.repository().manifest("tool", "2.0").unwrap();
    assert!(m.files.iter().any(|f| f.sha256 == sha(&big)), "{m:?}");
    st.stop().await;
}
