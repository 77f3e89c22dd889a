//! The two commlinks (agent and stager) behind one type, [`Backend`]: every call has a
//! deadline, is timed into the metrics, and fails with a [`BackendError`] that says which
//! peer and why. This is the only module that speaks the commlink message types.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commlink::msg::stager as sm;
use commlink::{Client, LinkError, Request};

use crate::error::AppError;
use crate::metrics::Metrics;

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The internal database agent.
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
        code: String,
        /// The peer's explanation.
        message: String,
    },
    /// The reply made no sense.
    #[error("{peer} sent a bad reply: {why}", peer = .0.name(), why = .1)]
    BadReply(Peer, String),
}

impl BackendError {
    /// The refusal code, if the peer refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            BackendError::Refused { code, .. } => Some(code),
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
            BackendError::Refused { code, message, .. } => match code.as_str() {
                "denied" => AppError::NotFound,
                "not-found" => AppError::NotFound,
                "bad-request" => AppError::BadRequest(message),
                "unavailable" => AppError::Unavailable("back-end database"),
                _ => AppError::Internal(format!("{code}: {message}")),
            },
            BackendError::BadReply(p, why) => {
                AppError::Internal(format!("bad reply from {}: {why}", p.name()))
            }
        }
    }
}

/// Both commlink clients plus the reply deadline.
#[derive(Clone)]
pub struct Backend {
    pub(crate) agent: Client,
    pub(crate) stager: Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Backend {
    /// Wraps two clients; `timeout` bounds every request (the 503 page must come quickly).
    pub fn new(agent: Client, stager: Client, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Backend {
            agent,
            stager,
            timeout,
            metrics,
        }
    }

    /// Whether the agent link is up.
    pub fn agent_up(&self) -> bool {
        self.agent.is_up()
    }

    /// Whether the stager link is up.
    pub fn stager_up(&self) -> bool {
        self.stager.is_up()
    }

    /// Sends a typed request to `peer` with the deadline.
    pub async fn request<R: Request>(
        &self,
        peer: Peer,
        req: &R,
    ) -> Result<R::Response, BackendError> {
        let client = match peer {
            Peer::Agent => &self.agent,
            Peer::Stager => &self.stager,
        };
        let start = Instant::now();
        let r = tokio::time::timeout(self.timeout, client.request(req)).await;
        let out = match r {
            Err(_) => Err(BackendError::Unreachable(
                peer,
                format!("no reply within {:?}", self.timeout),
            )),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(LinkError::Down(why))) => Err(BackendError::Unreachable(peer, why)),
            Ok(Err(LinkError::Timeout(d))) => {
                Err(BackendError::Unreachable(peer, format!("timeout {d:?}")))
            }
            Ok(Err(LinkError::Remote { code, message })) => Err(BackendError::Refused {
                peer,
                code,
                message,
            }),
            Ok(Err(LinkError::Decode(e))) => Err(BackendError::BadReply(peer, e.to_string())),
        };
        let ok = !matches!(
            out,
            Err(BackendError::Unreachable(..)) | Err(BackendError::BadReply(..))
        );
        self.metrics
            .backend(peer.name(), R::TYPE, start.elapsed(), ok);
        out
    }

    /// The stager's catalog.
    pub async fn catalog(
        &self,
        include_yanked: bool,
    ) -> Result<Vec<sm::ReleaseInfo>, BackendError> {
        let c = self
            .request(Peer::Stager, &sm::CatalogRequest { include_yanked })
            .await?;
        Ok(c.releases)
    }
}

/// A customer as the agent describes one (never with a password hash).
#[derive(Debug, Clone)]
pub struct Customer {
    /// Agent id.
    pub id: u64,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Admin role.
    pub admin: bool,
    /// Disabled.
    pub disabled: bool,
}

/// One entitlement.
#[derive(Debug, Clone)]
pub struct Entitlement {
    /// Product.
    pub product: String,
    /// Version constraint, e.g. `>=2.0, <3`.
    pub versions: String,
    /// Expiry, if any.
    pub until: Option<String>,
}

