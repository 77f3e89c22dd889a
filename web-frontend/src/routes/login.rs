//! `GET /login` shows the form; `POST /login` checks the CSRF token and the per-address
//! throttle, asks the agent, and on success starts a fresh session (rotation).

use std::time::Instant;

use crate::backend::{BackendError, RefusalCode};
use crate::error::AppError;
use crate::pages::{LoginPage, render};
use crate::session::{self, SessionUser};
use crate::state::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{FormPairs, client_ip, nav};

pub(crate) async fn form(
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if session::current(&session, &state).is_some() {
        return Ok(super::see_other("/products"));
    }
    page(&session, StatusCode::OK, None, String::new())
}

fn page(
    session: &Session,
    status: StatusCode,
    error: Option<String>,
    login: String,
) -> Result<HttpResponse, AppError> {
    render(
        status,
        &LoginPage {
            nav: nav(None, session, "login"),
            error,
            login,
        },
    )
}

pub(crate) async fn submit(
    req: HttpRequest,
    session: Session,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let form = FormPairs::checked(&body, &session)?;
    let ip = client_ip(&req, &state);
    if let Err(wait) = state.throttle.check(ip, Instant::now()) {
        tracing::warn!(%ip, "login throttled");
        return Err(AppError::Throttled(wait));
    }
    let login = form.get("login").unwrap_or("").trim().to_string();
    let password = form.get("password").unwrap_or("");
    if login.is_empty() || password.is_empty() {
        return page(
            &session,
            StatusCode::BAD_REQUEST,
            Some("Enter your login and password.".into()),
            login,
        );
    }
    // Taken before the agent checks the account: a disable committed after that check has a
    // later instant, so the revocation follower still ends this session.
    let asked_at = session::now_ms();
    match state.backend.login(&login, password, &ip.to_string()).await {
        // A success leaves the address's failure count alone (see `throttle`).
        Ok(c) => {
            session::login(
                &session,
                SessionUser {
                    id: c.id,
                    login: c.login,
                    name: if c.name.is_empty() {
                        login.clone()
                    } else {
                        c.name
                    },
                    admin: c.admin,
                    sid: String::new(),
                    created: 0,
                    created_ms: asked_at,
                    seen: 0,
                },
            )?;
            tracing::info!(%login, %ip, "signed in");
            Ok(super::see_other("/products"))
        }
        Err(BackendError::Refused {
            code: RefusalCode::Locked,
            ..
        }) => {
            state.throttle.fail(ip, Instant::now());
            tracing::info!(%login, %ip, "sign-in refused: locked");
            page(
                &session,
                StatusCode::TOO_MANY_REQUESTS,
                Some("This account is temporarily locked after too many failed sign-ins. Try again later.".into()),
                login,
            )
        }
        Err(BackendError::Refused {
            code: RefusalCode::Denied,
            ..
        }) => {
            state.throttle.fail(ip, Instant::now());
            tracing::info!(%login, %ip, "sign-in refused");
            page(
                &session,
                StatusCode::UNAUTHORIZED,
                Some("Wrong login or password.".into()),
                login,
            )
        }
        Err(e) => Err(e.into()),
    }
}
