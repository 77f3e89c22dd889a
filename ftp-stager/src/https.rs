//! HTTPS downloads: `GET /d/<token>/<path>` (Range, Content-Length/Type, ETag = the
//! SHA-256), `GET /d/<token>/` (a plain HTML listing of the area) and
//! `GET /d/<token>/<dir>/` (the listing of one directory in it).
//!
//! Path safety: the request path is taken raw (before any decoding), percent-decoded once,
//! and refused if it then still contains `%` (double encoding), a backslash, a control
//! character, an empty, `.` or `..` component, or a leading `/`. The decoded name must be
//! one of the area's staged files; the file is opened only after its canonical path is
//! checked to be inside the area, with `O_NOFOLLOW` on the last component. So a symlink
//! planted in an area (or a traversal in any encoding) never leads out of it.
//!
//! Deliveries are recorded when the response body has been handed completely to the
//! connection (best effort: the client may still drop the last bytes in flight).

use std::path::{Path, PathBuf};
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
    let (file, path) = match opened {
        Ok(Ok(fp)) => fp,
        Ok(Err(e)) => {
            tracing::warn!(area = %area.id, file = %name, error = %e, "cannot open staged file");
            return not_found();
        }
        Err(_) => return HttpResponse::InternalServerError().finish(),
    };
    let named = match actix_files::NamedFile::from_file(file, &path) {
        Ok(n) => n,
        Err(_) => return not_found(),
    };
    let named = named
        .use_etag(false)
        .use_last_modified(true)
        .set_content_disposition(header::ContentDisposition {
            disposition: header::DispositionType::Attachment,
            parameters: vec![header::DispositionParam::Filename(
                name.rsplit('/').next().unwrap_or(&name).to_owned(),
            )],
        });
    let mut resp = named.into_response(&req);
    if let Ok(v) = header::HeaderValue::from_str(&format!("\"{}\"", entry.sha256)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    let status = resp.status();
    if req.method() == Method::GET
        && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT)
    {
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

/// Opens `area/name` only if it resolves inside `area` and is a regular file, without
/// following a symlink in the last component.
fn open_inside(area: &Path, name: &str) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let area = area.canonicalize()?;
    let path = area.join(name);
    let md = std::fs::symlink_metadata(&path)?;
    if !md.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let canon = path.canonicalize()?;
    if !canon.starts_with(&area) || canon != path {
        return Err(std::io::Error::other("path leaves the area"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    Ok((f, path))
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
}

/// Runs the HTTPS server on an already-bound listener until it is stopped through the
/// returned handle (or the future is dropped).
pub fn server(
    stager: Arc<Stager>,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<actix_web::dev::Server> {
    let tls = (*tls).clone();
    let srv = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(security_headers())
            .configure(configure(stager.clone()))
    })
    .workers(2)
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
