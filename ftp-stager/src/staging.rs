//! [`Stager`]: creates, looks up and removes download areas; records deliveries and stats.
//!
//! Staging = `areas/<random id>/` plus one hard link per file under its release-relative
//! name. The method (hard link, or an explicitly configured reflink/copy fallback) is fixed
//! at start-up by comparing the device ids of the repository and the areas directory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{Duration, Utc};
use commlink::msg::stager::{self as msg, Delivery};
use commlink::stats::percentile;

use crate::area_dirs::AreaDirs;
use crate::areas::{AreaRecord, Secrets, password_hash, rfc3339, token_hash};
use crate::config::{Fallback, StagerConfig};
use crate::error::{Result, StagerError};
use crate::fsutil;
use crate::repository::{Manifest, ManifestFile, Repository, valid_file_name};
use crate::state::{AreaChange, AreaJournal, DeliveryLog};

/// How files get into an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `link(2)`: constant time, no bytes copied (the normal case).
    HardLink,
    /// FICLONE ioctl (copy-on-write clone), copying when the filesystem cannot clone.
    Reflink,
    /// Byte copy.
    Copy,
}

impl Method {
    /// `hardlink`, `reflink` or `copy`.
    pub fn name(self) -> &'static str {
        match self {
            Method::HardLink => "hardlink",
            Method::Reflink => "reflink",
            Method::Copy => "copy",
        }
    }

    /// Places `src` at `dst` (which must not exist). Returns the method actually used
    /// (a reflink that the filesystem refuses becomes a copy).
    pub fn place(self, src: &Path, dst: &Path) -> std::io::Result<Method> {
        match self {
            Method::HardLink => fs::hard_link(src, dst).map(|()| Method::HardLink),
            Method::Reflink => match reflink(src, dst) {
                Ok(()) => Ok(Method::Reflink),
                Err(e) => {
                    let _ = fs::remove_file(dst);
                    tracing::debug!(error = %e, "reflink refused; copying");
                    copy_readonly(src, dst).map(|()| Method::Copy)
                }
            },
            Method::Copy => copy_readonly(src, dst).map(|()| Method::Copy),
        }
    }
}

/// Clones `src` into a new file `dst` with the FICLONE ioctl (btrfs, XFS, bcachefs).
pub fn reflink(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // _IOW(0x94, 9, int) from linux/fs.h.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let s = fs::File::open(src)?;
    let d = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(dst)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its argument and touches no user memory.
    let rc = unsafe { libc::ioctl(d.as_raw_fd(), FICLONE as _, s.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn copy_readonly(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::copy(src, dst)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o444))
}

/// Where the URLs handed out point.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// Host name or address.
    pub host: String,
    /// FTP port.
    pub ftp_port: u16,
    /// HTTPS port.
    pub https_port: u16,
}

/// The live areas, indexed three ways. Records are shared (`Arc`) with the state writer,
/// which journals and snapshots them without copying.
#[derive(Debug, Default)]
struct Areas {
    by_id: BTreeMap<String, Arc<AreaRecord>>,
    by_user: HashMap<String, String>,
    by_token: HashMap<String, String>,
}

impl Areas {
    fn insert(&mut self, r: Arc<AreaRecord>) {
        self.by_user.insert(r.ftp_user.clone(), r.id.clone());
        self.by_token.insert(r.token_hash.clone(), r.id.clone());
        self.by_id.insert(r.id.clone(), r);
    }
    fn remove(&mut self, id: &str) -> Option<Arc<AreaRecord>> {
        let r = self.by_id.remove(id)?;
        self.by_user.remove(&r.ftp_user);
        self.by_token.remove(&r.token_hash);
        Some(r)
    }
}

const LATENCY_WINDOW: usize = 10_000;

/// The staging engine shared by the commlink service, the FTP server and the HTTPS server.
#[derive(Debug)]
pub struct Stager {
    repo: Repository,
    areas_dir: PathBuf,
    state_dir: PathBuf,
    method: Method,
    default_ttl: u64,
    max_ttl: u64,
    urls: Mutex<PublicUrls>,
    areas: Arc<Mutex<Areas>>,
    dirs: AreaDirs,
    persist: Mutex<std::sync::mpsc::Sender<Persist>>,
    deliveries: Mutex<DeliveryLog>,
    latencies_us: Mutex<VecDeque<u64>>,
    stage_count: std::sync::atomic::AtomicU64,
    signer: Option<Arc<crate::signing::Signer>>,
    publish_limits: Arc<crate::upload::Limits>,
    catalog_tags: crate::catalog_tags::CatalogTags,
    /// Per object that reached the hard-link limit, the twin areas link to now.
    twins: Mutex<HashMap<String, u32>>,
    /// Whether `twins` holds anything.
    any_twins: std::sync::atomic::AtomicBool,
}

/// Twins tried per object before a stage request gives up (each takes a hard-link limit's
/// worth of areas: 4,096 × 65,000 on ext4).
const MAX_TWINS: u32 = 4096;

