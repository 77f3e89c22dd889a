//! `ffs publish`: import files or directory trees into the repository as a new release.
//!
//! Each file is copied into `tmp/` while being hashed, fsynced, made read-only (0444) and
//! renamed to `objects/ab/cdef…` (skipped when the object exists: dedup). The manifest is
//! written last, atomically, so a release is visible only when complete; a publish killed
//! at any point leaves at most stray files in `tmp/`, which the next publish removes.
//!
//! Symbolic links in the input: a link is followed only when its target (fully resolved)
//! is a regular file inside the same input tree; a link that points outside the tree, at
//! a directory, or nowhere makes the publish fail. Published objects are always regular
//! files, so a symlink can never reach the repository or an area.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use commlink::progress::Progress;
use sha2::{Digest as _, Sha256};

use crate::error::{Result, StagerError};
use crate::fsutil;
use crate::repository::{Manifest, ManifestFile, Repository, valid_file_name, valid_name};
use crate::signing::{self, ReleaseSignature, Signer};

/// Test-only crash injection: when this environment variable holds N ≥ 1, the process
/// SIGKILLs itself at the N-th durable step of a publish (used by the crash-safety test).
pub const KILL_AT_STEP_ENV: &str = "FFS_STAGER_TEST_KILL_AT_STEP";

static STEPS: AtomicU64 = AtomicU64::new(0);

fn step() {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var(KILL_AT_STEP_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(n) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// How many publish steps this process has taken (for the crash test).
pub fn steps_taken() -> u64 {
    STEPS.load(Ordering::SeqCst)
}

const CHUNK: usize = 1 << 20;

/// One input file resolved to its release-relative name.
#[derive(Debug)]
pub struct Input {
    /// Release-relative name.
    pub name: String,
    /// The file it is read from.
    pub source: PathBuf,
    /// Its size when listed.
    pub size: u64,
}

/// Publishes `paths` as release `product` `version`, unsigned. A directory contributes its
/// files under names relative to it; a plain file contributes its file name. Reports the
/// bytes imported to `progress` (one phase; the caller draws it).
pub fn publish(
    repo: &Repository,
    product: &str,
    version: &str,
    paths: &[PathBuf],
    notes: &str,
    progress: &dyn Progress,
) -> Result<Manifest> {
    publish_signed(repo, product, version, paths, notes, progress, None)
}

/// [`publish`], and with a `signer` also writes `SHA256SUMS` and `SHA256SUMS.minisig` as
/// objects of the release (see [`crate::signing`]) and keeps the public key in the
/// repository's `keys/`.
pub fn publish_signed(
    repo: &Repository,
    product: &str,
    version: &str,
    paths: &[PathBuf],
    notes: &str,
    progress: &dyn Progress,
    signer: Option<&Signer>,
) -> Result<Manifest> {
    if !valid_name(product) || !valid_name(version) {
        return Err(StagerError::Invalid(format!(
            "product/version {product:?}/{version:?}: use letters, digits and . _ + -"
        )));
    }
    if paths.is_empty() {
        return Err(StagerError::Invalid("nothing to publish".into()));
    }
    let inputs = collect_inputs(paths)?;
    if inputs.is_empty() {
        return Err(StagerError::Invalid("the inputs hold no files".into()));
    }
    if signer.is_some()
        && let Some(i) = inputs
            .iter()
            .find(|i| i.name == signing::SUMS_NAME || i.name == signing::SIG_NAME)
    {
        return Err(StagerError::Refused(format!(
            "{} is written by ffs when signing a release; rename that input file",
            i.name
        )));
    }
    let _lock = repo.lock()?;
    let mpath = repo.manifest_path(product, version)?;
    if mpath.exists() {
        return Err(StagerError::Refused(format!(
            "release {product} {version} exists already (releases are immutable; publish a new version)"
        )));
    }
    clean_tmp(repo)?;

    let total: u64 = inputs.iter().map(|i| i.size).sum();
    progress.phase(&format!("publishing {product} {version}"), total);

    let mut files = Vec::with_capacity(inputs.len());
    let mut buf = vec![0u8; CHUNK];
    for input in &inputs {
        let mut src = File::open(&input.source).map_err(StagerError::io("open", &input.source))?;
        let (sha, size) = import_one(repo, &mut src, &input.source, &mut buf, progress)?;
        files.push(ManifestFile {
            name: input.name.clone(),
            size,
            sha256: sha,
        });
    }
    progress.finish();
    commit_release(
        repo,
        product,
        version,
        notes,
        files,
        signer,
        &local_user(),
        &mut buf,
    )
}

/// Writes the manifest of a release whose objects are all in the repository (signing it
/// first when `signer` is given). The caller holds the repository lock and has checked
/// that the release does not exist yet.
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit_release(
    repo: &Repository,
    product: &str,
    version: &str,
    notes: &str,
    mut files: Vec<ManifestFile>,
    signer: Option<&Signer>,
    published_by: &str,
    buf: &mut [u8],
) -> Result<Manifest> {
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let published_at = Utc::now();
    let signature = match signer {
        Some(s) => Some(sign_release(
            repo,
            s,
            product,
            version,
            &published_at,
            &files,
            buf,
        )?),
        None => None,
    };
    let m = Manifest {
        product: product.to_owned(),
        version: version.to_owned(),
        notes: notes.to_owned(),
        published_at,
        published_by: published_by.to_owned(),
        yanked: false,
        yanked_at: None,
        quarantined: None,
        files,
        signature,
    };
    step();
    repo.write_manifest(&m)?;
    step();
    tracing::info!(
        product,
        version,
        files = m.files.len(),
        bytes = m.bytes(),
        signed_by = m.signed_by(),
        published_by,
        "published"
    );
    Ok(m)
}

/// `local user NAME` for the user running this publish (the uid when it has no name).
fn local_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!("local user {}", u.name),
        _ => format!("local uid {uid}"),
    }
}

