//! `GET /downloads`: the customer's own history (agent), each row with "Prepare again" when
//! the release is still published and entitled.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::pages::{DownloadsPage, render};
use crate::session::User;
use crate::state::AppState;
use crate::views;

pub(crate) async fn downloads(
    User(user, session): User,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (history, ents, catalog) = tokio::join!(
        state.backend.history(Some(user.id), 100),
        state.backend.entitlements(user.id),
        state.backend.catalog(false)
    );
    let history = history?;
    let ents = ents?;
    let catalog = catalog.unwrap_or_default();
    let now = chrono::Utc::now();
    let rows = history
        .iter()
        .map(|h| {
            let published = catalog
                .iter()
                .any(|r| r.product == h.product && r.version == h.version);
            let ok = published && views::entitled(&ents, &h.product, &h.version, now);
            views::history_row(h, ok)
        })
        .collect();
    render(
        StatusCode::OK,
        &DownloadsPage {
            nav: super::nav(Some(&user), &session, "downloads"),
            rows,
        },
    )
}
