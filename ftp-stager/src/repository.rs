//! The repository: content-addressed objects plus one manifest per release.
//!
//! ```text
//! repository/
//!   objects/ab/cdef…      file content, named by its SHA-256, mode 0444, never modified
//!   twins/ab/cdef….N      copies of an object that reached the file system's hard-link
//!                         limit (ext4: 65,000), for the areas staged after it
//!   releases/PRODUCT/VERSION.json   the manifest: notes, yanked flag, files (name,size,sha256)
//!   tmp/                  imports in progress (never visible as objects or releases)
//!   .lock                 flock held by publish and garbage collection
//! ```
//! A release exists exactly when its manifest does; the manifest is written last and
//! atomically, after every object it names is durable. Dedup across releases is free.
//! Objects are reclaimed ([`Repository::gc`]) when no live (non-yanked) manifest names them
//! and no download area links to them (link count 1); twins as soon as no area links to them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StagerError};
use crate::fsutil;
use crate::signing::ReleaseSignature;

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Release-relative name, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 (also the object's name).
    pub sha256: String,
}

/// A release: what `ffs publish` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Product name.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release notes.
    pub notes: String,
    /// When publishing completed.
    pub published_at: DateTime<Utc>,
    /// Who published it (`local user NAME` for `ffs publish` on the stager host); empty in
    /// manifests written before this was recorded.
    #[serde(default)]
    pub published_by: String,
    /// Withdrawn with `ffs yank`.
    #[serde(default)]
    pub yanked: bool,
    /// When it was yanked.
    #[serde(default)]
    pub yanked_at: Option<DateTime<Utc>>,
    /// Why `ffs repo verify --quarantine` withdrew it (it is then also yanked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// The files, sorted by name.
    pub files: Vec<ManifestFile>,
    /// How the release was signed (`SHA256SUMS` and its minisign signature); `None` for a
    /// release published without a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReleaseSignature>,
}

impl Manifest {
    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// What an area of this release holds for the chosen `files`: those files, then
    /// `SHA256SUMS` and `SHA256SUMS.minisig` when the release is signed.
    pub fn with_signature_files(&self, mut files: Vec<ManifestFile>) -> Vec<ManifestFile> {
        if let Some(s) = &self.signature {
            files.push(s.sums.clone());
            files.push(s.minisig.clone());
        }
        files
    }

    /// The signing key's id, or "" when unsigned.
    pub fn signed_by(&self) -> &str {
        self.signature.as_ref().map_or("", |s| s.key_id.as_str())
    }

