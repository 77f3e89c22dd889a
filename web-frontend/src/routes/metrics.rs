//! `GET /metrics`: Prometheus text exposition.

use actix_web::{HttpResponse, web};

use crate::state::AppState;

pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let body = state
        .metrics
        .render(state.backend.agent_up(), state.backend.stager_up());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
