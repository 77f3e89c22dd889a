//! `ffs repo verify`: re-hash every object and check every release's signature.
//!
//! For each release: every file's object exists, is a regular file, has the manifest's
//! size and hashes to its name; for a signed release, `SHA256SUMS` and its signature are
//! intact, the signature verifies with the key that made it, its trusted comment names this
//! release, and `SHA256SUMS` lists exactly the manifest's files (so an edited manifest is
//! caught too). Objects no manifest names are re-hashed as well, and so is every twin (the
//! copy of an object that areas link to once the object reached the hard-link limit).
//! Unsigned releases are reported as unsigned, never as verified.
//!
//! Keys: by default the repository's own copies (`keys/KEYID.pub`, written at publish) and
//! whatever the caller adds (the configured signing key's public half). With `--key`, only
//! the given public keys are trusted: someone able to rewrite the repository could also
//! rewrite `keys/`, so an independent copy is the stronger check.
//!
//! **Quarantine** ([`quarantine`]) withdraws each altered release the way `ffs yank` does
//! (manifest `yanked`, plus `quarantined` = why): it can no longer be staged and customers
//! no longer see it. The altered objects (and altered twins) are moved to
//! `repository/quarantine/` (kept as
//! evidence; never staged, never reclaimed by gc), and the hard links download areas hold
//! to those same inodes are unlinked, so an area staged before the check stops serving the
//! tampered bytes too (its other files keep working until it expires).

use std::collections::{BTreeSet, HashMap};
use std::fs;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use chrono::Utc;
use commlink::progress::Progress;
use serde::Serialize;

use crate::error::{Result, StagerError};
use crate::fsutil;
use crate::repository::{Manifest, Repository};
use crate::signing::{self, PublicKey};

/// What the re-hash found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ObjState {
    /// Hashes to its name; this many bytes.
    Good(u64),
    /// Missing, not a regular file, unreadable, or hashing to something else.
    Bad(String),
}

/// One release's result.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Already withdrawn.
    pub yanked: bool,
    /// Already quarantined (why), before this run.
    pub quarantined: Option<String>,
    /// Key id that signed it ("" = unsigned).
    pub signed_by: String,
    /// `Some(true)` when the signature verified, `Some(false)` when it did not, `None` when
    /// the release is unsigned.
    pub signature_verified: Option<bool>,
    /// Files re-hashed (including `SHA256SUMS` and its signature).
    pub files: usize,
    /// What is wrong; empty = intact.
    pub problems: Vec<String>,
    /// Objects of this release found altered.
    #[serde(skip)]
    pub altered_objects: Vec<String>,
}

impl ReleaseReport {
    /// Whether anything is wrong with it.
    pub fn altered(&self) -> bool {
        !self.problems.is_empty()
    }

    /// "unsigned", "signed by key X, signature verified" or "signed by key X, signature NOT
    /// verified".
    pub fn signature_state(&self) -> String {
        match self.signature_verified {
            None => "unsigned".to_owned(),
            Some(true) => format!("signed by key {}, signature verified", self.signed_by),
            Some(false) => format!("signed by key {}, signature NOT verified", self.signed_by),
        }
    }
}

/// An altered object no release names.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanProblem {
    /// Its name (the SHA-256 it should have).
    pub sha256: String,
    /// What is wrong.
    pub why: String,
}

/// An altered twin of an object (its release is not withdrawn: the object itself is intact;
/// quarantine moves the twin aside and the next area makes a new one).
#[derive(Debug, Clone, Serialize)]
pub struct TwinProblem {
    /// The object it is a copy of.
    pub sha256: String,
    /// Its number.
    pub twin: u32,
    /// What is wrong.
    pub why: String,
    /// The file found altered (device, inode): quarantine moves the twin only if it is
    /// still that file.
    #[serde(skip)]
    pub file: Option<(u64, u64)>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Objects re-hashed.
    pub objects: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Every release, in catalog order.
    pub releases: Vec<ReleaseReport>,
    /// Altered objects that no release names.
    pub orphans: Vec<OrphanProblem>,
    /// Altered twins.
    pub twins: Vec<TwinProblem>,
}

