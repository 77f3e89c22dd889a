//! Repository integrity: `verify` re-hashes every object and checks every signature,
//! `quarantine` withdraws what is altered, and the stager refuses to stage an object whose
//! size no longer matches its manifest.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use commlink::msg::stager::StageRequest;
use ftp_stager::signing::{self, PublicKey, Signer};
use ftp_stager::verify::{quarantine, verify};
use ftp_stager::{Repository, Stager, StagerError};

/// Rewrites a read-only published file in place (what a tamperer with the owner's rights
/// does; ffs itself never modifies a published file).
fn tamper(p: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut perm = fs::metadata(p).unwrap().permissions();
    perm.set_mode(0o644);
    fs::set_permissions(p, perm).unwrap();
    let mut b = fs::read(p).unwrap();
    f(&mut b);
    // In place (same inode), so hard links in areas see it too.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &b))
        .unwrap();
}

struct Fx {
    dir: tempfile::TempDir,
    cfg: ftp_stager::StagerConfig,
    repo: Repository,
    public: PublicKey,
}

/// tool 1.0 unsigned (from make_repo), tool 2.0 signed, with a different big file.
fn fixture() -> Fx {
    let (dir, cfg) = crate::common::make_repo();
    let sk = dir.path().join("ffs.key");
    signing::generate(&sk, &dir.path().join("ffs.pub")).unwrap();
    let signer = Signer::load(&sk).unwrap();
    let src2 = dir.path().join("src2");
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("big2.bin"), crate::common::pattern(2 << 20, 9)).unwrap();
    fs::write(src2.join("notes.txt"), b"two\n").unwrap();
    let repo = Repository::open(&cfg.repository).unwrap();
    ftp_stager::publish_signed(
        &repo,
        "tool",
        "2.0",
        &[src2],
        "",
        &commlink::progress::Silent,
        Some(&signer),
    )
    .unwrap();
    let public = PublicKey::load(&dir.path().join("ffs.pub")).unwrap();
    Fx {
        dir,
        cfg,
        repo,
        public,
    }
}

fn stage(s: &Stager, version: &str) -> Result<commlink::msg::stager::StagedArea, StagerError> {
    s.stage(&StageRequest {
        product: "tool".into(),
        version: version.into(),
        label: "alice".into(),
        ..Default::default()
    })
}

fn object_of(repo: &Repository, version: &str, name: &str) -> std::path::PathBuf {
    let m = repo.manifest("tool", version).unwrap();
    let f = m
        .with_signature_files(m.files.clone())
        .into_iter()
        .find(|f| f.name == name)
        .unwrap();
    repo.object_path(&f.sha256).unwrap()
}

#[test]
fn an_intact_repository_verifies_and_unsigned_is_never_called_verified() {
    let fx = fixture();
    let r = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(!r.altered(), "{r:?}");
    assert_eq!(r.releases.len(), 2);
    let two = r.releases.iter().find(|x| x.version == "2.0").unwrap();
    assert_eq!(two.signature_verified, Some(true));
    assert!(two.signature_state().contains("signature verified"));
    assert_eq!(two.files, 4, "2 files + SHA256SUMS + signature");
    let one = r.releases.iter().find(|x| x.version == "1.0").unwrap();
    assert_eq!(one.signature_verified, None);
    assert_eq!(one.signature_state(), "unsigned");
    // Only the given key trusted: the same key, so still verified.
    let r = verify(
        &fx.repo,
        std::slice::from_ref(&fx.public),
        true,
        &commlink::progress::Silent,
    )
    .unwrap();
    assert!(!r.altered(), "{r:?}");
}

