//! [`AgentService`]: answers the web frontend's commlink requests.
//!
//! Each request type has one handler; a handler returns its typed reply or a [`Refusal`],
//! which becomes an `ffs.error` reply: `bad-request` (malformed or unknown message),
//! `denied`, `locked`, `not-found`, `unavailable` (the database cannot be reached),
//! `internal` (the database failed; details in our log only).

use std::sync::Arc;

use commlink::msg::agent as m;
use commlink::{Message, RefusalCode, Tobj, TobjError, error_reply};
use tracing::{info, warn};

use crate::admin::{self, AdminError};
use crate::db::{DbError, Pool};
use crate::lockout::Policy;
use crate::model::rfc3339;
use crate::passwords::Hasher;
use crate::store;
use crate::versions::VersionSpec;

/// The one message for unknown login and wrong password alike.
pub const LOGIN_DENIED: &str = "invalid login or password";

/// Why a request was refused: an error code and a message for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code sent to the peer.
    pub code: RefusalCode,
    /// What the peer is told.
    pub message: String,
}

impl Refusal {
    fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
    fn denied(message: impl Into<String>) -> Self {
        Refusal::new(RefusalCode::Denied, message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Refusal::new(RefusalCode::BadRequest, message)
    }
}

impl From<TobjError> for Refusal {
    fn from(e: TobjError) -> Self {
        Refusal::bad(e.to_string())
    }
}

impl From<DbError> for Refusal {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database error");
        match e {
            DbError::Connect { .. } => Refusal::new(
                RefusalCode::Unavailable,
                "the database is unreachable; try again shortly",
            ),
            _ => Refusal::new(
                RefusalCode::Internal,
                "the database failed; see the agent's log",
            ),
        }
    }
}

impl From<diesel::result::Error> for Refusal {
    fn from(e: diesel::result::Error) -> Self {
        DbError::Query(e).into()
    }
}

impl From<AdminError> for Refusal {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(_) => Refusal::new(RefusalCode::NotFound, e.to_string()),
            AdminError::Exists(_) | AdminError::Invalid(_) | AdminError::Password(_) => {
                Refusal::bad(e.to_string())
            }
            AdminError::Db(d) => d.into(),
        }
    }
}

type Outcome<T> = Result<T, Refusal>;

/// The agent's request handler (one per process, shared by all connections; a clone
/// shares the pool).
#[derive(Clone)]
pub struct AgentService {
    pool: Arc<Pool>,
    hasher: Arc<Hasher>,
    policy: Policy,
}

impl AgentService {
    /// A service over an open pool.
    pub fn new(pool: Arc<Pool>, hasher: Hasher, policy: Policy) -> Self {
        AgentService {
            pool,
            hasher: Arc::new(hasher),
            policy,
        }
    }

    /// The database pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Answers one request (what [`commlink::Service::call`] does, without the trait).
    pub async fn handle(&self, request: Tobj) -> Tobj {
        match self.dispatch(&request).await {
            Ok(reply) => reply,
            Err(r) => refused(&request.kind, r),
        }
    }

