//! Remote publishing over the stager's HTTPS listener, authenticated by a publish token
//! (`Authorization: Bearer ffspt_…`, see [`crate::tokens`]). Plain HTTP verbs, so `curl`
//! can publish:
//!
//! ```text
//! GET  /publish/v1/objects/SHA256              200 present (X-Object-Size)
//!                                              404 absent (X-Upload-Offset: bytes received)
//! PUT  /publish/v1/objects/SHA256?offset=N&size=S   body = bytes N.. of the object
//!      201 stored (the stager hashed it: it is SHA256)   202 partial (X-Upload-Offset)
//!      409 wrong offset or upload busy (X-Upload-Offset)  422 content hash mismatch
//!      413 size over the cap                              200 present already
//!      429 the token runs `publish_uploads_per_token` uploads already (Retry-After)
//! GET  /publish/v1/uploads/ID                  200 (X-Upload-Offset: bytes held)
//! PUT  /publish/v1/uploads/ID?offset=N&size=S[&sha256=SHA]   an upload named by the
//!      client (ID: 32-64 hex digits) before it knows the hash: answers as above, except
//!      that without sha256= a complete upload stays 202 (X-Upload-Offset: S) until a
//!      request (an empty body at offset=S will do) declares sha256=; then 201/422/200
//! POST /publish/v1/releases/PRODUCT/VERSION    {"notes": "...", "files":
//!      [{"name": "a/b.iso", "size": 1, "sha256": "…"}]}
//!      201 published (manifest written atomically; signed when the stager has a key)
//!      403 token not for this product   409 exists   422 an object is missing
//! ```
//!
//! Objects are streamed to `repository/uploads/SHA256.part` (never held in memory), fsynced
//! after every request, so an interrupted upload resumes at `X-Upload-Offset`; the disk
//! writes of each piece are started as it is written (`fsutil::start_writeback`), so that
//! fsync waits only for the last pieces, not for the whole object. The stager
//! hashes the bytes as it writes them (a resumed upload: the part already held first, then
//! the rest), so when the last byte arrives it knows the content's SHA-256 without reading
//! the file again; only a match becomes an object (0444, renamed into `objects/`). The release becomes visible only when its manifest is written, so
//! customers never see half a release.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek as _, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::fsutil;
use crate::repository::{ManifestFile, valid_file_name, valid_name};
use crate::signing;
use crate::staging::Stager;
use crate::tokens::{PublishToken, TokenStore};

/// Default object uploads one token may run at once (`publish_uploads_per_token`); more
/// get 429 (with Retry-After).
pub const MAX_UPLOADS_PER_TOKEN: usize = 4;

/// The remote-publishing limits of one stager (from `[stager] publish_*`), and the uploads
/// each token is running now.
#[derive(Debug)]
pub struct Limits {
    /// Largest object accepted, bytes (413 above it).
    pub max_object_bytes: u64,
    /// Object uploads one token may run at once (429 beyond).
    pub uploads_per_token: usize,
    /// A partial upload untouched this long is removed by the sweeper.
    pub abandoned_after: std::time::Duration,
    slots: UploadSlots,
    held: HeldHashes,
}

impl Limits {
    /// The limits a stager configuration sets.
    pub fn from_config(cfg: &crate::StagerConfig) -> Limits {
        Limits {
            max_object_bytes: cfg.publish_max_object_bytes,
            uploads_per_token: (cfg.publish_uploads_per_token as usize).max(1),
            abandoned_after: std::time::Duration::from_secs(cfg.publish_abandoned_after_secs),
            slots: UploadSlots::default(),
            held: HeldHashes::default(),
        }
    }
}

/// The hash state of partial uploads as their last request left them (bounded), so the
/// next request continues hashing instead of reading the part again.
#[derive(Debug, Default)]
struct HeldHashes(std::sync::Mutex<std::collections::HashMap<PathBuf, (u64, Sha256)>>);

/// Partial uploads whose hash state is kept; beyond, the oldest half is forgotten (those
/// are re-read from disk when resumed).
const MAX_HELD_HASHES: usize = 256;

impl HeldHashes {
    fn take(&self, part: &std::path::Path, len: u64) -> Option<Sha256> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.remove(part) {
            Some((n, h)) if n == len => Some(h),
            _ => None,
        }
    }

    fn put(&self, part: PathBuf, len: u64, h: Sha256) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_HELD_HASHES {
            let drop_keys: Vec<PathBuf> = m.keys().take(MAX_HELD_HASHES / 2).cloned().collect();
            for k in drop_keys {
                m.remove(&k);
            }
        }
        m.insert(part, (len, h));
    }
}

