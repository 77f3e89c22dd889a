//! The HTTP relay endpoint (seed 003; `commlink/PROTOCOL.md` §11) on the web's HTTPS
//! listener, under the carriers' prefix: `POST <prefix>/v1/relay/open`,
//! `…/<id>/send` and `…/<id>/recv`. A thin actix adaptor over [`commlink::RelayHub`], which
//! owns the attachments and their bounds and hands each one to the db-agent client's
//! acceptor; here only the HTTP mapping: bodies in, the receive channel as a streamed
//! response, refusals as status codes with a one-line text body (`404` for any id the hub
//! does not know, whoever asks).

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use commlink::{Acceptor, Incoming, ReceiveParams, RelayError, RelayHub, RelayLimits};

use crate::state::AppState;

/// Bodies of `send` requests up to this size are read (the hub's `max_body`); `body.rs`
/// keeps them for the handler.
pub const MAX_BODY: usize = (1 << 20) + 64 * 1024;

/// The hub shared by every worker, and the prefix it is served under.
#[derive(Clone)]
pub struct Relay {
    /// The attachments.
    pub hub: RelayHub,
    prefix: String,
}

impl Relay {
    /// A hub whose attachments go to `acceptor` (the db-agent client's), served under
    /// `prefix` (`/seg…` without a trailing slash, e.g. `/ffs-link`). Must be called inside
    /// a Tokio runtime.
    pub fn new(acceptor: Acceptor, limits: RelayLimits, prefix: &str) -> Relay {
        let limits = RelayLimits {
            max_body: limits.max_body.min(MAX_BODY),
            ..limits
        };
        let hub = RelayHub::new(
            limits,
            std::sync::Arc::new(move |stream, peer| {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if acceptor
                        .hand(Incoming::carried(stream, peer))
                        .await
                        .is_err()
                    {
                        tracing::warn!("relay attachment arrived after the agent client stopped");
                    }
                });
            }),
        );
        Relay {
            hub,
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The prefix it is served under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Whether `path` is a relay `send` under some prefix (its body may exceed the pages'
/// limit; `body.rs` asks).
pub fn is_send_path(path: &str) -> bool {
    path.ends_with("/send") && path.contains("/v1/relay/")
}

/// Registers the relay's endpoints under its prefix, when there is one (on the HTTPS app,
/// and on the plain-HTTP one for proxies that allow no `CONNECT`: the commlink inside is
/// sealed end to end either way).
pub fn configure(cfg: &mut web::ServiceConfig, relay: Option<&Relay>) {
    let Some(relay) = relay else { return };
    cfg.service(
        web::scope(&format!("{}/v1/relay", relay.prefix))
            .app_data(web::Data::new(relay.clone()))
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/open", web::post().to(open))
            .route("/{id}/send", web::post().to(send))
            .route("/{id}/recv", web::post().to(recv)),
    );
}

fn refused(e: RelayError) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(e.status())
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(format!("{e}\n"))
}

fn text(body: impl Into<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.into())
}

fn hub(req: &HttpRequest) -> Option<&Relay> {
    req.app_data::<web::Data<Relay>>().map(|d| d.get_ref())
}

async fn open(req: HttpRequest, state: Option<web::Data<AppState>>) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    let ip = match &state {
        Some(state) => crate::routes::client_ip(&req, state),
        None => req
            .peer_addr()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                a.ip()
            }),
    };
    match relay.hub.open(ip) {
        Ok(id) => text(format!("{id}\r\n")),
        Err(e) => {
            tracing::warn!(%ip, "relay attachment refused: {e}");
            refused(e)
        }
    }
}

async fn send(req: HttpRequest, path: web::Path<String>, body: Bytes) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    match relay.hub.send(&path, &body) {
        Ok(answer) => text(answer),
        Err(e) => refused(e),
    }
}

async fn recv(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let Some(relay) = hub(&req) else {
        return refused(RelayError::NotFound);
    };
    let params = match ReceiveParams::from_query(req.query_string()) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    match relay.hub.receive(&path, params) {
        Ok(channel) => HttpResponse::Ok()
            .content_type("text/plain")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            // Proxies that honour it (nginx) pass the channel on as it is written.
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(channel),
        Err(e) => refused(e),
    }
}
