//! The commlinks (db agents and stager) behind one type, [`Backend`]: every call has a
//! deadline, is timed into the metrics, and fails with a [`BackendError`] that says which
//! peer and why. Agent requests go to a live agent (several agents serve one database
//! active-active): when the chosen link is down (the request was never sent) the next agent
//! is tried within the same deadline; a request that was sent and then lost or timed out is
//! never resent (it may have been carried out) and is a 503. This is the only module that builds and sends commlink requests: the rest
//! of the crate calls a typed method per request, and the client a request goes to is picked
//! from its type ([`commlink::Request::Link`]), so it cannot reach the wrong peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use commlink::msg::agent as am;
use commlink::msg::agent::AgentLink;
use commlink::msg::stager as sm;
use commlink::msg::stager::StagerLink;
use commlink::{Client, Link, LinkError, Request};

use crate::error::AppError;
use crate::metrics::Metrics;

// The reply records the rest of the crate reads, under their wire names (none carries a
// password or a hash).
pub use commlink::RefusalCode;
pub use commlink::msg::agent::{
    CustomerInfo, EntitlementInfo, HistoryEntry, RevocationInfo, RevocationList,
};
pub use commlink::msg::stager::{AreaSummary, Delivery, ReleaseInfo, StagedArea, Stats};

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The db agent.
    Agent,
    /// The ftp-stager.
    Stager,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Agent => "agent",
            Peer::Stager => "stager",
        }
    }

    /// How pages name it.
    pub fn display(self) -> &'static str {
        match self {
            Peer::Agent => "account service",
            Peer::Stager => "download service",
        }
    }
}

/// A failed back-end request.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The link is down or the reply did not come in time.
    #[error("{peer} unreachable: {why}", peer = .0.name(), why = .1)]
    Unreachable(Peer, String),
    /// The peer refused (`denied`, `locked`, `not-found`, `bad-request`, ...).
    #[error("{name} refused ({code}): {message}", name = .peer.name())]
    Refused {
        /// Who refused.
        peer: Peer,
        /// The machine-readable code.
        code: RefusalCode,
        /// The peer's explanation.
        message: String,
    },
    /// The reply made no sense (including a refusal with a code this version does not
    /// know).
    #[error("{peer} sent a bad reply: {why}", peer = .0.name(), why = .1)]
    BadReply(Peer, String),
}

impl BackendError {
    /// The refusal code, if the peer refused.
    pub fn code(&self) -> Option<RefusalCode> {
        match self {
            BackendError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<BackendError> for AppError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unreachable(p, why) => {
                tracing::warn!(peer = p.name(), %why, "back end unreachable");
                AppError::Unavailable(p.display())
            }
            BackendError::Refused { code, message, .. } => match code {
                RefusalCode::Denied | RefusalCode::NotFound => AppError::NotFound,
                RefusalCode::BadRequest => AppError::BadRequest(message),
                RefusalCode::Unavailable => AppError::Unavailable("back-end database"),
                RefusalCode::Damaged => AppError::Damaged(message),
                _ => AppError::Internal(format!("{code}: {message}")),
            },
            BackendError::BadReply(p, why) => {
                AppError::Internal(format!("bad reply from {}: {why}", p.name()))
            }
        }
    }
}

/// The commlink clients plus the reply deadline.
#[derive(Clone)]
pub struct Backend {
    /// One client per db agent (dialed), or one accepting client that holds every agent
    /// that dialed in.
    pub(crate) agents: Arc<[Client]>,
    pub(crate) stager: Client,
    /// Where the next agent request starts, so load spreads over live agents.
    turn: Arc<AtomicUsize>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Backend {
    /// Wraps two clients; `timeout` bounds every request (the 503 page must come quickly).
    pub fn new(agent: Client, stager: Client, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Backend::with_agents(vec![agent], stager, timeout, metrics)
    }

    /// Several agent clients (one per `db_agent_addr`, at least one) and the stager.
    pub fn with_agents(
        agents: Vec<Client>,
        stager: Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Backend {
            agents: agents.into(),
            stager,
            turn: Arc::new(AtomicUsize::new(0)),
            timeout,
            metrics,
        }
    }

    /// Whether an agent link is up (any of them).
    pub fn agent_up(&self) -> bool {
        self.agents.iter().any(Client::is_up)
    }

    /// How many agent connections are up (each dialed agent, or each agent that dialed in).
    pub fn agents_up(&self) -> usize {
        self.agents.iter().map(Client::live_connections).sum()
    }

    /// Whether the stager link is up.
    pub fn stager_up(&self) -> bool {
        self.stager.is_up()
    }

    /// Sends a typed request, with the deadline, to the peer its link names: the clients
    /// it may go to are tried in turn (live ones first) while a link is down before sending.
    async fn request<R>(&self, req: &R) -> Result<R::Response, BackendError>
    where
        R: Request,
        R::Link: Route,
    {
        let peer = <R::Link as Route>::PEER;
        let clients = <R::Link as Route>::clients(self);
        let start = Instant::now();
        let out = self.send_failover(peer, &clients, req, start).await;
        let ok = !matches!(
            out,
            Err(BackendError::Unreachable(..)) | Err(BackendError::BadReply(..))
        );
        self.metrics
            .backend(peer.name(), R::TYPE, start.elapsed(), ok);
        out
    }

    async fn send_failover<R: Request>(
        &self,
        peer: Peer,
        clients: &[&Client],
        req: &R,
        start: Instant,
    ) -> Result<R::Response, BackendError> {
        let deadline = start + self.timeout;
        let mut down = Vec::new();
        for client in clients {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, client.request(req)).await {
                // Never sent: the next peer may take it.
                Ok(Err(LinkError::Down(why))) => down.push(why),
                Err(_) => {
                    return Err(BackendError::Unreachable(
                        peer,
                        format!("no reply within {:?}", self.timeout),
                    ));
                }
                Ok(r) => return map_reply(peer, r),
            }
        }
        Err(BackendError::Unreachable(
            peer,
            if down.is_empty() {
                format!("no reply within {:?}", self.timeout)
            } else {
                down.join("; ")
            },
        ))
    }