/// Counts the uploads each token is running (by token name).
#[derive(Debug, Default)]
pub struct UploadSlots(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One running upload; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a UploadSlots,
    name: String,
}

impl UploadSlots {
    /// A slot for token `name`, or `None` when it already runs `max` uploads.
    pub fn acquire(&self, name: &str, max: usize) -> Option<Slot<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(name.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self,
            name: name.to_owned(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

/// Largest release description accepted.
const MAX_COMMIT_BYTES: usize = 16 << 20;

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body(body.into() + "\n")
}

fn authorize(req: &HttpRequest, stager: &Stager) -> Result<PublishToken, Box<HttpResponse>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refuse = |why: &str| {
        tracing::warn!(peer = ?req.peer_addr(), path = %req.path(), "publish refused: {why}");
        Box::new(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"ffs publish\""))
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(format!("{why}\n")),
        )
    };
    let Some(token) = token else {
        return Err(refuse(
            "a publish token is required (Authorization: Bearer …)",
        ));
    };
    match TokenStore::new(stager.state_dir()).check(token) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(refuse("unknown or revoked publish token")),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the publish tokens");
            Err(Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token store unreadable",
            )))
        }
    }
}

fn part_path(stager: &Stager, sha: &str) -> PathBuf {
    stager
        .repository()
        .root()
        .join("uploads")
        .join(format!("{sha}.part"))
}

/// Where an upload named by the client (`/publish/v1/uploads/ID`) is kept.
fn upload_part_path(stager: &Stager, id: &str) -> PathBuf {
    stager
        .repository()
        .root()
        .join("uploads")
        .join(format!("u-{id}.part"))
}

/// An upload id: 32 to 64 lower-case hex digits.
fn valid_upload_id(id: &str) -> bool {
    (32..=64).contains(&id.len()) && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

async fn upload_status(
    req: HttpRequest,
    path: web::Path<String>,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &stager) {
        return *r;
    }
    let id = path.into_inner();
    if !valid_upload_id(&id) {
        return text(
            StatusCode::BAD_REQUEST,
            "an upload id is 32 to 64 lower-case hex digits",
        );
    }
    let have = fs::metadata(upload_part_path(&stager, &id)).map_or(0, |m| m.len());
    HttpResponse::Ok()
        .insert_header(("X-Upload-Offset", have.to_string()))
        .body(format!("holding {have} bytes\n"))
}

fn received(stager: &Stager, sha: &str) -> u64 {
    fs::metadata(part_path(stager, sha)).map_or(0, |m| m.len())
}

async fn object_status(
    req: HttpRequest,
    path: web::Path<String>,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &stager) {
        return *r;
    }
    let sha = path.into_inner();
    let Ok(obj) = stager.repository().object_path(&sha) else {
        return text(StatusCode::BAD_REQUEST, "not a lower-case hex SHA-256");
    };
    match fs::symlink_metadata(&obj) {
        Ok(md) if md.is_file() => HttpResponse::Ok()
            .insert_header(("X-Object-Size", md.len().to_string()))
            .body("present\n"),
        _ => HttpResponse::NotFound()
            .insert_header(("X-Upload-Offset", received(&stager, &sha).to_string()))
            .body("absent\n"),
    }
}

#[derive(Debug, Deserialize)]
struct PutQuery {
    offset: u64,
    size: u64,
    /// For `/publish/v1/uploads/ID`: the content's SHA-256, once the client knows it.
    #[serde(default)]
    sha256: Option<String>,
}

/// What a PUT writes to: an object named by its hash, or an upload named by the client
/// (the hash declared later, `sha256=`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Upload,
}

/// What a finished write request found.
enum Outcome {
    Partial(u64, Sha256),
    Stored,
    Mismatch(String),
    Present,
}

/// Reads and discards what is left of a request body (up to 64 MiB) before an early
/// answer, so an HTTP/2 client gets the answer instead of a reset stream.
async fn drain(mut payload: web::Payload) {
    let mut n = 0usize;
    while let Some(Ok(c)) = payload.next().await {
        n += c.len();
        if n > 64 << 20 {
            break;
        }
    }
}

/// The partial upload being written (locked) and the hash of everything in it so far.
struct Sink {
    file: nix::fcntl::Flock<File>,
    hasher: Sha256,
}

