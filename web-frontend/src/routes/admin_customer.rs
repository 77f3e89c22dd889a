//! `GET /admin/customers/{login}`: one customer, their entitlements and recent downloads.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::format;
use crate::pages::{AdminCustomerPage, CustomerRow, EntitlementRow, render};
use crate::session::{self, Admin};
use crate::state::AppState;
use crate::views;

pub(crate) async fn customer(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let login = path.into_inner();
    let login_path = format::url_segment(&login);
    // Only a notice this session's own edit left (see `admin_edit`).
    let notice = session::take_flash(&session, &format!("/admin/customers/{login_path}"));
    let (c, ents) = state.backend.customer(&login).await?;
    let history = state
        .backend
        .history(Some(c.id), 50)
        .await?
        .iter()
        .map(|h| views::history_row(h, false))
        .collect();
    render(
        StatusCode::OK,
        &AdminCustomerPage {
            nav: super::nav(Some(&user), &session, "admin/customers"),
            customer: CustomerRow {
                login: c.login,
                name: c.name,
                email: c.email,
                admin: c.admin,
                disabled: c.disabled,
            },
            entitlements: ents
                .into_iter()
                .map(|e| EntitlementRow {
                    product: e.product,
                    versions: if e.versions.is_empty() {
                        "any".into()
                    } else {
                        e.versions
                    },
                    until: e
                        .expires_at
                        .map(|u| format::time(&u))
                        .unwrap_or_else(|| "never".into()),
                })
                .collect(),
            history,
            notice,
            login_path,
        },
    )
}
