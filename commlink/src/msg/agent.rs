//! Messages between the web frontend (requester) and the db agent (responder).
//!
//! Every request has one reply type; refusals come back as `ffs.error` with a code
//! (`denied`, `locked`, `not-found`, `bad-request`, `unavailable`, `internal`). Conventions:
//! - ids are the agent's database ids (`i64`);
//! - instants are RFC 3339 UTC text with second precision, e.g. `2026-11-23T10:45:00Z`;
//! - no reply ever carries a password or a password hash, and [`Login`]'s `Debug` hides the
//!   password so it cannot end up in a log by accident.
//!
//! | request | reply | purpose |
//! |---|---|---|
//! | [`Login`] `agent.login` | [`LoginOk`] | check login + password (generic `denied`, or `locked`) |
//! | [`Entitlements`] `agent.entitlements` | [`EntitlementList`] | a customer's products |
//! | [`Authorize`] `agent.authorize` | [`Authorized`] | may this customer get product/version? |
//! | [`RecordDownload`] `agent.record-download` | [`DownloadRecorded`] | append to history after staging |
//! | [`WithdrawDownload`] `agent.withdraw-download` | [`DownloadWithdrawn`] | a prepare given up: its history row goes, a late record of it is refused |
//! | [`RecordDelivery`] `agent.record-delivery` | [`DeliveryRecorded`] | a completed transfer (from the stager's log) |
//! | [`DeliveryCursor`] `agent.delivery-cursor` | [`DeliveryCursorReply`] | highest stager seq recorded so far |
//! | [`History`] `agent.history` | [`HistoryList`] | download history, newest first |
//! | [`Customers`] `agent.customers` | [`CustomerList`] | all customers (admin page) |
//! | [`CustomerLookup`] `agent.customer` | [`CustomerDetail`] | one customer and their entitlements |
//! | [`Entitle`] `agent.entitle` | [`Entitled`] | admin: grant/replace an entitlement |
//! | [`Unentitle`] `agent.unentitle` | [`Unentitled`] | admin: remove a product's entitlement |
//! | [`SetDisabled`] `agent.set-disabled` | [`CustomerUpdated`] | admin: disable/enable a customer |
//! | [`Revocations`] `agent.revocations` | [`RevocationList`] | feed: sessions to end, staged areas to revoke |
//!
//! The admin edits carry `by_customer_id`, the logged-in admin; the agent checks that this
//! customer holds the admin role, so a customer session cannot edit even by forging a form.

use crate::tobj::{Fields, Link, Message, Request, TobjError};

type Result<T> = std::result::Result<T, TobjError>;

/// The web frontend ⇄ db agent link: every request in this module travels on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLink {}

impl Link for AgentLink {}

/// A customer as the agent shows it (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInfo {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Holds the admin role.
    pub admin: bool,
    /// Disabled customers cannot log in.
    pub disabled: bool,
    /// When the customer was created (RFC 3339 UTC).
    pub created_at: String,
}

impl CustomerInfo {
    /// The fields of a `<customer>` object.
    pub fn to_fields(&self) -> Fields {
        Fields::new()
            .num("id", self.id)
            .text("login", &self.login)
            .text("name", &self.name)
            .text("email", &self.email)
            .flag("admin", self.admin)
            .flag("disabled", self.disabled)
            .text("created_at", &self.created_at)
    }

    /// Reads a `<customer>` object.
    pub fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CustomerInfo {
            id: f.req_parse("id")?,
            login: f.req_text("login")?.to_owned(),
            name: f.req_text("name")?.to_owned(),
            email: f.req_text("email")?.to_owned(),
            admin: f.req_flag("admin")?,
            disabled: f.req_flag("disabled")?,
            created_at: f.req_text("created_at")?.to_owned(),
        })
    }
}

/// One entitlement: a product and the versions of it a customer may download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementInfo {
    /// Product name as in the stager's catalog.
    pub product: String,
    /// Version constraint, e.g. `>=2.0, <3`, `^2`, `2.1` (prefix) or `*`.
    pub versions: String,
    /// When it ends (RFC 3339 UTC), if ever.
    pub expires_at: Option<String>,
    /// Whether it has already ended.
    pub expired: bool,
}

impl EntitlementInfo {
    /// The fields of an `<entitlement>` object.
    pub fn to_fields(&self) -> Fields {
        Fields::new()
            .text("product", &self.product)
            .text("versions", &self.versions)
            .opt_text("expires_at", self.expires_at.as_deref())
            .flag("expired", self.expired)
    }

