//! HTTPS downloads: `GET /d/<token>/<path>` (ETag = the SHA-256, Last-Modified, and the
//! conditional and range handling of nginx: If-Match / If-Unmodified-Since → 412,
//! If-None-Match / If-Modified-Since → 304, Range in every form with `multipart/byteranges`
//! for several ranges, 416 with `Content-Range: bytes */len`, If-Range by exact ETag or
//! date; `Cache-Control: private, no-transform` on file responses, `no-store` elsewhere), `GET /d/<token>/` (a plain HTML listing of the area) and
//! `GET /d/<token>/<dir>/` (the listing of one directory in it).
//!
//! Path safety: the request path is taken raw (before any decoding), percent-decoded once,
//! and refused if it then still contains `%` (double encoding), a backslash, a control
//! character, an empty, `.` or `..` component, or a leading `/`. The decoded name must be
//! one of the area's staged files; it is opened through cap-std beneath the area's
//! directory handle (openat2 `RESOLVE_BENEATH`, the same resolver FTP uses), so a symlink
//! planted in an area (or a traversal in any encoding) never leads out of it.
//!
//! Deliveries are recorded when the response body has been handed completely to the
//! connection (best effort: the client may still drop the last bytes in flight).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::{Method, StatusCode, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};

use crate::areas::AreaRecord;
use crate::repository::valid_file_name;
use crate::staging::Stager;

/// Why a download path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Bad encoding or a traversal attempt.
    Invalid,
}

/// Decodes and checks the release-relative part of a download URL (the raw, still
/// percent-encoded text after `/d/<token>/`).
pub fn decode_file_path(raw: &str) -> Result<String, PathError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    // A '%' that did not form a valid escape is passed through by percent_decode_str;
    // a '%' in the decoded text is either that or a double encoding. Refuse both.
    let s = String::from_utf8(bytes).map_err(|_| PathError::Invalid)?;
    if s.contains('%') || s.contains('\0') || !valid_file_name(&s) {
        return Err(PathError::Invalid);
    }
    Ok(s)
}

/// Splits `/d/<token>/<rest>` into (token, rest). `None` if the shape is wrong.
fn split_download_path(path: &str) -> Option<(&str, Option<&str>)> {
    let tail = path.strip_prefix("/d/")?;
    match tail.split_once('/') {
        Some((t, rest)) => Some((t, Some(rest))),
        None => Some((tail, None)),
    }
}

fn valid_token_shape(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit())
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found (the link may have expired)\n")
}

fn bad_request() -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .body("bad request\n")
}

async fn download(req: HttpRequest, stager: web::Data<Arc<Stager>>) -> HttpResponse {
    let Some((token, rest)) = split_download_path(req.uri().path()) else {
        return not_found();
    };
    if !valid_token_shape(token) {
        return not_found();
    }
    let stager = stager.get_ref().clone();
    let Some(area) = stager.area_of_token(token) else {
        return not_found();
    };
    let rest = match rest {
        None => {
            return HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, format!("/d/{token}/")))
                .finish();
        }
        Some(r) => r,
    };
    if rest.is_empty() {
        return listing(&area, "");
    }
    if let Some(dir) = rest.strip_suffix('/') {
        // A directory inside the release: list what lies beneath it.
        return match decode_file_path(dir) {
            Ok(d) if area.files.iter().any(|f| in_dir(&f.name, &d)) => listing(&area, &d),
            Ok(_) => not_found(),
            Err(PathError::Invalid) => {
                tracing::info!(area = %area.id, path = rest, "refused listing path");
                bad_request()
            }
        };
    }
    let name = match decode_file_path(rest) {
        Ok(n) => n,
        Err(PathError::Invalid) => {
            tracing::info!(area = %area.id, path = rest, "refused download path");
            return bad_request();
        }
    };
    let Some(entry) = area.files.iter().find(|f| f.name == name).cloned() else {
        return not_found();
    };
    let area_dir = stager.areas_dir().join(&area.id);
    let opened = {
        let name = name.clone();
        web::block(move || open_inside(&area_dir, &name)).await
    };
    let (file, md) = match opened {
        Ok(Ok(fm)) => fm,
        Ok(Err(e)) => {
            tracing::warn!(area = %area.id, file = %name, error = %e, "cannot open staged file");
            return not_found();
        }
        Err(_) => return HttpResponse::InternalServerError().finish(),
    };
    let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
    let info = FileInfo {
        len: md.len(),
        mtime: md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        etag: format!("\"{}\"", entry.sha256),
    };
    let content_type = match base.rsplit_once('.') {
        Some((_, ext)) => actix_files::file_extension_to_mime(ext).to_string(),
        None => "application/octet-stream".to_owned(),
    };
    let head = req.method() == Method::HEAD;
    let resp = respond(&req, &info, &content_type, &base, Arc::new(file), head);
    let status = resp.status();
    if !head && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        resp.map_body(move |_, body| {
            BoxBody::new(CountingBody {
                inner: body,
                sent: 0,
                done: Some(Box::new(move |bytes| {
                    let stager = stager.clone();
                    let area = area.clone();
                    let name = name.clone();
                    // Appending fsyncs; keep it off the I/O thread.
                    tokio::task::spawn_blocking(move || {
                        stager.record_delivery(&area, &name, bytes, "https")
                    });
                })),
            })
        })
    } else {
        resp
    }
}

