//! `GET /admin`: link state and each stager's staging-latency panel (stager.stats).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::format;
use crate::pages::{AdminIndexPage, StagerCard, StatsView, render};
use crate::session::Admin;
use crate::state::AppState;

pub(crate) async fn index(
    Admin(user, session): Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let stagers = state
        .backend
        .stager_status()
        .await
        .into_iter()
        .map(|st| StagerCard {
            name: st.name,
            up: st.up,
            stats: st.stats.map(|s| StatsView {
                count: s.stage_count,
                p50_us: s.stage_p50_us,
                p99_us: s.stage_p99_us,
                max_us: s.stage_max_us,
                method: s.method,
                areas: s.areas,
                area_bytes: format::size(s.area_bytes),
                deliveries: s.deliveries,
                delivered: format::size(s.delivered_bytes),
            }),
        })
        .collect();
    render(
        StatusCode::OK,
        &AdminIndexPage {
            nav: super::nav(Some(&user), &session, "admin"),
            stagers,
            agent_up: state.backend.agent_up(),
            agents_up: state.backend.agents_up(),
        },
    )
}
