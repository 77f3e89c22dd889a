//! Replication between real stagers on loopback over real TLS (the follower trusts the
//! source by its certificate's SHA-256, as `[stager] replicate_pin` says): a release
//! published on the source becomes stageable on the follower only once every object and
//! then its manifest arrived, signatures and keys included; an object already present is
//! not fetched again (the source's own counters show it); a yank propagates; a follower
//! that was down catches up; an object corrupted in transit (by a TLS-terminating proxy in
//! the middle) or on the source's disk is refused and fetched again, never staged; an
//! altered object on the follower's disk is found by `verify` and repaired; wrong tokens
//! are refused.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use commlink::msg::stager::StageRequest;
use ftp_stager::http_client::{HttpsClient, Trust};
use ftp_stager::replicate_follow::{FollowError, Follower};
use ftp_stager::signing::{self, Signer};
use ftp_stager::tokens::TokenStore;
use ftp_stager::{Repository, Stager, StagerConfig};

use crate::common::{Running, curl, pattern, sha_hex};

const WAIT: Duration = Duration::from_secs(60);

/// A source stager: tool 1.0 (from `make_repo`, unsigned) and tool 1.1 (signed, sharing
/// big.bin with 1.0 and adding new.txt), running; plus the replication token it issued.
struct Source {
    run: Running,
    token: String,
    pin: String,
    signer: Signer,
}

impl Source {
    async fn start() -> Source {
        let (dir, mut cfg) = crate::common::make_repo();
        let sk = dir.path().join("ffs.key");
        signing::generate(&sk, &dir.path().join("ffs.pub")).unwrap();
        cfg.signing_key = sk.clone();
        let signer = Signer::load(&sk).unwrap();
        let src = dir.path().join("src11");
        fs::create_dir_all(&src).unwrap();
        fs::copy(dir.path().join("src/big.bin"), src.join("big.bin")).unwrap();
        fs::write(src.join("new.txt"), b"new in 1.1\n").unwrap();
        let repo = Repository::open(&cfg.repository).unwrap();
        ftp_stager::publish_signed(
            &repo,
            "tool",
            "1.1",
            &[src],
            "",
            &commlink::progress::Silent,
            Some(&signer),
        )
        .unwrap();
        let token = TokenStore::replication(&cfg.state_dir)
            .create("follower", &[])
            .unwrap();
        let pin = ftp_stager::tls::load_or_generate(&cfg).unwrap().fingerprint;
        let run = crate::common::start_with(dir, cfg, None).await;
        Source {
            run,
            token,
            pin,
            signer,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.run.https)
    }

    fn repo(&self) -> &Repository {
        self.run.stager.repository()
    }