impl Report {
    /// Whether anything is altered that is not already quarantined (a quarantined release
    /// stays listed with its problems, but was dealt with and does not fail the run).
    pub fn altered(&self) -> bool {
        !self.orphans.is_empty()
            || !self.twins.is_empty()
            || self
                .releases
                .iter()
                .any(|r| r.altered() && r.quarantined.is_none())
    }
}

/// Re-hashes every object and checks every release (see the module docs). With
/// `only_keys` = true only `keys` are trusted; otherwise the repository's `keys/` too.
/// Reports the bytes re-hashed to `progress` (one phase; the caller draws it).
pub fn verify(
    repo: &Repository,
    keys: &[PublicKey],
    only_keys: bool,
    progress: &dyn Progress,
) -> Result<Report> {
    let objects = repo.objects()?;
    let twins = repo.twins()?;
    let total: u64 = objects
        .iter()
        .map(|(_, p)| p)
        .chain(twins.iter().map(|(_, _, p)| p))
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .map(|m| m.len())
        .sum();
    progress.phase("verifying the repository", total);
    let mut states: HashMap<String, ObjState> = HashMap::new();
    let mut bytes = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (sha, path) in &objects {
        let st = rehash(sha, path, &mut buf, progress);
        if let ObjState::Good(n) = st {
            bytes += n;
        }
        states.insert(sha.clone(), st);
    }
    let mut bad_twins = Vec::new();
    for (sha, n, path) in &twins {
        // Reclaimed since it was listed (gc runs beside a verify): gone, not altered.
        let Ok(md) = fs::symlink_metadata(path) else {
            continue;
        };
        match rehash(sha, path, &mut buf, progress) {
            ObjState::Good(k) => bytes += k,
            ObjState::Bad(_) if fs::symlink_metadata(path).is_err() => {}
            ObjState::Bad(why) => bad_twins.push(TwinProblem {
                sha256: sha.clone(),
                twin: *n,
                why,
                file: Some((md.dev(), md.ino())),
            }),
        }
    }
    bad_twins.sort_by(|a, b| (&a.sha256, a.twin).cmp(&(&b.sha256, b.twin)));
    for t in &bad_twins {
        tracing::error!(object = %t.sha256, twin = t.twin, why = %t.why, "repository verify: twin altered");
    }
    progress.finish();

    let releases = repo.catalog(true)?;
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut reports = Vec::with_capacity(releases.len());
    for m in &releases {
        named.extend(
            m.with_signature_files(m.files.clone())
                .into_iter()
                .map(|f| f.sha256),
        );
        reports.push(check_release(repo, m, &states, keys, only_keys));
    }
    let mut orphans: Vec<OrphanProblem> = states
        .iter()
        .filter(|(sha, _)| !named.contains(*sha))
        .filter_map(|(sha, st)| match st {
            ObjState::Bad(why) => Some(OrphanProblem {
                sha256: sha.clone(),
                why: why.clone(),
            }),
            ObjState::Good(_) => None,
        })
        .collect();
    orphans.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    for r in reports.iter().filter(|r| r.altered()) {
        tracing::error!(product = %r.product, version = %r.version, problems = ?r.problems, "repository verify: release altered");
    }
    Ok(Report {
        objects: objects.len() + twins.len(),
        bytes,
        releases: reports,
        orphans,
        twins: bad_twins,
    })
}

fn rehash(sha: &str, path: &Path, buf: &mut [u8], progress: &dyn Progress) -> ObjState {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) => return ObjState::Bad(format!("cannot stat: {e}")),
    };
    if !md.file_type().is_file() {
        return ObjState::Bad("not a regular file".into());
    }
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return ObjState::Bad(format!("cannot open: {e}")),
    };
    let (got, n) = match fsutil::sha256_read(&mut f, buf, |k| progress.advance(k)) {
        Ok(r) => r,
        Err(e) => return ObjState::Bad(format!("cannot read: {e}")),
    };
    if got == sha {
        ObjState::Good(n)
    } else {
        ObjState::Bad(format!("content hashes to {got}"))
    }
}

