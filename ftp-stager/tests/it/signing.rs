//! Signed releases, checked the way a customer checks them: the real `minisign` (Debian's)
//! verifies a staged area's `SHA256SUMS` against the vendor's public key, then the real
//! `sha256sum -c` checks the files. One changed byte in a file or in `SHA256SUMS` fails.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use commlink::msg::stager::StageRequest;
use ftp_stager::signing::{self, Signer};
use ftp_stager::{Repository, Stager};

fn need_tools() {
    ffs_testkit::prereq::require_command("minisign", "minisign", "apt-get install minisign");
    ffs_testkit::prereq::require_command("coreutils", "sha256sum", "apt-get install coreutils");
}

fn run(dir: &Path, prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn minisign_ok(dir: &Path, public: &Path) -> Output {
    run(
        dir,
        "minisign",
        &["-Vm", "SHA256SUMS", "-p", public.to_str().unwrap()],
    )
}

fn stage(stager: &Stager, version: &str, files: &[&str]) -> std::path::PathBuf {
    let a = stager
        .stage(&StageRequest {
            product: "tool".into(),
            version: version.into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            label: "alice".into(),
            ttl_secs: None,
        })
        .unwrap();
    stager.areas_dir().join(&a.area_id)
}

/// Copies an area the way a customer's download does (new inodes, so tampering with the
/// copy leaves the repository alone).
fn download(area: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(area) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(area).unwrap();
        let dst = to.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&dst).unwrap();
        } else {
            fs::write(&dst, fs::read(e.path()).unwrap()).unwrap();
        }
    }
}

fn flip_byte(p: &Path, at: usize) {
    let mut b = fs::read(p).unwrap();
    b[at] ^= 0x01;
    fs::write(p, b).unwrap();
}

#[test]
fn minisign_and_sha256sum_verify_a_staged_signed_release_and_catch_one_changed_byte() {
    need_tools();
    let (dir, cfg) = crate::common::make_repo();
    let (sk, pk) = (dir.path().join("ffs.key"), dir.path().join("ffs.pub"));
    let key_id = signing::generate(&sk, &pk).unwrap();
    let signer = Signer::load(&sk).unwrap();
    let repo = Repository::open(&cfg.repository).unwrap();
    let src = dir.path().join("src");
    let m = ftp_stager::publish_signed(
        &repo,
        "tool",
        "2.0",
        &[src],
        "signed",
        &commlink::progress::Silent,
        Some(&signer),
    )
    .unwrap();
    let sig = m.signature.as_ref().expect("signed");
    assert_eq!(sig.key_id, key_id);
    assert_eq!(m.signed_by(), key_id);
    assert_eq!(
        m.files.len(),
        3,
        "SHA256SUMS is not one of the release's own files"
    );

    // Space reclamation keeps a live release's signature objects.
    repo.gc().unwrap();
    let stager = Stager::open(&cfg).unwrap();
    let area = stage(&stager, "2.0", &[]);
    assert!(area.join("SHA256SUMS").is_file());
    assert!(area.join("SHA256SUMS.minisig").is_file());

    // The customer's two lines, on the staged area itself.
    let v = minisign_ok(&area, &pk);
    assert!(v.status.success(), "minisign -V: {}", text(&v));
    let out = text(&v);
    assert!(
        out.contains("product:tool version:2.0 published:"),
        "the trusted comment names product, version and time: {out}"
    );
    let c = run(&area, "sha256sum", &["-c", "SHA256SUMS"]);
    assert!(c.status.success(), "sha256sum -c: {}", text(&c));
    for name in ["big.bin", "docs/readme.txt", "with space.txt"] {
        assert!(text(&c).contains(&format!("{name}: OK")), "{}", text(&c));
    }

    // One changed byte of a file: the signature still holds, sha256sum -c fails.
    let dl = dir.path().join("download");
    download(&area, &dl);
    flip_byte(&dl.join("big.bin"), 1_000_000);
    assert!(minisign_ok(&dl, &pk).status.success());
    let c = run(&dl, "sha256sum", &["-c", "SHA256SUMS"]);
    assert!(
        !c.status.success(),
        "a changed file must fail: {}",
        text(&c)
    );
    assert!(text(&c).contains("big.bin: FAILED"), "{}", text(&c));

    // One changed byte of SHA256SUMS (e.g. a forged sum): minisign fails.
    let dl2 = dir.path().join("download2");
    download(&area, &dl2);
    flip_byte(&dl2.join("SHA256SUMS"), 3);
    let v = minisign_ok(&dl2, &pk);
    assert!(
        !v.status.success(),
        "a changed SHA256SUMS must fail: {}",
        text(&v)
    );

    // A subset area carries the signed list too; --ignore-missing checks what is there.
    let part = stage(&stager, "2.0", &["docs/readme.txt"]);
    assert!(minisign_ok(&part, &pk).status.success());
    let c = run(
        &part,
        "sha256sum",
        &["-c", "--ignore-missing", "SHA256SUMS"],
    );
    assert!(c.status.success(), "{}", text(&c));

    // An unsigned release stages exactly its files, and says so.
    let one = stage(&stager, "1.0", &[]);
    assert!(!one.join("SHA256SUMS").exists());
    assert_eq!(repo.manifest("tool", "1.0").unwrap().signed_by(), "");
}