/// Opens `area/name` through the same capability-based lookup as FTP (cap-std: openat2
/// `RESOLVE_BENEATH` on Linux), so `..`, absolute paths and symlinks that leave the area
/// are refused by the kernel; the opened handle must be a regular file (checked with
/// `fstat` on the handle itself, so no check-then-open race).
fn open_inside(area: &Path, name: &str) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let dir = cap_std::fs::Dir::open_ambient_dir(area, cap_std::ambient_authority())?;
    let f = dir.open(name)?.into_std();
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, md))
}

/// What the conditional and range logic needs to know of a file.
#[derive(Debug, Clone)]
struct FileInfo {
    len: u64,
    /// Modification time, whole seconds since the epoch (what `Last-Modified` shows).
    mtime: u64,
    /// The strong entity tag, quoted: `"<sha256>"`.
    etag: String,
}

/// What a request for a file gets, decided the way nginx decides it (not-modified filter
/// first, then the range filter).
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    PreconditionFailed,
    NotModified,
    Full,
    /// Byte ranges, end exclusive; one range is a plain 206, several a multipart one.
    Ranges(Vec<(u64, u64)>),
    Unsatisfiable,
}

/// `Cache-Control` of file responses (200, 206, 304): the URL is a per-customer capability,
/// so no shared cache may keep it, and no proxy may alter the bytes (the ETag is their
/// SHA-256). Error and listing responses get `no-store` (set as the default header).
const FILE_CACHE_CONTROL: &str = "private, no-transform";

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn parse_http_date(s: &str) -> Option<u64> {
    let d: header::HttpDate = s.trim().parse().ok()?;
    std::time::SystemTime::from(d)
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// An entity tag: (weak, opaque tag including its quotes).
fn parse_etag(s: &str) -> Option<(bool, &str)> {
    let s = s.trim();
    let (weak, rest) = match s.strip_prefix("W/") {
        Some(r) => (true, r),
        None => (false, s),
    };
    (rest.len() >= 2
        && rest.starts_with('"')
        && rest.ends_with('"')
        && !rest[1..rest.len() - 1].contains('"'))
    .then_some((weak, rest))
}

/// Whether an `If-Match` (`weak` false: strong comparison) or `If-None-Match` (`weak`
/// true: weak comparison) list matches our (strong) tag. `*` matches any existing file.
fn etag_list_matches(list: &str, ours: &str, weak: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',')
        .filter_map(parse_etag)
        .any(|(w, tag)| tag == ours && (weak || !w))
}

fn evaluate(req: &HttpRequest, info: &FileInfo) -> Plan {
    evaluate_headers(
        header_str(req, header::IF_MATCH),
        header_str(req, header::IF_UNMODIFIED_SINCE),
        header_str(req, header::IF_NONE_MATCH),
        header_str(req, header::IF_MODIFIED_SINCE),
        header_str(req, header::RANGE),
        header_str(req, header::IF_RANGE),
        info,
    )
}