    /// Reads an `<entitlement>` object.
    pub fn from_fields(f: &Fields) -> Result<Self> {
        Ok(EntitlementInfo {
            product: f.req_text("product")?.to_owned(),
            versions: f.req_text("versions")?.to_owned(),
            expires_at: f.opt_str("expires_at")?.map(str::to_owned),
            expired: f.req_flag("expired")?,
        })
    }
}

/// One download-history row, with what has been delivered from its area so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// History id.
    pub id: i64,
    /// Who.
    pub customer_id: i64,
    /// Their login.
    pub login: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Files staged.
    pub files: Vec<String>,
    /// The stager's area id.
    pub area_id: String,
    /// When staged (RFC 3339 UTC).
    pub staged_at: String,
    /// The customer's address as the web frontend saw it.
    pub client_addr: String,
    /// Completed transfers recorded for the area.
    pub deliveries: u64,
    /// Bytes delivered from the area, summed over those transfers.
    pub delivered_bytes: u64,
}

impl HistoryEntry {
    /// The fields of an `<entry>` object.
    pub fn to_fields(&self) -> Fields {
        Fields::new()
            .num("id", self.id)
            .num("customer_id", self.customer_id)
            .text("login", &self.login)
            .text("product", &self.product)
            .text("version", &self.version)
            .text_list("files", "file", self.files.iter().map(String::as_str))
            .text("area_id", &self.area_id)
            .text("staged_at", &self.staged_at)
            .text("client_addr", &self.client_addr)
            .num("deliveries", self.deliveries)
            .num("delivered_bytes", self.delivered_bytes)
    }

    /// Reads an `<entry>` object.
    pub fn from_fields(f: &Fields) -> Result<Self> {
        Ok(HistoryEntry {
            id: f.req_parse("id")?,
            customer_id: f.req_parse("customer_id")?,
            login: f.req_text("login")?.to_owned(),
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            files: f.text_items("files", "file")?,
            area_id: f.req_text("area_id")?.to_owned(),
            staged_at: f.req_text("staged_at")?.to_owned(),
            client_addr: f.req_text("client_addr")?.to_owned(),
            deliveries: f.req_parse("deliveries")?,
            delivered_bytes: f.req_parse("delivered_bytes")?,
        })
    }
}

/// `agent.login`: check a login and password. Refusals: `denied` (one generic message for
/// unknown login and wrong password), `locked` (too many failures; try later).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// Login name.
    pub login: String,
    /// Password, as typed.
    pub password: String,
    /// The customer's address as the web frontend saw it (for the log and lockout notes).
    pub client_addr: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("login", &self.login)
            .field("password", &"<hidden>")
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

impl Message for Login {
    const TYPE: &'static str = "agent.login";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("login", &self.login)
            .text("password", &self.password)
            .text("client_addr", &self.client_addr)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Login {
            login: f.req_text("login")?.to_owned(),
            password: f.req_text("password")?.to_owned(),
            client_addr: f.opt_str("client_addr")?.unwrap_or("").to_owned(),
        })
    }
}

impl Request for Login {
    type Response = LoginOk;
    type Link = AgentLink;
}

/// Reply to [`Login`]: who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOk {
    /// The customer.
    pub customer: CustomerInfo,
}

impl Message for LoginOk {
    const TYPE: &'static str = "agent.login.ok";
    fn to_fields(&self) -> Fields {
        Fields::new().object("customer", self.customer.to_fields())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(LoginOk {
            customer: CustomerInfo::from_fields(f.req_object("customer")?)?,
        })
    }
}

/// `agent.entitlements`: a customer's entitlements (only current ones unless
/// `include_expired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlements {
    /// The customer.
    pub customer_id: i64,
    /// Also list entitlements that have ended.
    pub include_expired: bool,
}

impl Message for Entitlements {
    const TYPE: &'static str = "agent.entitlements";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("customer_id", self.customer_id)
            .flag("include_expired", self.include_expired)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Entitlements {
            customer_id: f.req_parse("customer_id")?,
            include_expired: match f.opt_str("include_expired")? {
                None => false,
                Some(_) => f.req_flag("include_expired")?,
            },
        })
    }
}

impl Request for Entitlements {
    type Response = EntitlementList;
    type Link = AgentLink;
}

