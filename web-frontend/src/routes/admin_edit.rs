//! `POST /admin/customers/{login}/{entitle|unentitle|disable|enable}`: admin edits, each
//! CSRF-checked and carried out by the agent (which checks the admin role again).

use crate::backend::{BackendError, RefusalCode};
use crate::error::AppError;
use crate::format;
use crate::session::{self, Admin};
use crate::state::AppState;
use actix_web::{HttpResponse, web};

use super::FormPairs;

pub(crate) async fn edit(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let (login, action) = path.into_inner();
    let form = FormPairs::checked(&body, &session)?;
    let b = &state.backend;
    let result = match action.as_str() {
        "entitle" => {
            let product = form.req("product")?.trim().to_string();
            let versions = match form.get("versions").map(str::trim) {
                Some(v) if !v.is_empty() => v.to_string(),
                _ => "*".to_string(),
            };
            let until = form
                .get("until")
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string);
            b.entitle(user.id, &login, &product, &versions, until)
                .await
                .map(|()| format!("entitled to {product} {versions}"))
        }
        "unentitle" => {
            let product = form.req("product")?.to_string();
            // The checkbox "also revoke staged areas": present (any value) when ticked.
            let revoke = form.get("revoke").is_some();
            b.unentitle(user.id, &login, &product, revoke)
                .await
                .map(|n| {
                    let mut m = format!("{n} entitlement to {product} removed");
                    if revoke {
                        m.push_str("; their staged areas of it are revoked within seconds");
                    }
                    m
                })
        }
        "disable" => b.set_disabled(user.id, &login, true).await.map(|()| {
            "disabled; their sessions end and their download areas are revoked within seconds"
                .to_string()
        }),
        "enable" => b
            .set_disabled(user.id, &login, false)
            .await
            .map(|()| "enabled".to_string()),
        _ => return Err(AppError::NotFound),
    };
    let msg = match result {
        Ok(m) => {
            tracing::info!(admin = %user.login, customer = %login, %action, "admin edit");
            m
        }
        // The agent's explanation is meant for the admin (bad constraint, self-disable, ...).
        Err(BackendError::Refused {
            code: RefusalCode::BadRequest | RefusalCode::Denied,
            message,
            ..
        }) => {
            format!("not changed: {message}")
        }
        Err(e) => return Err(e.into()),
    };
    let page = format!("/admin/customers/{}", format::url_segment(&login));
    session::set_flash(&session, &page, &msg);
    Ok(super::see_other(&page))
}