    /// As the commlink message type.
    pub fn to_release_info(&self) -> commlink::msg::stager::ReleaseInfo {
        commlink::msg::stager::ReleaseInfo {
            product: self.product.clone(),
            version: self.version.clone(),
            notes: self.notes.clone(),
            published_at: self
                .published_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            yanked: self.yanked,
            signed_by: self.signed_by().to_owned(),
            published_by: self.published_by.clone(),
            quarantined: self.quarantined.clone().unwrap_or_default(),
            files: self
                .files
                .iter()
                .map(|f| commlink::msg::stager::FileInfo {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// Checks a product or version name: `[A-Za-z0-9][A-Za-z0-9._+-]{0,127}`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'))
}

/// Checks a release-relative file name: `/`-separated components, none empty, `.` or `..`,
/// no backslash, no control characters, at most 1024 bytes.
pub fn valid_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && !s.starts_with('/')
        && !s.contains('\\')
        && !s.chars().any(|c| c.is_control())
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A held repository lock (released on drop).
pub struct RepoLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// The repository on disk.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
    /// Parsed manifests, shared by the clones of this handle (see
    /// [`Repository::manifest_shared`]).
    manifests: Arc<Mutex<ManifestCache>>,
    /// Held while a twin is made, so requests that meet the hard-link limit together make
    /// one copy, not one each.
    twin_making: Arc<Mutex<()>>,
}

/// What identifies one version of a manifest file: a rewrite (always atomic, by rename)
/// gives it a new inode, and an edit in place a new size or modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileStamp {
    fn of(md: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            ctime: md.ctime(),
            ctime_nsec: md.ctime_nsec(),
        }
    }
}

/// Parsed manifests by path, each with the stamp of the file it was parsed from. Bounded:
/// emptied when it reaches [`MANIFEST_CACHE_MAX`] entries.
type ManifestCache = HashMap<PathBuf, (FileStamp, Arc<Manifest>)>;

/// Keeps a manifest just parsed from the file version `stamp` names, and returns the one to
/// use: the one already kept for that same version if another reader parsed it meanwhile,
/// so an unchanged file always gives the same `Arc` (the catalog's tag relies on it:
/// `catalog_tags`).
fn keep_parsed(
    cache: &mut ManifestCache,
    p: PathBuf,
    stamp: FileStamp,
    parsed: Arc<Manifest>,
) -> Arc<Manifest> {
    if let Some((s, kept)) = cache.get(&p)
        && *s == stamp
    {
        return kept.clone();
    }
    if cache.len() >= MANIFEST_CACHE_MAX {
        cache.clear();
    }
    cache.insert(p, (stamp, parsed.clone()));
    parsed
}

/// A twin no area links to is reclaimed only after this long without a link change.
pub const TWIN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Manifests held parsed at most (a few hundred bytes to a few KiB each).
const MANIFEST_CACHE_MAX: usize = 4096;

impl Repository {
    /// Opens (creating the layout if missing) the repository at `root`.
    pub fn open(root: &Path) -> Result<Repository> {
        for d in ["objects", "releases", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(StagerError::io("create", &p))?;
        }
        Ok(Repository {
            root: root.to_path_buf(),
            manifests: Arc::default(),
            twin_making: Arc::default(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where temporary import files go (same filesystem as the objects).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The path of the object with this SHA-256.
    pub fn object_path(&self, sha256: &str) -> Result<PathBuf> {
        self.sharded("objects", sha256, "")
    }

    /// The path of an object's `n`th twin (`n` ≥ 1): a copy of the object that download
    /// areas link to once the object itself can take no more hard links.
    pub fn twin_path(&self, sha256: &str, n: u32) -> Result<PathBuf> {
        self.sharded("twins", sha256, &format!(".{n}"))
    }

    /// `top/ab/cdef…tail` for a valid SHA-256.
    fn sharded(&self, top: &str, sha256: &str, tail: &str) -> Result<PathBuf> {
        if !valid_sha(sha256) {
            return Err(StagerError::Invalid(format!("bad object name {sha256:?}")));
        }
        Ok(self
            .root
            .join(top)
            .join(&sha256[..2])
            .join(format!("{}{tail}", &sha256[2..])))
    }

    /// The object's `n`th twin if it exists, checked to be a regular file of the object's
    /// `size` (anything else there is damage: refused, never linked).
    pub fn existing_twin(&self, sha256: &str, n: u32, size: u64) -> Result<Option<PathBuf>> {
        let path = self.twin_path(sha256, n)?;
        match fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_file() && md.len() == size => Ok(Some(path)),
            Ok(_) => {
                tracing::error!(twin = %path.display(), "a twin is not a regular file of its object's size (run `ffs repo verify`)");
                Err(StagerError::Damaged(format!(
                    "{} is damaged in the repository",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StagerError::io("stat", &path)(e)),
        }
    }

    /// The object's `n`th twin ([`Repository::existing_twin`]), made now if it is missing:
    /// the object (of `size` bytes) copied to a temporary file (in `twins/tmp/`, apart from
    /// publishing's `tmp/`), checked for size, synced and made read-only, then linked into
    /// place, so a twin is whole whenever it exists. One request makes it while others that
    /// need it wait. A copy of a large file takes seconds; it happens once per hard-link
    /// limit's worth (ext4: 65,000) of areas holding the same file at once.
    pub fn twin(&self, sha256: &str, n: u32, size: u64) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(path) = self.existing_twin(sha256, n, size)? {
            return Ok(path);
        }
        let _making = lock(&self.twin_making);
        if let Some(path) = self.existing_twin(sha256, n, size)? {
            return Ok(path);
        }
        let path = self.twin_path(sha256, n)?;
        let object = self.object_path(sha256)?;
        let twins = self.root.join("twins");
        let dir = path
            .parent()
            .ok_or_else(|| StagerError::Invalid("twin path".into()))?;
        let tmp_dir = twins.join("tmp");
        for d in [dir, tmp_dir.as_path()] {
            if !d.exists() {
                let new_top = !twins.exists();
                fs::create_dir_all(d).map_err(StagerError::io("create", d))?;
                fsutil::fsync_dir(&twins).map_err(StagerError::io("fsync", &twins))?;
                if new_top {
                    fsutil::fsync_dir(&self.root).map_err(StagerError::io("fsync", &self.root))?;
                }
            }
        }
        let tmp = tmp_dir.join(fsutil::random_hex(8));
        let made = (|| -> std::io::Result<()> {
            let copied = fs::copy(&object, &tmp)?;
            if copied != size {
                return Err(std::io::Error::other(format!(
                    "copied {copied} of {size} bytes"
                )));
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        made.map_err(StagerError::io("make a twin of", &object))?;
        fsutil::fsync_dir(dir).map_err(StagerError::io("fsync", dir))?;
        tracing::info!(object = %sha256, twin = n, "object reached the hard-link limit; areas link to a twin");
        Ok(path)
    }

    /// The manifest path of a release.
    pub fn manifest_path(&self, product: &str, version: &str) -> Result<PathBuf> {
        if !valid_name(product) || !valid_name(version) {
            return Err(StagerError::Invalid(format!(
                "product/version {product:?}/{version:?}: use letters, digits and . _ + -"
            )));
        }
        Ok(self
            .root
            .join("releases")
            .join(product)
            .join(format!("{version}.json")))
    }

    /// Takes the exclusive repository lock, waiting for it.
    pub fn lock(&self) -> Result<RepoLock> {
        self.lock_with(nix::fcntl::FlockArg::LockExclusive)?
            .ok_or_else(|| StagerError::Refused("repository lock".into()))
    }

    /// Takes the lock if it is free right now.
    pub fn try_lock(&self) -> Result<Option<RepoLock>> {
        self.lock_with(nix::fcntl::FlockArg::LockExclusiveNonblock)
    }

    fn lock_with(&self, arg: nix::fcntl::FlockArg) -> Result<Option<RepoLock>> {
        let p = self.root.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(StagerError::io("open", &p))?;
        match nix::fcntl::Flock::lock(f, arg) {
            Ok(l) => Ok(Some(RepoLock { _lock: l })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(StagerError::Io {
                op: "flock",
                path: p,
                source: e.into(),
            }),
        }
    }

    /// Reads one release's manifest.
    pub fn manifest(&self, product: &str, version: &str) -> Result<Manifest> {
        let p = self.manifest_path(product, version)?;
        match fs::read(&p) {
            Ok(b) => parse_manifest(&p, &b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StagerError::NotFound(
                format!("release {product} {version}"),
            )),
            Err(e) => Err(StagerError::io("read", &p)(e)),
        }
    }

    /// A release's manifest, parsed once and shared: a stage request costs one `stat` of
    /// the manifest instead of reading and parsing it. The file is re-read whenever its
    /// stamp (inode, size, modification and change times) differs from the one it was
    /// parsed from, so a yank, quarantine or re-publish is seen at once.
    pub fn manifest_shared(&self, product: &str, version: &str) -> Result<Arc<Manifest>> {
        let p = self.manifest_path(product, version)?;
        self.manifest_at(p, || {
            StagerError::NotFound(format!("release {product} {version}"))
        })
    }

    /// The manifest file at `p`, from the shared cache while its stamp is unchanged;
    /// `not_found` is the error when there is no such file.
    fn manifest_at(
        &self,
        p: PathBuf,
        not_found: impl Fn() -> StagerError,
    ) -> Result<Arc<Manifest>> {
        let stamp = match fs::metadata(&p) {
            Ok(md) => FileStamp::of(&md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(StagerError::io("stat", &p)(e)),
        };
        if let Some((s, m)) = lock(&self.manifests).get(&p)
            && *s == stamp
        {
            return Ok(m.clone());
        }
        // Read through one descriptor and stamp that descriptor, so the stamp is the one of
        // the bytes parsed even if the file is replaced meanwhile.
        let read = || -> std::io::Result<(FileStamp, Vec<u8>)> {
            use std::io::Read as _;
            let mut f = fs::File::open(&p)?;
            let stamp = FileStamp::of(&f.metadata()?);
            let mut b = Vec::new();
            f.read_to_end(&mut b)?;
            Ok((stamp, b))
        };
        let (stamp, bytes) = match read() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(StagerError::io("read", &p)(e)),
        };
        let m = Arc::new(parse_manifest(&p, &bytes)?);
        Ok(keep_parsed(&mut lock(&self.manifests), p, stamp, m))
    }

    /// Every release, by product name, newest first within a product.
    pub fn catalog(&self, include_yanked: bool) -> Result<Vec<Manifest>> {
        Ok(self
            .catalog_shared(include_yanked)?
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect())
    }

    /// [`catalog`](Repository::catalog) with each manifest shared from the cache of
    /// [`manifest_shared`](Repository::manifest_shared): a catalog costs a directory
    /// listing and one `stat` per release, and re-reads only the manifests that changed.
    pub fn catalog_shared(&self, include_yanked: bool) -> Result<Vec<Arc<Manifest>>> {
        let rel = self.root.join("releases");
        let mut out = Vec::new();
        for product in fs::read_dir(&rel).map_err(StagerError::io("read dir", &rel))? {
            let product = product.map_err(StagerError::io("read dir", &rel))?;
            if !product.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let pdir = product.path();
            for e in fs::read_dir(&pdir).map_err(StagerError::io("read dir", &pdir))? {
                let e = e.map_err(StagerError::io("read dir", &pdir))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                // Only finished manifests: temporaries start with '.'.
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                // Gone since the listing (a rename in progress): not in the catalog.
                let m = match self.manifest_at(e.path(), || StagerError::NotFound(String::new())) {
                    Ok(m) => m,
                    Err(StagerError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                if include_yanked || !m.yanked {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| {
            a.product
                .cmp(&b.product)
                .then(b.published_at.cmp(&a.published_at))
                .then(b.version.cmp(&a.version))
        });
        Ok(out)
    }

    /// Withdraws a release: it can no longer be staged (areas already staged keep working
    /// until they expire). Reclaims objects nothing needs any more.
    pub fn yank(&self, product: &str, version: &str) -> Result<Manifest> {
        let _lock = self.lock()?;
        let mut m = self.manifest(product, version)?;
        if !m.yanked {
            m.yanked = true;
            m.yanked_at = Some(Utc::now());
            self.write_manifest(&m)?;
        }
        drop(_lock);
        self.gc()?;
        Ok(m)
    }

    /// Writes a manifest atomically (temp, fsync, rename, fsync dir).
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let p = self.manifest_path(&m.product, &m.version)?;
        let dir = p
            .parent()
            .ok_or_else(|| StagerError::Invalid("manifest path".into()))?;
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(StagerError::io("create", dir))?;
            fsutil::fsync_dir(&self.root.join("releases"))
                .map_err(StagerError::io("fsync", &self.root))?;
        }
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StagerError::Corrupt {
            path: p.clone(),
            why: e.to_string(),
        })?;
        fsutil::atomic_write(&p, &bytes, 0o444).map_err(StagerError::io("write", &p))
    }

    /// Removes objects that no live manifest names and no area links to (link count 1).
    /// Returns (objects removed, bytes freed). Skips the run if a publish holds the lock.
    pub fn gc(&self) -> Result<(u64, u64)> {
        self.gc_with(TWIN_GRACE)
    }

    /// [`Repository::gc`], reclaiming unused twins once `twin_grace` has passed since their
    /// last link change.
    pub fn gc_with(&self, twin_grace: std::time::Duration) -> Result<(u64, u64)> {
        let Some(_lock) = self.try_lock()? else {
            return Ok((0, 0));
        };
        let live: HashSet<String> = self
            .catalog(false)?
            .into_iter()
            .flat_map(|m| m.with_signature_files(m.files.clone()))
            .map(|f| f.sha256)
            .collect();
        let (mut n, mut bytes) = (0, 0);
        let objects = self.root.join("objects");
        for (sha, path) in self.objects()? {
            if live.contains(&sha) {
                continue;
            }
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(_) => continue,
            };
            if md.nlink() == 1 {
                fs::remove_file(&path).map_err(StagerError::io("remove", &path))?;
                n += 1;
                bytes += md.len();
                tracing::info!(object = %sha, bytes = md.len(), "reclaimed unreferenced object");
            }
        }
        if n > 0 {
            let _ = fsutil::fsync_dir(&objects);
        }
        // Twins no area has linked to for a while (the next area that needs one makes it
        // again). A link or unlink sets a file's ctime, so a twin just made, or just left by
        // its last area, is kept for `twin_grace`: a request about to link it finds it.
        let now = std::time::SystemTime::now();
        for (_, _, path) in self.twins()? {
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            let changed =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(md.ctime().max(0) as u64);
            let idle = now.duration_since(changed).unwrap_or_default();
            if md.file_type().is_file()
                && md.nlink() == 1
                && idle >= twin_grace
                && fs::remove_file(&path).is_ok()
            {
                n += 1;
                bytes += md.len();
                tracing::info!(twin = %path.display(), "reclaimed a twin no area links to");
            }
        }
        Ok((n, bytes))
    }

    /// Every twin ([`Repository::twin`]): (the object's sha256, its number, path).
    pub fn twins(&self) -> Result<Vec<(String, u32, PathBuf)>> {
        let twins = self.root.join("twins");
        let mut out = Vec::new();
        let Ok(shards) = fs::read_dir(&twins) else {
            return Ok(out);
        };
        for d in shards {
            let d = d.map_err(StagerError::io("read dir", &twins))?;
            let prefix = d.file_name().to_string_lossy().into_owned();
            let dp = d.path();
            if !d.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for e in fs::read_dir(&dp).map_err(StagerError::io("read dir", &dp))? {
                let e = e.map_err(StagerError::io("read dir", &dp))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((rest, n)) = name.split_once('.') else {
                    continue;
                };
                let sha = format!("{prefix}{rest}");
                // Only the names `twin_path` makes (`1`, not `01` or `+1`).
                if let Ok(n) = n.parse::<u32>()
                    && n.to_string() == name[rest.len() + 1..]
                    && valid_sha(&sha)
                {
                    out.push((sha, n, e.path()));
                }
            }
        }
        Ok(out)
    }

    /// Every object: (sha256, path).
    pub fn objects(&self) -> Result<Vec<(String, PathBuf)>> {
        let objects = self.root.join("objects");
        let mut out = Vec::new();
        for d in fs::read_dir(&objects).map_err(StagerError::io("read dir", &objects))? {
            let d = d.map_err(StagerError::io("read dir", &objects))?;
            let prefix = d.file_name().to_string_lossy().into_owned();
            if !d.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dp = d.path();
            for e in fs::read_dir(&dp).map_err(StagerError::io("read dir", &dp))? {
                let e = e.map_err(StagerError::io("read dir", &dp))?;
                let sha = format!("{prefix}{}", e.file_name().to_string_lossy());
                if valid_sha(&sha) {
                    out.push((sha, e.path()));
                }
            }
        }
        Ok(out)
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the cache is
/// consistent between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| StagerError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let ok = valid_name(&m.product)
        && valid_name(&m.version)
        && m.files
            .iter()
            .all(|f| valid_file_name(&f.name) && valid_sha(&f.sha256))
        && m.signature.as_ref().is_none_or(|s| {
            crate::signing::valid_key_id(&s.key_id)
                && s.sums.name == crate::signing::SUMS_NAME
                && s.minisig.name == crate::signing::SIG_NAME
                && valid_sha(&s.sums.sha256)
                && valid_sha(&s.minisig.sha256)
        });
    if !ok {
        return Err(StagerError::Corrupt {
            path: path.to_path_buf(),
            why: "invalid product, version, file name or checksum".into(),
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release with no files, published now.
    fn empty_release(product: &str, version: &str) -> Manifest {
        Manifest {
            product: product.into(),
            version: version.into(),
            notes: String::new(),
            published_at: Utc::now(),
            published_by: String::new(),
            yanked: false,
            yanked_at: None,
            quarantined: None,
            files: vec![],
            signature: None,
        }
    }

    #[test]
    fn shared_manifests_are_parsed_once_and_reread_when_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(d.path()).unwrap();
        let mut m = empty_release("p", "1");
        m.notes = "first".into();
        repo.write_manifest(&m).unwrap();
        let a = repo.manifest_shared("p", "1").unwrap();
        let b = repo.clone().manifest_shared("p", "1").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second lookup is served parsed");
        m.notes = "second".into();
        repo.write_manifest(&m).unwrap();
        assert_eq!(repo.manifest_shared("p", "1").unwrap().notes, "second");
        assert!(repo.yank("p", "1").unwrap().yanked);
        assert!(repo.manifest_shared("p", "1").unwrap().yanked);
        assert!(matches!(
            repo.manifest_shared("p", "2"),
            Err(StagerError::NotFound(_))
        ));
    }

    /// Two readers that both missed the cache and parsed the same unchanged file end with
    /// the same `Arc`: the second gets the one the first kept (else the catalog's tag would
    /// change with nothing changed, and a web frontend be sent the whole catalog again).
    #[test]
    fn readers_racing_on_one_unchanged_manifest_share_what_the_first_kept() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(d.path()).unwrap();
        repo.write_manifest(&empty_release("p", "1")).unwrap();
        let path = d.path().join("releases/p/1.json");
        let stamp = FileStamp::of(&fs::metadata(&path).unwrap());
        let mut cache = ManifestCache::new();
        let first = Arc::new(empty_release("p", "1"));
        let second = Arc::new(empty_release("p", "1"));
        let kept = keep_parsed(&mut cache, path.clone(), stamp, first.clone());
        assert!(Arc::ptr_eq(&kept, &first));
        let kept = keep_parsed(&mut cache, path.clone(), stamp, second);
        assert!(
            Arc::ptr_eq(&kept, &first),
            "the racing reader gets the kept one"
        );
        // A new version of the file replaces what was kept.
        let newer = FileStamp {
            size: stamp.size + 1,
            ..stamp
        };
        let third = Arc::new(empty_release("p", "1"));
        let kept = keep_parsed(&mut cache, path, newer, third.clone());
        assert!(Arc::ptr_eq(&kept, &third));
    }

    #[test]
    fn catalog_shares_parsed_manifests_and_sees_every_change_at_once() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(d.path()).unwrap();
        let m = empty_release;
        repo.write_manifest(&m("p", "1")).unwrap();
        repo.write_manifest(&m("q", "1")).unwrap();
        let first = repo.catalog_shared(false).unwrap();
        let again = repo.catalog_shared(false).unwrap();
        assert_eq!(first.len(), 2);
        assert!(
            first.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)),
            "an unchanged catalog is served parsed"
        );
        // A yank, a new release and a manifest rewritten in place by hand: all seen.
        repo.yank("p", "1").unwrap();
        repo.write_manifest(&m("p", "2")).unwrap();
        let q = repo.manifest_path("q", "1").unwrap();
        let text = std::fs::read_to_string(&q).unwrap();
        std::fs::write(&q, text.replace("\"notes\": \"\"", "\"notes\": \"edited\"")).unwrap();
        let names = |c: &[Arc<Manifest>]| {
            c.iter()
                .map(|m| format!("{} {} {}", m.product, m.version, m.notes))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&repo.catalog_shared(false).unwrap()),
            ["p 2 ", "q 1 edited"]
        );
        assert_eq!(repo.catalog(true).unwrap().len(), 3);
    }

    #[test]
    fn names() {
        assert!(valid_name("tool"));
        assert!(valid_name("1.2.3-rc1+b"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("-x"));
        assert!(valid_file_name("a/b/c.iso"));
        for bad in [
            "", "/a", "a//b", "a/../b", "./a", "a\\b", "a\nb", "..", "a/",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn requests_meeting_the_link_limit_together_make_one_twin_and_odd_names_are_no_twins() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(d.path()).unwrap();
        let sha = fsutil::sha256_hex(b"content");
        let obj = repo.object_path(&sha).unwrap();
        fs::create_dir_all(obj.parent().unwrap()).unwrap();
        fs::write(&obj, b"content").unwrap();
        let made: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| repo.twin(&sha, 1, 7).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(made.iter().all(|p| *p == made[0]));
        assert_eq!(fs::read(&made[0]).unwrap(), b"content");
        assert_eq!(
            fs::read_dir(d.path().join("twins/tmp")).unwrap().count(),
            0,
            "no temporary copy left"
        );
        assert_eq!(repo.twins().unwrap().len(), 1);
        // A file under twins/ not named as `twin_path` names them is not a twin.
        let odd = made[0].with_file_name(format!("{}.01", &sha[2..]));
        fs::write(&odd, b"other").unwrap();
        assert_eq!(repo.twins().unwrap().len(), 1);
        // A twin that is not its object's size is refused, not linked.
        fs::remove_file(&made[0]).unwrap();
        fs::write(&made[0], b"cut").unwrap();
        assert!(matches!(
            repo.twin(&sha, 1, 7),
            Err(StagerError::Damaged(_))
        ));
    }

    #[test]
    fn object_paths_are_sharded_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let r = Repository::open(d.path()).unwrap();
        let sha = "ab".repeat(32);
        assert!(
            r.object_path(&sha)
                .unwrap()
                .ends_with(format!("objects/ab/{}", &sha[2..]))
        );
        assert!(r.object_path("../../etc/passwd").is_err());
        assert!(r.manifest_path("..", "1").is_err());
    }
}
