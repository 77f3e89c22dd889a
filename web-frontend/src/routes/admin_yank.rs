//! `POST /admin/catalog/yank`: stager.yank for one release (CSRF-checked), then back to the
//! catalog with a notice.

use crate::error::AppError;
use crate::session::{self, Admin};
use crate::state::AppState;
use actix_web::{HttpResponse, web};

use super::FormPairs;

pub(crate) async fn yank(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let form = FormPairs::checked(&body, &session)?;
    let product = form.req("product")?.to_string();
    let version = form.req("version")?.to_string();
    let now = state.backend.yank(&product, &version).await?;
    tracing::info!(admin = %user.login, %product, %version, now, "release yanked");
    let notice = if now {
        format!("{product} {version} was yanked; customers can no longer prepare it.")
    } else {
        format!("{product} {version} was already yanked.")
    };
    session::set_flash(&session, "/admin/catalog", &notice);
    Ok(super::see_other("/admin/catalog"))
}
