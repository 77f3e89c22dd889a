//! All routes, one handler per file, wired in [`configure`].

mod admin_areas;
mod admin_catalog;
mod admin_customer;
mod admin_customers;
mod admin_edit;
mod admin_history;
mod admin_index;
mod admin_revoke;
mod admin_yank;
mod downloads;
mod health;
mod index;
mod keys;
mod login;
mod logout;
mod metrics;
mod prepare;
mod products;
mod static_files;

use std::net::{IpAddr, Ipv4Addr};

use actix_session::Session;
use actix_web::{HttpRequest, web};

use crate::error::AppError;
use crate::pages::Nav;
use crate::session::{SessionUser, csrf_token};
use crate::state::AppState;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index::index))
        .route("/login", web::get().to(login::form))
        .route("/login", web::post().to(login::submit))
        .route("/logout", web::post().to(logout::logout))
        .route("/products", web::get().to(products::products))
        .route("/prepare", web::post().to(prepare::prepare))
        .route("/downloads", web::get().to(downloads::downloads))
        .route("/admin", web::get().to(admin_index::index))
        .route("/admin/catalog", web::get().to(admin_catalog::catalog))
        .route("/admin/areas", web::get().to(admin_areas::areas))
        .route("/admin/areas/revoke", web::post().to(admin_revoke::revoke))
        .route("/admin/catalog/yank", web::post().to(admin_yank::yank))
        .route("/admin/history", web::get().to(admin_history::history))
        .route(
            "/admin/customers",
            web::get().to(admin_customers::customers),
        )
        .route(
            "/admin/customers/{login}",
            web::get().to(admin_customer::customer),
        )
        .route(
            "/admin/customers/{login}/{action}",
            web::post().to(admin_edit::edit),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/keys/{name}", web::get().to(keys::key))
        .route("/static/style.css", web::get().to(static_files::style));
}

/// The navigation bar for a page.
pub(crate) fn nav(user: Option<&SessionUser>, session: &Session, active: &'static str) -> Nav {
    Nav {
        user: user.cloned(),
        csrf: csrf_token(session),
        active,
    }
}

/// The client's address (from `X-Forwarded-For` only when configured to trust it).
pub(crate) fn client_ip(req: &HttpRequest, state: &AppState) -> IpAddr {
    if state.cfg.trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A url-encoded form as (name, value) pairs, keeping repeated names (checkbox lists).
pub(crate) struct FormPairs(pub Vec<(String, String)>);

impl FormPairs {
    /// Parses a state-changing form (at most 64 KiB, by the app's payload config) and
    /// refuses it unless its `csrf` field matches the session's token. Every POST route
    /// reads its form through here, so none can forget the check.
    pub fn checked(body: &[u8], session: &Session) -> Result<Self, AppError> {
        let form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .map(FormPairs)
            .map_err(|_| AppError::BadRequest("The form could not be read.".into()))?;
        crate::session::check_csrf(session, form.get("csrf").unwrap_or(""))?;
        Ok(form)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, required and non-empty.
    pub fn req(&self, name: &str) -> Result<&str, AppError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(AppError::BadRequest(format!("The form lacks {name}."))),
        }
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A 303 redirect.
pub(crate) fn see_other(location: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location))
        .finish()
}
