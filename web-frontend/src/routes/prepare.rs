//! `POST /prepare`: agent.authorize → stager.stage → agent.record_download, then the page with
//! the links and one-time credentials. The agent decides; editing the form's product or
//! version only gets a "not found".

use crate::backend::RefusalCode;
use crate::error::AppError;
use crate::format;
use crate::pages::{PreparedPage, render};
use crate::session::User;
use crate::state::AppState;
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{FormPairs, client_ip};

pub(crate) async fn prepare(
    req: HttpRequest,
    User(user, session): User,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let form = FormPairs::checked(&body, &session)?;
    let product = form.req("product")?.to_string();
    let version = form.req("version")?.to_string();
    let files = form.all("file");
    let subset = !files.is_empty();
    let ip = client_ip(&req, &state).to_string();

    state
        .backend
        .authorize(user.id, &product, &version)
        .await
        .map_err(|e| {
            if e.code() == Some(RefusalCode::Denied) {
                tracing::warn!(login = %user.login, %product, %version, "prepare refused by the agent");
            }
            AppError::from(e)
        })?;
    let area = state
        .backend
        .stage(&product, &version, files, &user.login)
        .await?;
    if let Err(e) = state
        .backend
        .record_download(user.id, &area, &product, &version, &ip)
        .await
    {
        // An unrecorded download must not stay usable: withdraw the area, and the record
        // too, in case it was only delayed (the agent then refuses it when it arrives).
        let _ = state.backend.unstage(&area.area_id).await;
        state.backend.withdraw_download(user.id, &area.area_id);
        return Err(e.into());
    }
    tracing::info!(login = %user.login, %product, %version, area = %area.area_id, "download prepared");
    let key = state.signing_keys.get(&area.signed_by);
    // The recipe fetches the key from this site (the host the customer is talking to).
    let key_url = key.map(|k| {
        let ci = req.connection_info();
        format!("https://{}{}", ci.host(), k.url())
    });
    let page = PreparedPage {
        nav: super::nav(Some(&user), &session, "products"),
        recipe: views::recipe(&product, &version, &area, key_url.as_deref(), subset),
        signature: views::signature(&area.signed_by, &state.signing_keys),
        key_text: key.map(|k| k.text.clone()),
        sums_opts: if subset { "--ignore-missing " } else { "" }.to_owned(),
        files: views::links(&area),
        product,
        version,
        ftp_url: area.ftp_url.clone(),
        ftp_user: area.ftp_user.clone(),
        ftp_password: area.ftp_password.clone(),
        https_base: area.https_base.clone(),
        expires: format::time(&area.expires_at),
    };
    render(StatusCode::OK, &page)
}