/// How a request body ended.
enum BodyEnd {
    /// All of it arrived.
    Complete,
    /// The connection broke (what arrived is kept for resuming).
    Broken(String),
    /// More bytes than the object's size: refused.
    TooBig,
}

/// Bytes gathered from the body before they are handed to the writer thread.
const PIECE: usize = 1 << 20;

/// Chunks gathered at most into one piece (one `writev`; Linux's IOV_MAX), so a client
/// sending tiny TLS records cannot make a piece a long list of small allocations.
const PIECE_CHUNKS: usize = 1024;

impl Sink {
    /// Hashes and writes one piece (the body's chunks as they arrived, no copy into one
    /// buffer: one `writev`) at `at`, then starts its writeback so the fsync ending the
    /// request waits only for the last pieces.
    fn write_piece(&mut self, at: u64, piece: &[Bytes]) -> std::io::Result<()> {
        let mut n = 0u64;
        for c in piece {
            self.hasher.update(c);
            n += c.len() as u64;
        }
        fsutil::write_all_vectored(&*self.file, piece)?;
        fsutil::start_writeback(&self.file, at, n);
        Ok(())
    }
}

/// Streams the body to the sink in pieces of about [`PIECE`] bytes (or [`PIECE_CHUNKS`]
/// chunks), each hashed and
/// written off the async thread while the next piece is being received (one piece in
/// flight). Returns the sink, the bytes now in the file and how the body ended; an error
/// is a failed write.
async fn receive(
    payload: &mut web::Payload,
    sink: Sink,
    have: u64,
    size: u64,
) -> std::io::Result<(Sink, u64, BodyEnd)> {
    type Flight = (Sink, std::io::Result<()>, u64);
    let write = |mut sink: Sink, at: u64, piece: Vec<Bytes>, len: u64| {
        web::block(move || -> Flight {
            let r = sink.write_piece(at, &piece);
            (sink, r, len)
        })
    };
    let lost = || std::io::Error::other("the writer thread ended");
    // Waits for the piece in flight; returns the sink.
    async fn land(
        f: impl std::future::Future<Output = Result<Flight, actix_web::error::BlockingError>>,
        at: &mut u64,
    ) -> std::io::Result<Sink> {
        let (sink, r, len) = f
            .await
            .map_err(|_| std::io::Error::other("the writer thread ended"))?;
        r?;
        *at += len;
        Ok(sink)
    }
    let mut at = have;
    let mut received = have;
    let mut idle = Some(sink);
    let mut flight = None;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0u64;
    let mut end = BodyEnd::Complete;
    while let Some(chunk) = payload.next().await {
        let chunk: Bytes = match chunk {
            Ok(c) => c,
            Err(e) => {
                end = BodyEnd::Broken(e.to_string());
                break;
            }
        };
        if received + chunk.len() as u64 > size {
            end = BodyEnd::TooBig;
            break;
        }
        received += chunk.len() as u64;
        pending_len += chunk.len() as u64;
        pending.push(chunk);
        if pending_len >= PIECE as u64 || pending.len() >= PIECE_CHUNKS {
            if let Some(f) = flight.take() {
                idle = Some(land(f, &mut at).await?);
            }
            let piece = std::mem::take(&mut pending);
            let len = std::mem::take(&mut pending_len);
            flight = Some(write(idle.take().ok_or_else(lost)?, at, piece, len));
        }
    }
    if let Some(f) = flight.take() {
        idle = Some(land(f, &mut at).await?);
    }
    let mut sink = idle.ok_or_else(lost)?;
    if pending_len > 0 && !matches!(end, BodyEnd::TooBig) {
        sink = land(write(sink, at, pending, pending_len), &mut at).await?;
    }
    Ok((sink, at, end))
}

/// After a request's bytes are written: syncs the part, and when it is complete checks
/// its hash (computed as it arrived) and renames it into the repository (0444).
fn finish_object(
    repo: &crate::Repository,
    sink: Sink,
    part: &std::path::Path,
    sha: Option<&str>,
    at: u64,
    size: u64,
) -> std::io::Result<Outcome> {
    let Sink { file, hasher } = sink;
    file.sync_all()?;
    let Some(sha) = sha.filter(|_| at == size) else {
        return Ok(Outcome::Partial(at, hasher));
    };
    let got = hex::encode(hasher.finalize());
    if got != sha {
        fs::remove_file(part)?;
        return Ok(Outcome::Mismatch(got));
    }
    let obj = repo
        .object_path(sha)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if obj.exists() {
        fs::remove_file(part)?;
        return Ok(Outcome::Present);
    }
    fs::set_permissions(part, fs::Permissions::from_mode(0o444))?;
    let shard = obj.parent().map(PathBuf::from).unwrap_or_default();
    fs::create_dir_all(&shard)?;
    fs::rename(part, &obj)?;
    fsutil::fsync_dir(&shard)?;
    drop(file);
    Ok(Outcome::Stored)
}