/// Writes `SHA256SUMS` and its signature as objects and keeps the public key in `keys/`.
fn sign_release(
    repo: &Repository,
    signer: &Signer,
    product: &str,
    version: &str,
    published_at: &chrono::DateTime<Utc>,
    files: &[ManifestFile],
    buf: &mut [u8],
) -> Result<ReleaseSignature> {
    let sums = signing::sums_text(files);
    let tc = signing::trusted_comment(
        product,
        version,
        &published_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let sig = signer.sign(sums.as_bytes(), &tc)?;
    let hidden = commlink::progress::Silent;
    let label = Path::new(signing::SUMS_NAME);
    let (sums_sha, sums_size) = import_one(repo, &mut sums.as_bytes(), label, buf, &hidden)?;
    let label = Path::new(signing::SIG_NAME);
    let (sig_sha, sig_size) = import_one(repo, &mut sig.as_bytes(), label, buf, &hidden)?;
    let kp = signing::repo_key_path(repo.root(), signer.key_id())?;
    if !kp.exists() {
        let dir = repo.root().join("keys");
        fs::create_dir_all(&dir).map_err(StagerError::io("create", &dir))?;
        fsutil::atomic_write(&kp, signer.public_key_text().as_bytes(), 0o444)
            .map_err(StagerError::io("write", &kp))?;
    }
    Ok(ReleaseSignature {
        key_id: signer.key_id().to_owned(),
        trusted_comment: tc,
        sums: ManifestFile {
            name: signing::SUMS_NAME.into(),
            size: sums_size,
            sha256: sums_sha,
        },
        minisig: ManifestFile {
            name: signing::SIG_NAME.into(),
            size: sig_size,
            sha256: sig_sha,
        },
    })
}

/// Removes what an interrupted publish left: import files in `tmp/` and manifest
/// temporaries (`.VERSION.json.tmp-…`, never read as releases) beside the manifests.
fn clean_tmp(repo: &Repository) -> Result<()> {
    let tmp = repo.tmp_dir();
    let mut leftovers = Vec::new();
    for e in fs::read_dir(&tmp).map_err(StagerError::io("read dir", &tmp))? {
        leftovers.push(e.map_err(StagerError::io("read dir", &tmp))?.path());
    }
    let releases = repo.root().join("releases");
    for d in fs::read_dir(&releases).map_err(StagerError::io("read dir", &releases))? {
        let d = d.map_err(StagerError::io("read dir", &releases))?.path();
        if let Ok(rd) = fs::read_dir(&d) {
            leftovers.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
            }));
        }
    }
    for p in leftovers {
        tracing::info!(path = %p.display(), "removing leftover from an interrupted publish");
        fs::remove_file(&p).map_err(StagerError::io("remove", &p))?;
    }
    Ok(())
}

