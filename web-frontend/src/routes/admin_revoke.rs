//! `POST /admin/areas/revoke`: stager.unstage for one area (CSRF-checked), then back to the list.

use actix_web::{HttpResponse, web};
use commlink::RefusalCode;
use commlink::msg::stager::UnstageRequest;

use crate::backend::Peer;
use crate::error::AppError;
use crate::session::{self, Admin};
use crate::state::AppState;

use super::FormPairs;

pub(crate) async fn revoke(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let form = FormPairs::checked(&body, &session)?;
    let area_id = form.req("area_id")?.to_string();
    let r = state
        .backend
        .request(
            Peer::Stager,
            &UnstageRequest {
                area_id: area_id.clone(),
            },
        )
        .await;
    let removed = match r {
        Ok(u) => u.removed,
        Err(e) if e.code() == Some(RefusalCode::NotFound) => false,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(admin = %user.login, area = %area_id, removed, "area revoked");
    let notice = if removed {
        "The download area was revoked; its links and credentials no longer work."
    } else {
        "That download area was already gone."
    };
    session::set_flash(&session, "/admin/areas", notice);
    Ok(super::see_other("/admin/areas"))
}