/// RFC 9110 §13.2.2 order: If-Match (else If-Unmodified-Since) → 412; If-None-Match (else
/// If-Modified-Since) → 304; then Range, honoured only if If-Range (when present) matches
/// exactly (our strong ETag, or the exact Last-Modified date — as nginx compares it).
fn evaluate_headers(
    if_match: Option<&str>,
    if_unmodified_since: Option<&str>,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    range: Option<&str>,
    if_range: Option<&str>,
    info: &FileInfo,
) -> Plan {
    if let Some(im) = if_match {
        if !etag_list_matches(im, &info.etag, false) {
            return Plan::PreconditionFailed;
        }
    } else if let Some(t) = if_unmodified_since.and_then(parse_http_date)
        && info.mtime > t
    {
        return Plan::PreconditionFailed;
    }
    if let Some(inm) = if_none_match {
        if etag_list_matches(inm, &info.etag, true) {
            return Plan::NotModified;
        }
    } else if let Some(t) = if_modified_since.and_then(parse_http_date)
        && info.mtime <= t
    {
        return Plan::NotModified;
    }
    let Some(range) = range else {
        return Plan::Full;
    };
    if let Some(ir) = if_range {
        let ir = ir.trim();
        let current = if ir.len() >= 2 && ir.ends_with('"') {
            ir == info.etag
        } else {
            parse_http_date(ir) == Some(info.mtime)
        };
        if !current {
            return Plan::Full;
        }
    }
    parse_ranges(range, info.len)
}

/// Parses a `Range` header the way nginx's range filter does: anything but `bytes=` is
/// ignored (200); a syntax error or no satisfiable range is 416; a range starting at 0
/// that is empty, or ranges whose sum exceeds the file, make it serve the whole file.
fn parse_ranges(value: &str, len: u64) -> Plan {
    const MAX: u64 = i64::MAX as u64;
    let v = value.as_bytes();
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"bytes=") {
        return Plan::Full;
    }
    let mut p = 6;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let skip_sp = |mut i: usize| {
        while at(i) == b' ' {
            i += 1;
        }
        i
    };
    let number = |i: &mut usize| -> Option<u64> {
        let mut n: u64 = 0;
        while at(*i).is_ascii_digit() {
            n = n
                .checked_mul(10)?
                .checked_add(u64::from(at(*i) - b'0'))
                .filter(|n| *n <= MAX)?;
            *i += 1;
        }
        Some(n)
    };
    let mut ranges = Vec::new();
    let mut size: u64 = 0;
    loop {
        let (start, end);
        p = skip_sp(p);
        if at(p) != b'-' {
            if !at(p).is_ascii_digit() {
                return Plan::Unsatisfiable;
            }
            let Some(s) = number(&mut p) else {
                return Plan::Unsatisfiable;
            };
            p = skip_sp(p);
            if at(p) != b'-' {
                return Plan::Unsatisfiable;
            }
            p = skip_sp(p + 1);
            if at(p) == b',' || at(p) == 0 {
                start = s;
                end = len;
            } else {
                if !at(p).is_ascii_digit() {
                    return Plan::Unsatisfiable;
                }
                let Some(e) = number(&mut p) else {
                    return Plan::Unsatisfiable;
                };
                p = skip_sp(p);
                if at(p) != b',' && at(p) != 0 {
                    return Plan::Unsatisfiable;
                }
                start = s;
                end = if e >= len { len } else { e + 1 };
            }
        } else {
            p += 1;
            if !at(p).is_ascii_digit() {
                return Plan::Unsatisfiable;
            }
            let Some(n) = number(&mut p) else {
                return Plan::Unsatisfiable;
            };
            p = skip_sp(p);
            if at(p) != b',' && at(p) != 0 {
                return Plan::Unsatisfiable;
            }
            start = len.saturating_sub(n);
            end = len;
        }
        if start < end {
            ranges.push((start, end));
            size = match size.checked_add(end - start) {
                Some(s) if s <= MAX => s,
                _ => return Plan::Unsatisfiable,
            };
        } else if start == 0 {
            return Plan::Full;
        }
        if at(p) != b',' {
            break;
        }
        p += 1;
    }
    if ranges.is_empty() {
        return Plan::Unsatisfiable;
    }
    if size > len {
        return Plan::Full;
    }
    Plan::Ranges(ranges)
}