/// Reply to [`Entitlements`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementList {
    /// The customer.
    pub customer_id: i64,
    /// Their entitlements, by product name.
    pub entitlements: Vec<EntitlementInfo>,
}

impl Message for EntitlementList {
    const TYPE: &'static str = "agent.entitlements.list";
    fn to_fields(&self) -> Fields {
        Fields::new().num("customer_id", self.customer_id).list(
            "entitlements",
            "entitlement",
            self.entitlements.iter().map(EntitlementInfo::to_fields),
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(EntitlementList {
            customer_id: f.req_parse("customer_id")?,
            entitlements: f
                .list_items("entitlements", "entitlement")?
                .into_iter()
                .map(EntitlementInfo::from_fields)
                .collect::<Result<_>>()?,
        })
    }
}

/// `agent.authorize`: may this customer download this product version now? Refusal:
/// `denied` with the reason (no entitlement, expired, version outside the constraint,
/// customer disabled); `not-found` for an unknown customer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    /// The customer.
    pub customer_id: i64,
    /// Product name.
    pub product: String,
    /// Version wanted.
    pub version: String,
}

impl Message for Authorize {
    const TYPE: &'static str = "agent.authorize";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("customer_id", self.customer_id)
            .text("product", &self.product)
            .text("version", &self.version)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Authorize {
            customer_id: f.req_parse("customer_id")?,
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
        })
    }
}

impl Request for Authorize {
    type Response = Authorized;
    type Link = AgentLink;
}

/// Reply to [`Authorize`]: yes, under this entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The customer.
    pub customer_id: i64,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// The entitlement that allows it.
    pub entitlement: EntitlementInfo,
}

impl Message for Authorized {
    const TYPE: &'static str = "agent.authorize.ok";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("customer_id", self.customer_id)
            .text("product", &self.product)
            .text("version", &self.version)
            .object("entitlement", self.entitlement.to_fields())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Authorized {
            customer_id: f.req_parse("customer_id")?,
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            entitlement: EntitlementInfo::from_fields(f.req_object("entitlement")?)?,
        })
    }
}

/// `agent.record-download`: append a staged download to the history. The agent checks the
/// authorization again and refuses (`denied`) what [`Authorize`] would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDownload {
    /// Who.
    pub customer_id: i64,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// File names staged.
    pub files: Vec<String>,
    /// The stager's area id.
    pub area_id: String,
    /// The customer's address.
    pub client_addr: String,
}

impl Message for RecordDownload {
    const TYPE: &'static str = "agent.record-download";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("customer_id", self.customer_id)
            .text("product", &self.product)
            .text("version", &self.version)
            .text_list("files", "file", self.files.iter().map(String::as_str))
            .text("area_id", &self.area_id)
            .text("client_addr", &self.client_addr)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(RecordDownload {
            customer_id: f.req_parse("customer_id")?,
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            files: f.text_items("files", "file")?,
            area_id: f.req_text("area_id")?.to_owned(),
            client_addr: f.opt_str("client_addr")?.unwrap_or("").to_owned(),
        })
    }
}

impl Request for RecordDownload {
    type Response = DownloadRecorded;
    type Link = AgentLink;
}

/// Reply to [`RecordDownload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRecorded {
    /// The new history row's id.
    pub history_id: i64,
}

impl Message for DownloadRecorded {
    const TYPE: &'static str = "agent.record-download.ok";
    fn to_fields(&self) -> Fields {
        Fields::new().num("history_id", self.history_id)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DownloadRecorded {
            history_id: f.req_parse("history_id")?,
        })
    }
}

/// `agent.withdraw-download`: the web frontend gave up a prepare whose
/// [`RecordDownload`] went unanswered (and withdrew its area), so the customer was told it
/// failed. The agent removes the area's history row if the record arrived, and remembers
/// the area, so a record of it that arrives later (held by a relay or a proxy, or sent to
/// another agent) is refused (`not-found`) instead of applied. Idempotent: the web resends
/// it until answered. Both run under the customer's row lock, so either order ends with no
/// row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawDownload {
    /// Who the area was staged for.
    pub customer_id: i64,
    /// The stager's area id.
    pub area_id: String,
}

impl Message for WithdrawDownload {
    const TYPE: &'static str = "agent.withdraw-download";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("customer_id", self.customer_id)
            .text("area_id", &self.area_id)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(WithdrawDownload {
            customer_id: f.req_parse("customer_id")?,
            area_id: f.req_text("area_id")?.to_owned(),
        })
    }
}

