//! `GET /healthz` (the process answers) and `GET /readyz` (agent and stager links are up).

use actix_web::{HttpResponse, web};

use crate::state::AppState;

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let agent = state.backend.agent_up();
    let stager = state.backend.stager_up();
    let body = format!(
        "agent: {}\nstager: {}\n",
        if agent { "up" } else { "down" },
        if stager { "up" } else { "down" }
    );
    if agent && stager {
        HttpResponse::Ok().content_type("text/plain").body(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(body)
    }
}
