//! `GET /admin/history`: the most recent downloads of every customer.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::pages::{AdminHistoryPage, render};
use crate::session::Admin;
use crate::state::AppState;
use crate::views;

pub(crate) async fn history(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let rows = state
        .backend
        .history(None, 200)
        .await?
        .iter()
        .map(|h| views::history_row(h, false))
        .collect();
    render(
        StatusCode::OK,
        &AdminHistoryPage {
            nav: super::nav(Some(&user), &session, "admin/history"),
            rows,
        },
    )
}
