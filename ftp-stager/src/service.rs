//! [`StagerService`]: answers `stager.*` commlink requests.

use std::sync::Arc;

use commlink::msg::stager as msg;
use commlink::{Message as _, RefusalCode, Tobj, error_reply};

use crate::error::StagerError;
use crate::staging::Stager;

/// The commlink responder for the stager.
#[derive(Debug, Clone)]
pub struct StagerService {
    stager: Arc<Stager>,
}

impl StagerService {
    /// A service over `stager`.
    pub fn new(stager: Arc<Stager>) -> Self {
        StagerService { stager }
    }

    /// Answers one request. The filesystem work runs on the blocking pool, and the reply is
    /// written from there ([`commlink::answer_blocking`]).
    pub async fn handle(&self, req: Tobj) -> Tobj {
        let stager = self.stager.clone();
        commlink::answer_blocking(move || dispatch(&stager, &req)).await
    }
}

impl commlink::Service for StagerService {
    fn call(&self, request: Tobj) -> impl std::future::Future<Output = Tobj> + Send {
        self.handle(request)
    }
}

fn fail(e: StagerError) -> Tobj {
    if e.code() == RefusalCode::Internal {
        tracing::error!(error = %e, "stager request failed");
        error_reply(
            RefusalCode::Internal,
            "internal error on the stager (see its log)",
        )
    } else {
        error_reply(e.code(), e.to_string())
    }
}

fn dispatch(s: &Stager, req: &Tobj) -> Tobj {
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::from_tobj(req) {
                Ok(r) => r,
                Err(e) => return error_reply(RefusalCode::BadRequest, e.to_string()),
            }
        };
    }
    match req.kind.as_str() {
        msg::CatalogRequest::TYPE => {
            let r = decode!(msg::CatalogRequest);
            match s.catalog_if(r.include_yanked, r.if_not.as_deref()) {
                Ok(c) => c.to_tobj(0),
                Err(e) => fail(e),
            }
        }
        msg::StageRequest::TYPE => {
            let r = decode!(msg::StageRequest);
            match s.stage(&r) {
                Ok(a) => a.to_tobj(0),
                Err(e) => fail(e),
            }
        }
        msg::UnstageRequest::TYPE => {
            let r = decode!(msg::UnstageRequest);
            match s.unstage(&r.area_id) {
                Ok(removed) => msg::Unstaged {
                    area_id: r.area_id,
                    removed,
                }
                .to_tobj(0),
                Err(e) => fail(e),
            }
        }
        msg::YankRequest::TYPE => {
            let r = decode!(msg::YankRequest);
            let repo = s.repository();
            let already = match repo.manifest(&r.product, &r.version) {
                Ok(m) => m.yanked,
                Err(e) => return fail(e),
            };
            match repo.yank(&r.product, &r.version) {
                Ok(_) => {
                    tracing::info!(product = %r.product, version = %r.version, already, "release yanked over the link");
                    msg::Yanked {
                        product: r.product,
                        version: r.version,
                        already,
                    }
                    .to_tobj(0)
                }
                Err(e) => fail(e),
            }
        }
        msg::AreasRequest::TYPE => {
            let _ = decode!(msg::AreasRequest);
            s.areas().to_tobj(0)
        }
        msg::StatsRequest::TYPE => {
            let _ = decode!(msg::StatsRequest);
            s.stats().to_tobj(0)
        }
        msg::DeliveriesRequest::TYPE => {
            let r = decode!(msg::DeliveriesRequest);
            s.deliveries(&r).to_tobj(0)
        }
        other => error_reply(
            RefusalCode::BadRequest,
            format!("unknown request type {other:?}"),
        ),
    }
}