    async fn dispatch(&self, t: &Tobj) -> Outcome<Tobj> {
        fn reply<M: Message>(msg: M) -> Outcome<Tobj> {
            Ok(msg.to_tobj(0))
        }
        match t.kind.as_str() {
            m::Login::TYPE => reply(self.login(m::Login::from_tobj(t)?).await?),
            m::Entitlements::TYPE => {
                reply(self.entitlements(m::Entitlements::from_tobj(t)?).await?)
            }
            m::Authorize::TYPE => reply(self.authorize(m::Authorize::from_tobj(t)?).await?),
            m::RecordDownload::TYPE => reply(
                self.record_download(m::RecordDownload::from_tobj(t)?)
                    .await?,
            ),
            m::WithdrawDownload::TYPE => reply(
                self.withdraw_download(m::WithdrawDownload::from_tobj(t)?)
                    .await?,
            ),
            m::RecordDelivery::TYPE => reply(
                self.record_delivery(m::RecordDelivery::from_tobj(t)?)
                    .await?,
            ),
            m::DeliveryCursor::TYPE => {
                let req = m::DeliveryCursor::from_tobj(t)?;
                let stager = req.stager.unwrap_or_default();
                let last = self
                    .pool
                    .run(move |c| Ok(store::max_stager_seq(c, &stager)?))
                    .await?;
                reply(m::DeliveryCursorReply {
                    last_seq: last.and_then(|s| u64::try_from(s).ok()),
                })
            }
            m::History::TYPE => reply(self.history(m::History::from_tobj(t)?).await?),
            m::Customers::TYPE => {
                m::Customers::from_tobj(t)?;
                let list = self.pool.run(|c| Ok(store::list_customers(c)?)).await?;
                reply(m::CustomerList {
                    customers: list.iter().map(Into::into).collect(),
                })
            }
            m::CustomerLookup::TYPE => {
                let req = m::CustomerLookup::from_tobj(t)?;
                let (cu, ents) = self
                    .admin_op(move |c| admin::show_customer(c, &req.login))
                    .await?;
                reply(m::CustomerDetail {
                    customer: (&cu).into(),
                    entitlements: ents.iter().map(Into::into).collect(),
                })
            }
            m::Entitle::TYPE => reply(self.entitle(m::Entitle::from_tobj(t)?).await?),
            m::Unentitle::TYPE => reply(self.unentitle(m::Unentitle::from_tobj(t)?).await?),
            m::SetDisabled::TYPE => reply(self.set_disabled(m::SetDisabled::from_tobj(t)?).await?),
            m::Revocations::TYPE => reply(self.revocations(m::Revocations::from_tobj(t)?).await?),
            other => Err(Refusal::bad(format!(
                "unknown request type {other:?} for the db agent"
            ))),
        }
    }

    async fn revocations(&self, req: m::Revocations) -> Outcome<m::RevocationList> {
        const PAGE: i64 = 100;
        let since = store::now() - chrono::Duration::seconds(store::REVOCATION_HORIZON_SECS);
        let mut rows = self
            .pool
            .run(move |c| Ok(store::revocations_after(c, req.after, since, PAGE + 1)?))
            .await?;
        let more = rows.len() as i64 > PAGE;
        rows.truncate(PAGE as usize);
        Ok(m::RevocationList {
            revocations: rows
                .into_iter()
                .map(|r| m::RevocationInfo {
                    id: r.id,
                    customer_id: r.customer_id,
                    product: r.product,
                    // Milliseconds: the web compares it with its sessions' login instants.
                    at: r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    area_ids: r.area_ids,
                })
                .collect(),
            more,
        })
    }