fn check_release(
    repo: &Repository,
    m: &Manifest,
    states: &HashMap<String, ObjState>,
    keys: &[PublicKey],
    only_keys: bool,
) -> ReleaseReport {
    let mut problems = Vec::new();
    let mut altered_objects = Vec::new();
    let all = m.with_signature_files(m.files.clone());
    for f in &all {
        match states.get(&f.sha256) {
            None => {
                problems.push(format!("{}: object {} is missing", f.name, f.sha256));
            }
            Some(ObjState::Bad(why)) => {
                problems.push(format!("{}: {why} (manifest says {})", f.name, f.sha256));
                altered_objects.push(f.sha256.clone());
            }
            Some(ObjState::Good(size)) if *size != f.size => {
                problems.push(format!(
                    "{}: {} bytes, the manifest says {}",
                    f.name, size, f.size
                ));
            }
            Some(ObjState::Good(_)) => {}
        }
    }
    let mut signature_verified = None;
    if let Some(sig) = &m.signature {
        let ok = check_signature(repo, m, sig, states, keys, only_keys);
        if let Err(why) = &ok {
            problems.push(why.clone());
        }
        signature_verified = Some(ok.is_ok());
    }
    ReleaseReport {
        product: m.product.clone(),
        version: m.version.clone(),
        yanked: m.yanked,
        quarantined: m.quarantined.clone(),
        signed_by: m.signed_by().to_owned(),
        signature_verified,
        files: all.len(),
        problems,
        altered_objects,
    }
}

fn check_signature(
    repo: &Repository,
    m: &Manifest,
    sig: &signing::ReleaseSignature,
    states: &HashMap<String, ObjState>,
    keys: &[PublicKey],
    only_keys: bool,
) -> std::result::Result<(), String> {
    let intact = |sha: &str| matches!(states.get(sha), Some(ObjState::Good(_)));
    if !intact(&sig.sums.sha256) || !intact(&sig.minisig.sha256) {
        return Err("signature not checked: SHA256SUMS or its signature is damaged".into());
    }
    let read = |sha: &str| -> std::result::Result<String, String> {
        let p = repo.object_path(sha).map_err(|e| e.to_string())?;
        fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let sums = read(&sig.sums.sha256)?;
    let minisig = read(&sig.minisig.sha256)?;
    let key = match keys.iter().find(|k| k.key_id() == sig.key_id) {
        Some(k) => k.clone(),
        None if only_keys => {
            return Err(format!(
                "signed by key {}, which is not among the keys given",
                sig.key_id
            ));
        }
        None => {
            let p = signing::repo_key_path(repo.root(), &sig.key_id).map_err(|e| e.to_string())?;
            PublicKey::load(&p).map_err(|e| {
                format!(
                    "signed by key {}, whose public key is unavailable ({e}); pass it with --key",
                    sig.key_id
                )
            })?
        }
    };
    let tc = key
        .verify(&minisig, sums.as_bytes())
        .map_err(|e| format!("SHA256SUMS does not verify with key {}: {e}", sig.key_id))?;
    let expected = format!("product:{} version:{} ", m.product, m.version);
    if !tc.starts_with(&expected) {
        return Err(format!(
            "the signature is for another release (trusted comment {tc:?})"
        ));
    }
    if sums != signing::sums_text(&m.files) {
        return Err("the manifest's files differ from the signed SHA256SUMS".into());
    }
    Ok(())
}

/// What [`quarantine`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuarantineOutcome {
    /// Releases withdrawn now: (product, version).
    pub releases: Vec<(String, String)>,
    /// Altered objects moved to `quarantine/`.
    pub objects_moved: usize,
    /// Hard links in download areas to those objects, removed.
    pub area_links_removed: usize,
}

