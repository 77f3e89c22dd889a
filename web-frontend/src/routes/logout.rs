//! `POST /logout`: ends the session (and revokes its id, so a copied cookie dies too).

use actix_session::Session;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::session;
use crate::state::AppState;

use super::FormPairs;

pub(crate) async fn logout(
    session: Session,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    FormPairs::checked(&body, &session)?;
    session::logout(&session, &state);
    Ok(super::see_other("/login"))
}
