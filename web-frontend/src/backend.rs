//! The commlinks (db agents and stager) behind one type, [`Backend`]: every call has a
//! deadline, is timed into the metrics, and fails with a [`BackendError`] that says which
//! peer and why. Agent requests go to a live agent (several agents serve one database
//! active-active): when the chosen link is down (the request was never sent) the next agent
//! is tried within the same deadline; a request that was sent and then lost or timed out is
//! never resent (it may have been carried out) and is a 503. This is the only module that builds and sends commlink requests: the rest
//! of the crate calls a typed method per request, and the client a request goes to is picked
//! from its type ([`commlink::Request::Link`]), so it cannot reach the wrong peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// One stager the web frontend uses: its name, the key its deliveries are recorded under at
/// the agent, its link, and what was last learnt of it (catalog, live areas).
pub struct StagerPeer {
    /// Its name (`[web] stagers`; the address for the one `stager_addr`).
    pub name: String,
    /// Its delivery-log key at the agent (`""` for the one `stager_addr`).
    pub delivery_key: String,
    /// The link.
    pub client: Client,
    view: Mutex<Option<StagerView>>,
    /// The catalogs last received (without and with yanked releases) and their tags, sent
    /// back as `if_not` so an unchanged catalog is not sent again.
    held: Mutex<[Option<HeldCatalog>; 2]>,
}

/// A stager's catalog as last received, and its tag.
type HeldCatalog = (String, Arc<Vec<ReleaseInfo>>);

/// A stager's catalog and live-area count as last fetched.
#[derive(Clone)]
struct StagerView {
    at: Instant,
    releases: Arc<Vec<ReleaseInfo>>,
    areas: u64,
}

/// How long a stager's catalog and area count are reused when picking where to stage.
const VIEW_TTL: Duration = Duration::from_secs(3);

impl StagerPeer {
    /// A stager named `name` whose deliveries are recorded under `delivery_key`.
    pub fn new(name: impl Into<String>, delivery_key: impl Into<String>, client: Client) -> Self {
        StagerPeer {
            name: name.into(),
            delivery_key: delivery_key.into(),
            client,
            view: Mutex::new(None),
            held: Mutex::new([None, None]),
        }
    }

    /// The catalog held from this stager (with yanked releases or not) and its tag.
    fn held_catalog(&self, include_yanked: bool) -> Option<HeldCatalog> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())[usize::from(include_yanked)].clone()
    }

    /// Keeps a catalog received in full (and its tag, if the stager gave one).
    fn hold_catalog(&self, include_yanked: bool, c: sm::Catalog) -> Arc<Vec<ReleaseInfo>> {
        let releases = Arc::new(c.releases);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held[usize::from(include_yanked)] = c.tag.map(|t| (t, releases.clone()));
        releases
    }

    fn cached(&self) -> Option<StagerView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn store(&self, v: StagerView) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    fn holds(v: &StagerView, product: &str, version: &str) -> bool {
        v.releases
            .iter()
            .any(|r| r.product == product && r.version == version && !r.yanked)
    }
}

/// One stager's state for the admin pages.
pub struct StagerStatus {
    /// Its name.
    pub name: String,
    /// Whether its link is up.
    pub up: bool,
    /// Its statistics, when it answered.
    pub stats: Option<Stats>,
}

/// How long [`Backend::withdraw_download`] keeps trying while no agent answers.
pub const WITHDRAW_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(3600);

/// The commlink clients plus the reply deadline.
#[derive(Clone)]
pub struct Backend {
    /// One client per db agent (dialed), or one accepting client that holds every agent
    /// that dialed in.
    pub(crate) agents: Arc<[Client]>,
    /// Every stager, in configuration order.
    pub(crate) stagers: Arc<[StagerPeer]>,
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

    /// Several agent clients (one per `db_agent_addr`, at least one) and the one stager.
    pub fn with_agents(
        agents: Vec<Client>,
        stager: Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let one = StagerPeer::new("stager", "", stager);
        Backend::with_peers(agents, vec![one], timeout, metrics)
    }