#[test]
fn one_changed_byte_is_reported_and_quarantine_withdraws_the_release_and_its_area_links() {
    let fx = fixture();
    let stager = Stager::open(&fx.cfg).unwrap();
    let area = stage(&stager, "2.0").unwrap();
    let area_dir = stager.areas_dir().join(&area.area_id);
    let big = object_of(&fx.repo, "2.0", "big2.bin");
    tamper(&big, |b| b[12345] ^= 0x40);

    let r = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(r.altered());
    let two = r.releases.iter().find(|x| x.version == "2.0").unwrap();
    assert!(two.altered());
    assert!(
        two.problems
            .iter()
            .any(|p| p.starts_with("big2.bin: content hashes to")),
        "{:?}",
        two.problems
    );
    // The signature itself still verifies (SHA256SUMS is intact); sha256sum -c would
    // catch the file, and verify names it.
    assert_eq!(two.signature_verified, Some(true));
    let one = r.releases.iter().find(|x| x.version == "1.0").unwrap();
    assert!(
        !one.altered(),
        "1.0 shares nothing with 2.0: {:?}",
        one.problems
    );

    let q = quarantine(&fx.repo, &r, Some(stager.areas_dir())).unwrap();
    assert_eq!(q.releases, [("tool".to_string(), "2.0".to_string())]);
    assert_eq!(q.objects_moved, 1);
    assert_eq!(
        q.area_links_removed, 1,
        "the area's copy of the altered file"
    );
    assert!(!area_dir.join("big2.bin").exists());
    assert!(area_dir.join("notes.txt").exists(), "intact files stay");
    assert!(!big.exists());
    assert!(
        fx.repo
            .root()
            .join("quarantine")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );
    let m = fx.repo.manifest("tool", "2.0").unwrap();
    assert!(
        m.yanked
            && m.quarantined
                .as_deref()
                .is_some_and(|q| q.contains("big2.bin"))
    );
    assert!(
        fx.repo
            .catalog(false)
            .unwrap()
            .iter()
            .all(|m| m.version != "2.0")
    );
    assert!(matches!(
        stage(&stager, "2.0"),
        Err(StagerError::Refused(_))
    ));
    // Garbage collection leaves the evidence alone.
    fx.repo.gc().unwrap();
    assert_eq!(
        fx.repo
            .root()
            .join("quarantine")
            .read_dir()
            .unwrap()
            .count(),
        1
    );
    // Run again: still listed, but dealt with.
    let again = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(!again.altered(), "{again:?}");
    assert!(
        again
            .releases
            .iter()
            .any(|x| x.version == "2.0" && x.altered() && x.quarantined.is_some())
    );
    stage(&stager, "1.0").unwrap();
}

/// A twin (the copy of an object areas link to once the object reached the hard-link limit)
/// is re-hashed like an object; an altered one is reported, and quarantine moves it aside
/// and removes the area links to it, without withdrawing the release (its object is
/// intact; the next area past the limit makes a new twin).
#[test]
fn an_altered_twin_is_reported_and_quarantined_with_its_area_links() {
    let fx = fixture();
    let stager = Stager::open(&fx.cfg).unwrap();
    let area = stage(&stager, "2.0").unwrap();
    let area_dir = stager.areas_dir().join(&area.area_id);
    let m = fx.repo.manifest("tool", "2.0").unwrap();
    let big = m.files.iter().find(|f| f.name == "big2.bin").unwrap();
    let sha = big.sha256.clone();
    let twin = fx.repo.twin(&sha, 1, big.size).unwrap();
    // An area whose copy of big2.bin was linked to the twin.
    let linked = area_dir.join("big2-past-the-limit.bin");
    fs::hard_link(&twin, &linked).unwrap();

    let clean = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(!clean.altered(), "{clean:?}");
    assert!(clean.twins.is_empty());

    tamper(&twin, |b| b[777] ^= 1);
    let r = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    assert!(r.altered());
    assert_eq!(r.twins.len(), 1, "{:?}", r.twins);
    assert_eq!(
        (r.twins[0].sha256.as_str(), r.twins[0].twin),
        (sha.as_str(), 1)
    );
    assert!(r.twins[0].why.starts_with("content hashes to"));
    assert!(
        r.releases.iter().all(|x| !x.altered()),
        "the objects are intact"
    );

    let q = quarantine(&fx.repo, &r, Some(stager.areas_dir())).unwrap();
    assert!(q.releases.is_empty(), "no release is withdrawn for a twin");
    assert_eq!((q.objects_moved, q.area_links_removed), (1, 1));
    assert!(!twin.exists() && !linked.exists());
    assert!(
        area_dir.join("big2.bin").exists(),
        "the link to the object stays"
    );
    assert!(
        !verify(&fx.repo, &[], false, &commlink::progress::Silent)
            .unwrap()
            .altered()
    );
    stage(&stager, "2.0").unwrap();
}

