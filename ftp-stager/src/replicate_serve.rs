//! The source side of replication on the stager's HTTPS listener (`/replicate/v1/…`, the
//! API in [`crate::replicate`]): the listing of every release, objects by hash, and the
//! counters of what was served (and, on a follower, of what it fetched). Every request
//! needs a replication token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::replicate::Listing;
use crate::staging::Stager;
use crate::tokens::TokenStore;

/// What this stager served to followers since it started.
#[derive(Debug, Default, Serialize)]
pub struct ServeStats {
    /// Listings answered 200 (a changed or first listing).
    pub listings_served: AtomicU64,
    /// Listings answered 304 (the follower was up to date).
    pub listings_unchanged: AtomicU64,
    /// Object bodies sent (200 or 206).
    pub objects_served: AtomicU64,
    /// Bytes of those bodies.
    pub object_bytes_served: AtomicU64,
    /// Requests refused for a missing, unknown or revoked token.
    pub refused: AtomicU64,
    /// When this stager is itself a follower: its source and its counters (shown under
    /// `following`).
    #[serde(skip)]
    pub following: Option<(String, Arc<crate::replicate_follow::FollowStats>)>,
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body(body.into() + "\n")
}

/// Checks the request's replication token; the refusal is the answer to send.
fn authorize(
    req: &HttpRequest,
    stager: &Stager,
    stats: &ServeStats,
) -> Result<String, Box<HttpResponse>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refuse = |why: &str| {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = ?req.peer_addr(), path = %req.path(), "replication refused: {why}");
        Box::new(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"ffs replicate\""))
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(format!("{why}\n")),
        )
    };
    let Some(token) = token else {
        return Err(refuse(
            "a replication token is required (Authorization: Bearer …)",
        ));
    };
    match TokenStore::replication(stager.state_dir()).check(token) {
        Ok(Some(t)) => Ok(t.name),
        Ok(None) => Err(refuse("unknown or revoked replication token")),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the replication tokens");
            Err(Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token store unreadable",
            )))
        }
    }
}

/// The listing of `stager`'s repository: every manifest and the keys that signed them.
pub fn listing(stager: &Stager) -> crate::error::Result<Listing> {
    let repo = stager.repository();
    let releases = repo.catalog(true)?;
    let mut keys = BTreeMap::new();
    for m in &releases {
        let Some(s) = &m.signature else { continue };
        if keys.contains_key(&s.key_id) {
            continue;
        }
        let p = crate::signing::repo_key_path(repo.root(), &s.key_id)?;
        match std::fs::read_to_string(&p) {
            Ok(t) => {
                keys.insert(s.key_id.clone(), t);
            }
            Err(e) => {
                tracing::warn!(key = %s.key_id, error = %e, "signing public key missing from the repository; followers will lack it");
            }
        }
    }
    Ok(Listing::new(releases, keys))
}

async fn releases(
    req: HttpRequest,
    stager: web::Data<Arc<Stager>>,
    stats: web::Data<ServeStats>,
) -> HttpResponse {
    let follower = match authorize(&req, &stager, &stats) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let st = stager.get_ref().clone();
    let l = match web::block(move || listing(&st)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "replication listing failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the releases",
            );
        }
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the releases",
            );
        }
    };
    let etag = format!("\"{}\"", l.digest);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == etag);
    if unchanged {
        stats.listings_unchanged.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    stats.listings_served.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%follower, releases = l.releases.len(), "replication listing served");
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .json(&l)
}

async fn object(
    req: HttpRequest,
    path: web::Path<String>,
    stager: web::Data<Arc<Stager>>,
    stats: web::Data<ServeStats>,
) -> HttpResponse {
    let follower = match authorize(&req, &stager, &stats) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let sha = path.into_inner();
    let Ok(p) = stager.repository().object_path(&sha) else {
        return text(StatusCode::BAD_REQUEST, "not a lower-case hex SHA-256");
    };
    let file = web::block(move || match std::fs::symlink_metadata(&p) {
        Ok(md) if md.is_file() => actix_files::NamedFile::open(&p).map(Some),
        _ => Ok(None),
    })
    .await;
    let file = match file {
        Ok(Ok(None)) => return text(StatusCode::NOT_FOUND, "no such object"),
        Ok(Ok(Some(f))) => f
            .use_etag(false)
            .use_last_modified(false)
            .disable_content_disposition(),
        Ok(Err(e)) => {
            tracing::warn!(object = %sha, error = %e, "cannot open object for replication");
            return text(StatusCode::NOT_FOUND, "no such object");
        }
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot open the object"),
    };
    let resp = file.into_response(&req);
    if matches!(resp.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        use actix_web::body::MessageBody as _;
        let len = match resp.body().size() {
            actix_web::body::BodySize::Sized(n) => n,
            _ => 0,
        };
        stats.objects_served.fetch_add(1, Ordering::Relaxed);
        stats.object_bytes_served.fetch_add(len, Ordering::Relaxed);
        tracing::info!(object = %sha, bytes = len, %follower, "replication: object served");
    }
    resp
}

async fn stats_page(
    req: HttpRequest,
    stager: web::Data<Arc<Stager>>,
    stats: web::Data<ServeStats>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &stager, &stats) {
        return *r;
    }
    let mut v = serde_json::to_value(&**stats).unwrap_or_default();
    if let (Some((source, f)), Some(obj)) = (&stats.following, v.as_object_mut()) {
        let mut fv = serde_json::to_value(&**f).unwrap_or_default();
        if let Some(o) = fv.as_object_mut() {
            o.insert("source".into(), source.clone().into());
        }
        obj.insert("following".into(), fv);
    }
    HttpResponse::Ok().json(v)
}

/// Registers the replication routes, sharing `stats` (make it once per server, so every
/// worker counts into it). Needs the `Arc<Stager>` app data the download routes register.
pub fn configure(stats: web::Data<ServeStats>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(stats)
            .route("/replicate/v1/releases", web::get().to(releases))
            .route("/replicate/v1/objects/{sha}", web::get().to(object))
            .route("/replicate/v1/stats", web::get().to(stats_page));
    }
}