impl Request for WithdrawDownload {
    type Response = DownloadWithdrawn;
    type Link = AgentLink;
}

/// Reply to [`WithdrawDownload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadWithdrawn {
    /// History rows removed (0: the record had not arrived, or this is a resend).
    pub removed: u64,
}

impl Message for DownloadWithdrawn {
    const TYPE: &'static str = "agent.withdraw-download.ok";
    fn to_fields(&self) -> Fields {
        Fields::new().num("removed", self.removed)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DownloadWithdrawn {
            removed: f.req_parse("removed")?,
        })
    }
}

/// `agent.record-delivery`: one completed transfer from a download area. When `stager_seq`
/// is given, a second report with the same (`stager`, seq) is acknowledged but not stored
/// again, however many web frontends forward it and db agents record it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDelivery {
    /// The stager's area id.
    pub area_id: String,
    /// File name within the area.
    pub file: String,
    /// Bytes sent.
    pub bytes: u64,
    /// `ftp`, `ftps` or `https`.
    pub protocol: String,
    /// The stager's delivery-log sequence number.
    pub stager_seq: Option<u64>,
    /// Which stager's log the seq belongs to (its name in `[web] stagers`); absent from
    /// older peers = the one unnamed stager (`""`).
    pub stager: Option<String>,
}

impl Message for RecordDelivery {
    const TYPE: &'static str = "agent.record-delivery";
    fn to_fields(&self) -> Fields {
        let f = Fields::new()
            .text("area_id", &self.area_id)
            .text("file", &self.file)
            .num("bytes", self.bytes)
            .text("protocol", &self.protocol);
        let f = match self.stager_seq {
            Some(s) => f.num("stager_seq", s),
            None => f,
        };
        f.opt_text("stager", self.stager.as_deref())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(RecordDelivery {
            area_id: f.req_text("area_id")?.to_owned(),
            file: f.req_text("file")?.to_owned(),
            bytes: f.req_parse("bytes")?,
            protocol: f.req_text("protocol")?.to_owned(),
            stager_seq: f.opt_parse("stager_seq")?,
            stager: f.opt_str("stager")?.map(str::to_owned),
        })
    }
}

impl Request for RecordDelivery {
    type Response = DeliveryRecorded;
    type Link = AgentLink;
}

/// Reply to [`RecordDelivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecorded {
    /// The new row's id; `None` when it was a duplicate.
    pub delivery_id: Option<i64>,
    /// The seq had been recorded before; nothing was stored.
    pub duplicate: bool,
}

impl Message for DeliveryRecorded {
    const TYPE: &'static str = "agent.record-delivery.ok";
    fn to_fields(&self) -> Fields {
        let f = Fields::new().flag("duplicate", self.duplicate);
        match self.delivery_id {
            Some(id) => f.num("delivery_id", id),
            None => f,
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DeliveryRecorded {
            delivery_id: f.opt_parse("delivery_id")?,
            duplicate: f.req_flag("duplicate")?,
        })
    }
}

/// `agent.delivery-cursor`: the highest seq recorded from one stager's log, so the web
/// frontend knows where to resume polling that stager's `stager.deliveries` after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCursor {
    /// The stager (its name in `[web] stagers`); absent from older peers = `""`.
    pub stager: Option<String>,
}

impl Message for DeliveryCursor {
    const TYPE: &'static str = "agent.delivery-cursor";
    fn to_fields(&self) -> Fields {
        Fields::new().opt_text("stager", self.stager.as_deref())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DeliveryCursor {
            stager: f.opt_str("stager")?.map(str::to_owned),
        })
    }
}

impl Request for DeliveryCursor {
    type Response = DeliveryCursorReply;
    type Link = AgentLink;
}

/// Reply to [`DeliveryCursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCursorReply {
    /// Highest `stager_seq` stored; `None` when none was.
    pub last_seq: Option<u64>,
}

impl Message for DeliveryCursorReply {
    const TYPE: &'static str = "agent.delivery-cursor.ok";
    fn to_fields(&self) -> Fields {
        match self.last_seq {
            Some(s) => Fields::new().num("last_seq", s),
            None => Fields::new(),
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DeliveryCursorReply {
            last_seq: f.opt_parse("last_seq")?,
        })
    }
}

