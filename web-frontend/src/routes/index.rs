//! `GET /`: to the products page when signed in, else to the sign-in page.

use actix_session::Session;
use actix_web::{HttpResponse, web};

use crate::session;
use crate::state::AppState;

pub(crate) async fn index(session: Session, state: web::Data<AppState>) -> HttpResponse {
    if session::current(&session, &state).is_some() {
        super::see_other("/products")
    } else {
        super::see_other("/login")
    }
}