/// Withdraws every altered release of `report` (see the module docs). `areas_dir`: where
/// the stager's download areas are (their links to altered objects are removed).
pub fn quarantine(
    repo: &Repository,
    report: &Report,
    areas_dir: Option<&Path>,
) -> Result<QuarantineOutcome> {
    let mut out = QuarantineOutcome::default();
    let lock = repo.lock()?;
    for r in report.releases.iter().filter(|r| r.altered()) {
        let mut m = repo.manifest(&r.product, &r.version)?;
        if m.quarantined.is_some() {
            continue;
        }
        m.yanked = true;
        m.yanked_at.get_or_insert_with(Utc::now);
        let mut why = r.problems.join("; ");
        if why.len() > 2000 {
            let mut cut = 2000;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
        }
        m.quarantined = Some(format!(
            "{}: {why}",
            Utc::now().format("%Y-%m-%d %H:%M UTC")
        ));
        repo.write_manifest(&m)?;
        tracing::warn!(product = %m.product, version = %m.version, "quarantined: withdrawn after failing `ffs repo verify`");
        out.releases.push((m.product, m.version));
    }
    // The altered objects: remember their inodes, move them aside.
    let altered: BTreeSet<&str> = report
        .releases
        .iter()
        .flat_map(|r| r.altered_objects.iter().map(String::as_str))
        .chain(report.orphans.iter().map(|o| o.sha256.as_str()))
        .collect();
    let qdir = repo.root().join("quarantine");
    let mut inodes = BTreeSet::new();
    for sha in altered {
        let p = repo.object_path(sha)?;
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let dst = set_aside(&p, &md, &qdir, sha, &mut inodes)?;
        tracing::warn!(object = %sha, to = %dst.display(), "altered object moved to quarantine");
        out.objects_moved += 1;
    }
    for t in &report.twins {
        let p = repo.twin_path(&t.sha256, t.twin)?;
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if t.file.is_some_and(|f| f != (md.dev(), md.ino())) {
            // Remade since the check: not the file found altered.
            continue;
        }
        let name = format!("{}.twin{}", t.sha256, t.twin);
        let dst = set_aside(&p, &md, &qdir, &name, &mut inodes)?;
        tracing::warn!(object = %t.sha256, twin = t.twin, to = %dst.display(), "altered twin moved to quarantine");
        out.objects_moved += 1;
    }
    drop(lock);
    if let Some(areas) = areas_dir.filter(|_| !inodes.is_empty())
        && areas.is_dir()
    {
        out.area_links_removed = unlink_area_copies(areas, &inodes)?;
    }
    Ok(out)
}

/// Moves the altered file at `path` (whose metadata is `md`) into `qdir` as `name`, or as
/// `name.XXXXXXXX` when that is taken, and remembers its inode in `inodes` so the area
/// links to it can be removed. Returns where it went.
fn set_aside(
    path: &Path,
    md: &fs::Metadata,
    qdir: &Path,
    name: &str,
    inodes: &mut BTreeSet<(u64, u64)>,
) -> Result<PathBuf> {
    if md.file_type().is_file() {
        inodes.insert((md.dev(), md.ino()));
    }
    fs::create_dir_all(qdir).map_err(StagerError::io("create", qdir))?;
    let mut dst = qdir.join(name);
    if fs::symlink_metadata(&dst).is_ok() {
        dst = qdir.join(format!("{name}.{}", fsutil::random_hex(4)));
    }
    fs::rename(path, &dst).map_err(StagerError::io("rename", path))?;
    Ok(dst)
}

/// Removes every regular file under `areas` that is one of `inodes` (a hard link to an
/// altered object). Returns how many.
fn unlink_area_copies(areas: &Path, inodes: &BTreeSet<(u64, u64)>) -> Result<usize> {
    let mut n = 0;
    let mut doomed: Vec<PathBuf> = Vec::new();
    for e in walkdir::WalkDir::new(areas).follow_links(false) {
        let Ok(e) = e else { continue };
        if !e.file_type().is_file() {
            continue;
        }
        if let Ok(md) = e.metadata()
            && inodes.contains(&(md.dev(), md.ino()))
        {
            doomed.push(e.path().to_path_buf());
        }
    }
    for p in doomed {
        fs::remove_file(&p).map_err(StagerError::io("remove", &p))?;
        tracing::warn!(path = %p.display(), "removed an area's link to an altered object");
        n += 1;
    }
    Ok(n)
}