async fn object_put(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PutQuery>,
    payload: web::Payload,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    put(Kind::Object, req, path, query, payload, stager).await
}

async fn upload_put(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PutQuery>,
    payload: web::Payload,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    put(Kind::Upload, req, path, query, payload, stager).await
}

async fn put(
    kind: Kind,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PutQuery>,
    payload: web::Payload,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    match object_put_inner(kind, req, path, query, payload, stager).await {
        Ok(r) => r,
        Err((r, payload)) => {
            drain(payload).await;
            r
        }
    }
}

type Early = (HttpResponse, web::Payload);

/// Where a PUT writes (`part`), the hash it must have (`expected`: the object's name, or
/// an upload's declared `sha256=`) and that object's path; a bad id or hash is a 400.
fn target(
    kind: Kind,
    stager: &Stager,
    name: &str,
    query: &PutQuery,
) -> Result<(PathBuf, Option<String>, Option<PathBuf>), Box<HttpResponse>> {
    let (part, expected) = match kind {
        Kind::Object => (part_path(stager, name), Some(name.to_owned())),
        Kind::Upload if valid_upload_id(name) => {
            (upload_part_path(stager, name), query.sha256.clone())
        }
        Kind::Upload => {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                "an upload id is 32 to 64 lower-case hex digits",
            )));
        }
    };
    let obj = match expected
        .as_deref()
        .map(|x| stager.repository().object_path(x))
    {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                "not a lower-case hex SHA-256",
            )));
        }
    };
    Ok((part, expected, obj))
}

/// Opens (creating) the partial upload and locks it: `Ok(None)` when another request
/// holds the lock; `Err` is the 500 answer when it cannot be opened.
async fn open_part(
    part: &std::path::Path,
) -> Result<Option<nix::fcntl::Flock<File>>, HttpResponse> {
    let opened = web::block({
        let part = part.to_owned();
        move || -> std::io::Result<Option<nix::fcntl::Flock<File>>> {
            if let Some(dir) = part.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&part)?;
            match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => Ok(Some(l)),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
                Err((_, e)) => Err(e.into()),
            }
        }
    })
    .await;
    match opened {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => {
            tracing::error!(error = %e, path = %part.display(), "cannot open the upload file");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the upload",
            ))
        }
        Err(_) => Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the upload",
        )),
    }
}

/// The sink for a part holding `have` bytes: the hash state its last request left
/// (`held`), else the held bytes hashed again; positioned at `have`. `Err` is the 500.
async fn resume_sink(
    file: nix::fcntl::Flock<File>,
    have: u64,
    held: Option<Sha256>,
) -> Result<Sink, HttpResponse> {
    // The stager hashes what it receives as it writes it (a resumed upload hashes the part
    // already held first), so a complete object needs no second reading.
    let hashed = web::block(move || -> std::io::Result<Sink> {
        if let Some(hasher) = held {
            (&*file).seek(SeekFrom::Start(have))?;
            return Ok(Sink { file, hasher });
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            (&*file).seek(SeekFrom::Start(0))?;
            let mut held = std::io::Read::take(&*file, have);
            let mut buf = vec![0u8; 1 << 20];
            fsutil::sha256_update(&mut held, &mut buf, &mut hasher)?;
        }
        (&*file).seek(SeekFrom::Start(have))?;
        Ok(Sink { file, hasher })
    })
    .await;
    match hashed {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the partial upload");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the upload",
            ))
        }
        Err(_) => Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the upload",
        )),
    }
}