/// Builds the response for an opened file: validators, `Cache-Control`, and the body
/// (whole, one range, or `multipart/byteranges`); HEAD gets the same headers, no body.
fn respond(
    req: &HttpRequest,
    info: &FileInfo,
    content_type: &str,
    filename: &str,
    file: Arc<std::fs::File>,
    head: bool,
) -> HttpResponse {
    let last_modified =
        header::HttpDate::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(info.mtime));
    let validators = |b: &mut actix_web::HttpResponseBuilder| {
        b.insert_header((header::ETAG, info.etag.clone()))
            .insert_header((header::LAST_MODIFIED, last_modified.to_string()))
            .insert_header((header::CACHE_CONTROL, FILE_CACHE_CONTROL));
    };
    let body = |pieces: Vec<Piece>, size: u64| FileBody {
        file: file.clone(),
        pieces: if head {
            Vec::new().into()
        } else {
            pieces.into()
        },
        size,
        reading: None,
        pace: crate::pace::Pace::new(),
        handed_out: None,
    };
    match evaluate(req, info) {
        Plan::PreconditionFailed => HttpResponse::PreconditionFailed()
            .content_type("text/plain; charset=utf-8")
            .body("precondition failed\n"),
        Plan::NotModified => {
            let mut b = HttpResponse::NotModified();
            validators(&mut b);
            b.finish()
        }
        Plan::Unsatisfiable => HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{}", info.len)))
            .content_type("text/plain; charset=utf-8")
            .body("range not satisfiable\n"),
        plan => {
            let mut b = match &plan {
                Plan::Ranges(_) => HttpResponse::PartialContent(),
                _ => HttpResponse::Ok(),
            };
            validators(&mut b);
            b.insert_header((header::ACCEPT_RANGES, "bytes"))
                .insert_header(header::ContentDisposition {
                    disposition: header::DispositionType::Attachment,
                    parameters: vec![header::DispositionParam::Filename(filename.to_owned())],
                });
            match plan {
                Plan::Ranges(r) if r.len() == 1 => {
                    let (s, e) = r[0];
                    b.insert_header((
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{}", s, e - 1, info.len),
                    ))
                    .insert_header((header::CONTENT_TYPE, content_type))
                    .body(body(vec![Piece::File { off: s, end: e }], e - s))
                }
                Plan::Ranges(r) => {
                    let boundary = format!("{:020}", rand::random::<u64>());
                    let mut pieces = Vec::new();
                    let mut size = 0;
                    for (s, e) in r {
                        let part = format!(
                            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
                            s,
                            e - 1,
                            info.len
                        );
                        size += part.len() as u64 + (e - s);
                        pieces.push(Piece::Mem(Bytes::from(part)));
                        pieces.push(Piece::File { off: s, end: e });
                    }
                    let tail = format!("\r\n--{boundary}--\r\n");
                    size += tail.len() as u64;
                    pieces.push(Piece::Mem(Bytes::from(tail)));
                    b.insert_header((
                        header::CONTENT_TYPE,
                        format!("multipart/byteranges; boundary={boundary}"),
                    ))
                    .body(body(pieces, size))
                }
                _ => b
                    .insert_header((header::CONTENT_TYPE, content_type))
                    .body(body(
                        vec![Piece::File {
                            off: 0,
                            end: info.len,
                        }],
                        info.len,
                    )),
            }
        }
    }
}

enum Piece {
    Mem(Bytes),
    /// File bytes `off..end`.
    File {
        off: u64,
        end: u64,
    },
}

/// A response body of literal pieces and file ranges, read on the connection's thread when
/// the page cache holds them, else off the I/O thread with `pread`. Its size is announced
/// up front; a file that shrank under it ends the body with an error (the connection is
/// closed rather than short bytes sent).
struct FileBody {
    file: Arc<std::fs::File>,
    pieces: std::collections::VecDeque<Piece>,
    size: u64,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    /// Sizes of the file pieces ([`crate::pace::Pace`]).
    pace: crate::pace::Pace,
    /// When the last file piece was handed out.
    handed_out: Option<std::time::Instant>,
}

impl MessageBody for FileBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.size)
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        use std::future::Future as _;
        let this = &mut *self;
        loop {
            if let Some(h) = this.reading.as_mut() {
                let r = match Pin::new(h).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                this.reading = None;
                this.handed_out = Some(std::time::Instant::now());
                return Poll::Ready(Some(match r {
                    Ok(r) => r,
                    Err(e) => Err(std::io::Error::other(e)),
                }));
            }
            match this.pieces.front_mut() {
                None => return Poll::Ready(None),
                Some(Piece::Mem(_)) => {
                    if let Some(Piece::Mem(b)) = this.pieces.pop_front() {
                        return Poll::Ready(Some(Ok(b)));
                    }
                }
                Some(Piece::File { off, end }) => {
                    if *off >= *end {
                        this.pieces.pop_front();
                        continue;
                    }
                    let now = std::time::Instant::now();
                    let chunk = this.pace.next(this.handed_out.take().map(|t| now - t), now);
                    let n = (*end - *off).min(chunk);
                    let at = *off;
                    // Allocated here, on the connection's worker thread, which also frees
                    // it once the bytes are written: the blocking pool's threads would
                    // each spread buffers over a malloc arena of their own.
                    let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
                    // What the page cache holds is read right here; only a cold read
                    // goes to the blocking pool.
                    if let Some(got) = crate::fsutil::read_cached_at(&this.file, &mut buf, at) {
                        buf.truncate(got);
                        *off += got as u64;
                        this.handed_out = Some(now);
                        return Poll::Ready(Some(Ok(Bytes::from(buf))));
                    }
                    *off += n;
                    let file = this.file.clone();
                    this.reading = Some(tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt as _;
                        file.read_exact_at(&mut buf, at)?;
                        Ok(Bytes::from(buf))
                    }));
                }
            }
        }
    }
}