    /// Publishes `version` (signed) with one file of its own.
    fn publish(&self, version: &str, content: &[u8]) {
        let src = self.run.dir.path().join(format!("src-{version}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join(format!("tool-{version}.bin")), content).unwrap();
        ftp_stager::publish_signed(
            self.repo(),
            "tool",
            version,
            &[src],
            "",
            &commlink::progress::Silent,
            Some(&self.signer),
        )
        .unwrap();
    }

    /// The source's replication counters, read over HTTPS like any follower would.
    async fn stats(&self) -> serde_json::Value {
        let auth = format!("Authorization: Bearer {}", self.token);
        let url = format!("{}/replicate/v1/stats", self.url());
        let (code, body) = curl(&["-H", &auth, &url]).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    async fn objects_served(&self) -> u64 {
        self.stats().await["objects_served"].as_u64().unwrap()
    }

    /// A follower of this source (in this process, rounds run by the test).
    fn follower(&self, repo: &Repository, token: &str) -> Follower {
        let pin = ftp_stager::http_client::parse_pin(&self.pin).unwrap();
        let client = HttpsClient::new(&self.url(), Trust::Pin(pin))
            .unwrap()
            .with_bearer(token)
            .unwrap();
        Follower::new(repo.clone(), client, &self.url())
    }
}

/// A follower stager's configuration: its own directories, following `src` every second.
fn follower_config(root: &Path, src: &Source) -> StagerConfig {
    let mut cfg = crate::common::test_config(root);
    let token_file = root.join("replication.token");
    commlink::secret_file::write_new_private(&token_file, src.token.as_bytes()).unwrap();
    cfg.replicate_from = src.url();
    cfg.replicate_token_file = token_file;
    cfg.replicate_pin = src.pin.clone();
    cfg.replicate_interval_secs = 1;
    cfg
}

async fn start_follower(src: &Source) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let cfg = follower_config(dir.path(), src);
    crate::common::start_with(dir, cfg, None).await
}

fn stage(stager: &Stager, version: &str) -> Result<commlink::msg::stager::StagedArea, String> {
    stager
        .stage(&StageRequest {
            product: "tool".into(),
            version: version.into(),
            files: vec![],
            label: "replication test".into(),
            ttl_secs: None,
        })
        .map_err(|e| e.to_string())
}

fn holds(repo: &Repository, version: &str) -> bool {
    repo.manifest("tool", version).is_ok_and(|m| !m.yanked)
}

/// Flips a byte of a read-only object in place (the size stays the same); returns the
/// original bytes.
fn corrupt(p: &Path) -> Vec<u8> {
    let orig = fs::read(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    let mut b = orig.clone();
    let i = b.len() / 2;
    b[i] ^= 0x55;
    fs::write(p, &b).unwrap();
    orig
}

fn restore(p: &Path, orig: &[u8]) {
    fs::write(p, orig).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o444)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_reach_the_follower_whole_signed_deduplicated_and_yanks_follow() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let src = Source::start().await;
    let b = start_follower(&src).await;
    let brepo = b.stager.repository().clone();
    assert!(
        ffs_testkit::wait::until(WAIT, || holds(&brepo, "1.0") && holds(&brepo, "1.1")).await,
        "the follower did not get tool 1.0 and 1.1"
    );
    // Every object of both releases, byte for byte, read-only; the manifests identical.
    for v in ["1.0", "1.1"] {
        let m = src.repo().manifest("tool", v).unwrap();
        assert_eq!(brepo.manifest("tool", v).unwrap(), m);
        for f in m.with_signature_files(m.files.clone()) {
            let p = brepo.object_path(&f.sha256).unwrap();
            assert_eq!(sha_hex(&fs::read(&p).unwrap()), f.sha256, "{}", f.name);
            let mode = fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "{}", f.name);
        }
    }
    // 1.0: big.bin, readme, "with space"; 1.1: new.txt, SHA256SUMS, its signature
    // (big.bin is shared, so it was sent once).
    assert_eq!(src.objects_served().await, 6);
    // The follower shows what it follows and fetched on its own stats page.
    let own = TokenStore::replication(&b.cfg.state_dir)
        .create("ops", &[])
        .unwrap();
    let auth = format!("Authorization: Bearer {own}");
    let (code, body) = curl(&[
        "-H",
        &auth,
        &format!("https://{}/replicate/v1/stats", b.https),
    ])
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let following = &v["following"];
    assert_eq!(following["source"], src.url().as_str(), "{v}");
    assert_eq!(following["objects_fetched"], 6, "{v}");
    assert!(following["last_round_unix"].as_u64().unwrap() > 0, "{v}");
    let (_, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", src.token),
        &format!("{}/replicate/v1/stats", src.url()),
    ])
    .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v.get("following").is_none(),
        "the source follows nobody: {v}"
    );

    // Stageable on the follower and downloadable from it; the signature came along, and
    // the follower's own verify checks it with the key that came with the listing.
    let area = stage(&b.stager, "1.1").unwrap();
    let names: Vec<&str> = area.files.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"SHA256SUMS.minisig"), "{names:?}");
    let url = format!("https://{}/d/{}/big.bin", b.https, area.token);
    let (code, body) = curl(&[&url]).await;
    assert_eq!(code, 200);
    assert_eq!(body, pattern(3 * 1024 * 1024 + 17, 1));
    let report =
        ftp_stager::verify::verify(&brepo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(!report.altered(), "{report:?}");
    let r11 = report.releases.iter().find(|r| r.version == "1.1").unwrap();
    assert_eq!(r11.signature_verified, Some(true), "{r11:?}");

    // A new release sharing big.bin: only its own objects travel.
    let before = src.objects_served().await;
    src.publish("1.2", b"only in 1.2\n");
    assert!(ffs_testkit::wait::until(WAIT, || holds(&brepo, "1.2")).await);
    assert_eq!(
        src.objects_served().await - before,
        3,
        "tool-1.2.bin, SHA256SUMS, its signature"
    );
    let before = src.objects_served().await;

    // A yank on the source reaches the follower: no new areas there either.
    src.repo().yank("tool", "1.0").unwrap();
    assert!(
        ffs_testkit::wait::until(WAIT, || brepo
            .manifest("tool", "1.0")
            .is_ok_and(|m| m.yanked))
        .await,
        "the yank did not propagate"
    );
    assert!(stage(&b.stager, "1.0").is_err());
    assert!(stage(&b.stager, "1.1").is_ok());
    assert_eq!(src.objects_served().await, before, "nothing fetched twice");
    b.stop().await;
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_catches_up_when_it_returns() {
    let src = Source::start().await;
    let b = start_follower(&src).await;
    let brepo = b.stager.repository().clone();
    assert!(ffs_testkit::wait::until(WAIT, || holds(&brepo, "1.0") && holds(&brepo, "1.1")).await);
    let (dir, cfg) = b.stop().await;

    // While it is down: a new release and a yank.
    src.publish("2.0", &pattern(1 << 20, 20));
    src.repo().yank("tool", "1.0").unwrap();
    assert!(brepo.manifest("tool", "2.0").is_err());

    let b = crate::common::start_with(dir, cfg, None).await;
    assert!(
        ffs_testkit::wait::until(WAIT, || holds(&brepo, "2.0")
            && brepo.manifest("tool", "1.0").is_ok_and(|m| m.yanked))
        .await,
        "the follower did not catch up"
    );
    stage(&b.stager, "2.0").unwrap();
    b.stop().await;
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_is_refused_and_fetched_again_never_staged() {
    let src = Source::start().await;
    let m = src.repo().manifest("tool", "1.0").unwrap();
    let big = m
        .files
        .iter()
        .find(|f| f.name == "big.bin")
        .unwrap()
        .clone();
    let big_on_a = src.repo().object_path(&big.sha256).unwrap();
    // What the source sends for big.bin is not big.bin any more (same size, one byte off).
    let orig = corrupt(&big_on_a);

    let bdir = tempfile::tempdir().unwrap();
    let bcfg = crate::common::test_config(bdir.path());
    let bstager = Stager::open(&bcfg).unwrap();
    let brepo = bstager.repository().clone();
    let f = src.follower(&brepo, &src.token);
    for attempt in 1..=2 {
        let r = f.round().await.unwrap();
        assert_eq!(r.refused, 1, "attempt {attempt}: {r:?}");
        assert!(r.incomplete.contains(&"tool 1.0".to_owned()), "{r:?}");
        // The refused body is gone, the release is not offered: objects first, the
        // manifest only once all of them are there.
        assert!(!brepo.object_path(&big.sha256).unwrap().exists());
        assert!(brepo.manifest("tool", "1.0").is_err());
        assert!(stage(&bstager, "1.0").is_err());
        let part = brepo.root().join(format!("replicate/{}.part", big.sha256));
        assert!(!part.exists(), "the refused body is not kept");
        // Its other objects did arrive (and are not fetched again on the next attempt).
        for other in m.files.iter().filter(|x| x.name != "big.bin") {
            assert!(brepo.object_path(&other.sha256).unwrap().exists());
        }
    }
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stat(&f.stats().objects_refused), 2);
    // The second round's listing was unchanged: the source answered 304 to its digest.
    assert_eq!(stat(&f.stats().listings_unchanged), 1);
    assert_eq!(src.stats().await["listings_unchanged"], 1);
    // tool 1.1 shares big.bin: it is not offered either (and big.bin was asked for once
    // a round, not once per release that needs it).
    assert!(brepo.manifest("tool", "1.1").is_err());

    // The source's copy is repaired: the next round fetches big.bin (only it) and offers
    // both releases.
    restore(&big_on_a, &orig);
    let before = src.objects_served().await;
    let r = f.round().await.unwrap();
    assert_eq!(r.refused, 0, "{r:?}");
    assert!(
        r.added.contains(&"tool 1.0".to_owned()) && r.added.contains(&"tool 1.1".to_owned()),
        "{r:?}"
    );
    assert_eq!(src.objects_served().await - before, 1, "only big.bin");
    // Still the same listing (a 304), and still acted upon.
    assert_eq!(stat(&f.stats().listings_unchanged), 2);
    assert_eq!(
        fs::read(brepo.object_path(&big.sha256).unwrap()).unwrap(),
        orig
    );
    let area = stage(&bstager, "1.0").unwrap();
    let staged = bcfg.areas_dir.join(&area.area_id).join("big.bin");
    assert_eq!(sha_hex(&fs::read(staged).unwrap()), big.sha256);
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_altered_on_the_followers_disk_is_found_by_verify_and_fetched_again() {
    let src = Source::start().await;
    let bdir = tempfile::tempdir().unwrap();
    let bcfg = crate::common::test_config(bdir.path());
    let bstager = Stager::open(&bcfg).unwrap();
    let brepo = bstager.repository().clone();
    let f = src.follower(&brepo, &src.token);
    let r = f.round().await.unwrap();
    assert_eq!(r.added.len(), 2, "{r:?}");

    let m = brepo.manifest("tool", "1.1").unwrap();
    let new = m.files.iter().find(|x| x.name == "new.txt").unwrap();
    let p = brepo.object_path(&new.sha256).unwrap();
    corrupt(&p);
    let silent = &commlink::progress::Silent;
    let report = ftp_stager::verify::verify(&brepo, &[], false, silent).unwrap();
    assert!(report.altered(), "verify must find the altered object");
    let q = ftp_stager::verify::quarantine(&brepo, &report, Some(&bcfg.areas_dir)).unwrap();
    assert_eq!(q.releases, vec![("tool".to_owned(), "1.1".to_owned())]);
    assert!(stage(&bstager, "1.1").is_err(), "quarantined here");

    // The source's copy is intact: the next round repairs the follower's.
    let r = f.round().await.unwrap();
    assert_eq!(r.added, vec!["tool 1.1".to_owned()], "{r:?}");
    assert_eq!(r.fetched, 1, "only the altered object: {r:?}");
    let report = ftp_stager::verify::verify(&brepo, &[], false, silent).unwrap();
    assert!(!report.altered(), "{report:?}");
    stage(&bstager, "1.1").unwrap();
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let src = Source::start().await;
    let bdir = tempfile::tempdir().unwrap();
    let brepo = Repository::open(&bdir.path().join("repo")).unwrap();

    // A made-up replication token, and a revoked one.
    let wrong = format!(
        "{}{}",
        ftp_stager::tokens::REPLICATION_PREFIX,
        "0".repeat(64)
    );
    let revoked = TokenStore::replication(&src.run.cfg.state_dir)
        .create("old", &[])
        .unwrap();
    TokenStore::replication(&src.run.cfg.state_dir)
        .revoke("old")
        .unwrap();
    for t in [&wrong, &revoked] {
        match src.follower(&brepo, t).round().await {
            Err(FollowError::Status { status: 401, .. }) => {}
            other => panic!("expected 401, got {other:?}"),
        }
    }
    assert!(brepo.catalog(true).unwrap().is_empty());

    // A publish token is not a replication token, nor the other way round.
    let publish = TokenStore::new(&src.run.cfg.state_dir)
        .create("ci", &[])
        .unwrap();
    let some = &src.repo().manifest("tool", "1.0").unwrap().files[0].sha256;
    for (token, path) in [
        (&publish, "/replicate/v1/releases".to_owned()),
        (&publish, format!("/replicate/v1/objects/{some}")),
        (&src.token, format!("/publish/v1/objects/{some}")),
    ] {
        let auth = format!("Authorization: Bearer {token}");
        let (code, _) = curl(&["-H", &auth, &format!("{}{path}", src.url())]).await;
        assert_eq!(code, 401, "{path}");
    }
    assert_eq!(src.objects_served().await, 0);
    assert!(src.stats().await["refused"].as_u64().unwrap() >= 4);

    // A follower refuses to start with a token file others can read, or a publish token.
    let cfg = follower_config(bdir.path(), &src);
    fs::set_permissions(&cfg.replicate_token_file, fs::Permissions::from_mode(0o644)).unwrap();
    let e = ftp_stager::replicate_follow::client_from_config(&cfg).unwrap_err();
    assert!(e.to_string().contains("replicate_token_file"), "{e}");
    fs::set_permissions(&cfg.replicate_token_file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&cfg.replicate_token_file, &publish).unwrap();
    let e = ftp_stager::replicate_follow::client_from_config(&cfg).unwrap_err();
    assert!(e.to_string().contains("not a replication token"), "{e}");
    src.run.stop().await;
}

/// A TLS-terminating man in the middle between a follower and its source (the only place a
/// byte can change in transit under TLS): it serves its own certificate, forwards each
/// connection to the source over TLS, and spoils the next `budget` answers to
/// `GET /replicate/v1/objects/<target>` as `fault` says.
struct Mitm {
    addr: std::net::SocketAddr,
    pin: String,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Flip one bit of the body's first byte.
    Flip,
    /// Close the connection after this many body bytes.
    Cut(usize),
}

async fn mitm(source: &Source, target: &str, fault: Fault, budget: usize) -> Mitm {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = ck.cert.der().clone();
    let pin = sha_hex(der.as_ref());
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let pem = fs::read(source.run.cfg.state_dir.join("tls-cert.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = source.run.https;
    let wanted = format!("GET /replicate/v1/objects/{target} ");
    let budget = Arc::new(AtomicUsize::new(budget));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, connector, wanted, budget) = (
                acceptor.clone(),
                connector.clone(),
                wanted.clone(),
                budget.clone(),
            );
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let down = acceptor.accept(tcp).await?;
                let up = tokio::net::TcpStream::connect(upstream).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let up = connector.connect(name, up).await?;
                let (mut dr, mut dw) = tokio::io::split(down);
                let (mut ur, mut uw) = tokio::io::split(up);
                // The request (small, one read or a few) decides whether to corrupt.
                let mut buf = vec![0u8; 64 * 1024];
                let n = dr.read(&mut buf).await?;
                let req = &buf[..n];
                let corrupt = req.starts_with(wanted.as_bytes())
                    && budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                        .is_ok();
                uw.write_all(req).await?;
                let to_up = tokio::spawn(async move { tokio::io::copy(&mut dr, &mut uw).await });
                // Answers: find the end of the head, then spoil the body once.
                let mut seen = 0usize; // bytes of the answer so far
                let mut body_at = None; // where its body starts
                let mut head = Vec::new();
                let mut done = !corrupt;
                loop {
                    let n = ur.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    let piece = &mut buf[..n];
                    let start = seen;
                    seen += n;
                    if !done && body_at.is_none() {
                        head.extend_from_slice(piece);
                        body_at = head
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map(|e| e + 4);
                    }
                    if let (false, Some(b)) = (done, body_at) {
                        match fault {
                            Fault::Flip if b < seen => {
                                piece[b - start] ^= 0x01;
                                done = true;
                            }
                            Fault::Cut(k) if b + k <= seen => {
                                dw.write_all(&piece[..b + k - start]).await?;
                                dw.flush().await?;
                                to_up.abort();
                                return Ok(()); // dropped: no TLS close, no more bytes
                            }
                            _ => {}
                        }
                    }
                    dw.write_all(piece).await?;
                }
                dw.shutdown().await?;
                to_up.abort();
                Ok::<(), std::io::Error>(())
            });
        }
    });
    Mitm { addr, pin }
}