/// `agent.history`: download history, newest first; one customer's or everyone's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Only this customer's rows, if given.
    pub customer_id: Option<i64>,
    /// At most this many rows (the agent caps it at 1000).
    pub limit: u32,
}

impl Message for History {
    const TYPE: &'static str = "agent.history";
    fn to_fields(&self) -> Fields {
        let f = Fields::new().num("limit", self.limit);
        match self.customer_id {
            Some(id) => f.num("customer_id", id),
            None => f,
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(History {
            customer_id: f.opt_parse("customer_id")?,
            limit: f.opt_parse("limit")?.unwrap_or(100),
        })
    }
}

impl Request for History {
    type Response = HistoryList;
    type Link = AgentLink;
}

/// Reply to [`History`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryList {
    /// Rows, newest first.
    pub entries: Vec<HistoryEntry>,
}

impl Message for HistoryList {
    const TYPE: &'static str = "agent.history.list";
    fn to_fields(&self) -> Fields {
        Fields::new().list(
            "entries",
            "entry",
            self.entries.iter().map(HistoryEntry::to_fields),
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(HistoryList {
            entries: f
                .list_items("entries", "entry")?
                .into_iter()
                .map(HistoryEntry::from_fields)
                .collect::<Result<_>>()?,
        })
    }
}

/// `agent.customers`: every customer, by login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customers {}

impl Message for Customers {
    const TYPE: &'static str = "agent.customers";
    fn to_fields(&self) -> Fields {
        Fields::new()
    }
    fn from_fields(_f: &Fields) -> Result<Self> {
        Ok(Customers {})
    }
}

impl Request for Customers {
    type Response = CustomerList;
    type Link = AgentLink;
}

/// Reply to [`Customers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerList {
    /// The customers, by login.
    pub customers: Vec<CustomerInfo>,
}

impl Message for CustomerList {
    const TYPE: &'static str = "agent.customers.list";
    fn to_fields(&self) -> Fields {
        Fields::new().list(
            "customers",
            "customer",
            self.customers.iter().map(CustomerInfo::to_fields),
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CustomerList {
            customers: f
                .list_items("customers", "customer")?
                .into_iter()
                .map(CustomerInfo::from_fields)
                .collect::<Result<_>>()?,
        })
    }
}

/// `agent.customer`: one customer by login, with all entitlements (expired included).
/// Refusal: `not-found`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLookup {
    /// Login name.
    pub login: String,
}

impl Message for CustomerLookup {
    const TYPE: &'static str = "agent.customer";
    fn to_fields(&self) -> Fields {
        Fields::new().text("login", &self.login)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CustomerLookup {
            login: f.req_text("login")?.to_owned(),
        })
    }
}

impl Request for CustomerLookup {
    type Response = CustomerDetail;
    type Link = AgentLink;
}

/// Reply to [`CustomerLookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDetail {
    /// The customer.
    pub customer: CustomerInfo,
    /// All their entitlements, expired included.
    pub entitlements: Vec<EntitlementInfo>,
}

impl Message for CustomerDetail {
    const TYPE: &'static str = "agent.customer.detail";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .object("customer", self.customer.to_fields())
            .list(
                "entitlements",
                "entitlement",
                self.entitlements.iter().map(EntitlementInfo::to_fields),
            )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CustomerDetail {
            customer: CustomerInfo::from_fields(f.req_object("customer")?)?,
            entitlements: f
                .list_items("entitlements", "entitlement")?
                .into_iter()
                .map(EntitlementInfo::from_fields)
                .collect::<Result<_>>()?,
        })
    }
}

/// `agent.entitle`: grant `login` the product (replacing an existing entitlement to the
/// same product). Only for admins: `by_customer_id` must hold the admin role (`denied`).
/// `bad-request` for an invalid constraint or date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitle {
    /// The admin making the change.
    pub by_customer_id: i64,
    /// Whose entitlement.
    pub login: String,
    /// Product name.
    pub product: String,
    /// Version constraint (`*` for all).
    pub versions: String,
    /// Last day or instant it holds: `YYYY-MM-DD` (through the end of that day, UTC) or RFC 3339.
    pub until: Option<String>,
}

impl Message for Entitle {
    const TYPE: &'static str = "agent.entitle";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("by_customer_id", self.by_customer_id)
            .text("login", &self.login)
            .text("product", &self.product)
            .text("versions", &self.versions)
            .opt_text("until", self.until.as_deref())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Entitle {
            by_customer_id: f.req_parse("by_customer_id")?,
            login: f.req_text("login")?.to_owned(),
            product: f.req_text("product")?.to_owned(),
            versions: f.opt_str("versions")?.unwrap_or("*").to_owned(),
            until: f.opt_str("until")?.map(str::to_owned),
        })
    }
}