/// Whether release-relative `name` lies beneath directory `dir` (no trailing slash).
fn in_dir(name: &str, dir: &str) -> bool {
    name.strip_prefix(dir)
        .is_some_and(|tail| tail.starts_with('/'))
}

/// The listing page of the area's root (`dir` empty) or of one directory in it: every
/// file beneath, linked relative to the page, with size and checksum.
fn listing(area: &AreaRecord, dir: &str) -> HttpResponse {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut rows = String::new();
    if !dir.is_empty() {
        rows.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for f in &area.files {
        let shown = if dir.is_empty() {
            f.name.as_str()
        } else {
            match f.name.strip_prefix(dir).and_then(|t| t.strip_prefix('/')) {
                Some(t) => t,
                None => continue,
            }
        };
        let href: String = shown
            .split('/')
            .map(|c| percent_encoding::utf8_percent_encode(c, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        rows.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td><code>{}</code></td></tr>\n",
            esc(&href),
            esc(shown),
            f.size,
            f.sha256
        ));
    }
    let at = if dir.is_empty() {
        String::new()
    } else {
        format!(" — {}/", esc(dir))
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{p} {v}{at}</title></head>\n\
         <body><h1>{p} {v}{at}</h1><p>Available until {e}.</p>\n\
         <table><thead><tr><th>File</th><th>Bytes</th><th>SHA-256</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
         </body></html>\n",
        p = esc(&area.product),
        v = esc(&area.version),
        e = crate::areas::rfc3339(area.expires_at),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Everything but RFC 3986 unreserved characters is escaped in links.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

type DoneFn = Box<dyn FnOnce(u64) + Send>;

/// A body that counts bytes and calls `done` once when the inner body is exhausted.
struct CountingBody {
    inner: BoxBody,
    sent: u64,
    done: Option<DoneFn>,
}

impl MessageBody for CountingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.sent += b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    done(this.sent);
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// Registers the download routes on an actix app.
pub fn configure(stager: Arc<Stager>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(stager))
            .configure(crate::upload::configure)
            .route("/d/{tail:.*}", web::get().to(download))
            .route("/d/{tail:.*}", web::head().to(download))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok\n") }),
            );
    }
}