/// The answer to a write request that ran to its end (`done`: how finishing went), keeping
/// a partial upload's hash state for its next request.
fn finished_answer(
    done: Result<std::io::Result<Outcome>, actix_web::error::BlockingError>,
    limits: &Limits,
    part: PathBuf,
    sha: &str,
    size: u64,
    token: &PublishToken,
    broken: bool,
) -> HttpResponse {
    match done {
        Ok(Ok(Outcome::Partial(n, hasher))) => {
            limits.held.put(part, n, hasher);
            if broken {
                tracing::info!(object = %sha, received = n, size, token = %token.name, "partial upload kept for resuming");
            }
            HttpResponse::Accepted()
                .insert_header(("X-Upload-Offset", n.to_string()))
                .body(format!("received {n} of {size} bytes\n"))
        }
        Ok(Ok(Outcome::Stored)) => {
            tracing::info!(object = %sha, size, token = %token.name, "object uploaded and verified");
            text(StatusCode::CREATED, "stored")
        }
        Ok(Ok(Outcome::Present)) => text(StatusCode::OK, "present"),
        Ok(Ok(Outcome::Mismatch(got))) => {
            tracing::warn!(object = %sha, got = %got, token = %token.name, "upload refused: content does not match its SHA-256");
            text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the content hashes to {got}, not {sha}; upload discarded"),
            )
        }
        Ok(Err(e)) => {
            tracing::error!(object = %sha, error = %e, "cannot finish the upload");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the upload")
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the upload"),
    }
}

/// One upload request, in its steps: authorize, take a slot, find the target, open and
/// lock the part, check the offset, resume the hash, stream, finish. An early answer hands
/// the unread body back (`Early`) for draining.
async fn object_put_inner(
    kind: Kind,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PutQuery>,
    mut payload: web::Payload,
    stager: web::Data<Arc<Stager>>,
) -> Result<HttpResponse, Early> {
    let token = match authorize(&req, &stager) {
        Ok(t) => t,
        Err(r) => return Err((*r, payload)),
    };
    let limits = stager.publish_limits().clone();
    let Some(_slot) = limits.slots.acquire(&token.name, limits.uploads_per_token) else {
        tracing::warn!(token = %token.name, limit = limits.uploads_per_token, "upload refused: too many concurrent uploads");
        let r = HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, "5"))
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body(format!(
                "token {:?} already runs {} uploads; retry when one ends\n",
                token.name, limits.uploads_per_token
            ));
        return Err((r, payload));
    };
    let sha = path.into_inner();
    let (offset, size) = (query.offset, query.size);
    let (part, expected, obj) = match target(kind, &stager, &sha, &query) {
        Ok(t) => t,
        Err(r) => return Err((*r, payload)),
    };
    if size > limits.max_object_bytes {
        let r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("objects are limited to {} bytes", limits.max_object_bytes),
        );
        return Err((r, payload));
    }
    if obj.as_ref().is_some_and(|o| o.exists()) {
        return Err((text(StatusCode::OK, "present"), payload));
    }
    let file = match open_part(&part).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            let r = HttpResponse::Conflict()
                .insert_header(("X-Upload-Offset", received(&stager, &sha).to_string()))
                .body("another upload of this object is in progress\n");
            return Err((r, payload));
        }
        Err(r) => return Ok(r),
    };
    let have = file.metadata().map_or(0, |m| m.len());
    if offset != have || have > size {
        drop(file);
        let r = HttpResponse::Conflict()
            .insert_header(("X-Upload-Offset", have.to_string()))
            .body(format!("resume at offset {have}\n"));
        return Err((r, payload));
    }
    let held = limits.held.take(&part, have);
    let sink = match resume_sink(file, have, held).await {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let (sink, at, end) = match receive(&mut payload, sink, have, size).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(object = %sha, error = %e, "cannot write the upload");
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the upload",
            ));
        }
    };
    let broken = match end {
        BodyEnd::TooBig => {
            let _ = (*sink.file).set_len(at);
            drop(sink);
            let r = text(
                StatusCode::BAD_REQUEST,
                format!("more bytes than size={size}; received up to offset {at}"),
            );
            return Err((r, payload));
        }
        BodyEnd::Broken(e) => {
            tracing::warn!(object = %sha, error = %e, "upload interrupted; keeping what arrived");
            true
        }
        BodyEnd::Complete => false,
    };
    let repo = stager.repository().clone();
    let part2 = part.clone();
    let expected2 = expected.clone();
    let done =
        web::block(move || finish_object(&repo, sink, &part2, expected2.as_deref(), at, size))
            .await;
    let sha = expected.unwrap_or(sha);
    Ok(finished_answer(
        done, &limits, part, &sha, size, &token, broken,
    ))
}

#[derive(Debug, Deserialize)]
struct CommitBody {
    #[serde(default)]
    notes: String,
    files: Vec<ManifestFile>,
}