#[test]
fn a_new_key_signs_new_releases_and_old_releases_keep_their_signature() {
    need_tools();
    let (dir, cfg) = crate::common::make_repo();
    let src = dir.path().join("src");
    let repo = Repository::open(&cfg.repository).unwrap();
    let (ska, pka) = (dir.path().join("a.key"), dir.path().join("a.pub"));
    let (skb, pkb) = (dir.path().join("b.key"), dir.path().join("b.pub"));
    let ida = signing::generate(&ska, &pka).unwrap();
    let idb = signing::generate(&skb, &pkb).unwrap();
    assert_ne!(ida, idb);
    let a = Signer::load(&ska).unwrap();
    let b = Signer::load(&skb).unwrap();
    ftp_stager::publish_signed(
        &repo,
        "tool",
        "2.0",
        std::slice::from_ref(&src),
        "",
        &commlink::progress::Silent,
        Some(&a),
    )
    .unwrap();
    ftp_stager::publish_signed(
        &repo,
        "tool",
        "3.0",
        std::slice::from_ref(&src),
        "",
        &commlink::progress::Silent,
        Some(&b),
    )
    .unwrap();
    // Signing refuses an input that would shadow the signature files.
    let evil = dir.path().join("evil");
    fs::create_dir_all(&evil).unwrap();
    fs::write(evil.join("SHA256SUMS"), b"forged\n").unwrap();
    assert!(
        ftp_stager::publish_signed(
            &repo,
            "tool",
            "4.0",
            &[evil],
            "",
            &commlink::progress::Silent,
            Some(&b)
        )
        .is_err()
    );

    let cat = repo.catalog(false).unwrap();
    let by: Vec<(&str, &str)> = cat
        .iter()
        .map(|m| (m.version.as_str(), m.signed_by()))
        .collect();
    assert!(by.contains(&("2.0", ida.as_str())), "{by:?}");
    assert!(by.contains(&("3.0", idb.as_str())), "{by:?}");
    assert!(by.contains(&("1.0", "")), "{by:?}");
    // The repository keeps both public keys (for `ffs repo verify`).
    for id in [&ida, &idb] {
        assert!(signing::repo_key_path(repo.root(), id).unwrap().is_file());
    }

    let stager = Stager::open(&cfg).unwrap();
    let two = stage(&stager, "2.0", &[]);
    let three = stage(&stager, "3.0", &[]);
    assert!(minisign_ok(&two, &pka).status.success());
    assert!(!minisign_ok(&two, &pkb).status.success(), "2.0 is not B's");
    assert!(minisign_ok(&three, &pkb).status.success());
    assert!(
        !minisign_ok(&three, &pka).status.success(),
        "3.0 is not A's"
    );
}

/// The stager opens a passphrase-protected `[stager] signing_key` with
/// `signing_key_passphrase_file`; without it, or with a wrong one, it refuses to start and
/// says why (remote publishes would otherwise go out unsigned).
#[test]
fn the_stager_opens_a_protected_key_with_its_passphrase_file_and_refuses_a_wrong_one() {
    let (dir, mut cfg) = crate::common::make_repo();
    let d = dir.path();
    let good = d.join("pass");
    commlink::secret_file::write_new_private(&good, b"it is a secret\n").unwrap();
    let wrong = d.join("wrong");
    commlink::secret_file::write_new_private(&wrong, b"it is a secreT\n").unwrap();
    let pass = signing::Passphrase::read_file(&good).unwrap();
    let id = signing::generate_with(&d.join("k.key"), &d.join("k.pub"), Some(&pass)).unwrap();
    assert!(signing::is_encrypted(&d.join("k.key")).unwrap());
    cfg.signing_key = d.join("k.key");

    let refusal = |cfg: &ftp_stager::StagerConfig| match Stager::open(cfg) {
        Ok(_) => panic!("the stager opened a protected key without its passphrase"),
        Err(e) => e.to_string(),
    };
    let err = refusal(&cfg);
    assert!(err.contains("signing_key_passphrase_file"), "{err}");
    cfg.signing_key_passphrase_file = wrong;
    let err = refusal(&cfg);
    assert!(err.contains("wrong passphrase"), "{err}");
    cfg.signing_key_passphrase_file = good;
    let stager = Stager::open(&cfg).unwrap();
    assert_eq!(stager.signer().expect("signer").key_id(), id);
    // The same key, unencrypted loading refused with the same advice.
    let err = Signer::load(&cfg.signing_key).unwrap_err().to_string();
    assert!(err.contains("passphrase"), "{err}");
}
