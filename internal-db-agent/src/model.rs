//! What the agent knows, as plain values (never a password hash).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// A customer's profile: who they are and their standing, without credentials (the
/// password hash stays in the `customers` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerProfile {
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
    /// Cannot log in or download.
    pub disabled: bool,
    /// When created.
    pub created_at: DateTime<Utc>,
}

/// An entitlement to a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    /// Product name.
    pub product: String,
    /// Version constraint.
    pub versions: String,
    /// When it ends, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Already ended (at the time it was read).
    pub expired: bool,
    /// When granted.
    pub created_at: DateTime<Utc>,
}

/// One download-history row plus what has been delivered from its area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
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
    /// When staged.
    pub staged_at: DateTime<Utc>,
    /// The customer's address.
    pub client_addr: String,
    /// Completed transfers from the area.
    pub deliveries: u64,
    /// Bytes delivered from the area.
    pub delivered_bytes: u64,
}

/// RFC 3339 UTC with second precision, as the commlink messages carry instants.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl From<&CustomerProfile> for commlink::msg::agent::CustomerInfo {
    fn from(c: &CustomerProfile) -> Self {
        commlink::msg::agent::CustomerInfo {
            id: c.id,
            login: c.login.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            admin: c.admin,
            disabled: c.disabled,
            created_at: rfc3339(c.created_at),
        }
    }
}

impl From<&Entitlement> for commlink::msg::agent::EntitlementInfo {
    fn from(e: &Entitlement) -> Self {
        commlink::msg::agent::EntitlementInfo {
            product: e.product.clone(),
            versions: e.versions.clone(),
            expires_at: e.expires_at.map(rfc3339),
            expired: e.expired,
        }
    }
}

impl From<&HistoryRow> for commlink::msg::agent::HistoryEntry {
    fn from(h: &HistoryRow) -> Self {
        commlink::msg::agent::HistoryEntry {
            id: h.id,
            customer_id: h.customer_id,
            login: h.login.clone(),
            product: h.product.clone(),
            version: h.version.clone(),
            files: h.files.clone(),
            area_id: h.area_id.clone(),
            staged_at: rfc3339(h.staged_at),
            client_addr: h.client_addr.clone(),
            deliveries: h.deliveries,
            delivered_bytes: h.delivered_bytes,
        }
    }
}

/// An operator's decision to take a customer's staged areas away: all of them and their web
/// sessions (a disable, `product` = `None`), or one product's areas (`unentitle --revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// Feed position (increasing).
    pub id: i64,
    /// Whose.
    pub customer_id: i64,
    /// The product, or `None` for everything (and the sessions).
    pub product: Option<String>,
    /// When it was decided (UTC).
    pub at: DateTime<Utc>,
    /// The download areas staged for it up to that instant, newest first (at most
    /// [`crate::store::REVOKE_MAX_AREAS`]); areas staged later are not affected.
    pub area_ids: Vec<String>,
}