impl Request for Entitle {
    type Response = Entitled;
    type Link = AgentLink;
}

/// Reply to [`Entitle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitled {
    /// Whose.
    pub login: String,
    /// What is now stored.
    pub entitlement: EntitlementInfo,
}

impl Message for Entitled {
    const TYPE: &'static str = "agent.entitle.ok";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("login", &self.login)
            .object("entitlement", self.entitlement.to_fields())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Entitled {
            login: f.req_text("login")?.to_owned(),
            entitlement: EntitlementInfo::from_fields(f.req_object("entitlement")?)?,
        })
    }
}

/// `agent.unentitle`: remove `login`'s entitlement to a product (admins only), and with
/// `revoke` also revoke the customer's staged areas of that product (a revocation in the
/// [`Revocations`] feed, as `ffs unentitle --revoke` records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unentitle {
    /// The admin making the change.
    pub by_customer_id: i64,
    /// Whose entitlement.
    pub login: String,
    /// Product name.
    pub product: String,
    /// Also revoke the product's staged areas (absent on the wire = `false`).
    pub revoke: bool,
}

impl Message for Unentitle {
    const TYPE: &'static str = "agent.unentitle";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("by_customer_id", self.by_customer_id)
            .text("login", &self.login)
            .text("product", &self.product)
            .flag("revoke", self.revoke)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Unentitle {
            by_customer_id: f.req_parse("by_customer_id")?,
            login: f.req_text("login")?.to_owned(),
            product: f.req_text("product")?.to_owned(),
            revoke: f.opt_parse("revoke")?.unwrap_or(false),
        })
    }
}

impl Request for Unentitle {
    type Response = Unentitled;
    type Link = AgentLink;
}

/// Reply to [`Unentitle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unentitled {
    /// Entitlements removed (0 when there was none).
    pub removed: u64,
}

impl Message for Unentitled {
    const TYPE: &'static str = "agent.unentitle.ok";
    fn to_fields(&self) -> Fields {
        Fields::new().num("removed", self.removed)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Unentitled {
            removed: f.req_parse("removed")?,
        })
    }
}

/// `agent.set-disabled`: disable or enable a customer (admins only; an admin cannot disable
/// themself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDisabled {
    /// The admin making the change.
    pub by_customer_id: i64,
    /// Whom.
    pub login: String,
    /// Disable (`true`) or enable (`false`).
    pub disabled: bool,
}

impl Message for SetDisabled {
    const TYPE: &'static str = "agent.set-disabled";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("by_customer_id", self.by_customer_id)
            .text("login", &self.login)
            .flag("disabled", self.disabled)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(SetDisabled {
            by_customer_id: f.req_parse("by_customer_id")?,
            login: f.req_text("login")?.to_owned(),
            disabled: f.req_flag("disabled")?,
        })
    }
}

impl Request for SetDisabled {
    type Response = CustomerUpdated;
    type Link = AgentLink;
}

/// Reply to [`SetDisabled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerUpdated {
    /// The customer as now stored.
    pub customer: CustomerInfo,
}

impl Message for CustomerUpdated {
    const TYPE: &'static str = "agent.customer.updated";
    fn to_fields(&self) -> Fields {
        Fields::new().object("customer", self.customer.to_fields())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CustomerUpdated {
            customer: CustomerInfo::from_fields(f.req_object("customer")?)?,
        })
    }
}

/// `agent.revocations`: the revocation feed after position `after` (0 = from the start of
/// the agent's horizon, a little over the stager's longest area lifetime). Each entry is an
/// operator's decision: a disable (no `product`: end the customer's sessions begun at or
/// before `at` and revoke all their areas) or `unentitle --revoke` (one product's areas).
/// The web frontend polls it every few seconds, ends the sessions and has the stager
/// unstage the areas; replaying it is harmless (areas are those staged up to `at` only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// The last position already handled (0 for none).
    pub after: i64,
}

impl Message for Revocations {
    const TYPE: &'static str = "agent.revocations";
    fn to_fields(&self) -> Fields {
        Fields::new().num("after", self.after)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Revocations {
            after: f.req_parse("after")?,
        })
    }
}