#[test]
fn an_edited_manifest_or_a_foreign_signature_fails_the_signature_check() {
    let fx = fixture();
    // Point 2.0's notes.txt at another intact object (1.0's readme): every object still
    // hashes to its name, but the manifest no longer matches what was signed.
    let mpath = fx.repo.manifest_path("tool", "2.0").unwrap();
    let mut m = fx.repo.manifest("tool", "2.0").unwrap();
    let readme = fx
        .repo
        .manifest("tool", "1.0")
        .unwrap()
        .files
        .into_iter()
        .find(|f| f.name == "docs/readme.txt")
        .unwrap();
    let notes = m.files.iter_mut().find(|f| f.name == "notes.txt").unwrap();
    notes.sha256 = readme.sha256;
    notes.size = readme.size;
    fs::set_permissions(&mpath, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let r = verify(&fx.repo, &[], false, &commlink::progress::Silent).unwrap();
    let two = r.releases.iter().find(|x| x.version == "2.0").unwrap();
    assert_eq!(two.signature_verified, Some(false));
    assert!(
        two.problems
            .iter()
            .any(|p| p.contains("differ from the signed SHA256SUMS")),
        "{:?}",
        two.problems
    );

    // A release re-signed with a key the vendor does not hold: with --key it fails.
    let fx = fixture();
    let other = fx.dir.path().join("other.key");
    signing::generate(&other, &fx.dir.path().join("other.pub")).unwrap();
    let other = Signer::load(&other).unwrap();
    let src3 = fx.dir.path().join("src3");
    fs::create_dir_all(&src3).unwrap();
    fs::write(src3.join("evil.bin"), b"not from the vendor").unwrap();
    ftp_stager::publish_signed(
        &fx.repo,
        "tool",
        "3.0",
        &[src3],
        "",
        &commlink::progress::Silent,
        Some(&other),
    )
    .unwrap();
    let r = verify(
        &fx.repo,
        std::slice::from_ref(&fx.public),
        true,
        &commlink::progress::Silent,
    )
    .unwrap();
    let three = r.releases.iter().find(|x| x.version == "3.0").unwrap();
    assert!(three.altered());
    assert!(
        three.problems[0].contains("not among the keys given"),
        "{:?}",
        three.problems
    );
    assert!(
        !r.releases
            .iter()
            .find(|x| x.version == "2.0")
            .unwrap()
            .altered()
    );
}

#[test]
fn the_stager_refuses_to_stage_an_object_whose_size_changed() {
    let fx = fixture();
    let stager = Stager::open(&fx.cfg).unwrap();
    let big = object_of(&fx.repo, "1.0", "big.bin");
    tamper(&big, |b| b.extend_from_slice(b"#!/bin/sh\nrm -rf ~\n"));
    let err = stage(&stager, "1.0").unwrap_err();
    assert!(matches!(err, StagerError::Damaged(_)), "{err}");
    assert_eq!(err.code(), commlink::RefusalCode::Damaged);
    assert_eq!(err.code().as_str(), "damaged");
    assert!(err.to_string().contains("big.bin"), "{err}");
    assert!(stager.areas().areas.is_empty(), "no area left behind");
    // Only empty directories (made ahead for coming requests) remain.
    assert!(
        fs::read_dir(stager.areas_dir())
            .unwrap()
            .all(|e| fs::read_dir(e.unwrap().path()).unwrap().next().is_none()),
        "no staged file left behind"
    );
    // A signed release's SHA256SUMS counts too.
    let sums = object_of(&fx.repo, "2.0", "SHA256SUMS");
    tamper(&sums, |b| b.truncate(10));
    assert!(matches!(
        stage(&stager, "2.0"),
        Err(StagerError::Damaged(_))
    ));
}