// Over 100 lines, knowingly: the commit's checks (token, product limit, every object
// present with its manifest size, signature) then the atomic manifest write, read top to
// bottom as the API documents them.
async fn commit(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
    stager: web::Data<Arc<Stager>>,
) -> HttpResponse {
    let token = match authorize(&req, &stager) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let (product, version) = path.into_inner();
    if !valid_name(&product) || !valid_name(&version) {
        return text(
            StatusCode::BAD_REQUEST,
            "product/version: use letters, digits and . _ + -",
        );
    }
    if !token.allows(&product) {
        tracing::warn!(token = %token.name, %product, "publish refused: token not for this product");
        return text(
            StatusCode::FORBIDDEN,
            format!("token {:?} may not publish {product}", token.name),
        );
    }
    let body: CommitBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("release description: {e}")),
    };
    let mut names = std::collections::BTreeSet::new();
    for f in &body.files {
        if !valid_file_name(&f.name) || !names.insert(f.name.as_str()) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unusable or repeated file name {:?}", f.name),
            );
        }
        if stager.signer().is_some()
            && (f.name == signing::SUMS_NAME || f.name == signing::SIG_NAME)
        {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{} is written by ffs when signing", f.name),
            );
        }
    }
    if body.files.is_empty() {
        return text(StatusCode::BAD_REQUEST, "a release needs at least one file");
    }
    let st = stager.clone().into_inner();
    let by = format!("token {}", token.name);
    let r = web::block(move || {
        let repo = st.repository();
        let _lock = repo.lock()?;
        if repo.manifest_path(&product, &version)?.exists() {
            return Ok(Err((
                StatusCode::CONFLICT,
                format!("release {product} {version} exists already"),
            )));
        }
        for f in &body.files {
            let obj = repo.object_path(&f.sha256)?;
            match fs::symlink_metadata(&obj) {
                Ok(md) if md.is_file() && md.len() == f.size => {}
                Ok(md) if md.is_file() => {
                    return Ok(Err((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "{}: object {} has {} bytes, not {}",
                            f.name,
                            f.sha256,
                            md.len(),
                            f.size
                        ),
                    )));
                }
                _ => {
                    return Ok(Err((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{}: object {} has not been uploaded", f.name, f.sha256),
                    )));
                }
            }
        }
        let mut buf = vec![0u8; 1 << 16];
        crate::publish::commit_release(
            repo,
            &product,
            &version,
            &body.notes,
            body.files,
            st.signer(),
            &by,
            &mut buf,
        )
        .map(Ok)
    })
    .await;
    match r {
        Ok(Ok(Ok(m))) => HttpResponse::Created()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(
                serde_json::json!({
                    "product": m.product,
                    "version": m.version,
                    "files": m.files.len(),
                    "bytes": m.bytes(),
                    "signed_by": m.signed_by(),
                    "published_at": m.published_at,
                })
                .to_string(),
            ),
        Ok(Ok(Err((status, why)))) => text(status, why),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "remote publish failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "publish failed; see the stager's log",
            )
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "publish failed"),
    }
}

/// Removes partial uploads (`uploads/*.part`) not written to for `after`, skipping any an
/// upload is writing right now (it holds the file's lock). Returns how many went.
pub fn remove_abandoned(repo: &crate::Repository, after: std::time::Duration) -> usize {
    let dir = repo.root().join("uploads");
    let Ok(rd) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() >= after);
        if !stale {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        if nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
            && fs::remove_file(&p).is_ok()
        {
            tracing::info!(path = %p.display(), "removed an abandoned partial upload");
            n += 1;
        }
    }
    n
}

/// Registers the publish routes (the `Data<Arc<Stager>>` is registered by the caller).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/publish/v1/objects/{sha}", web::get().to(object_status))
        .route("/publish/v1/objects/{sha}", web::put().to(object_put))
        .route("/publish/v1/uploads/{id}", web::get().to(upload_status))
        .route("/publish/v1/uploads/{id}", web::put().to(upload_put))
        .service(
            web::resource("/publish/v1/releases/{product}/{version}")
                .app_data(web::PayloadConfig::new(MAX_COMMIT_BYTES))
                .route(web::post().to(commit)),
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_slots_limit_each_token_and_free_on_drop() {
        let s = UploadSlots::default();
        let held: Vec<_> = (0..3).map(|_| s.acquire("ci", 3).unwrap()).collect();
        assert!(s.acquire("ci", 3).is_none(), "a fourth is refused");
        let other = s.acquire("other", 3);
        assert!(other.is_some(), "tokens are counted apart");
        drop(held);
        assert!(s.acquire("ci", 3).is_some(), "freed on drop");
    }
}