impl Request for Revocations {
    type Response = RevocationList;
    type Link = AgentLink;
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationInfo {
    /// Feed position (increasing).
    pub id: i64,
    /// Whose.
    pub customer_id: i64,
    /// One product's areas; `None` = a disable (all areas, and the sessions).
    pub product: Option<String>,
    /// When it was decided (RFC 3339 UTC with milliseconds, e.g.
    /// `2026-11-26T22:00:00.250Z`: a session begun in the same second may be either side).
    pub at: String,
    /// The stager areas to revoke (staged for it up to `at`), newest first.
    pub area_ids: Vec<String>,
}

impl RevocationInfo {
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("id", self.id)
            .num("customer_id", self.customer_id)
            .opt_text("product", self.product.as_deref())
            .text("at", &self.at)
            .text_list("areas", "area", self.area_ids.iter().map(String::as_str))
    }

    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(RevocationInfo {
            id: f.req_parse("id")?,
            customer_id: f.req_parse("customer_id")?,
            product: f.opt_str("product")?.map(str::to_owned),
            at: f.req_text("at")?.to_owned(),
            area_ids: f.text_items("areas", "area")?,
        })
    }
}

/// Reply to [`Revocations`]: the next entries, oldest first (at most 100; ask again after
/// the last one's `id` while `more` is set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// The entries.
    pub revocations: Vec<RevocationInfo>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

