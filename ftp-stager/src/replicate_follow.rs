//! The follower side of replication (`[stager] replicate_from`): every
//! `replicate_interval_secs` it reads the source's listing and carries out the
//! [`crate::replicate::plan`]. Objects arrive over [`crate::http_client`] (pinned or CA
//! trust, the replication token as Bearer) into `repository/replicate/`, hashed while they are
//! written; a body whose size or SHA-256 is not the one asked for is discarded (logged,
//! fetched again next round), a matching one becomes an object as a publish makes it (fsync,
//! 0444, rename, directory fsync). A transfer the network cut off keeps its bytes and is
//! resumed with `Range` on the next attempt (the kept bytes are hashed first, so the check
//! still covers the whole object). A release's manifest is written last, atomically, under
//! the repository lock and only when every object it names is present with its size, so a
//! follower never offers a release it does not fully hold. The lock is held while a
//! release's objects arrive, so the sweeper's garbage collection (which skips a locked
//! repository) cannot reclaim them before their manifest names them.

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use crate::error::StagerError;
use crate::http_client::{ClientError, HttpsClient, Trust};
use crate::replicate::{Action, Listing, plan};
use crate::repository::{Manifest, Repository};
use crate::{StagerConfig, fsutil, signing};

/// Why a replication round (or one object of it) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The request did not get through (connection, TLS, HTTP).
    #[error("replication source: {0}")]
    Client(#[from] ClientError),
    /// The source answered with an unexpected status.
    #[error("replication source answered {status} to {path}: {text}")]
    Status {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The answer's text.
        text: String,
    },
    /// The listing is not what the API promises.
    #[error("replication source's listing: {0}")]
    Listing(String),
    /// A body that is not the object asked for (discarded).
    #[error(
        "object {sha256}: received {got_bytes} bytes hashing to {got_sha256}, expected {size} bytes; discarded"
    )]
    Mismatch {
        /// The object asked for.
        sha256: String,
        /// Its size according to the manifest.
        size: u64,
        /// What arrived.
        got_bytes: u64,
        /// The SHA-256 of what arrived (of the part read when it was too long).
        got_sha256: String,
    },
    /// The body ended before the object's size without an error (kept for resuming).
    #[error("object {sha256}: the body ended after {got_bytes} of {size} bytes; kept for resuming")]
    Short {
        /// The object asked for.
        sha256: String,
        /// Bytes held now.
        got_bytes: u64,
        /// Its size according to the manifest.
        size: u64,
    },
    /// A local repository operation failed.
    #[error(transparent)]
    Repo(#[from] StagerError),
    /// Writing a fetched object failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FollowError + 'a {
    move |source| FollowError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What a follower has done since it started.
#[derive(Debug, Default, serde::Serialize)]
pub struct FollowStats {
    /// Rounds completed (listing read and the plan carried out, whatever each step did).
    pub rounds: AtomicU64,
    /// Rounds whose listing the source answered 304 (unchanged since the last one).
    pub listings_unchanged: AtomicU64,
    /// Rounds that could not read the listing.
    pub failed_rounds: AtomicU64,
    /// Objects fetched, checked and stored.
    pub objects_fetched: AtomicU64,
    /// Bytes of those objects.
    pub bytes_fetched: AtomicU64,
    /// Bodies refused because their size or SHA-256 did not match.
    pub objects_refused: AtomicU64,
    /// Releases whose manifest was written here (added or repaired).
    pub releases_added: AtomicU64,
    /// Releases withdrawn here because the source yanked or quarantined them.
    pub releases_withdrawn: AtomicU64,
    /// Releases held here with other content than the source's (left alone), each
    /// counted once.
    pub conflicts: AtomicU64,
    /// When the last round completed, seconds since 1970 (0 = none yet): how far behind
    /// the source this stager may be.
    pub last_round_unix: AtomicU64,
}

impl FollowStats {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's current value (for reports and tests).
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Releases the source lists.
    pub source_releases: usize,
    /// Releases added or repaired here, as `product version`.
    pub added: Vec<String>,
    /// Releases withdrawn here.
    pub withdrawn: Vec<String>,
    /// Releases left incomplete (an object could not be fetched); retried next round.
    pub incomplete: Vec<String>,
    /// Objects fetched.
    pub fetched: u64,
    /// Objects refused (size or hash mismatch).
    pub refused: u64,
    /// Objects that could not be had this round (refused or failed): not asked for again
    /// in the same round by another release that needs them.
    pub failed_objects: std::collections::BTreeSet<String>,
}

impl Round {
    /// Whether the round changed anything or left something to retry.
    pub fn eventful(&self) -> bool {
        !self.added.is_empty()
            || !self.withdrawn.is_empty()
            || !self.incomplete.is_empty()
            || self.refused > 0
    }
}

/// A follower of one source stager.
#[derive(Debug)]
pub struct Follower {
    repo: Repository,
    client: HttpsClient,
    source: String,
    stats: Arc<FollowStats>,
    /// The last listing read: sent back as `If-None-Match`, used again on 304.
    last: tokio::sync::Mutex<Option<Arc<Listing>>>,
    /// Conflicting releases already reported.
    conflicts: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

/// The trust a follower's config asks for: the pin, else the CA file, else the system roots.
fn trust(cfg: &StagerConfig) -> Result<Trust, StagerError> {
    if !cfg.replicate_pin.trim().is_empty() {
        let pin = crate::http_client::parse_pin(&cfg.replicate_pin)
            .map_err(|e| StagerError::Config(format!("[stager] replicate_pin: {e}")))?;
        Ok(Trust::Pin(pin))
    } else if !cfg.replicate_ca_cert.as_os_str().is_empty() {
        Ok(Trust::CaFile(cfg.replicate_ca_cert.clone()))
    } else {
        Ok(Trust::System)
    }
}

/// The HTTPS client (token, trust) a follower's config asks for; `None` when
/// `replicate_from` is empty. Reads the token file (0600 or refused) and checks the URL and
/// trust settings, naming the setting (also what `ffs config check` runs).
pub fn client_from_config(cfg: &StagerConfig) -> Result<Option<HttpsClient>, StagerError> {
    let source = cfg.replicate_from.trim();
    if source.is_empty() {
        return Ok(None);
    }
    if cfg.replicate_token_file.as_os_str().is_empty() {
        return Err(StagerError::Config(
            "[stager] replicate_from is set but replicate_token_file is empty".into(),
        ));
    }
    let token = commlink::secret_file::read_private(&cfg.replicate_token_file)
        .map_err(|e| StagerError::Config(format!("[stager] replicate_token_file: {e}")))?;
    let token = String::from_utf8_lossy(&token).trim().to_owned();
    if !token.starts_with(crate::tokens::REPLICATION_PREFIX) {
        return Err(StagerError::Config(format!(
            "[stager] replicate_token_file {}: not a replication token (they start with {}; make one on the source with `ffs replication-token create`)",
            cfg.replicate_token_file.display(),
            crate::tokens::REPLICATION_PREFIX
        )));
    }
    let client = HttpsClient::new(source, trust(cfg)?)
        .and_then(|c| c.with_bearer(&token))
        .map_err(|e| StagerError::Config(format!("[stager] replicate_from: {e}")))?;
    Ok(Some(client))
}

impl Follower {
    /// The follower `cfg` asks for (`None` when `replicate_from` is empty), see
    /// [`client_from_config`].
    pub fn from_config(
        cfg: &StagerConfig,
        repo: Repository,
    ) -> Result<Option<Follower>, StagerError> {
        Ok(client_from_config(cfg)?
            .map(|client| Follower::new(repo, client, cfg.replicate_from.trim())))
    }

    /// A follower pulling into `repo` through `client` (which carries the token).
    pub fn new(repo: Repository, client: HttpsClient, source: &str) -> Follower {
        Follower {
            repo,
            client,
            source: source.to_owned(),
            stats: Arc::default(),
            last: tokio::sync::Mutex::default(),
            conflicts: tokio::sync::Mutex::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<FollowStats> {
        &self.stats
    }

    /// The source's URL.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Polls every `every` until `shutdown` completes. A round interrupted by shutdown
    /// leaves at most a temporary file, removed when the next follower starts.
    pub async fn run(self, every: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let repo = self.repo.clone();
        let _ = tokio::task::spawn_blocking(move || remove_stale_parts(&repo)).await;
        tracing::info!(source = %self.source, every_secs = every.as_secs(), "following a replication source");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = &mut shutdown => return,
                r = self.round() => match r {
                    Ok(r) => {
                        if !last_error.is_empty() {
                            tracing::info!(source = %self.source, "replication source reachable again");
                            last_error.clear();
                        }
                        if r.eventful() {
                            tracing::info!(source = %self.source, added = ?r.added, withdrawn = ?r.withdrawn, incomplete = ?r.incomplete, fetched = r.fetched, refused = r.refused, "replication round");
                        }
                    }
                    Err(e) => {
                        let now = e.to_string();
                        // Each new cause at once; the same cause again only at debug level.
                        if now != last_error {
                            tracing::warn!(source = %self.source, error = %now, "replication round failed; retrying");
                            last_error = now;
                        } else {
                            tracing::debug!(source = %self.source, error = %now, "replication round failed again");
                        }
                    }
                }
            }
        }
    }

    /// One round: read the listing, then add, withdraw and repair releases as
    /// [`plan`] says. An object that cannot be fetched leaves its release for the next
    /// round; the error is only returned when the listing itself cannot be had.
    pub async fn round(&self) -> Result<Round, FollowError> {
        let listing = match self.listing().await {
            Ok(l) => l,
            Err(e) => {
                FollowStats::bump(&self.stats.failed_rounds, 1);
                return Err(e);
            }
        };
        self.keep_keys(&listing).await;
        let repo = self.repo.clone();
        let local = tokio::task::spawn_blocking(move || repo.catalog(true))
            .await
            .map_err(|e| FollowError::Listing(format!("local catalog task: {e}")))??;
        let mut round = Round {
            source_releases: listing.releases.len(),
            ..Round::default()
        };
        for action in plan(&local, &listing.releases) {
            let m = action.manifest();
            let name = format!("{} {}", m.product, m.version);
            match &action {
                Action::Add(m) | Action::Repair(m) => match self.fetch_release(m, &mut round).await
                {
                    Ok(true) => {
                        FollowStats::bump(&self.stats.releases_added, 1);
                        tracing::info!(release = %name, repaired = matches!(action, Action::Repair(_)), "replicated release: every object present, manifest written");
                        round.added.push(name);
                    }
                    Ok(false) => round.incomplete.push(name),
                    Err(e) => {
                        tracing::warn!(release = %name, error = %e, "cannot replicate release; retrying next round");
                        round.incomplete.push(name);
                    }
                },
                Action::Withdraw(m) => match self.withdraw(m).await {
                    Ok(()) => {
                        FollowStats::bump(&self.stats.releases_withdrawn, 1);
                        tracing::info!(release = %name, quarantined = ?m.quarantined, "release withdrawn at the source: withdrawn here");
                        round.withdrawn.push(name);
                    }
                    Err(e) => {
                        tracing::warn!(release = %name, error = %e, "cannot withdraw release")
                    }
                },
                Action::Conflict(_) => {
                    let first = self.conflicts.lock().await.insert(name.clone());
                    if first {
                        // Once per release and run, not every round.
                        FollowStats::bump(&self.stats.conflicts, 1);
                        tracing::warn!(release = %name, "this stager holds the release with other files than the source: left alone (publish releases on the source only)");
                    }
                }
            }
        }
        FollowStats::bump(&self.stats.rounds, 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stats.last_round_unix.store(now, Ordering::Relaxed);
        Ok(round)
    }

    /// The source's listing; a source that answers 304 to the last one's digest costs
    /// one small request and the last listing is used again (the plan still runs: this
    /// stager's own state may have changed).
    async fn listing(&self) -> Result<Arc<Listing>, FollowError> {
        let path = "/replicate/v1/releases";
        let mut last = self.last.lock().await;
        let r = match last.as_ref() {
            Some(l) => {
                let etag = format!("\"{}\"", l.digest);
                let r = self
                    .client
                    .get_with(path, &[(hyper::header::IF_NONE_MATCH, &etag)])
                    .await?;
                if r.status == 304 {
                    FollowStats::bump(&self.stats.listings_unchanged, 1);
                    return Ok(l.clone());
                }
                r
            }
            None => self.client.get(path).await?,
        };
        if r.status != 200 {
            return Err(FollowError::Status {
                path: path.into(),
                status: r.status,
                text: r.text(),
            });
        }
        let l: Listing =
            serde_json::from_slice(&r.body).map_err(|e| FollowError::Listing(e.to_string()))?;
        // Manifests from the network are checked as strictly as those read from disk.
        for m in &l.releases {
            self.repo
                .manifest_path(&m.product, &m.version)
                .map_err(|e| FollowError::Listing(e.to_string()))?;
            let all = m.with_signature_files(m.files.clone());
            let bad_signature = m.signature.as_ref().is_some_and(|s| {
                !signing::valid_key_id(&s.key_id)
                    || s.sums.name != signing::SUMS_NAME
                    || s.minisig.name != signing::SIG_NAME
            });
            if bad_signature
                || all.iter().any(|f| {
                    self.repo.object_path(&f.sha256).is_err()
                        || !crate::repository::valid_file_name(&f.name)
                })
            {
                return Err(FollowError::Listing(format!(
                    "release {} {} names an invalid file or object",
                    m.product, m.version
                )));
            }
        }
        let l = Arc::new(l);
        *last = Some(l.clone());
        Ok(l)
    }

    /// Stores the public keys that signed releases (`keys/KEYID.pub`) that are missing
    /// here, so `ffs repo verify` on the follower checks signatures too.
    async fn keep_keys(&self, l: &Listing) {
        for (id, text) in &l.keys {
            let Ok(kp) = signing::repo_key_path(self.repo.root(), id) else {
                continue;
            };
            if kp.exists() {
                continue;
            }
            match signing::PublicKey::parse(text) {
                Ok(k) if k.key_id() == id => {
                    let dir = self.repo.root().join("keys");
                    let r = std::fs::create_dir_all(&dir)
                        .and_then(|()| fsutil::atomic_write(&kp, k.text().as_bytes(), 0o444));
                    if let Err(e) = r {
                        tracing::warn!(key = %id, error = %e, "cannot store a replicated public key");
                    }
                }
                _ => {
                    tracing::warn!(key = %id, "the source's public key does not parse or has another id; not stored")
                }
            }
        }
    }

    /// Fetches what `m` lacks here and writes its manifest. `Ok(false)`: an object is
    /// still missing (refused or failed; logged), nothing written.
    async fn fetch_release(&self, m: &Manifest, round: &mut Round) -> Result<bool, FollowError> {
        let repo = self.repo.clone();
        let lock = tokio::task::spawn_blocking(move || repo.lock())
            .await
            .map_err(|e| FollowError::Listing(format!("lock task: {e}")))??;
        let mut complete = true;
        for f in m.with_signature_files(m.files.clone()) {
            let obj = self.repo.object_path(&f.sha256)?;
            if obj.symlink_metadata().is_ok_and(|md| md.is_file()) {
                continue; // dedup: present objects are never fetched again
            }
            if round.failed_objects.contains(&f.sha256) {
                complete = false;
                continue;
            }
            match self.fetch_object(&f.sha256, f.size, &obj).await {
                Ok(()) => {
                    round.fetched += 1;
                    FollowStats::bump(&self.stats.objects_fetched, 1);
                    FollowStats::bump(&self.stats.bytes_fetched, f.size);
                }
                Err(e) => {
                    if matches!(e, FollowError::Mismatch { .. }) {
                        round.refused += 1;
                        FollowStats::bump(&self.stats.objects_refused, 1);
                    }
                    tracing::warn!(release = %format!("{} {}", m.product, m.version), file = %f.name, error = %e, "replicated object not stored");
                    round.failed_objects.insert(f.sha256.clone());
                    complete = false;
                }
            }
        }
        if !complete {
            return Ok(false);
        }
        let repo = self.repo.clone();
        let m = m.clone();
        tokio::task::spawn_blocking(move || -> Result<bool, FollowError> {
            let _lock = lock;
            for f in m.with_signature_files(m.files.clone()) {
                let p = repo.object_path(&f.sha256)?;
                let size = p.symlink_metadata().ok().filter(|md| md.is_file()).map(|md| md.len());
                if size != Some(f.size) {
                    tracing::error!(object = %f.sha256, file = %f.name, expected = f.size, found = ?size, "local object missing or of the wrong size; run `ffs repo verify --quarantine`");
                    return Ok(false);
                }
            }
            repo.write_manifest(&m)?;
            Ok(true)
        })
        .await
        .map_err(|e| FollowError::Listing(format!("manifest task: {e}")))?
    }

    /// Streams one object into `repository/replicate/SHA.part` while hashing it; only
    /// `size` bytes hashing to `sha` become the object at `obj`. A transfer cut off by the
    /// network keeps its part, and the next attempt asks only for the rest (`Range`), the
    /// part's bytes hashed first; a body that turns out wrong is discarded whole.
    async fn fetch_object(&self, sha: &str, size: u64, obj: &Path) -> Result<(), FollowError> {
        let dir = parts_dir(&self.repo);
        let part = dir.join(format!("{sha}.part"));
        let (mut have, mut h) = {
            let (dir, part) = (dir.clone(), part.clone());
            tokio::task::spawn_blocking(move || resume_state(&dir, &part, size))
                .await
                .map_err(|e| FollowError::Listing(format!("resume task: {e}")))??
        };
        let path = format!("/replicate/v1/objects/{sha}");
        let range = format!("bytes={have}-");
        let mut r = if have > 0 {
            let hdr = [(hyper::header::RANGE, range.as_str())];
            self.client.get_stream_with(&path, &hdr).await?
        } else {
            self.client.get_stream(&path).await?
        };
        let resumed = have > 0
            && r.status == 206
            && r.header("content-range")
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
        if !resumed {
            if r.status != 200 {
                if have > 0 {
                    // The source would not resume it: start afresh next time.
                    let _ = tokio::fs::remove_file(&part).await;
                }
                return Err(FollowError::Status {
                    path,
                    status: r.status,
                    text: String::new(),
                });
            }
            // A whole body: whatever part there was is replaced.
            (have, h) = (0, Sha256::new());
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&part)
            .await
            .map_err(io_err("open", &part))?;
        file.set_len(have)
            .await
            .map_err(io_err("truncate", &part))?;
        file.seek(std::io::SeekFrom::Start(have))
            .await
            .map_err(io_err("seek", &part))?;
        if have > 0 {
            tracing::info!(object = %sha, from = have, size, "resuming a replicated object");
        }
        let mut got = have;
        let mut cut = None;
        loop {
            let piece = match r.chunk().await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            };
            got += piece.len() as u64;
            h.update(&piece);
            if got > size {
                break;
            }
            file.write_all(&piece)
                .await
                .map_err(io_err("write", &part))?;
        }
        file.sync_all().await.map_err(io_err("fsync", &part))?;
        drop(file);
        if got < size {
            // Cut off (or a short body): keep what arrived for the next attempt.
            return Err(match cut {
                Some(e) => FollowError::Client(e),
                None => FollowError::Short {
                    sha256: sha.to_owned(),
                    got_bytes: got,
                    size,
                },
            });
        }
        let got_sha256 = hex::encode(h.finalize());
        if got != size || got_sha256 != sha {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FollowError::Mismatch {
                sha256: sha.to_owned(),
                size,
                got_bytes: got,
                got_sha256,
            });
        }
        let obj = obj.to_owned();
        tokio::task::spawn_blocking(move || install(&part, &obj))
            .await
            .map_err(|e| FollowError::Listing(format!("install task: {e}")))?
    }

    /// Withdraws the local copy of `m` as the source did (yanked, and quarantined with the
    /// source's reason), then reclaims objects nothing needs.
    async fn withdraw(&self, m: &Manifest) -> Result<(), FollowError> {
        let repo = self.repo.clone();
        let m = m.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StagerError> {
            {
                let _lock = repo.lock()?;
                let mut l = repo.manifest(&m.product, &m.version)?;
                l.yanked = true;
                l.yanked_at = m.yanked_at.or_else(|| Some(chrono::Utc::now()));
                l.quarantined = m.quarantined.clone();
                repo.write_manifest(&l)?;
            }
            repo.gc()?;
            Ok(())
        })
        .await
        .map_err(|e| FollowError::Listing(format!("withdraw task: {e}")))??;
        Ok(())
    }
}

