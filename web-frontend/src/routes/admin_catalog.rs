//! `GET /admin/catalog`: the most recent publishes (when, who, size, signed by), then every
//! release including yanked and quarantined ones.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::backend::ReleaseInfo;
use crate::error::AppError;
use crate::format;
use crate::pages::{AdminCatalogPage, CatalogRow, render};
use crate::session::{self, Admin};
use crate::state::AppState;
use crate::version;

pub(crate) async fn catalog(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let mut releases = std::sync::Arc::unwrap_or_clone(state.backend.catalog(true).await?);
    // Recent publishes: newest first by publication time (RFC 3339 UTC sorts as text).
    let mut recent: Vec<&ReleaseInfo> = releases.iter().collect();
    recent.sort_by(|a, b| b.published_at.cmp(&a.published_at));
    let recent = recent.into_iter().take(RECENT).map(row).collect();
    releases.sort_by(|a, b| {
        a.product
            .cmp(&b.product)
            .then_with(|| version::compare(&b.version, &a.version))
    });
    let rows = releases.iter().map(row).collect();
    // Only a notice this session's own yank left (see `admin_yank`).
    let notice = session::take_flash(&session, "/admin/catalog");
    render(
        StatusCode::OK,
        &AdminCatalogPage {
            nav: super::nav(Some(&user), &session, "admin/catalog"),
            rows,
            recent,
            notice,
        },
    )
}

/// How many publishes the "Recent publishes" table shows.
const RECENT: usize = 10;

fn row(r: &ReleaseInfo) -> CatalogRow {
    CatalogRow {
        total: format::size(r.files.iter().map(|f| f.size).sum()),
        files: r.files.len(),
        published: format::time(&r.published_at),
        product: r.product.clone(),
        version: r.version.clone(),
        yanked: r.yanked,
        notes: r.notes.clone(),
        signed_by: r.signed_by.clone(),
        published_by: r.published_by.clone(),
        quarantined: r.quarantined.clone(),
    }
}