impl Stager {
    /// Opens the repository, areas dir and state dir (creating them), checks that staging
    /// can hard-link (or that a fallback is configured), and loads the persisted areas.
    pub fn open(cfg: &StagerConfig) -> Result<Stager> {
        let repo = Repository::open(&cfg.repository)?;
        fs::create_dir_all(&cfg.areas_dir).map_err(StagerError::io("create", &cfg.areas_dir))?;
        fsutil::ensure_private_dir(&cfg.state_dir)
            .map_err(StagerError::io("create", &cfg.state_dir))?;
        let areas_dir = cfg
            .areas_dir
            .canonicalize()
            .map_err(StagerError::io("resolve", &cfg.areas_dir))?;
        let objects = repo.root().join("objects");
        let same_fs = fsutil::device_of(&objects).map_err(StagerError::io("stat", &objects))?
            == fsutil::device_of(&areas_dir).map_err(StagerError::io("stat", &areas_dir))?;
        let method = match (same_fs, cfg.fallback) {
            (true, _) => Method::HardLink,
            (false, Fallback::None) => {
                return Err(StagerError::Config(format!(
                    "repository {} and areas_dir {} are on different filesystems, so staging \
                     cannot hard-link. Put them on one filesystem, or set \
                     fallback = \"reflink\" or \"copy\" in [stager] (slow for large files)",
                    cfg.repository.display(),
                    areas_dir.display()
                )));
            }
            (false, Fallback::Reflink) => Method::Reflink,
            (false, Fallback::Copy) => Method::Copy,
        };
        if method != Method::HardLink {
            tracing::warn!(
                method = method.name(),
                "repository and areas are on different filesystems: staging will use the configured fallback"
            );
        }
        let mut areas = Areas::default();
        let (mut journal, records) = AreaJournal::open(&cfg.state_dir)?;
        let mut dropped = 0;
        for r in records {
            if areas_dir.join(&r.id).is_dir() {
                areas.insert(Arc::new(r));
            } else {
                tracing::warn!(area = %r.id, "area directory missing; dropping its record");
                dropped += 1;
            }
        }
        // Start from a fresh snapshot and an empty journal when there is anything to fold.
        if dropped > 0 || journal.lines() > 0 {
            journal.compact(areas.by_id.values().map(|r| &**r))?;
        }
        let deliveries = DeliveryLog::open(&cfg.state_dir)?;
        // Remote publishes are signed on the stager when it holds the signing key.
        let signer = crate::signing::Signer::from_config(cfg)?.map(Arc::new);
        let areas = Arc::new(Mutex::new(areas));
        let default_port = |s: &str| {
            s.rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0)
        };
        let urls = PublicUrls {
            host: cfg.public_host.clone(),
            ftp_port: if cfg.public_ftp_port != 0 {
                cfg.public_ftp_port
            } else {
                default_port(&cfg.ftp_listen)
            },
            https_port: if cfg.public_https_port != 0 {
                cfg.public_https_port
            } else {
                default_port(&cfg.https_listen)
            },
        };
        tracing::info!(
            repository = %cfg.repository.display(),
            areas = %areas_dir.display(),
            method = method.name(),
            live_areas = lock(&areas).by_id.len(),
            "stager opened"
        );
        Ok(Stager {
            repo,
            state_dir: cfg.state_dir.clone(),
            method,
            default_ttl: cfg.area_ttl_secs.max(1),
            max_ttl: cfg.max_ttl_secs.max(1),
            urls: Mutex::new(urls),
            persist: Mutex::new(spawn_persister(journal, areas.clone())),
            dirs: AreaDirs::new(&areas_dir),
            areas_dir,
            areas,
            deliveries: Mutex::new(deliveries),
            latencies_us: Mutex::new(VecDeque::new()),
            stage_count: Default::default(),
            signer,
            publish_limits: Arc::new(crate::upload::Limits::from_config(cfg)),
            catalog_tags: crate::catalog_tags::CatalogTags::new(),
            twins: Mutex::default(),
            any_twins: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Remote-publishing limits (object size cap, uploads per token, abandoned age).
    pub fn publish_limits(&self) -> &Arc<crate::upload::Limits> {
        &self.publish_limits
    }

    /// Hands a change to the state writer. Called with the areas lock held, so that what
    /// the writer finds in memory when it snapshots has all been handed to it already.
    fn journal(&self, change: AreaChange) {
        let _ = lock(&self.persist).send(Persist::Change(change));
    }

    /// Waits until every area change so far is durable in the state file.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if lock(&self.persist).send(Persist::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The (canonical) areas directory.
    pub fn areas_dir(&self) -> &Path {
        &self.areas_dir
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The staging method chosen at start-up.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Sets the ports put into URLs (used when listeners were bound to port 0).
    pub fn set_public_ports(&self, ftp_port: u16, https_port: u16) {
        let mut u = lock(&self.urls);
        u.ftp_port = ftp_port;
        u.https_port = https_port;
    }

    /// The signing key remote publishes are signed with (`[stager] signing_key`).
    pub fn signer(&self) -> Option<&crate::signing::Signer> {
        self.signer.as_deref()
    }

    /// The public URL settings.
    pub fn public_urls(&self) -> PublicUrls {
        lock(&self.urls).clone()
    }

    /// The catalog.
    pub fn catalog(&self, include_yanked: bool) -> Result<msg::Catalog> {
        self.catalog_if(include_yanked, None)
    }

    /// The catalog, tagged; only `unchanged` (no releases) when `if_not` is its tag (the
    /// requester holds it already: [`crate::catalog_tags`]).
    pub fn catalog_if(&self, include_yanked: bool, if_not: Option<&str>) -> Result<msg::Catalog> {
        let manifests = self.repo.catalog_shared(include_yanked)?;
        let tag = self.catalog_tags.tag(include_yanked, &manifests);
        if if_not == Some(tag.as_str()) {
            return Ok(msg::Catalog {
                releases: Vec::new(),
                tag: Some(tag),
                unchanged: true,
            });
        }
        Ok(msg::Catalog {
            releases: manifests.iter().map(|m| m.to_release_info()).collect(),
            tag: Some(tag),
            unchanged: false,
        })
    }

    /// Stages a release (or some of its files) into a new area.
    pub fn stage(&self, req: &msg::StageRequest) -> Result<msg::StagedArea> {
        let t0 = Instant::now();
        let m = self.repo.manifest_shared(&req.product, &req.version)?;
        if m.yanked {
            return Err(StagerError::Refused(format!(
                "release {} {} was withdrawn",
                m.product, m.version
            )));
        }
        // A signed release's areas always hold SHA256SUMS and its signature too.
        let files = m.with_signature_files(select_files(&m, &req.files)?);
        let ttl = req
            .ttl_secs
            .unwrap_or(self.default_ttl)
            .clamp(1, self.max_ttl);
        let (id, dir) = self
            .dirs
            .take()
            .map_err(StagerError::io("create", &self.areas_dir))?;
        let used = match self.place_files(&dir, &m, &files) {
            Ok(used) => used,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        if used != Method::HardLink {
            tracing::warn!(area = %id, method = used.name(), "staged with fallback (bytes copied or cloned)");
        }
        let secrets = Secrets::generate();
        let salt = fsutil::random_hex(16);
        let now = Utc::now();
        let record = Arc::new(AreaRecord {
            id: id.clone(),
            label: req.label.clone(),
            product: m.product.clone(),
            version: m.version.clone(),
            created_at: now,
            expires_at: now + Duration::seconds(ttl as i64),
            ftp_user: secrets.ftp_user.clone(),
            ftp_hash: password_hash(&salt, &secrets.ftp_password),
            ftp_salt: salt,
            token_hash: token_hash(&secrets.token),
            files,
            method: used.name().into(),
        });
        {
            let mut areas = lock(&self.areas);
            areas.insert(record.clone());
            self.journal(AreaChange::Add(record.clone()));
        }
        let us = self.record_latency(t0);
        tracing::info!(area = %id, product = %m.product, version = %m.version, files = record.files.len(), label = %req.label, micros = us, "staged");
        Ok(self.staged_reply(&record, &m, secrets))
    }

    /// Puts every file of the area in place; returns the method that did (a fallback when
    /// hard links are impossible). Refuses objects that are damaged in the repository.
    fn place_files(&self, dir: &Path, m: &Manifest, files: &[ManifestFile]) -> Result<Method> {
        let mut used = self.method;
        for f in files {
            let src = self.repo.object_path(&f.sha256)?;
            check_object(&src, m, f)?;
            let dst = dir.join(&f.name);
            if let Some(parent) = dst.parent()
                && parent != dir
            {
                fs::create_dir_all(parent).map_err(StagerError::io("create", parent))?;
            }
            used = self.place_file(f, &src, &dst)?;
        }
        Ok(used)
    }

    /// Places one file: a hard link to its object, or, once the object has as many links as
    /// the file system allows (`EMLINK`; ext4 stops at 65,000 areas holding one file), to
    /// the object's first twin that can take one more ([`Repository::twin`], made when
    /// missing). The twin last used for each object is remembered, so later areas go
    /// straight to it.
    fn place_file(&self, f: &ManifestFile, object: &Path, dst: &Path) -> Result<Method> {
        if self.method != Method::HardLink {
            return self
                .method
                .place(object, dst)
                .map_err(StagerError::io("link", object));
        }
        let sha256 = f.sha256.as_str();
        // Until some object needs a twin, no lock on this path.
        let remembered = if self.any_twins.load(std::sync::atomic::Ordering::Acquire) {
            lock(&self.twins).get(sha256).copied().unwrap_or(0)
        } else {
            0
        };
        // The remembered twin if it is still there (else the object may have room again).
        let (mut n, mut src) = match remembered {
            0 => (0, None),
            n => match self.repo.existing_twin(sha256, n, f.size)? {
                Some(p) => (n, Some(p)),
                None => (0, None),
            },
        };
        let mut restarted = false;
        loop {
            let from = src.as_deref().unwrap_or(object);
            match fs::hard_link(from, dst) {
                Ok(()) => {
                    if n > 0 {
                        lock(&self.twins).insert(sha256.to_owned(), n);
                        self.any_twins
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    return Ok(Method::HardLink);
                }
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) && n < MAX_TWINS => {
                    n += 1;
                    src = Some(self.repo.twin(sha256, n, f.size)?);
                }
                // Reclaimed between its check and this link (no area held it): start again
                // from the object, once.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && n > 0 && !restarted => {
                    restarted = true;
                    (n, src) = (0, None);
                }
                Err(e) => return Err(StagerError::io("link", from)(e)),
            }
        }
    }

    /// Adds one stage request's latency to the window the stats report; returns it in µs.
    fn record_latency(&self, t0: Instant) -> u64 {
        let us = t0.elapsed().as_micros() as u64;
        {
            let mut l = lock(&self.latencies_us);
            if l.len() == LATENCY_WINDOW {
                l.pop_front();
            }
            l.push_back(us);
        }
        self.stage_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        us
    }

    /// What the web frontend gets back: the area's locators and secrets (shown once).
    fn staged_reply(&self, record: &AreaRecord, m: &Manifest, secrets: Secrets) -> msg::StagedArea {
        let u = self.public_urls();
        msg::StagedArea {
            area_id: record.id.clone(),
            ftp_url: format!(
                "ftp://{}:{}@{}:{}/",
                secrets.ftp_user,
                secrets.ftp_password,
                url_host(&u.host),
                u.ftp_port
            ),
            https_base: format!(
                "https://{}:{}/d/{}/",
                url_host(&u.host),
                u.https_port,
                secrets.token
            ),
            ftp_user: secrets.ftp_user,
            ftp_password: secrets.ftp_password,
            token: secrets.token,
            expires_at: rfc3339(record.expires_at),
            signed_by: m.signed_by().to_owned(),
            files: record
                .files
                .iter()
                .map(|f| msg::FileInfo {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        }
    }

    /// Removes an area now. Returns false if there was none.
    pub fn unstage(&self, id: &str) -> Result<bool> {
        let removed = {
            let mut areas = lock(&self.areas);
            let r = areas.remove(id);
            if r.is_some() {
                self.journal(AreaChange::Remove(id.to_owned()));
            }
            r
        };
        let Some(r) = removed else { return Ok(false) };
        let dir = self.areas_dir.join(&r.id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StagerError::io("remove", &dir)(e)),
        }
        tracing::info!(area = %r.id, label = %r.label, "area removed");
        Ok(true)
    }

    /// Live areas, newest first.
    pub fn areas(&self) -> msg::AreaList {
        let areas = lock(&self.areas);
        let mut v: Vec<&AreaRecord> = areas.by_id.values().map(|r| &**r).collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.created_at));
        msg::AreaList {
            areas: v.into_iter().map(AreaRecord::summary).collect(),
        }
    }

    /// Removes expired areas and stray directories, then reclaims unreferenced objects.
    /// Returns the number of areas removed.
    pub fn sweep(&self) -> Result<usize> {
        let now = Utc::now();
        let expired: Vec<String> = lock(&self.areas)
            .by_id
            .values()
            .filter(|r| r.expired(now))
            .map(|r| r.id.clone())
            .collect();
        let mut n = 0;
        for id in expired {
            if self.unstage(&id)? {
                n += 1;
            }
        }
        // Directories with no record (a crash between mkdir and the state write).
        let mut known: std::collections::HashSet<String> =
            lock(&self.areas).by_id.keys().cloned().collect();
        known.extend(self.dirs.ready_ids());
        if let Ok(rd) = fs::read_dir(&self.areas_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default().as_secs() > 60)
                    .unwrap_or(false);
                if !known.contains(&name) && old {
                    tracing::info!(dir = %name, "removing stray area directory");
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let (objs, bytes) = self.repo.gc()?;
        if objs > 0 {
            tracing::info!(objects = objs, bytes, "reclaimed repository space");
        }
        crate::upload::remove_abandoned(&self.repo, self.publish_limits.abandoned_after);
        Ok(n)
    }

    /// The area an FTP login opens, if the credentials are right and it has not expired.
    pub fn ftp_login(&self, user: &str, password: &str) -> Option<AreaRecord> {
        let areas = lock(&self.areas);
        let id = areas.by_user.get(user)?;
        let r = areas.by_id.get(id)?;
        (r.password_matches(password) && !r.expired(Utc::now())).then(|| (**r).clone())
    }

    /// The live area of an FTP user (no password check: after login).
    pub fn area_of_user(&self, user: &str) -> Option<AreaRecord> {
        let areas = lock(&self.areas);
        let r = areas.by_id.get(areas.by_user.get(user)?)?;
        (!r.expired(Utc::now())).then(|| (**r).clone())
    }

    /// The area of an FTP user even if it expired (to attribute a finished transfer).
    pub fn area_of_user_any(&self, user: &str) -> Option<AreaRecord> {
        let areas = lock(&self.areas);
        areas
            .by_id
            .get(areas.by_user.get(user)?)
            .map(|r| (**r).clone())
    }

    /// The live area a capability token opens.
    pub fn area_of_token(&self, token: &str) -> Option<AreaRecord> {
        let areas = lock(&self.areas);
        let r = areas.by_id.get(areas.by_token.get(&token_hash(token))?)?;
        (!r.expired(Utc::now())).then(|| (**r).clone())
    }

    /// Records a completed transfer.
    pub fn record_delivery(&self, area: &AreaRecord, file: &str, bytes: u64, protocol: &str) {
        let d = Delivery {
            seq: 0,
            area_id: area.id.clone(),
            label: area.label.clone(),
            file: file.to_owned(),
            bytes,
            protocol: protocol.to_owned(),
            at: rfc3339(Utc::now()),
        };
        match lock(&self.deliveries).append(d) {
            Ok(d) => {
                tracing::info!(seq = d.seq, area = %d.area_id, file = %d.file, bytes, protocol, "delivered")
            }
            Err(e) => tracing::error!(error = %e, "cannot record a delivery"),
        }
    }

    /// Deliveries after `after_seq`.
    pub fn deliveries(&self, req: &msg::DeliveriesRequest) -> msg::Deliveries {
        let mut log = lock(&self.deliveries);
        let limit = req.limit.unwrap_or(1000).clamp(1, 1000) as usize;
        msg::Deliveries {
            deliveries: log.after(req.after_seq, limit),
            last_seq: log.last_seq(),
        }
    }

    /// Stage latency and totals.
    pub fn stats(&self) -> msg::Stats {
        let mut l: Vec<u64> = lock(&self.latencies_us).iter().copied().collect();
        l.sort_unstable();
        let (areas, area_bytes) = {
            let a = lock(&self.areas);
            (
                a.by_id.len() as u64,
                a.by_id.values().map(|r| r.bytes()).sum(),
            )
        };
        let (deliveries, delivered_bytes) = lock(&self.deliveries).totals();
        msg::Stats {
            stage_count: self.stage_count.load(std::sync::atomic::Ordering::Relaxed),
            stage_p50_us: percentile(&l, 50.0),
            stage_p99_us: percentile(&l, 99.0),
            stage_max_us: l.last().copied().unwrap_or(0),
            method: self.method.name().into(),
            areas,
            area_bytes,
            deliveries,
            delivered_bytes,
        }
    }
}

impl Drop for Stager {
    fn drop(&mut self) {
        self.flush();
    }
}

enum Persist {
    Change(AreaChange),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// How often, at most, the state writer appends and syncs (group commit under load).
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// The state writer. Area changes take effect in memory at once and are journaled by this
/// thread right after: the changes that arrive meanwhile (and, under load, within
/// [`SYNC_EVERY`] of the last sync) share one append and one `fdatasync` (group commit),
/// so a stage request never waits for the disk and the cost per change does not grow with
/// the number of live areas. A crash can lose the changes of the last few milliseconds:
/// the links of an area lost that way stop working and the sweeper removes its directory.
/// When the journal is due ([`AreaJournal::compact_due`]), the snapshot is rewritten from
/// memory. [`Stager::flush`] (called on shutdown and drop)
/// waits for everything to be durable.
fn spawn_persister(
    mut journal: AreaJournal,
    areas: Arc<Mutex<Areas>>,
) -> std::sync::mpsc::Sender<Persist> {
    let (tx, rx) = std::sync::mpsc::channel::<Persist>();
    let spawned = std::thread::Builder::new()
        .name("ffs-stager-state".into())
        .spawn(move || {
            let mut changes = Vec::new();
            let mut waiters = Vec::new();
            let take = |m: Persist, changes: &mut Vec<AreaChange>, waiters: &mut Vec<_>| match m {
                Persist::Change(c) => changes.push(c),
                Persist::Flush(w) => waiters.push(w),
            };
            let mut synced: Option<Instant> = None;
            while let Ok(first) = rx.recv() {
                take(first, &mut changes, &mut waiters);
                // At most one append and sync per SYNC_EVERY: under load the changes of
                // that interval join one batch (a sync costs as much CPU for one change as
                // for a hundred). Alone, a change is written at once.
                if let Some(t) = synced
                    && waiters.is_empty()
                {
                    let due = t + SYNC_EVERY;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                while let Ok(m) = rx.try_recv() {
                    take(m, &mut changes, &mut waiters);
                }
                if let Err(e) = journal.append(&changes) {
                    tracing::error!(error = %e, "cannot journal area changes");
                }
                synced = Some(Instant::now());
                changes.clear();
                let live = lock(&areas).by_id.len();
                if journal.compact_due(live) {
                    // Changes are handed over under the areas lock, so once it is held
                    // here, every change the memory reflects is in the channel: journal
                    // them first, and the snapshot is exactly the journaled state.
                    let snapshot: Vec<Arc<AreaRecord>> = {
                        let a = lock(&areas);
                        while let Ok(m) = rx.try_recv() {
                            take(m, &mut changes, &mut waiters);
                        }
                        a.by_id.values().cloned().collect()
                    };
                    let r = journal
                        .append(&changes)
                        .and_then(|()| journal.compact(snapshot.iter().map(|r| &**r)));
                    changes.clear();
                    match r {
                        Ok(()) => {
                            tracing::debug!(areas = snapshot.len(), "area snapshot rewritten")
                        }
                        Err(e) => tracing::error!(error = %e, "cannot rewrite the area snapshot"),
                    }
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the state writer thread");
    }
    tx
}

/// The files a stage request asks for: all of the release when it names none, else each
/// named file once, in request order.
fn select_files(m: &Manifest, names: &[String]) -> Result<Vec<ManifestFile>> {
    let files: Vec<ManifestFile> = if names.is_empty() {
        m.files.clone()
    } else {
        let mut v: Vec<ManifestFile> = Vec::new();
        for name in names {
            if !valid_file_name(name) {
                return Err(StagerError::Invalid(format!("bad file name {name:?}")));
            }
            let f = m.files.iter().find(|f| &f.name == name).ok_or_else(|| {
                StagerError::NotFound(format!("{name:?} in {} {}", m.product, m.version))
            })?;
            if !v.iter().any(|x| x.name == f.name) {
                v.push(f.clone());
            }
        }
        v
    };
    if files.is_empty() {
        return Err(StagerError::Invalid("nothing to stage".into()));
    }
    Ok(files)
}

/// Refuses a repository object that is not what its manifest says: not a regular file (a
/// symlink planted in the repository would otherwise be linked into the area, link(2) does
/// not follow it), or of another size (published objects never change; one whose size did
/// was altered or truncated on disk and is refused rather than handed out as genuine).
fn check_object(src: &Path, m: &Manifest, f: &ManifestFile) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(StagerError::io("stat", src))?;
    if !md.file_type().is_file() {
        tracing::error!(object = %src.display(), "repository object is not a regular file");
        return Err(StagerError::Damaged(format!(
            "{} is damaged in the repository",
            f.name
        )));
    }
    if md.len() != f.size {
        tracing::error!(
            object = %src.display(),
            product = %m.product,
            version = %m.version,
            file = %f.name,
            manifest_size = f.size,
            object_size = md.len(),
            "refusing to stage: repository object's size no longer matches its manifest (run `ffs repo verify`)"
        );
        return Err(StagerError::Damaged(format!(
            "{} of {} {} is damaged in the repository (size {} instead of {})",
            f.name,
            m.product,
            m.version,
            md.len(),
            f.size
        )));
    }
    Ok(())
}

fn url_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_owned()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every update
/// here leaves the data consistent before it can panic).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::publish;
    use std::os::unix::fs::MetadataExt as _;

    pub(crate) fn setup() -> (tempfile::TempDir, StagerConfig) {
        let d = tempfile::tempdir().unwrap();
        let cfg = StagerConfig {
            repository: d.path().join("repo"),
            areas_dir: d.path().join("areas"),
            state_dir: d.path().join("state"),
            ..Default::default()
        };
        let src = d.path().join("src");
        fs::create_dir_all(src.join("docs")).unwrap();
        fs::write(src.join("big.bin"), vec![1u8; 100_000]).unwrap();
        fs::write(src.join("docs/readme.txt"), b"read me").unwrap();
        let repo = Repository::open(&cfg.repository).unwrap();
        publish(
            &repo,
            "tool",
            "1.0",
            &[src],
            "notes",
            &commlink::progress::Silent,
        )
        .unwrap();
        (d, cfg)
    }

    fn req(files: &[&str]) -> msg::StageRequest {
        msg::StageRequest {
            product: "tool".into(),
            version: "1.0".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            label: "alice".into(),
            ttl_secs: None,
        }
    }

    #[test]
    fn areas_beyond_the_hard_link_limit_link_to_a_twin_of_the_object() {
        let (d, cfg) = setup();
        let s = Stager::open(&cfg).unwrap();
        let a = s.stage(&req(&["docs/readme.txt"])).unwrap();
        let sha = a.files[0].sha256.clone();
        let obj = s.repository().object_path(&sha).unwrap();
        // Links up to the file system's limit, as that many live areas would hold.
        let fill = d.path().join("fill");
        fs::create_dir(&fill).unwrap();
        for i in 0u32.. {
            match fs::hard_link(&obj, fill.join(i.to_string())) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => break,
                Err(e) => panic!("linking: {e}"),
            }
            assert!(
                i < 200_000,
                "the file system under {} takes 200,000 hard links to one file: this test \
                 needs one with a limit (ext4 stops at 65,000): set TMPDIR to a directory \
                 on ext4",
                d.path().display()
            );
        }
        let full = fs::metadata(&obj).unwrap().nlink();

        let b = s.stage(&req(&["docs/readme.txt"])).unwrap();
        let staged = s.areas_dir().join(&b.area_id).join("docs/readme.txt");
        assert_eq!(fs::read(&staged).unwrap(), b"read me");
        let twin = s.repository().twin_path(&sha, 1).unwrap();
        let tmd = fs::metadata(&twin).unwrap();
        assert_eq!(fs::metadata(&staged).unwrap().ino(), tmd.ino());
        assert_ne!(tmd.ino(), fs::metadata(&obj).unwrap().ino());
        assert_eq!(
            tmd.mode() & 0o777,
            0o444,
            "a twin is read-only like its object"
        );
        assert_eq!(fs::metadata(&obj).unwrap().nlink(), full);
        assert_eq!(fs::read_dir(s.repository().tmp_dir()).unwrap().count(), 0);

        // The next area goes straight to the same twin.
        let c = s.stage(&req(&["docs/readme.txt"])).unwrap();
        let staged_c = s.areas_dir().join(&c.area_id).join("docs/readme.txt");
        assert_eq!(fs::metadata(&staged_c).unwrap().ino(), tmd.ino());
        assert_eq!(fs::metadata(&twin).unwrap().nlink(), 3);

        // Once no area links to the twin, garbage collection reclaims it; the object stays.
        assert!(s.unstage(&b.area_id).unwrap());
        assert!(s.unstage(&c.area_id).unwrap());
        s.repository().gc().unwrap();
        assert!(
            twin.exists(),
            "a twin just left by its areas is kept a while"
        );
        s.repository().gc_with(std::time::Duration::ZERO).unwrap();
        assert!(!twin.exists(), "the unused twin was reclaimed");
        assert!(obj.exists());
        // And is made again when an area needs it: the remembered twin is gone, not stuck.
        let e = s.stage(&req(&["docs/readme.txt"])).unwrap();
        let staged_e = s.areas_dir().join(&e.area_id).join("docs/readme.txt");
        assert_eq!(fs::read(&staged_e).unwrap(), b"read me");
        assert_eq!(
            fs::metadata(&staged_e).unwrap().ino(),
            fs::metadata(&twin).unwrap().ino()
        );
    }

    #[test]
    fn stage_hard_links_and_hands_out_working_secrets() {
        let (_d, cfg) = setup();
        let s = Stager::open(&cfg).unwrap();
        assert_eq!(s.method(), Method::HardLink);
        let a = s.stage(&req(&[])).unwrap();
        assert_eq!(a.files.len(), 2);
        let staged = s.areas_dir().join(&a.area_id).join("docs/readme.txt");
        let obj = s.repository().object_path(&a.files[1].sha256).unwrap();
        assert_eq!(
            fs::metadata(&staged).unwrap().ino(),
            fs::metadata(&obj).unwrap().ino()
        );
        assert!(a.ftp_url.starts_with(&format!(
            "ftp://{}:{}@127.0.0.1:2121/",
            a.ftp_user, a.ftp_password
        )));
        assert!(a.https_base.ends_with(&format!(":8444/d/{}/", a.token)));
        assert!(s.ftp_login(&a.ftp_user, &a.ftp_password).is_some());
        assert!(s.ftp_login(&a.ftp_user, "wrong").is_none());
        assert_eq!(s.area_of_token(&a.token).unwrap().id, a.area_id);
        assert!(s.area_of_token(&"0".repeat(64)).is_none());
        // The state file holds no plaintext secret.
        s.flush();
        let state = fs::read_to_string(cfg.state_dir.join("areas.journal")).unwrap();
        assert!(state.contains(&a.area_id), "the area is recorded");
        assert!(!state.contains(&a.ftp_password) && !state.contains(&a.token));
        assert_eq!(s.stats().stage_count, 1);
    }

    #[test]
    fn subset_unknown_and_yanked() {
        let (_d, cfg) = setup();
        let s = Stager::open(&cfg).unwrap();
        let a = s.stage(&req(&["docs/readme.txt"])).unwrap();
        assert_eq!(a.files.len(), 1);
        assert!(matches!(
            s.stage(&req(&["nope"])),
            Err(StagerError::NotFound(_))
        ));
        assert!(matches!(
            s.stage(&req(&["../x"])),
            Err(StagerError::Invalid(_))
        ));
        s.repository().yank("tool", "1.0").unwrap();
        assert!(matches!(s.stage(&req(&[])), Err(StagerError::Refused(_))));
        // The area staged before the yank still works.
        assert!(s.area_of_token(&a.token).is_some());
    }

    #[test]
    fn areas_survive_restart_and_expire() {
        let (_d, cfg) = setup();
        let a = {
            let s = Stager::open(&cfg).unwrap();
            s.stage(&req(&[])).unwrap()
        };
        let s = Stager::open(&cfg).unwrap();
        assert!(s.ftp_login(&a.ftp_user, &a.ftp_password).is_some());
        assert_eq!(s.areas().areas.len(), 1);
        let mut r = req(&[]);
        r.ttl_secs = Some(1);
        let b = s.stage(&r).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(s.area_of_token(&b.token).is_none());
        assert!(s.ftp_login(&b.ftp_user, &b.ftp_password).is_none());
        assert_eq!(s.sweep().unwrap(), 1);
        assert!(!s.areas_dir().join(&b.area_id).exists());
        assert!(s.unstage(&a.area_id).unwrap());
        assert!(!s.unstage(&a.area_id).unwrap());
        assert!(s.areas().areas.is_empty());
    }

    #[test]
    fn area_changes_are_journaled_and_folded_into_the_snapshot() {
        let (_d, cfg) = setup();
        let kept = {
            let s = Stager::open(&cfg).unwrap();
            let kept = s.stage(&req(&[])).unwrap();
            s.flush();
            let journal = cfg.state_dir.join("areas.journal");
            assert_eq!(fs::read_to_string(&journal).unwrap().lines().count(), 1);
            // Enough changes to make the journal due for compaction (> 4,096 lines).
            for _ in 0..2100 {
                let a = s.stage(&req(&["docs/readme.txt"])).unwrap();
                assert!(s.unstage(&a.area_id).unwrap());
            }
            s.flush();
            let lines = fs::read_to_string(&journal).unwrap().lines().count();
            assert!(lines < 4096, "journal compacted ({lines} lines)");
            let snapshot = fs::read_to_string(cfg.state_dir.join("areas.json")).unwrap();
            assert!(
                snapshot.contains(&kept.area_id),
                "snapshot holds the live area"
            );
            kept
        };
        let s = Stager::open(&cfg).unwrap();
        assert_eq!(s.areas().areas.len(), 1);
        assert!(s.ftp_login(&kept.ftp_user, &kept.ftp_password).is_some());
        assert_eq!(s.area_of_token(&kept.token).unwrap().id, kept.area_id);
    }

    #[test]
    fn copy_fallback_places_equal_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        fs::write(&src, b"bytes").unwrap();
        for m in [Method::Copy, Method::Reflink] {
            let dst = d.path().join(m.name());
            let used = m.place(&src, &dst).unwrap();
            assert_ne!(used, Method::HardLink);
            assert_eq!(fs::read(&dst).unwrap(), b"bytes");
            assert_ne!(
                fs::metadata(&dst).unwrap().ino(),
                fs::metadata(&src).unwrap().ino()
            );
        }
    }

    #[test]
    fn different_filesystems_refuse_unless_a_fallback_is_configured() {
        // /dev/shm is tmpfs; the temp dir is on another filesystem.
        let shm = std::path::Path::new("/dev/shm");
        let (d, mut cfg) = setup();
        let second_fs = ffs_testkit::prereq::require(
            "tmpfs",
            || {
                shm.is_dir()
                    && fsutil::device_of(shm).unwrap() != fsutil::device_of(d.path()).unwrap()
            },
            "a tmpfs at /dev/shm on another filesystem than the temp dir \
             (mount -t tmpfs tmpfs /dev/shm)",
        );
        if !second_fs {
            return;
        }
        let areas = tempfile::tempdir_in(shm).unwrap();
        cfg.areas_dir = areas.path().to_path_buf();
        let err = Stager::open(&cfg).unwrap_err();
        assert!(matches!(err, StagerError::Config(_)), "{err}");
        assert!(err.to_string().contains("different filesystems"), "{err}");

        cfg.fallback = Fallback::Copy;
        let s = Stager::open(&cfg).unwrap();
        assert_eq!(s.method(), Method::Copy);
        let a = s.stage(&req(&[])).unwrap();
        let staged = s.areas_dir().join(&a.area_id).join("big.bin");
        assert_eq!(fs::read(&staged).unwrap(), vec![1u8; 100_000]);
        assert_eq!(fs::metadata(&staged).unwrap().mode() & 0o777, 0o444);

        cfg.fallback = Fallback::Reflink;
        let s = Stager::open(&cfg).unwrap();
        assert_eq!(s.method(), Method::Reflink);
        let a = s.stage(&req(&["docs/readme.txt"])).unwrap();
        let staged = s.areas_dir().join(&a.area_id).join("docs/readme.txt");
        assert_eq!(fs::read(&staged).unwrap(), b"read me");
    }
}