    async fn admin_op<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::db::AnyConnection) -> Result<T, AdminError> + Send + 'static,
    ) -> Outcome<T> {
        // AdminError travels through the pool inside Ok so its kind survives.
        self.pool
            .run(move |c| Ok(f(c)))
            .await?
            .map_err(Refusal::from)
    }

    async fn login(&self, req: m::Login) -> Outcome<m::LoginOk> {
        let client = req.client_addr.clone();
        let Ok(login) = admin::normalize_login(&req.login) else {
            // Not a possible login: same work and answer as a wrong password.
            let h = Arc::clone(&self.hasher);
            let pw = req.password;
            let _ = tokio::task::spawn_blocking(move || h.verify_dummy(&pw)).await;
            info!(client = %client, "login failed (malformed login)");
            return Err(Refusal::denied(LOGIN_DENIED));
        };
        let now = store::now();
        let policy = self.policy;
        let l = login.clone();
        let (locked, row) = self
            .pool
            .run(move |c| {
                let state = store::failure_state(c, &l)?;
                let locked = policy.locked_until(state.as_ref(), now);
                let row = match locked {
                    Some(_) => None,
                    None => store::customer_row_by_login(c, &l)?,
                };
                Ok((locked, row))
            })
            .await?;
        if let Some(until) = locked {
            info!(login = %login, client = %client, "login refused: locked");
            return Err(Refusal::new(
                RefusalCode::Locked,
                format!(
                    "too many failed logins; try again after {}",
                    rfc3339(chrono::DateTime::from_naive_utc_and_offset(
                        until,
                        chrono::Utc
                    ))
                ),
            ));
        }
        let h = Arc::clone(&self.hasher);
        let pw = req.password;
        let (ok, row) = tokio::task::spawn_blocking(move || match row {
            Some(r) => (h.verify(&pw, &r.password_hash), Some(r)),
            None => {
                h.verify_dummy(&pw);
                (false, None)
            }
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?;
        match (ok, row) {
            (true, Some(row)) => {
                let l = login.clone();
                let customer = self
                    .pool
                    .run(move |c| {
                        store::clear_failures(c, &l)?;
                        Ok(store::view(c, &row)?)
                    })
                    .await?;
                if customer.disabled {
                    info!(login = %login, client = %client, "login refused: disabled");
                    return Err(Refusal::denied(
                        "this account is disabled; contact your administrator",
                    ));
                }
                info!(login = %login, client = %client, "login ok");
                Ok(m::LoginOk {
                    customer: (&customer).into(),
                })
            }
            _ => {
                let l = login.clone();
                let now_locked = self
                    .pool
                    .run(move |c| {
                        let next = store::count_failure(c, &l, now, |state| {
                            policy.after_failure(state, now)
                        })?;
                        let horizon = now - policy.window.max(policy.lock);
                        store::prune_failures(c, horizon)?;
                        Ok(next.locked_until.is_some())
                    })
                    .await?;
                if now_locked {
                    warn!(login = %login, client = %client, "login failed; login now locked");
                } else {
                    info!(login = %login, client = %client, "login failed");
                }
                Err(Refusal::denied(LOGIN_DENIED))
            }
        }
    }

    async fn entitlements(&self, req: m::Entitlements) -> Outcome<m::EntitlementList> {
        let id = req.customer_id;
        let ents = self
            .pool
            .run(move |c| {
                if store::customer_row(c, id)?.is_none() {
                    return Ok(None);
                }
                Ok(Some(store::entitlements_of(
                    c,
                    id,
                    req.include_expired,
                    store::now(),
                )?))
            })
            .await?
            .ok_or_else(|| {
                Refusal::new(RefusalCode::NotFound, format!("no customer with id {id}"))
            })?;
        Ok(m::EntitlementList {
            customer_id: id,
            entitlements: ents.iter().map(Into::into).collect(),
        })
    }

    /// Checks customer, entitlement, expiry and version constraint.
    async fn check(
        &self,
        customer_id: i64,
        product: String,
        version: String,
    ) -> Outcome<crate::model::Entitlement> {
        if product.len() > 200 || version.len() > 100 {
            return Err(Refusal::bad("product or version name too long"));
        }
        self.pool
            .run(move |c| check_on(c, customer_id, &product, &version))
            .await?
    }

    async fn authorize(&self, req: m::Authorize) -> Outcome<m::Authorized> {
        let e = self
            .check(req.customer_id, req.product.clone(), req.version.clone())
            .await?;
        Ok(m::Authorized {
            customer_id: req.customer_id,
            product: req.product,
            version: req.version,
            entitlement: (&e).into(),
        })
    }

    async fn record_download(&self, req: m::RecordDownload) -> Outcome<m::DownloadRecorded> {
        if req.area_id.is_empty() || req.area_id.len() > 200 {
            return Err(Refusal::bad("area_id must be 1 to 200 bytes"));
        }
        if req.files.len() > 100_000 || req.files.iter().any(|f| f.contains('\n') || f.len() > 4096)
        {
            return Err(Refusal::bad(
                "file names must be single lines of at most 4096 bytes",
            ));
        }
        if req.client_addr.len() > 200 {
            return Err(Refusal::bad("client_addr too long"));
        }
        if req.product.len() > 200 || req.version.len() > 100 {
            return Err(Refusal::bad("product or version name too long"));
        }
        // The check and the insert hold the customer's row lock, like a disable or an
        // `unentitle --revoke` does: either that change comes first and this is refused, or
        // it comes after and its revocation lists this area (see `store::lock_customer`).
        let id = self
            .pool
            .run_write(move |c| {
                store::customer_transaction(c, req.customer_id, |c| {
                    if let Err(refusal) = check_on(c, req.customer_id, &req.product, &req.version)?
                    {
                        return Ok(Err(refusal));
                    }
                    // The web gave this prepare up (and told the customer); this record
                    // arrived after its withdrawal.
                    if store::area_withdrawn(c, &req.area_id)? {
                        return Ok(Err(Refusal::new(
                            RefusalCode::NotFound,
                            "this download was withdrawn before its record arrived",
                        )));
                    }
                    Ok(Ok(store::insert_download(
                        c,
                        &store::NewDownload {
                            customer_id: req.customer_id,
                            product: &req.product,
                            version: &req.version,
                            files: &req.files,
                            area_id: &req.area_id,
                            client_addr: &req.client_addr,
                        },
                    )?))
                })
            })
            .await??;
        Ok(m::DownloadRecorded { history_id: id })
    }

    async fn withdraw_download(&self, req: m::WithdrawDownload) -> Outcome<m::DownloadWithdrawn> {
        if req.area_id.is_empty() || req.area_id.len() > 200 {
            return Err(Refusal::bad("area_id must be 1 to 200 bytes"));
        }
        // Under the customer's row lock, like the record: whichever comes first, no row
        // is left.
        let removed = self
            .pool
            .run_write(move |c| {
                store::customer_transaction(c, req.customer_id, |c| {
                    Ok::<_, DbError>(store::withdraw_download(c, req.customer_id, &req.area_id)?)
                })
            })
            .await?;
        Ok(m::DownloadWithdrawn {
            removed: removed as u64,
        })
    }

    async fn record_delivery(&self, req: m::RecordDelivery) -> Outcome<m::DeliveryRecorded> {
        let bytes = i64::try_from(req.bytes).map_err(|_| Refusal::bad("bytes out of range"))?;
        let seq = req
            .stager_seq
            .map(i64::try_from)
            .transpose()
            .map_err(|_| Refusal::bad("stager_seq out of range"))?;
        if req.area_id.is_empty() || req.area_id.len() > 200 || req.file.len() > 4096 {
            return Err(Refusal::bad("area_id or file name out of range"));
        }
        if req.stager.as_ref().is_some_and(|s| s.len() > 200) {
            return Err(Refusal::bad("stager name out of range"));
        }
        if req.protocol.is_empty() || req.protocol.len() > 16 {
            return Err(Refusal::bad("protocol must be e.g. ftp, ftps or https"));
        }
        let id = self
            .pool
            .run_write(move |c| {
                Ok(store::insert_delivery(
                    c,
                    &store::NewDelivery {
                        area_id: &req.area_id,
                        file: &req.file,
                        bytes,
                        protocol: &req.protocol,
                        stager: req.stager.as_deref().unwrap_or(""),
                        stager_seq: seq,
                    },
                )?)
            })
            .await?;
        Ok(m::DeliveryRecorded {
            delivery_id: id,
            duplicate: id.is_none(),
        })
    }

    async fn history(&self, req: m::History) -> Outcome<m::HistoryList> {
        let limit = i64::from(req.limit.clamp(1, 1000));
        let rows = self
            .pool
            .run(move |c| Ok(store::history(c, req.customer_id, limit)?))
            .await?;
        Ok(m::HistoryList {
            entries: rows.iter().map(Into::into).collect(),
        })
    }

    async fn require_admin(&self, id: i64) -> Outcome<()> {
        let ok = self
            .pool
            .run(move |c| {
                Ok(match store::customer_row(c, id)? {
                    Some(r) if !r.disabled => store::is_admin(c, id)?,
                    _ => false,
                })
            })
            .await?;
        if ok {
            Ok(())
        } else {
            Err(Refusal::denied("only an administrator may do this"))
        }
    }

    async fn entitle(&self, req: m::Entitle) -> Outcome<m::Entitled> {
        self.require_admin(req.by_customer_id).await?;
        let by = req.by_customer_id;
        let login = req.login.clone();
        let e = self
            .admin_op(move |c| {
                admin::entitle(
                    c,
                    &req.login,
                    &req.product,
                    &req.versions,
                    req.until.as_deref(),
                )
            })
            .await?;
        info!(by, login = %login, product = %e.product, versions = %e.versions, "entitlement set");
        Ok(m::Entitled {
            login: admin::normalize_login(&login).unwrap_or(login),
            entitlement: (&e).into(),
        })
    }

    async fn unentitle(&self, req: m::Unentitle) -> Outcome<m::Unentitled> {
        self.require_admin(req.by_customer_id).await?;
        let n = self
            .admin_op(move |c| admin::unentitle(c, &req.login, &req.product, req.revoke))
            .await?;
        Ok(m::Unentitled { removed: n as u64 })
    }

    async fn set_disabled(&self, req: m::SetDisabled) -> Outcome<m::CustomerUpdated> {
        self.require_admin(req.by_customer_id).await?;
        let by = req.by_customer_id;
        let cu = self
            .admin_op(move |c| {
                let target = admin::show_customer(c, &req.login)?.0;
                if target.id == by && req.disabled {
                    return Err(AdminError::Invalid(
                        "an administrator cannot disable themself".into(),
                    ));
                }
                admin::set_disabled(c, &req.login, req.disabled)
            })
            .await?;
        info!(by, login = %cu.login, disabled = cu.disabled, "customer state set");
        Ok(m::CustomerUpdated {
            customer: (&cu).into(),
        })
    }
}

/// The `ffs.error` reply for a refused request of type `kind`.
fn refused(kind: &str, r: Refusal) -> Tobj {
    if r.code == RefusalCode::BadRequest {
        warn!(kind = %kind, reason = %r.message, "refused malformed request");
    }
    error_reply(r.code, r.message)
}

impl commlink::Service for AgentService {
    /// A request waits for a place in the pool as a task, then is answered whole on a
    /// blocking thread: its queries run there under that place without a further hand-off
    /// ([`Pool::inline`]), and the reply is written from there
    /// ([`commlink::answer_blocking`]). The database is synchronous, and each hand-off
    /// between threads costs a wake-up. A login is the exception: its password hash takes
    /// tens of milliseconds on the blocking pool, and must not hold a place meanwhile.
    async fn call(&self, request: Tobj) -> Tobj {
        if request.kind == m::Login::TYPE {
            return self.handle(request).await;
        }
        let turn = match self.pool.turn().await {
            Ok(turn) => turn,
            Err(e) => return refused(&request.kind, e.into()),
        };
        let svc = self.clone();
        commlink::answer_blocking(move || {
            let rt = tokio::runtime::Handle::current();
            Pool::inline(turn, || rt.block_on(svc.handle(request)))
        })
        .await
    }
}

/// Whether `customer_id` may have `product` `version` now: the entitlement, or the refusal.
fn check_on(
    c: &mut crate::db::AnyConnection,
    customer_id: i64,
    product: &str,
    version: &str,
) -> Result<Result<crate::model::Entitlement, Refusal>, DbError> {
    let now = store::now();
    let Some(row) = store::customer_row(c, customer_id)? else {
        return Ok(Err(Refusal::new(
            RefusalCode::NotFound,
            format!("no customer with id {customer_id}"),
        )));
    };
    if row.disabled {
        return Ok(Err(Refusal::denied("this account is disabled")));
    }
    let Some(e) = store::entitlement_for(c, customer_id, product, now)? else {
        return Ok(Err(Refusal::denied(format!("not entitled to {product}"))));
    };
    if e.expired {
        let when = e.expires_at.map(rfc3339).unwrap_or_default();
        return Ok(Err(Refusal::denied(format!(
            "the entitlement to {product} ended at {when}"
        ))));
    }
    let Ok(spec) = e.versions.parse::<VersionSpec>() else {
        return Ok(Err(Refusal::denied(format!(
            "the entitlement to {product} has an unreadable version constraint"
        ))));
    };
    if !spec.matches_str(version) {
        return Ok(Err(Refusal::denied(format!(
            "version {version} of {product} is outside the entitlement ({spec})"
        ))));
    }
    Ok(Ok(e))
}