/// One download-history row.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// History id.
    pub id: u64,
    /// Customer login.
    pub login: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Files staged.
    pub files: Vec<String>,
    /// The stager's area id.
    pub area_id: String,
    /// When staged.
    pub at: String,
    /// Client address.
    pub client_addr: String,
    /// Bytes delivered so far.
    pub bytes_delivered: u64,
}

// Agent requests. PROVISIONAL: raw tobjs following the contract's flows until the typed
// messages in commlink::msg::agent land; then these bodies switch to them.
impl Backend {
    async fn call_raw(
        &self,
        peer: Peer,
        op: &'static str,
        fields: commlink::Fields,
    ) -> Result<commlink::Tobj, BackendError> {
        let client = match peer {
            Peer::Agent => &self.agent,
            Peer::Stager => &self.stager,
        };
        let start = Instant::now();
        let r = tokio::time::timeout(
            self.timeout,
            client.call(commlink::Tobj::with_fields(op, 0, fields)),
        )
        .await;
        let out = match r {
            Err(_) => Err(BackendError::Unreachable(
                peer,
                format!("no reply within {:?}", self.timeout),
            )),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(LinkError::Down(why))) => Err(BackendError::Unreachable(peer, why)),
            Ok(Err(LinkError::Timeout(d))) => {
                Err(BackendError::Unreachable(peer, format!("timeout {d:?}")))
            }
            Ok(Err(LinkError::Remote { code, message })) => Err(BackendError::Refused {
                peer,
                code,
                message,
            }),
            Ok(Err(LinkError::Decode(e))) => Err(BackendError::BadReply(peer, e.to_string())),
        };
        self.metrics
            .backend(peer.name(), op, start.elapsed(), out.is_ok());
        out
    }

    /// Authenticates a customer.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<Customer, BackendError> {
        let t = self
            .call_raw(
                Peer::Agent,
                "agent.login",
                commlink::Fields::new()
                    .text("login", login)
                    .text("password", password)
                    .text("client_addr", client_addr),
            )
            .await?;
        customer_from(&t.fields).map_err(|e| BackendError::BadReply(Peer::Agent, e.to_string()))
    }

    /// A customer's entitlements.
    pub async fn entitlements(&self, customer_id: u64) -> Result<Vec<Entitlement>, BackendError> {
        let t = self
            .call_raw(
                Peer::Agent,
                "agent.entitlements",
                commlink::Fields::new().num("customer_id", customer_id),
            )
            .await?;
        entitlements_from(&t.fields).map_err(|e| BackendError::BadReply(Peer::Agent, e.to_string()))
    }

    /// Asks whether the customer may download this release; `Refused{denied}` if not.
    pub async fn authorize(
        &self,
        customer_id: u64,
        product: &str,
        version: &str,
    ) -> Result<(), BackendError> {
        self.call_raw(
            Peer::Agent,
            "agent.authorize",
            commlink::Fields::new()
                .num("customer_id", customer_id)
                .text("product", product)
                .text("version", version),
        )
        .await?;
        Ok(())
    }

    /// Records a prepared download; returns the history id.
    pub async fn record_download(
        &self,
        customer_id: u64,
        area: &sm::StagedArea,
        product: &str,
        version: &str,
        client_addr: &str,
    ) -> Result<u64, BackendError> {
        let t = self
            .call_raw(
                Peer::Agent,
                "agent.record_download",
                commlink::Fields::new()
                    .num("customer_id", customer_id)
                    .text("product", product)
                    .text("version", version)
                    .text_list("files", "file", area.files.iter().map(|f| f.name.as_str()))
                    .text("area_id", &area.area_id)
                    .text("client_addr", client_addr),
            )
            .await?;
        Ok(t.fields.opt_parse("history_id").ok().flatten().unwrap_or(0))
    }

    /// Records a completed transfer reported by the stager.
    pub async fn record_delivery(&self, d: &sm::Delivery) -> Result<(), BackendError> {
        self.call_raw(
            Peer::Agent,
            "agent.record_delivery",
            commlink::Fields::new()
                .text("area_id", &d.area_id)
                .text("file", &d.file)
                .num("bytes", d.bytes)
                .text("protocol", &d.protocol),
        )
        .await?;
        Ok(())
    }

    /// All customers (admin).
    pub async fn customers(&self) -> Result<Vec<Customer>, BackendError> {
        let t = self
            .call_raw(Peer::Agent, "agent.customers", commlink::Fields::new())
            .await?;
        let items = t
            .fields
            .list_items("customers", "customer")
            .map_err(|e| BackendError::BadReply(Peer::Agent, e.to_string()))?;
        items
            .into_iter()
            .map(customer_from)
            .collect::<Result<_, _>>()
            .map_err(|e| BackendError::BadReply(Peer::Agent, e.to_string()))
    }

    /// One customer and their entitlements (admin).
    pub async fn customer(
        &self,
        login: &str,
    ) -> Result<(Customer, Vec<Entitlement>), BackendError> {
        let t = self
            .call_raw(
                Peer::Agent,
                "agent.customer",
                commlink::Fields::new().text("login", login),
            )
            .await?;
        let bad = |e: commlink::TobjError| BackendError::BadReply(Peer::Agent, e.to_string());
        let c = customer_from(t.fields.req_object("customer").map_err(bad)?).map_err(bad)?;
        let e = entitlements_from(&t.fields).map_err(bad)?;
        Ok((c, e))
    }

    /// Recent history, of one customer or all.
    pub async fn history(
        &self,
        customer_id: Option<u64>,
        limit: u64,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        let mut f = commlink::Fields::new().num("limit", limit);
        if let Some(id) = customer_id {
            f = f.num("customer_id", id);
        }
        let t = self.call_raw(Peer::Agent, "agent.history", f).await?;
        let bad = |e: commlink::TobjError| BackendError::BadReply(Peer::Agent, e.to_string());
        t.fields
            .list_items("entries", "entry")
            .map_err(bad)?
            .into_iter()
            .map(|e| {
                Ok(HistoryEntry {
                    id: e.req_parse("id")?,
                    login: e.opt_str("login")?.unwrap_or_default().to_string(),
                    product: e.req_text("product")?.to_string(),
                    version: e.req_text("version")?.to_string(),
                    files: e.text_items("files", "file")?,
                    area_id: e.opt_str("area_id")?.unwrap_or_default().to_string(),
                    at: e.opt_str("at")?.unwrap_or_default().to_string(),
                    client_addr: e.opt_str("client_addr")?.unwrap_or_default().to_string(),
                    bytes_delivered: e.opt_parse("bytes_delivered")?.unwrap_or(0),
                })
            })
            .collect::<Result<_, commlink::TobjError>>()
            .map_err(bad)
    }
}

fn customer_from(f: &commlink::Fields) -> Result<Customer, commlink::TobjError> {
    let f = match f.req_object("customer") {
        Ok(inner) => inner,
        Err(_) => f,
    };
    Ok(Customer {
        id: f.req_parse("id")?,
        login: f.req_text("login")?.to_string(),
        name: f.opt_str("name")?.unwrap_or_default().to_string(),
        email: f.opt_str("email")?.unwrap_or_default().to_string(),
        admin: f.opt_str("admin")? == Some("true"),
        disabled: f.opt_str("disabled")? == Some("true"),
    })
}

fn entitlements_from(f: &commlink::Fields) -> Result<Vec<Entitlement>, commlink::TobjError> {
    f.list_items("entitlements", "entitlement")?
        .into_iter()
        .map(|e| {
            Ok(Entitlement {
                product: e.req_text("product")?.to_string(),
                versions: e.opt_str("versions")?.unwrap_or_default().to_string(),
                until: e.opt_str("until")?.map(str::to_string),
            })
        })
        .collect()
}
