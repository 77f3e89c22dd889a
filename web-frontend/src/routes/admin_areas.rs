//! `GET /admin/areas`: live download areas of every stager (who, what, expiry, which stager)
//! with a revoke button each (the revoke asks every stager; the one holding it removes it).

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
    areas.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at));
    let rows = areas
        .into_iter()
        .map(|(stager, a)| AreaRow {
            stager,
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
