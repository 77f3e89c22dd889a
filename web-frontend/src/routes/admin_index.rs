//! `GET /admin`: link state and the staging-latency panel (stager.stats).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::format;
use crate::pages::{AdminIndexPage, StatsView, render};
use crate::session::Admin;
use crate::state::AppState;

pub(crate) async fn index(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let stats = state.backend.stats().await.ok().map(|s| StatsView {
        count: s.stage_count,
        p50_us: s.stage_p50_us,
        p99_us: s.stage_p99_us,
        max_us: s.stage_max_us,
        method: s.method,
        areas: s.areas,
        area_bytes: format::size(s.area_bytes),
        deliveries: s.deliveries,
        delivered: format::size(s.delivered_bytes),
    });
    render(
        StatusCode::OK,
        &AdminIndexPage {
            nav: super::nav(Some(&user), &session, "admin"),
            stats,
            agent_up: state.backend.agent_up(),
            stager_up: state.backend.stager_up(),
        },
    )
}
