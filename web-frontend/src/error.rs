//! Errors: [`StartError`] for start-up (files, TLS, binding) and [`AppError`], the one error
//! type handlers return; it implements `ResponseError`, so every failure is a page.

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use askama::Template as _;

use crate::pages::ErrorPage;

/// Why the frontend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A secret file that is missing, unreadable, or open to group/others.
    #[error(transparent)]
    SecretFile(#[from] commlink::secret_file::SecretFileError),
    /// A secret file whose content is not what it should be.
    #[error("{path}: {why}")]
    BadSecret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// A configured release-signing public key is unusable.
    #[error("{}: {why} (expected a minisign public key, as `ffs keys signing generate` writes)", path.display())]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS ([web] tls_cert, tls_key, tls_generate): {0}")]
    Tls(#[from] commlink::tls::TlsError),
    /// A link address in the config is not a usable URL.
    #[error("[web] {key} = {source}")]
    Address {
        /// The setting, e.g. `db_agent_addr`.
        key: &'static str,
        /// What is wrong with it.
        source: commlink::AddrError,
    },
    /// `[web] link_path` is not a usable path prefix.
    #[error("[web] link_path = {0}")]
    LinkPath(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Everything a handler can fail with. Each variant knows its status and page.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No (live) session: redirect to the login page.
    #[error("login required")]
    LoginRequired,
    /// Logged in, but not allowed (e.g. a customer on an admin page).
    #[error("forbidden")]
    Forbidden,
    /// A product, release, file or page that does not exist or is not yours.
    #[error("not found")]
    NotFound,
    /// A form that is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A state-changing form without a valid CSRF token.
    #[error("CSRF token missing or wrong")]
    Csrf,
    /// Too many failed logins from this address.
    #[error("too many login attempts; retry in {0} s")]
    Throttled(u64),
    /// A back-end link is down or too slow.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// The stager refused to stage damaged files (integrity check failed).
    #[error("damaged: {0}")]
    Damaged(String),
    /// A bug or an unexpected reply; details go to the log, not the page.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::LoginRequired => StatusCode::SEE_OTHER,
            AppError::Forbidden | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) | AppError::Damaged(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let AppError::LoginRequired = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish();
        }
        let (title, message) = match self {
            AppError::LoginRequired => unreachable_title(),
            AppError::Forbidden => (
                "Not allowed",
                "Your account may not open this page.".to_string(),
            ),
            AppError::NotFound => (
                "Not found",
                "There is nothing here, or it is not available to your account.".to_string(),
            ),
            AppError::BadRequest(m) => ("Bad request", m.clone()),
            AppError::Csrf => (
                "Form expired",
                "This form has expired or did not come from this site. Go back, reload the page and try again."
                    .to_string(),
            ),
            AppError::Throttled(s) => (
                "Too many attempts",
                format!("Too many failed sign-ins from your address. Try again in {s} seconds."),
            ),
            AppError::Unavailable(what) => (
                "Temporarily unavailable",
                format!(
                    "The {what} cannot be reached right now. This usually fixes itself within a minute; please try again shortly."
                ),
            ),
            AppError::Damaged(m) => {
                tracing::error!(error = %m, "the stager refused damaged files");
                (
                    "Release unavailable",
                    "This release cannot be downloaded right now: the download service found a problem with its files and refused to hand them out. The vendor has been alerted; please try again later or contact them."
                        .to_string(),
                )
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (
                    "Something went wrong",
                    "An unexpected error occurred. It has been logged.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            title,
            message: &message,
            code: status.as_u16(),
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", status.as_u16(), title));
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"));
        match self {
            AppError::Unavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, "5"));
            }
            AppError::Throttled(s) => {
                resp.insert_header((header::RETRY_AFTER, s.to_string()));
            }
            _ => {}
        }
        resp.body(body)
    }
}

fn unreachable_title() -> (&'static str, String) {
    ("Sign in", "Please sign in.".to_string())
}
