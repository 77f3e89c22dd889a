//! `GET /keys/{KEYID}.pub` (and `/keys/ffs.pub`, the current key): the release-signing
//! public keys from `[web] signing_public_keys`, as minisign `.pub` files. Public: a key is
//! no secret, and customers fetch it from here rather than from the file server.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::state::AppState;

pub(crate) async fn key(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let keys = &state.signing_keys;
    let name = path.into_inner();
    let found = match name.strip_suffix(".pub") {
        Some("ffs") => keys.current().map(|k| (k, true)),
        Some(id) => keys
            .get(id)
            .map(|k| (k, keys.current().is_some_and(|c| c.key_id == k.key_id))),
        None => None,
    };
    match found {
        Some((k, current)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", k.file_name(current)),
            ))
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .body(k.text.clone()),
        None => HttpResponse::NotFound()
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("no such signing key\n"),
    }
}