impl Message for RevocationList {
    const TYPE: &'static str = "agent.revocations.list";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .list(
                "revocations",
                "revocation",
                self.revocations.iter().map(RevocationInfo::to_fields),
            )
            .flag("more", self.more)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(RevocationList {
            revocations: f
                .list_items("revocations", "revocation")?
                .into_iter()
                .map(RevocationInfo::from_fields)
                .collect::<Result<_>>()?,
            more: f.req_flag("more")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tobj::{Limits, Tobj};

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let text = m.to_tobj(42).encode();
        let back = Tobj::parse(&text, &Limits::default()).unwrap();
        assert_eq!(back.kind, M::TYPE);
        assert_eq!(back.id, 42);
        assert_eq!(M::from_tobj(&back).unwrap(), m, "{text}");
    }

    fn alice() -> CustomerInfo {
        CustomerInfo {
            id: 7,
            login: "alice".into(),
            name: "Alice <Ops> & Co".into(),
            email: "alice@example.com".into(),
            admin: true,
            disabled: false,
            created_at: "2026-11-23T10:00:00Z".into(),
        }
    }

    fn ent(expires: Option<&str>) -> EntitlementInfo {
        EntitlementInfo {
            product: "widget".into(),
            versions: ">=2.0, <3".into(),
            expires_at: expires.map(str::to_owned),
            expired: expires.is_some(),
        }
    }

    #[test]
    fn revocations_round_trip() {
        round_trip(Revocations { after: 41 });
        round_trip(RevocationList::default());
        round_trip(RevocationList {
            revocations: vec![
                RevocationInfo {
                    id: 42,
                    customer_id: 7,
                    product: None,
                    at: "2026-11-26T22:00:00.250Z".into(),
                    area_ids: vec!["ab12".into(), "cd34".into()],
                },
                RevocationInfo {
                    id: 43,
                    customer_id: 7,
                    product: Some("widget <pro>".into()),
                    at: "2026-11-26T22:00:01Z".into(),
                    area_ids: vec![],
                },
            ],
            more: true,
        });
    }

    #[test]
    fn login_round_trips_and_hides_password_in_debug() {
        let l = Login {
            login: "alice".into(),
            password: "s3cr&t<\"pw\">\r\n".into(),
            client_addr: "192.0.2.1".into(),
        };
        assert!(!format!("{l:?}").contains("s3cr"));
        round_trip(l);
        round_trip(LoginOk { customer: alice() });
    }

    #[test]
    fn entitlement_messages_round_trip() {
        round_trip(Entitlements {
            customer_id: 7,
            include_expired: true,
        });
        round_trip(EntitlementList {
            customer_id: 7,
            entitlements: vec![ent(None), ent(Some("2026-01-01T00:00:00Z"))],
        });
        round_trip(EntitlementList {
            customer_id: 7,
            entitlements: vec![],
        });
        round_trip(Authorize {
            customer_id: 7,
            product: "widget".into(),
            version: "2.1.0".into(),
        });
        round_trip(Authorized {
            customer_id: 7,
            product: "widget".into(),
            version: "2.1.0".into(),
            entitlement: ent(None),
        });
    }

    #[test]
    fn entitlements_include_expired_defaults_to_false() {
        let t = Tobj::with_fields(Entitlements::TYPE, 1, Fields::new().num("customer_id", 3));
        assert!(!Entitlements::from_tobj(&t).unwrap().include_expired);
    }

    #[test]
    fn record_messages_round_trip() {
        round_trip(RecordDownload {
            customer_id: 7,
            product: "widget".into(),
            version: "2.1.0".into(),
            files: vec!["a.iso".into(), "b.txt".into()],
            area_id: "ar-1".into(),
            client_addr: "2001:db8::1".into(),
        });
        round_trip(RecordDownload {
            customer_id: 7,
            product: "widget".into(),
            version: "2.1.0".into(),
            files: vec![],
            area_id: "ar-1".into(),
            client_addr: String::new(),
        });
        round_trip(DownloadRecorded { history_id: 99 });
        round_trip(WithdrawDownload {
            customer_id: 7,
            area_id: "ar-1".into(),
        });
        round_trip(DownloadWithdrawn { removed: 1 });
        round_trip(RecordDelivery {
            area_id: "ar-1".into(),
            file: "a.iso".into(),
            bytes: u64::MAX,
            protocol: "https".into(),
            stager_seq: Some(5),
            stager: Some("west".into()),
        });
        round_trip(RecordDelivery {
            area_id: "ar-1".into(),
            file: "a.iso".into(),
            bytes: 0,
            protocol: "ftp".into(),
            stager_seq: None,
            stager: None,
        });
        round_trip(DeliveryRecorded {
            delivery_id: Some(3),
            duplicate: false,
        });
        round_trip(DeliveryRecorded {
            delivery_id: None,
            duplicate: true,
        });
        round_trip(DeliveryCursor::default());
        round_trip(DeliveryCursor {
            stager: Some("east".into()),
        });
        round_trip(DeliveryCursorReply { last_seq: Some(12) });
        round_trip(DeliveryCursorReply { last_seq: None });
    }

    #[test]
    fn admin_reads_round_trip() {
        round_trip(History {
            customer_id: Some(7),
            limit: 50,
        });
        round_trip(History {
            customer_id: None,
            limit: 10,
        });
        round_trip(HistoryList {
            entries: vec![HistoryEntry {
                id: 1,
                customer_id: 7,
                login: "alice".into(),
                product: "widget".into(),
                version: "2.1.0".into(),
                files: vec!["a.iso".into()],
                area_id: "ar-1".into(),
                staged_at: "2026-11-23T10:00:00Z".into(),
                client_addr: "192.0.2.1".into(),
                deliveries: 2,
                delivered_bytes: 1 << 40,
            }],
        });
        round_trip(Customers {});
        round_trip(CustomerList {
            customers: vec![alice(), alice()],
        });
        round_trip(CustomerLookup {
            login: "alice".into(),
        });
        round_trip(CustomerDetail {
            customer: alice(),
            entitlements: vec![ent(None)],
        });
    }

    #[test]
    fn admin_edits_round_trip() {
        round_trip(Entitle {
            by_customer_id: 1,
            login: "bob".into(),
            product: "widget".into(),
            versions: "^2".into(),
            until: Some("2027-01-01".into()),
        });
        round_trip(Entitled {
            login: "bob".into(),
            entitlement: ent(None),
        });
        round_trip(Unentitle {
            by_customer_id: 1,
            login: "bob".into(),
            product: "widget".into(),
            revoke: true,
        });
        round_trip(Unentitled { removed: 1 });
        round_trip(SetDisabled {
            by_customer_id: 1,
            login: "bob".into(),
            disabled: true,
        });
        round_trip(CustomerUpdated { customer: alice() });
    }

    #[test]
    fn missing_fields_are_errors() {
        let t = Tobj::with_fields(Login::TYPE, 1, Fields::new().text("login", "a"));
        assert_eq!(
            Login::from_tobj(&t),
            Err(TobjError::Missing("password".into()))
        );
        let t = Tobj::with_fields(
            Authorize::TYPE,
            1,
            Fields::new()
                .text("customer_id", "x")
                .text("product", "p")
                .text("version", "1"),
        );
        assert!(matches!(
            Authorize::from_tobj(&t),
            Err(TobjError::Invalid { .. })
        ));
    }
}