/// Makes a checked temporary file the object: read-only, renamed into its shard, the
/// shard directory fsynced (as a publish does).
fn install(tmp: &Path, obj: &Path) -> Result<(), FollowError> {
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", tmp))?;
    let shard = obj.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(shard).map_err(io_err("create", shard))?;
    if obj.exists() {
        std::fs::remove_file(tmp).map_err(io_err("remove", tmp))?;
        return Ok(());
    }
    std::fs::rename(tmp, obj).map_err(io_err("rename", obj))?;
    fsutil::fsync_dir(shard).map_err(io_err("fsync", shard))
}

/// Where partly fetched objects wait (`repository/replicate/`, on the objects'
/// filesystem, so a finished one is renamed into place).
fn parts_dir(repo: &Repository) -> PathBuf {
    repo.root().join("replicate")
}

/// How much of an object a previous attempt left, and the hash state of those bytes.
/// A part longer than the object (or unreadable) is discarded.
fn resume_state(dir: &Path, part: &Path, size: u64) -> Result<(u64, Sha256), FollowError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let mut h = Sha256::new();
    let len = match std::fs::metadata(part) {
        Ok(md) => md.len(),
        Err(_) => return Ok((0, h)),
    };
    if len == 0 || len > size {
        let _ = std::fs::remove_file(part);
        return Ok((0, h));
    }
    let mut f = std::fs::File::open(part).map_err(io_err("open", part))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = std::io::Read::read(&mut f, &mut buf).map_err(io_err("read", part))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n.min(len), h))
}

/// Removes parts of objects that arrived meanwhile, and parts untouched for a week
/// (an object no release needs any more).
fn remove_stale_parts(repo: &Repository) {
    let Ok(dir) = std::fs::read_dir(parts_dir(repo)) else {
        return;
    };
    let week = Duration::from_secs(7 * 24 * 3600);
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".part") else {
            continue;
        };
        let present = repo.object_path(sha).is_ok_and(|p| p.exists());
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > week);
        if present || old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
