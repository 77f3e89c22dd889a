//! `GET /products`: the customer's entitlements (agent) ∩ the catalog (stager), newest release
//! first. If the stager is down, the last catalog seen is shown and preparing is paused.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::backend::BackendError;
use crate::error::AppError;
use crate::format;
use crate::pages::{ProductsPage, render};
use crate::session::User;
use crate::state::AppState;
use crate::views;

pub(crate) async fn products(
    User(user, session): User,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (ents, catalog) = tokio::join!(
        state.backend.entitlements(user.id),
        state.backend.catalog(false)
    );
    let ents = ents?;
    let (catalog, stager_down) = match catalog {
        Ok(c) => {
            let mut last = state.last_catalog.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some((format::unix(crate::session::now()), c.clone()));
            (c, None)
        }
        Err(BackendError::Unreachable(..)) => {
            let last = state.last_catalog.lock().unwrap_or_else(|p| p.into_inner());
            match &*last {
                Some((when, c)) => (
                    c.clone(),
                    Some(format!("The download service is unreachable, so downloads cannot be prepared right now. The releases below are as of {when}.")),
                ),
                None => (
                    Default::default(),
                    Some("The download service is unreachable, so release details are unavailable and downloads cannot be prepared right now. Please try again shortly.".to_string()),
                ),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let products = views::products(&ents, &catalog, &state.signing_keys, chrono::Utc::now());
    render(
        StatusCode::OK,
        &ProductsPage {
            nav: super::nav(Some(&user), &session, "products"),
            products,
            stager_down,
            keys: views::keys_view(&state.signing_keys),
        },
    )
}