/// Copies `src` (read from `source`, named in errors) into a temp file while hashing, then
/// moves it into the object store.
fn import_one(
    repo: &Repository,
    src: &mut impl std::io::Read,
    source: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(String, u64)> {
    let tmp = repo
        .tmp_dir()
        .join(format!("import-{}", fsutil::random_hex(8)));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(StagerError::io("create", &tmp))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = src.read(buf).map_err(StagerError::io("read", source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(StagerError::io("write", &tmp))?;
        size += n as u64;
        progress.advance(n as u64);
        step();
    }
    out.sync_all().map_err(StagerError::io("fsync", &tmp))?;
    step();
    out.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(StagerError::io("chmod", &tmp))?;
    drop(out);
    step();
    let sha = hex::encode(hasher.finalize());
    let obj = repo.object_path(&sha)?;
    if obj.exists() {
        // Dedup: identical content is already published (objects are never modified).
        fs::remove_file(&tmp).map_err(StagerError::io("remove", &tmp))?;
        step();
        return Ok((sha, size));
    }
    let shard = obj
        .parent()
        .ok_or_else(|| StagerError::Invalid("object path".into()))?;
    if !shard.exists() {
        fs::create_dir_all(shard).map_err(StagerError::io("create", shard))?;
        fsutil::fsync_dir(&repo.root().join("objects"))
            .map_err(StagerError::io("fsync", repo.root()))?;
        step();
    }
    fs::rename(&tmp, &obj).map_err(StagerError::io("rename", &obj))?;
    step();
    fsutil::fsync_dir(shard).map_err(StagerError::io("fsync", shard))?;
    step();
    Ok((sha, size))
}

/// Resolves the inputs to (name, source) pairs, refusing duplicates, bad names and
/// symlinks that leave their input tree.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut by_name: BTreeMap<String, Input> = BTreeMap::new();
    let mut add = |name: String, source: PathBuf, size: u64| -> Result<()> {
        if !valid_file_name(&name) {
            return Err(StagerError::Invalid(format!("unusable file name {name:?}")));
        }
        if by_name.contains_key(&name) {
            return Err(StagerError::Invalid(format!(
                "two inputs would both be named {name:?}"
            )));
        }
        by_name.insert(name.clone(), Input { name, source, size });
        Ok(())
    };
    for p in paths {
        let md = fs::metadata(p).map_err(StagerError::io("stat", p))?;
        if md.is_file() {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| StagerError::Invalid(format!("{} has no usable name", p.display())))?
                .to_owned();
            add(name, p.clone(), md.len())?;
            continue;
        }
        if !md.is_dir() {
            return Err(StagerError::Invalid(format!(
                "{} is neither a file nor a directory",
                p.display()
            )));
        }
        let root = p.canonicalize().map_err(StagerError::io("resolve", p))?;
        for e in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let e = e.map_err(|e| StagerError::Invalid(format!("walking {}: {e}", p.display())))?;
            let rel = e
                .path()
                .strip_prefix(&root)
                .map_err(|_| StagerError::Invalid("walk left the tree".into()))?;
            let Some(name) = rel.to_str().map(str::to_owned) else {
                return Err(StagerError::Invalid(format!(
                    "{} is not valid UTF-8",
                    e.path().display()
                )));
            };
            let ft = e.file_type();
            if ft.is_dir() {
                continue;
            }
            if ft.is_file() {
                let size = e
                    .metadata()
                    .map_err(|e| StagerError::Invalid(e.to_string()))?
                    .len();
                add(name, e.path().to_path_buf(), size)?;
            } else if ft.is_symlink() {
                let target = e.path().canonicalize().map_err(|_| {
                    StagerError::Refused(format!("symlink {} leads nowhere", e.path().display()))
                })?;
                if !target.starts_with(&root) {
                    return Err(StagerError::Refused(format!(
                        "symlink {} points outside the input tree ({}); refusing",
                        e.path().display(),
                        target.display()
                    )));
                }
                let tmd = fs::metadata(&target).map_err(StagerError::io("stat", &target))?;
                if !tmd.is_file() {
                    return Err(StagerError::Refused(format!(
                        "symlink {} is not to a regular file",
                        e.path().display()
                    )));
                }
                add(name, target, tmd.len())?;
            } else {
                return Err(StagerError::Invalid(format!(
                    "{} is not a regular file",
                    e.path().display()
                )));
            }
        }
    }
    Ok(by_name.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use commlink::progress::Silent;
    use std::os::unix::fs::MetadataExt as _;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), b"hello").unwrap();
        fs::write(src.join("sub/b.bin"), vec![7u8; 3 * CHUNK + 5]).unwrap();
        (d, src)
    }

    #[test]
    fn publishes_dedups_and_catalogs() {
        let (d, src) = tree();
        let repo = Repository::open(&d.path().join("repo")).unwrap();
        let m = publish(
            &repo,
            "tool",
            "1.0",
            std::slice::from_ref(&src),
            "first",
            &Silent,
        )
        .unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].name, "a.txt");
        assert_eq!(m.files[0].sha256, fsutil::sha256_hex(b"hello"));
        assert_eq!(m.files[1].name, "sub/b.bin");
        let obj = repo.object_path(&m.files[0].sha256).unwrap();
        assert_eq!(fs::metadata(&obj).unwrap().mode() & 0o777, 0o444);
        // Second release with the same content: no new objects.
        let before = repo.objects().unwrap().len();
        publish(&repo, "tool", "1.1", &[src], "", &Silent).unwrap();
        assert_eq!(repo.objects().unwrap().len(), before);
        let cat = repo.catalog(false).unwrap();
        assert_eq!(cat.len(), 2);
        assert_eq!(cat[0].version, "1.1", "newest first");
        assert_eq!(fs::read_dir(repo.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_republish_and_bad_names() {
        let (d, src) = tree();
        let repo = Repository::open(&d.path().join("repo")).unwrap();
        publish(
            &repo,
            "tool",
            "1.0",
            std::slice::from_ref(&src),
            "",
            &Silent,
        )
        .unwrap();
        assert!(matches!(
            publish(
                &repo,
                "tool",
                "1.0",
                std::slice::from_ref(&src),
                "",
                &Silent
            ),
            Err(StagerError::Refused(_))
        ));
        assert!(
            publish(
                &repo,
                "../x",
                "1.0",
                std::slice::from_ref(&src),
                "",
                &Silent
            )
            .is_err()
        );
        assert!(publish(&repo, "tool", "", &[src], "", &Silent).is_err());
    }

    #[test]
    fn symlink_inside_tree_is_followed_outside_is_refused() {
        let (d, src) = tree();
        let repo = Repository::open(&d.path().join("repo")).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("alias.txt")).unwrap();
        let m = publish(
            &repo,
            "tool",
            "1.0",
            std::slice::from_ref(&src),
            "",
            &Silent,
        )
        .unwrap();
        let alias = m.files.iter().find(|f| f.name == "alias.txt").unwrap();
        assert_eq!(alias.sha256, fsutil::sha256_hex(b"hello"));
        let obj = repo.object_path(&alias.sha256).unwrap();
        assert!(fs::symlink_metadata(obj).unwrap().file_type().is_file());

        fs::write(d.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), src.join("evil")).unwrap();
        let err = publish(&repo, "tool", "2.0", &[src], "", &Silent).unwrap_err();
        assert!(matches!(err, StagerError::Refused(_)), "{err}");
        assert!(repo.manifest("tool", "2.0").is_err());
    }

    #[test]
    fn yank_hides_release_and_reclaims_unlinked_objects() {
        let (d, src) = tree();
        let repo = Repository::open(&d.path().join("repo")).unwrap();
        let one = d.path().join("only-in-1");
        fs::write(&one, b"unique to 1.0").unwrap();
        publish(&repo, "tool", "1.0", &[src.clone(), one], "", &Silent).unwrap();
        publish(&repo, "tool", "1.1", &[src], "", &Silent).unwrap();
        let unique = repo
            .object_path(&fsutil::sha256_hex(b"unique to 1.0"))
            .unwrap();
        // An area still links to it: not reclaimed.
        let area_link = d.path().join("area-link");
        fs::hard_link(&unique, &area_link).unwrap();
        repo.yank("tool", "1.0").unwrap();
        assert!(unique.exists());
        assert_eq!(repo.catalog(false).unwrap().len(), 1);
        assert!(repo.catalog(true).unwrap()[1].yanked);
        // The area goes away: the next gc reclaims it; shared objects stay.
        fs::remove_file(&area_link).unwrap();
        assert_eq!(repo.gc().unwrap().0, 1);
        assert!(!unique.exists());
        assert!(
            repo.object_path(&fsutil::sha256_hex(b"hello"))
                .unwrap()
                .exists()
        );
    }
}
