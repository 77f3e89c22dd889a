//! `GET /admin/customers`: every customer (agent.customers).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::pages::{AdminCustomersPage, CustomerRow, render};
use crate::session::Admin;
use crate::state::AppState;

pub(crate) async fn customers(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let rows = state
        .backend
        .customers()
        .await?
        .into_iter()
        .map(|c| CustomerRow {
            login: c.login,
            name: c.name,
            email: c.email,
            admin: c.admin,
            disabled: c.disabled,
        })
        .collect();
    render(
        StatusCode::OK,
        &AdminCustomersPage {
            nav: super::nav(Some(&user), &session, "admin/customers"),
            rows,
        },
    )
}
