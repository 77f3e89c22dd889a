//! `POST /admin/areas/revoke`: stager.unstage for one area (CSRF-checked), then back to the list.

use crate::error::AppError;
use crate::session::{self, Admin};
use crate::state::AppState;
use actix_web::{HttpResponse, web};

use super::FormPairs;

pub(crate) async fn revoke(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let form = FormPairs::checked(&body, &session)?;
    let area_id = form.req("area_id")?.to_string();
    let removed = state.backend.unstage(&area_id).await?;
    tracing::info!(admin = %user.login, area = %area_id, removed, "area revoked");
    let notice = if removed {
        "The download area was revoked; its links and credentials no longer work."
    } else {
        "That download area was already gone."
    };
    session::set_flash(&session, "/admin/areas", notice);
    Ok(super::see_other("/admin/areas"))
}