impl Mitm {
    /// A follower reaching the source through this proxy (pinning the proxy's certificate).
    fn follower(&self, repo: &Repository, token: &str) -> Follower {
        let url = format!("https://{}", self.addr);
        let pin = ftp_stager::http_client::parse_pin(&self.pin).unwrap();
        let client = HttpsClient::new(&url, Trust::Pin(pin))
            .unwrap()
            .with_bearer(token)
            .unwrap();
        Follower::new(repo.clone(), client, &url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_corrupted_in_transit_is_refused_and_fetched_again_never_staged() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let src = Source::start().await;
    let m = src.repo().manifest("tool", "1.0").unwrap();
    let big = m
        .files
        .iter()
        .find(|f| f.name == "big.bin")
        .unwrap()
        .clone();
    let proxy = mitm(&src, &big.sha256, Fault::Flip, 1).await;

    let bdir = tempfile::tempdir().unwrap();
    let bcfg = crate::common::test_config(bdir.path());
    let bstager = Stager::open(&bcfg).unwrap();
    let brepo = bstager.repository().clone();
    let f = proxy.follower(&brepo, &src.token);

    // Through the proxy, big.bin arrives one bit off: refused, neither release offered.
    let r = f.round().await.unwrap();
    assert_eq!(r.refused, 1, "{r:?}");
    assert!(r.added.is_empty(), "{r:?}");
    assert!(!brepo.object_path(&big.sha256).unwrap().exists());
    assert!(brepo.manifest("tool", "1.0").is_err() && brepo.manifest("tool", "1.1").is_err());
    assert!(stage(&bstager, "1.0").is_err() && stage(&bstager, "1.1").is_err());
    assert_eq!(
        src.objects_served().await,
        6,
        "big.bin left the source intact once"
    );

    // The next round fetches it again, intact this time; only it travels.
    let r = f.round().await.unwrap();
    assert_eq!((r.refused, r.fetched), (0, 1), "{r:?}");
    assert_eq!(r.added.len(), 2, "{r:?}");
    assert_eq!(src.objects_served().await, 7, "big.bin sent a second time");
    let area = stage(&bstager, "1.0").unwrap();
    let staged = bcfg.areas_dir.join(&area.area_id).join("big.bin");
    assert_eq!(sha_hex(&fs::read(staged).unwrap()), big.sha256);
    assert_eq!(
        f.stats()
            .objects_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_off_is_resumed_from_where_it_stopped() {
    ffs_testkit::prereq::require_command("curl", "curl", "apt-get install curl");
    let src = Source::start().await;
    let m = src.repo().manifest("tool", "1.0").unwrap();
    let big = m
        .files
        .iter()
        .find(|f| f.name == "big.bin")
        .unwrap()
        .clone();
    let proxy = mitm(&src, &big.sha256, Fault::Cut(1_000_000), 1).await;
    let bdir = tempfile::tempdir().unwrap();
    let brepo = Repository::open(&bdir.path().join("repo")).unwrap();
    let f = proxy.follower(&brepo, &src.token);

    // Cut off a megabyte into big.bin: not a refusal; what arrived is kept, nothing offered.
    let r = f.round().await.unwrap();
    assert_eq!((r.refused, r.added.len()), (0, 0), "{r:?}");
    let part = brepo.root().join(format!("replicate/{}.part", big.sha256));
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept <= 1_000_000, "kept {kept}");
    assert!(brepo.manifest("tool", "1.0").is_err());

    // The next round asks only for the rest, and the whole object checks out.
    let bytes = |v: serde_json::Value| v["object_bytes_served"].as_u64().unwrap();
    let before = bytes(src.stats().await);
    let r = f.round().await.unwrap();
    assert_eq!(r.added.len(), 2, "{r:?}");
    assert_eq!(bytes(src.stats().await) - before, big.size - kept);
    let obj = brepo.object_path(&big.sha256).unwrap();
    assert_eq!(sha_hex(&fs::read(obj).unwrap()), big.sha256);
    assert!(!part.exists());
    src.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_the_follower_holds_with_other_files_is_never_overwritten() {
    let src = Source::start().await;
    let bdir = tempfile::tempdir().unwrap();
    let brepo = Repository::open(&bdir.path().join("repo")).unwrap();
    // Someone published tool 1.0 on the follower itself, with other content.
    let own = bdir.path().join("own");
    fs::create_dir_all(&own).unwrap();
    fs::write(own.join("other.bin"), b"not the source's 1.0\n").unwrap();
    let mine = ftp_stager::publish(
        &brepo,
        "tool",
        "1.0",
        &[own],
        "",
        &commlink::progress::Silent,
    )
    .unwrap();
    let f = src.follower(&brepo, &src.token);
    for _ in 0..2 {
        let r = f.round().await.unwrap();
        assert!(!r.added.contains(&"tool 1.0".to_owned()), "{r:?}");
    }
    assert_eq!(brepo.manifest("tool", "1.0").unwrap(), mine, "left alone");
    assert!(holds(&brepo, "1.1"), "the rest still replicates");
    let conflicts = f
        .stats()
        .conflicts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(conflicts, 1, "reported once, not every round");
    src.run.stop().await;
}
