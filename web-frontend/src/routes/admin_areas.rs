//! `GET /admin/areas`: live download areas (who, what, expiry) with a revoke button each.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::format;
use crate::pages::{AdminAreasPage, AreaRow, render};
use crate::session::{self, Admin};
use crate::state::AppState;

pub(crate) async fn areas(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let mut areas = state.backend.areas().await?;
    areas.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let rows = areas
        .into_iter()
        .map(|a| AreaRow {
            who: a.label,
            created: format::time(&a.created_at),
            expires: format::time(&a.expires_at),
            size: format::size(a.bytes),
            files: a.file_count,
            area_id: a.area_id,
            product: a.product,
            version: a.version,
        })
        .collect();
    // Only a notice this session's own revoke left (see `admin_revoke`).
    let notice = session::take_flash(&session, "/admin/areas");
    render(
        StatusCode::OK,
        &AdminAreasPage {
            nav: super::nav(Some(&user), &session, "admin/areas"),
            rows,
            notice,
        },
    )
}
