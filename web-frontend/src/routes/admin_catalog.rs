//! `GET /admin/catalog`: every release including yanked ones.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::format;
use crate::pages::{AdminCatalogPage, CatalogRow, render};
use crate::session::Admin;
use crate::state::AppState;
use crate::version;

pub(crate) async fn catalog(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let mut releases = state.backend.catalog(true).await?;
    releases.sort_by(|a, b| {
        a.product
            .cmp(&b.product)
            .then_with(|| version::compare(&b.version, &a.version))
    });
    let rows = releases
        .into_iter()
        .map(|r| CatalogRow {
            total: format::size(r.files.iter().map(|f| f.size).sum()),
            files: r.files.len(),
            published: format::time(&r.published_at),
            product: r.product,
            version: r.version,
            yanked: r.yanked,
            notes: r.notes,
        })
        .collect();
    render(
        StatusCode::OK,
        &AdminCatalogPage {
            nav: super::nav(Some(&user), &session, "admin/catalog"),
            rows,
        },
    )
}