    /// The stager's catalog.
    pub async fn catalog(&self, include_yanked: bool) -> Result<Vec<ReleaseInfo>, BackendError> {
        let c = self.request(&sm::CatalogRequest { include_yanked }).await?;
        Ok(c.releases)
    }

    /// Stages a release (or some of its files; empty = all) into a new download area
    /// labelled `label`, with the stager's default lifetime.
    pub async fn stage(
        &self,
        product: &str,
        version: &str,
        files: Vec<String>,
        label: &str,
    ) -> Result<StagedArea, BackendError> {
        self.request(&sm::StageRequest {
            product: product.to_string(),
            version: version.to_string(),
            files,
            label: label.to_string(),
            ttl_secs: None,
        })
        .await
    }

    /// Removes a download area: true if it was removed, false if it was already gone
    /// (expired or removed before, which the stager may also say as `not-found`).
    pub async fn unstage(&self, area_id: &str) -> Result<bool, BackendError> {
        let r = self
            .request(&sm::UnstageRequest {
                area_id: area_id.to_string(),
            })
            .await;
        match r {
            Ok(u) => Ok(u.removed),
            Err(e) if e.code() == Some(RefusalCode::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Withdraws a release (admin): it can no longer be staged. `Ok(true)` if it was yanked
    /// now, `Ok(false)` if it already was; an unknown release is the stager's `not-found`.
    pub async fn yank(&self, product: &str, version: &str) -> Result<bool, BackendError> {
        let r = self
            .request(&sm::YankRequest {
                product: product.to_string(),
                version: version.to_string(),
            })
            .await?;
        Ok(!r.already)
    }

    /// The live download areas (admin).
    pub async fn areas(&self) -> Result<Vec<AreaSummary>, BackendError> {
        Ok(self.request(&sm::AreasRequest {}).await?.areas)
    }

    /// The stager's staging-latency and delivery counters (admin).
    pub async fn stats(&self) -> Result<Stats, BackendError> {
        self.request(&sm::StatsRequest {}).await
    }

    /// Up to `limit` completed transfers from the stager's delivery log with
    /// `seq > after_seq`, oldest first.
    pub async fn deliveries(
        &self,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Delivery>, BackendError> {
        let r = self
            .request(&sm::DeliveriesRequest {
                after_seq,
                limit: Some(limit),
            })
            .await?;
        Ok(r.deliveries)
    }
}

/// A reply (or link error) as a [`BackendError`].
fn map_reply<T>(peer: Peer, r: Result<T, LinkError>) -> Result<T, BackendError> {
    match r {
        Ok(v) => Ok(v),
        Err(LinkError::Down(why)) => Err(BackendError::Unreachable(peer, why)),
        // Sent, then lost or unanswered: it may have been carried out, so not resent.
        Err(LinkError::Lost(why)) => Err(BackendError::Unreachable(peer, why)),
        Err(LinkError::Timeout(d)) => {
            Err(BackendError::Unreachable(peer, format!("timeout {d:?}")))
        }
        Err(LinkError::Remote { code, message }) => match code.parse() {
            Ok(code) => Err(BackendError::Refused {
                peer,
                code,
                message,
            }),
            Err(unknown) => Err(BackendError::BadReply(
                peer,
                format!("{unknown}: {message}"),
            )),
        },
        Err(LinkError::Decode(e)) => Err(BackendError::BadReply(peer, e.to_string())),
    }
}

/// Where a link's requests go: the clients to try, in order, and the peer named in errors.
/// Implemented for the web frontend's two links only.
trait Route: Link {
    const PEER: Peer;
    fn clients(b: &Backend) -> Vec<&Client>;
}

impl Route for AgentLink {
    const PEER: Peer = Peer::Agent;
    /// Every agent, starting at the next in turn, live ones first.
    fn clients(b: &Backend) -> Vec<&Client> {
        let n = b.agents.len();
        let first = b.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<&Client> = (0..n).map(|i| &b.agents[(first + i) % n]).collect();
        order.sort_by_key(|c| !c.is_up());
        order
    }
}

impl Route for StagerLink {
    const PEER: Peer = Peer::Stager;
    fn clients(b: &Backend) -> Vec<&Client> {
        vec![&b.stager]
    }
}

impl Backend {
    /// Authenticates a customer (`Refused{denied|locked}` otherwise).
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<CustomerInfo, BackendError> {
        let r = self
            .request(&am::Login {
                login: login.to_string(),
                password: password.to_string(),
                client_addr: client_addr.to_string(),
            })
            .await?;
        Ok(r.customer)
    }

    /// A customer's live entitlements.
    pub async fn entitlements(
        &self,
        customer_id: i64,
    ) -> Result<Vec<EntitlementInfo>, BackendError> {
        let r = self
            .request(&am::Entitlements {
                customer_id,
                include_expired: false,
            })
            .await?;
        Ok(r.entitlements)
    }

    /// Asks whether the customer may download this release; `Refused{denied}` if not.
    pub async fn authorize(
        &self,
        customer_id: i64,
        product: &str,
        version: &str,
    ) -> Result<(), BackendError> {
        self.request(&am::Authorize {
            customer_id,
            product: product.to_string(),
            version: version.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Records a prepared download; returns the history id.
    pub async fn record_download(
        &self,
        customer_id: i64,
        area: &StagedArea,
        product: &str,
        version: &str,
        client_addr: &str,
    ) -> Result<i64, BackendError> {
        let r = self
            .request(&am::RecordDownload {
                customer_id,
                product: product.to_string(),
                version: version.to_string(),
                files: area.files.iter().map(|f| f.name.clone()).collect(),
                area_id: area.area_id.clone(),
                client_addr: client_addr.to_string(),
            })
            .await?;
        Ok(r.history_id)
    }

    /// Records a completed transfer reported by stager `stager` (its delivery key; `""` for
    /// the one unnamed stager), idempotent per (stager, seq).
    pub async fn record_delivery(&self, stager: &str, d: &Delivery) -> Result<(), BackendError> {
        self.request(&am::RecordDelivery {
            area_id: d.area_id.clone(),
            file: d.file.clone(),
            bytes: d.bytes,
            protocol: d.protocol.clone(),
            stager_seq: Some(d.seq),
            stager: (!stager.is_empty()).then(|| stager.to_owned()),
        })
        .await?;
        Ok(())
    }

    /// The highest delivery seq of stager `stager` the agent has recorded.
    pub async fn delivery_cursor(&self, stager: &str) -> Result<u64, BackendError> {
        let r = self
            .request(&am::DeliveryCursor {
                stager: (!stager.is_empty()).then(|| stager.to_owned()),
            })
            .await?;
        Ok(r.last_seq.unwrap_or(0))
    }

    /// The revocation feed after position `after`.
    pub async fn revocations(&self, after: i64) -> Result<RevocationList, BackendError> {
        self.request(&am::Revocations { after }).await
    }

    /// All customers (admin).
    pub async fn customers(&self) -> Result<Vec<CustomerInfo>, BackendError> {
        Ok(self.request(&am::Customers {}).await?.customers)
    }

    /// One customer and all their entitlements (admin).
    pub async fn customer(
        &self,
        login: &str,
    ) -> Result<(CustomerInfo, Vec<EntitlementInfo>), BackendError> {
        let r = self
            .request(&am::CustomerLookup {
                login: login.to_string(),
            })
            .await?;
        Ok((r.customer, r.entitlements))
    }

    /// Recent history (newest first), of one customer or all.
    pub async fn history(
        &self,
        customer_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        Ok(self
            .request(&am::History { customer_id, limit })
            .await?
            .entries)
    }
}

// Admin edits: the agent checks that `by` holds the admin role.
impl Backend {
    /// Grants (or replaces) an entitlement.
    pub async fn entitle(
        &self,
        by: i64,
        login: &str,
        product: &str,
        versions: &str,
        until: Option<String>,
    ) -> Result<(), BackendError> {
        self.request(&am::Entitle {
            by_customer_id: by,
            login: login.to_string(),
            product: product.to_string(),
            versions: versions.to_string(),
            until,
        })
        .await?;
        Ok(())
    }

    /// Removes an entitlement (with `revoke`, also has the customer's staged areas of the
    /// product revoked); returns how many entitlements were removed.
    pub async fn unentitle(
        &self,
        by: i64,
        login: &str,
        product: &str,
        revoke: bool,
    ) -> Result<u64, BackendError> {
        Ok(self
            .request(&am::Unentitle {
                by_customer_id: by,
                login: login.to_string(),
                product: product.to_string(),
                revoke,
            })
            .await?
            .removed)
    }

    /// Disables or enables a customer.
    pub async fn set_disabled(
        &self,
        by: i64,
        login: &str,
        disabled: bool,
    ) -> Result<(), BackendError> {
        self.request(&am::SetDisabled {
            by_customer_id: by,
            login: login.to_string(),
            disabled,
        })
        .await?;
        Ok(())
    }
}