/// Headers on every response: the URL carries a capability token, so no referrer leaves
/// the page; nothing may frame it, sniff types, or load anything.
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
        // Only where a handler set none: file responses set `FILE_CACHE_CONTROL`.
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Runs the HTTPS server on an already-bound listener until it is stopped through the
/// returned handle (or the future is dropped). `replication` counts what followers are
/// served (and shows this stager's own following, if any).
pub fn server(
    stager: Arc<Stager>,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    replication: crate::replicate_serve::ServeStats,
) -> std::io::Result<actix_web::dev::Server> {
    let tls = (*tls).clone();
    let replication = web::Data::new(replication);
    let srv = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(security_headers())
            .configure(configure(stager.clone()))
            .configure(crate::replicate_serve::configure(replication.clone()))
    })
    .workers(2)
    // As nginx's `tcp_nodelay`: a short answer must not wait for the client's delayed ACK.
    .tcp_nodelay(true)
    .disable_signals()
    .listen_rustls_0_23(listener, tls)?
    .run();
    Ok(srv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_and_refuses_traversal_in_every_encoding() {
        assert_eq!(decode_file_path("a/b.iso").unwrap(), "a/b.iso");
        assert_eq!(decode_file_path("my%20file.txt").unwrap(), "my file.txt");
        assert_eq!(decode_file_path("%C3%A9.txt").unwrap(), "é.txt");
        for bad in [
            "..",
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "..%2fx",
            "a%2f..%2f..%2fx",
            "%252e%252e/x",
            "%25",
            "..\\x",
            "..%5cx",
            "%5c",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "a//b",
            "./a",
            "a%00b",
            "%ff",
            "",
        ] {
            assert_eq!(decode_file_path(bad), Err(PathError::Invalid), "{bad:?}");
        }
    }

    fn info() -> FileInfo {
        FileInfo {
            len: 100,
            mtime: 1_700_000_000,
            etag: "\"abc\"".into(),
        }
    }

    fn plan(h: [Option<&str>; 6]) -> Plan {
        evaluate_headers(h[0], h[1], h[2], h[3], h[4], h[5], &info())
    }

    #[test]
    fn ranges_parse_like_nginx() {
        let r = |v: &str| parse_ranges(v, 100);
        assert_eq!(r("bytes=10-19"), Plan::Ranges(vec![(10, 20)]));
        assert_eq!(r("bytes=-10"), Plan::Ranges(vec![(90, 100)]));
        assert_eq!(r("bytes=90-"), Plan::Ranges(vec![(90, 100)]));
        assert_eq!(r("bytes=90-500"), Plan::Ranges(vec![(90, 100)]));
        assert_eq!(r("bytes=-500"), Plan::Ranges(vec![(0, 100)]));
        assert_eq!(
            r("bytes=0-1, 5-6,-2"),
            Plan::Ranges(vec![(0, 2), (5, 7), (98, 100)])
        );
        assert_eq!(r("BYTES=1-1"), Plan::Ranges(vec![(1, 2)]));
        assert_eq!(r("bytes=100-"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=200-300"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=5-3"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=abc"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=-"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999-"), Plan::Unsatisfiable);
        assert_eq!(r("bytes=0-99,0-99"), Plan::Full);
        assert_eq!(r("items=0-5"), Plan::Full);
    }

    #[test]
    fn preconditions_follow_rfc_9110_order() {
        let lm = "Tue, 14 Nov 2023 22:13:20 GMT"; // 1_700_000_000
        let older = "Tue, 14 Nov 2023 22:13:19 GMT";
        let r = Some("bytes=10-19");
        let ten = Plan::Ranges(vec![(10, 20)]);
        assert_eq!(
            plan([Some("\"abc\""), None, None, None, None, None]),
            Plan::Full
        );
        assert_eq!(plan([Some("*"), None, None, None, None, None]), Plan::Full);
        assert_eq!(
            plan([Some("\"x\", \"abc\""), None, None, None, None, None]),
            Plan::Full
        );
        assert_eq!(
            plan([Some("W/\"abc\""), None, None, None, None, None]),
            Plan::PreconditionFailed
        );
        assert_eq!(
            plan([Some("\"old\""), None, None, None, None, None]),
            Plan::PreconditionFailed
        );
        assert_eq!(
            plan([None, Some(older), None, None, None, None]),
            Plan::PreconditionFailed
        );
        assert_eq!(plan([None, Some(lm), None, None, None, None]), Plan::Full);
        assert_eq!(
            plan([None, None, Some("\"abc\""), None, None, None]),
            Plan::NotModified
        );
        assert_eq!(
            plan([None, None, Some("W/\"abc\""), None, None, None]),
            Plan::NotModified
        );
        assert_eq!(
            plan([None, None, Some("*"), None, None, None]),
            Plan::NotModified
        );
        assert_eq!(
            plan([None, None, Some("\"old\""), None, None, None]),
            Plan::Full
        );
        assert_eq!(
            plan([None, None, None, Some(lm), None, None]),
            Plan::NotModified
        );
        assert_eq!(
            plan([None, None, None, Some(older), None, None]),
            Plan::Full
        );
        assert_eq!(
            plan([None, None, None, Some("garbage"), None, None]),
            Plan::Full
        );
        assert_eq!(plan([None, None, None, None, r, Some("\"abc\"")]), ten);
        assert_eq!(plan([None, None, None, None, r, Some(lm)]), ten);
        assert_eq!(
            plan([None, None, None, None, r, Some("\"old\"")]),
            Plan::Full
        );
        assert_eq!(
            plan([None, None, None, None, r, Some("W/\"abc\"")]),
            Plan::Full
        );
        assert_eq!(plan([None, None, None, None, r, Some(older)]), Plan::Full);
        assert_eq!(plan([None, None, None, None, r, None]), ten);
    }

    #[test]
    fn splits_paths() {
        assert_eq!(
            split_download_path("/d/abc/x/y"),
            Some(("abc", Some("x/y")))
        );
        assert_eq!(split_download_path("/d/abc/"), Some(("abc", Some(""))));
        assert_eq!(split_download_path("/d/abc"), Some(("abc", None)));
        assert_eq!(split_download_path("/x"), None);
    }
}