    /// Several agents and several stagers (at least one of each).
    pub fn with_peers(
        agents: Vec<Client>,
        stagers: Vec<StagerPeer>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Backend {
            agents: agents.into(),
            stagers: stagers.into(),
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

    /// Whether a stager link is up (any of them).
    pub fn stager_up(&self) -> bool {
        self.stagers.iter().any(|s| s.client.is_up())
    }

    /// The stagers, in configuration order.
    pub fn stagers(&self) -> &[StagerPeer] {
        &self.stagers
    }

    /// Sends an agent request to a live agent (see the module comment).
    async fn request<R>(&self, req: &R) -> Result<R::Response, BackendError>
    where
        R: Request,
        R::Link: Route,
    {
        let clients = <R::Link as Route>::clients(self);
        self.send(<R::Link as Route>::PEER, &clients, req).await
    }

    /// Sends a stager request to `clients` in order, moving on only while a link is down.
    async fn stager_request<R>(
        &self,
        clients: &[&Client],
        req: &R,
    ) -> Result<R::Response, BackendError>
    where
        R: Request<Link = StagerLink>,
    {
        self.send(Peer::Stager, clients, req).await
    }

    /// Sends a stager request to one stager; one whose link is down answers at once
    /// (asking every stager must not wait out a dead one's connect timeout).
    async fn to_one<R>(&self, peer: &StagerPeer, req: &R) -> Result<R::Response, BackendError>
    where
        R: Request<Link = StagerLink>,
    {
        if !peer.client.is_up() {
            return Err(BackendError::Unreachable(
                Peer::Stager,
                format!("stager {}: link down", peer.name),
            ));
        }
        self.stager_request(&[&peer.client], req).await
    }

    /// Sends a request with the deadline: the clients it may go to are tried in turn
    /// while a link is down before sending; timed into the metrics.
    async fn send<R: Request>(
        &self,
        peer: Peer,
        clients: &[&Client],
        req: &R,
    ) -> Result<R::Response, BackendError> {
        let start = Instant::now();
        let out = self.send_failover(peer, clients, req, start).await;
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

    /// One stager's catalog, asked for now: sent in full only when it changed since the one
    /// held from that stager (its tag as `if_not`).
    async fn stager_catalog(
        &self,
        peer: &StagerPeer,
        include_yanked: bool,
    ) -> Result<Arc<Vec<ReleaseInfo>>, BackendError> {
        let held = peer.held_catalog(include_yanked);
        let ask = |if_not| sm::CatalogRequest {
            include_yanked,
            if_not,
        };
        let c = self
            .to_one(peer, &ask(held.as_ref().map(|(tag, _)| tag.clone())))
            .await?;
        if c.unchanged {
            if let Some((tag, releases)) = held
                && c.tag.as_ref() == Some(&tag)
            {
                return Ok(releases);
            }
            // "Unchanged" from a catalog not held here: ask for it in full.
            let c = self.to_one(peer, &ask(None)).await?;
            return Ok(peer.hold_catalog(include_yanked, c));
        }
        Ok(peer.hold_catalog(include_yanked, c))
    }

    /// The releases of every stager that answers, merged (one entry per product and
    /// version; a release yanked on any stager shows as yanked). Fails only when no stager
    /// answers.
    pub async fn catalog(
        &self,
        include_yanked: bool,
    ) -> Result<Arc<Vec<ReleaseInfo>>, BackendError> {
        let all = futures_util::future::join_all(
            self.stagers
                .iter()
                .map(|p| self.stager_catalog(p, include_yanked)),
        )
        .await;
        let mut answered = all.iter().filter_map(|r| r.as_ref().ok());
        if let (Some(only), None) = (answered.next(), answered.next()) {
            // One stager's catalog as it is (shared with what it holds).
            return Ok(only.clone());
        }
        let mut merged: Vec<ReleaseInfo> = Vec::new();
        let mut last_err = None;
        let mut any = false;
        for r in all {
            match r {
                Ok(list) => {
                    any = true;
                    for rel in list.iter().cloned() {
                        match merged
                            .iter_mut()
                            .find(|m| m.product == rel.product && m.version == rel.version)
                        {
                            Some(m) => {
                                m.yanked |= rel.yanked;
                                if m.quarantined.is_empty() {
                                    m.quarantined = rel.quarantined;
                                }
                            }
                            None => merged.push(rel),
                        }
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        match (any, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(Arc::new(merged)),
        }
    }

    /// A stager's catalog and live-area count, from the cache when fresh.
    async fn view(&self, peer: &StagerPeer, fresh: bool) -> Option<StagerView> {
        if !fresh && let Some(v) = peer.cached().filter(|v| v.at.elapsed() < VIEW_TTL) {
            return Some(v);
        }
        let (cat, stats) = tokio::join!(
            self.stager_catalog(peer, false),
            self.to_one(peer, &sm::StatsRequest {})
        );
        let v = StagerView {
            at: Instant::now(),
            releases: cat.ok()?,
            areas: stats.map(|s| s.areas).unwrap_or(u64::MAX),
        };
        peer.store(v.clone());
        Some(v)
    }

    /// The stagers a release may be staged on now: up, holding it (from a catalog at most
    /// [`VIEW_TTL`] old, fetched again when none seems to hold it), fewest live areas first.
    /// When none is found, `Err(name)` names a stager that is down or did not answer (it
    /// may hold the release), `Ok(empty)` means every stager answered without it.
    async fn placement(&self, product: &str, version: &str) -> Result<Vec<&StagerPeer>, String> {
        let mut unknown = None;
        for fresh in [false, true] {
            let up: Vec<&StagerPeer> = self.stagers.iter().filter(|p| p.client.is_up()).collect();
            let views =
                futures_util::future::join_all(up.iter().map(|p| self.view(p, fresh))).await;
            unknown = self
                .stagers
                .iter()
                .find(|p| !p.client.is_up())
                .or_else(|| {
                    up.iter()
                        .zip(&views)
                        .find(|(_, v)| v.is_none())
                        .map(|(p, _)| *p)
                })
                .map(|p| p.name.clone());
            let mut ok: Vec<(u64, &StagerPeer)> = up
                .into_iter()
                .zip(views)
                .filter_map(|(p, v)| {
                    v.filter(|v| StagerPeer::holds(v, product, version))
                        .map(|v| (v.areas, p))
                })
                .collect();
            if !ok.is_empty() {
                ok.sort_by_key(|(areas, _)| *areas);
                return Ok(ok.into_iter().map(|(_, p)| p).collect());
            }
        }
        match unknown {
            Some(name) => Err(name),
            None => Ok(Vec::new()),
        }
    }

    /// Stages a release (or some of its files; empty = all) into a new download area
    /// labelled `label`, with the stager's default lifetime, on a stager that is up and holds
    /// it (fewest live areas first; the next one if a link turns out to be down before the
    /// request is sent). The links in the area name that stager.
    pub async fn stage(
        &self,
        product: &str,
        version: &str,
        files: Vec<String>,
        label: &str,
    ) -> Result<StagedArea, BackendError> {
        let order = match self.placement(product, version).await {
            Ok(order) => order,
            // A stager that is down or did not answer may hold it: temporarily unavailable
            // (503), not "not found".
            Err(name) => {
                return Err(BackendError::Unreachable(
                    Peer::Stager,
                    format!(
                        "no stager that answered holds {product} {version}; stager {name} is down or did not answer"
                    ),
                ));
            }
        };
        if order.is_empty() {
            return Err(BackendError::Refused {
                peer: Peer::Stager,
                code: RefusalCode::NotFound,
                message: format!("no stager that is up holds {product} {version}"),
            });
        }
        let clients: Vec<&Client> = order.iter().map(|p| &p.client).collect();
        let area = self
            .stager_request(
                &clients,
                &sm::StageRequest {
                    product: product.to_string(),
                    version: version.to_string(),
                    files,
                    label: label.to_string(),
                    ttl_secs: None,
                },
            )
            .await?;
        // Count the new area at once, so a burst of prepares spreads too.
        if let Some(p) = order.iter().find(|p| p.client.is_up())
            && let Some(mut v) = p.cached()
        {
            v.areas = v.areas.saturating_add(1);
            p.store(v);
        }
        Ok(area)
    }

    /// Removes a download area: true if it was removed, false if it was already gone
    /// (expired or removed before, which a stager may also say as `not-found`). Areas live
    /// on the one stager that staged them, so every stager is asked and `not-found` from
    /// the others is the normal answer; when none removed it and one could not be asked,
    /// the area may be there: that stager's error is returned (to retry later).
    pub async fn unstage(&self, area_id: &str) -> Result<bool, BackendError> {
        let req = sm::UnstageRequest {
            area_id: area_id.to_string(),
        };
        let all =
            futures_util::future::join_all(self.stagers.iter().map(|p| self.to_one(p, &req))).await;
        let mut err = None;
        let mut removed = false;
        for r in all {
            match r {
                Ok(u) => removed |= u.removed,
                Err(e) if e.code() == Some(RefusalCode::NotFound) => {}
                Err(e) => err = Some(e),
            }
        }
        match (removed, err) {
            (false, Some(e)) => Err(e),
            _ => Ok(removed),
        }
    }

    /// Withdraws a release (admin) on every stager: it can no longer be staged. `Ok(true)`
    /// if some stager yanked it now, `Ok(false)` if all that hold it already had; an
    /// unknown release is `not-found`. A stager that is down is skipped (logged): with
    /// replication the yank reaches it from its source when it returns.
    pub async fn yank(&self, product: &str, version: &str) -> Result<bool, BackendError> {
        let req = sm::YankRequest {
            product: product.to_string(),
            version: version.to_string(),
        };
        let all =
            futures_util::future::join_all(self.stagers.iter().map(|p| self.to_one(p, &req))).await;
        // Placement must not pick a stager from a catalog taken before the yank.
        for p in self.stagers.iter() {
            *p.view.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let (mut now, mut answered, mut first_err) = (false, false, None);
        for (p, r) in self.stagers.iter().zip(all) {
            match r {
                Ok(y) => {
                    answered = true;
                    now |= !y.already;
                }
                Err(e) if e.code() == Some(RefusalCode::NotFound) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    tracing::warn!(stager = %p.name, error = %e, %product, %version, "yank not delivered");
                    first_err.get_or_insert(e);
                }
            }
        }
        match (answered, first_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(now),
        }
    }

    /// The live download areas of every stager that answers (admin), each with its
    /// stager's name. Fails only when none answers.
    pub async fn areas(&self) -> Result<Vec<(String, AreaSummary)>, BackendError> {
        let all = futures_util::future::join_all(
            self.stagers
                .iter()
                .map(|p| self.to_one(p, &sm::AreasRequest {})),
        )
        .await;
        let mut out = Vec::new();
        let (mut any, mut err) = (false, None);
        for (p, r) in self.stagers.iter().zip(all) {
            match r {
                Ok(list) => {
                    any = true;
                    out.extend(list.areas.into_iter().map(|a| (p.name.clone(), a)));
                }
                Err(e) => err = Some(e),
            }
        }
        match (any, err) {
            (false, Some(e)) => Err(e),
            _ => Ok(out),
        }
    }

    /// Every stager's link state and staging-latency and delivery counters (admin).
    pub async fn stager_status(&self) -> Vec<StagerStatus> {
        let all = futures_util::future::join_all(
            self.stagers
                .iter()
                .map(|p| self.to_one(p, &sm::StatsRequest {})),
        )
        .await;
        self.stagers
            .iter()
            .zip(all)
            .map(|(p, r)| StagerStatus {
                name: p.name.clone(),
                up: p.client.is_up(),
                stats: r.ok(),
            })
            .collect()
    }

    /// Up to `limit` completed transfers from stager `index`'s delivery log with
    /// `seq > after_seq`, oldest first.
    pub async fn deliveries(
        &self,
        index: usize,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Delivery>, BackendError> {
        let Some(p) = self.stagers.get(index) else {
            return Ok(Vec::new());
        };
        let r = self
            .stager_request(
                &[&p.client],
                &sm::DeliveriesRequest {
                    after_seq,
                    limit: Some(limit),
                },
            )
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
/// Implemented for the agent link only (a stager request names its stager).
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

    /// Withdraws a prepare whose [`Backend::record_download`] failed (the area is unstaged
    /// and the customer told it failed): the agent removes the history row if the record
    /// did arrive, and refuses it if it arrives later (held by a relay, a proxy or another
    /// agent's queue). Sent in the background until an agent answers, retrying with backoff
    /// for up to [`WITHDRAW_GIVE_UP`] while no agent is reachable.
    pub fn withdraw_download(&self, customer_id: i64, area_id: &str) {
        let backend = self.clone();
        let req = am::WithdrawDownload {
            customer_id,
            area_id: area_id.to_owned(),
        };
        actix_web::rt::spawn(async move {
            let started = std::time::Instant::now();
            let mut wait = std::time::Duration::from_millis(500);
            loop {
                match backend.request(&req).await {
                    Ok(r) => {
                        tracing::info!(area = %req.area_id, removed = r.removed, "prepare withdrawn at the agent");
                        return;
                    }
                    Err(e) if e.code().is_some_and(|c| c != RefusalCode::Unavailable) => {
                        tracing::warn!(area = %req.area_id, error = %e, "the agent refused a withdrawal");
                        return;
                    }
                    Err(e) if started.elapsed() >= WITHDRAW_GIVE_UP => {
                        tracing::warn!(area = %req.area_id, error = %e, "withdrawal not delivered; a late record of this area may leave a history row");
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        });
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
