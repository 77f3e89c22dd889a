//! Customer and entitlement management on the database directly: what the operator CLI
//! (`ffs customer …`, `ffs entitle …`), `ffs demo` and the agent's admin requests share.
//!
//! Every function takes a connection (from [`crate::db::Pool::with_conn`] or a test).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::db::{AnyConnection, DbError};
use crate::model::{CustomerProfile, Entitlement, HistoryRow};
use crate::passwords::{Hasher, PasswordError};
use crate::store;
use crate::versions::VersionSpec;

/// Why a management operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such customer.
    #[error("no customer with login {0:?}")]
    NotFound(String),
    /// The login is taken.
    #[error("a customer with login {0:?} exists already")]
    Exists(String),
    /// An argument is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// Password hashing or policy.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AdminError {
    fn from(e: diesel::result::Error) -> Self {
        AdminError::Db(DbError::Query(e))
    }
}

/// Runs a management operation on a pool connection (on this thread).
pub fn with<T>(
    pool: &crate::db::Pool,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    pool.with_conn(|c| Ok(f(c)))?
}

/// The longest login accepted.
pub const MAX_LOGIN_LEN: usize = 64;

/// Logins are case-insensitive: trimmed and lower-cased, 1 to 64 of `a-z 0-9 . _ - @ +`.
pub fn normalize_login(login: &str) -> Result<String, AdminError> {
    let l = login.trim().to_lowercase();
    let ok = !l.is_empty()
        && l.len() <= MAX_LOGIN_LEN
        && l.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@' | '+')
        });
    if ok {
        Ok(l)
    } else {
        Err(AdminError::Invalid(format!(
            "login {login:?} is not valid: use 1 to {MAX_LOGIN_LEN} of a-z 0-9 . _ - @ +"
        )))
    }
}

fn check_text(what: &str, v: &str, max: usize) -> Result<(), AdminError> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{what} must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks a product name: 1 to 200 bytes, no control characters or slashes.
pub fn check_product(product: &str) -> Result<(), AdminError> {
    if product.trim().is_empty() || product.contains('/') {
        return Err(AdminError::Invalid(format!(
            "product {product:?} is not valid: give the name as in the catalog"
        )));
    }
    check_text("product", product, 200)
}

/// Parses an expiry: `YYYY-MM-DD` (the entitlement holds through that day, UTC) or an RFC
/// 3339 instant. Returns the first instant at which it no longer holds.
pub fn parse_until(s: &str) -> Result<NaiveDateTime, AdminError> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .succ_opt()
            .and_then(|n| n.and_hms_opt(0, 0, 0))
            .ok_or_else(|| AdminError::Invalid(format!("date {s:?} is out of range")));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).naive_utc())
        .map_err(|_| {
            AdminError::Invalid(format!(
                "date {s:?} not understood: use YYYY-MM-DD or e.g. 2027-01-31T18:00:00Z"
            ))
        })
}

/// A customer to create.
#[derive(Clone)]
pub struct NewCustomer<'a> {
    /// Login name (normalised by [`normalize_login`]).
    pub login: &'a str,
    /// Display name.
    pub name: &'a str,
    /// E-mail address.
    pub email: &'a str,
    /// Initial password (8 to 1024 bytes).
    pub password: &'a str,
    /// Grant the admin role.
    pub admin: bool,
}

impl std::fmt::Debug for NewCustomer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCustomer")
            .field("login", &self.login)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &"<hidden>")
            .field("admin", &self.admin)
            .finish()
    }
}

fn check_new(n: &NewCustomer<'_>) -> Result<String, AdminError> {
    let login = normalize_login(n.login)?;
    check_text("name", n.name, 200)?;
    check_text("email", n.email, 254)?;
    Ok(login)
}

/// Creates a customer; refuses an existing login.
pub fn add_customer(
    c: &mut AnyConnection,
    hasher: &Hasher,
    n: &NewCustomer<'_>,
) -> Result<CustomerProfile, AdminError> {
    let login = check_new(n)?;
    if store::customer_row_by_login(c, &login)?.is_some() {
        return Err(AdminError::Exists(login));
    }
    let hash = hasher.hash(n.password)?;
    let id = store::insert_customer(c, &login, n.name, n.email, &hash, n.admin)?;
    store::customer_by_id(c, id)?.ok_or(AdminError::NotFound(login))
}

/// Creates the customer, or brings an existing one to exactly this state (name, e-mail,
/// password, admin role; enabled). For `ffs demo` and provisioning scripts: safe to repeat.
pub fn ensure_customer(
    c: &mut AnyConnection,
    hasher: &Hasher,
    n: &NewCustomer<'_>,
) -> Result<CustomerProfile, AdminError> {
    let login = check_new(n)?;
    let hash = hasher.hash(n.password)?;
    let id = match store::customer_row_by_login(c, &login)? {
        None => store::insert_customer(c, &login, n.name, n.email, &hash, n.admin)?,
        Some(row) => {
            use crate::schema::customers;
            use diesel::prelude::*;
            diesel::update(customers::table.filter(customers::id.eq(row.id)))
                .set((
                    customers::display_name.eq(n.name),
                    customers::email.eq(n.email),
                    customers::password_hash.eq(&hash),
                    customers::disabled.eq(false),
                ))
                .execute(c)?;
            store::set_admin(c, row.id, n.admin)?;
            store::clear_failures(c, &login)?;
            row.id
        }
    };
    store::customer_by_id(c, id)?.ok_or(AdminError::NotFound(login))
}

fn find(c: &mut AnyConnection, login: &str) -> Result<CustomerProfile, AdminError> {
    let l = normalize_login(login)?;
    store::customer_by_login(c, &l)?.ok_or(AdminError::NotFound(l))
}

/// Every customer, by login.
pub fn list_customers(c: &mut AnyConnection) -> Result<Vec<CustomerProfile>, AdminError> {
    Ok(store::list_customers(c)?)
}

/// One customer and all their entitlements (expired ones included, flagged).
pub fn show_customer(
    c: &mut AnyConnection,
    login: &str,
) -> Result<(CustomerProfile, Vec<Entitlement>), AdminError> {
    let cu = find(c, login)?;
    let ents = store::entitlements_of(c, cu.id, true, store::now())?;
    Ok((cu, ents))
}

/// Disables or enables a customer. Disabling also records a revocation, through which the
/// web frontend ends the customer's open sessions and the stager drops their staged areas
/// within seconds (see `revocations` in ARCHITECTURE.md).
pub fn set_disabled(
    c: &mut AnyConnection,
    login: &str,
    disabled: bool,
) -> Result<CustomerProfile, AdminError> {
    let cu = find(c, login)?;
    diesel::Connection::transaction(c, |c| {
        // The update takes the customer's row lock first (see `store::lock_customer`).
        store::set_disabled(c, cu.id, disabled)?;
        if disabled {
            store::insert_revocation(c, cu.id, None)?;
        } else {
            store::clear_failures(c, &cu.login)?;
        }
        diesel::QueryResult::Ok(())
    })?;
    Ok(CustomerProfile { disabled, ..cu })
}

/// Sets a new password (and lifts any lockout).
pub fn set_password(
    c: &mut AnyConnection,
    hasher: &Hasher,
    login: &str,
    password: &str,
) -> Result<CustomerProfile, AdminError> {
    let cu = find(c, login)?;
    let hash = hasher.hash(password)?;
    store::set_password_hash(c, cu.id, &hash)?;
    store::clear_failures(c, &cu.login)?;
    Ok(cu)
}

/// Lifts a lockout: forgets the login's failed attempts.
pub fn unlock(c: &mut AnyConnection, login: &str) -> Result<(), AdminError> {
    let l = normalize_login(login)?;
    Ok(store::clear_failures(c, &l)?)
}

/// Grants `login` the product for versions matching `versions` (`*` = all) until `until`
/// (see [`parse_until`]), replacing an existing entitlement to the same product.
pub fn entitle(
    c: &mut AnyConnection,
    login: &str,
    product: &str,
    versions: &str,
    until: Option<&str>,
) -> Result<Entitlement, AdminError> {
    check_product(product)?;
    let spec: VersionSpec = versions
        .parse()
        .map_err(|e: crate::versions::ParseError| AdminError::Invalid(e.to_string()))?;
    let expires = until.map(parse_until).transpose()?;
    let cu = find(c, login)?;
    let product = product.trim();
    store::put_entitlement(c, cu.id, product, &spec.to_string(), expires)?;
    store::entitlement_for(c, cu.id, product, store::now())?
        .ok_or_else(|| AdminError::NotFound(format!("{} / {product}", cu.login)))
}

/// Removes `login`'s entitlement to the product; returns how many were removed (0 or 1).
/// With `revoke`, also records a revocation of the product's staged areas (the web frontend
/// has the stager drop them within seconds), even if no entitlement was left to remove.
pub fn unentitle(
    c: &mut AnyConnection,
    login: &str,
    product: &str,
    revoke: bool,
) -> Result<usize, AdminError> {
    let cu = find(c, login)?;
    let product = product.trim();
    Ok(diesel::Connection::transaction(c, |c| {
        store::lock_customer(c, cu.id)?;
        let n = store::remove_entitlement(c, cu.id, product)?;
        if revoke {
            store::insert_revocation(c, cu.id, Some(product))?;
        }
        diesel::QueryResult::Ok(n)
    })?)
}

/// Download history, newest first: one customer's (by login) or everyone's.
pub fn history(
    c: &mut AnyConnection,
    login: Option<&str>,
    limit: i64,
) -> Result<Vec<HistoryRow>, AdminError> {
    let id = match login {
        Some(l) => Some(find(c, l)?.id),
        None => None,
    };
    Ok(store::history(c, id, limit.clamp(1, 100_000))?)
}

/// Plain-text tables for the CLI.
pub mod table {
    use super::*;
    use crate::model::rfc3339;

    fn render(headers: &[&str], rows: Vec<Vec<String>>) -> String {
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
        out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
        for r in rows {
            out += &line(r);
        }
        out
    }

    fn day(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%d %H:%M").to_string()
    }

    /// `ffs customer list`.
    pub fn customers(list: &[CustomerProfile]) -> String {
        render(
            &["LOGIN", "NAME", "EMAIL", "ROLE", "STATE", "CREATED"],
            list.iter()
                .map(|c| {
                    vec![
                        c.login.clone(),
                        c.name.clone(),
                        c.email.clone(),
                        if c.admin { "admin" } else { "customer" }.to_owned(),
                        if c.disabled { "disabled" } else { "active" }.to_owned(),
                        day(c.created_at),
                    ]
                })
                .collect(),
        )
    }

    /// `ffs customer show`.
    pub fn customer(c: &CustomerProfile, ents: &[Entitlement]) -> String {
        let mut out = format!(
            "login:    {}\nname:     {}\nemail:    {}\nrole:     {}\nstate:    {}\ncreated:  {}\n\n",
            c.login,
            c.name,
            c.email,
            if c.admin { "admin" } else { "customer" },
            if c.disabled { "disabled" } else { "active" },
            rfc3339(c.created_at)
        );
        if ents.is_empty() {
            out += "no entitlements\n";
        } else {
            out += &entitlements(ents);
        }
        out
    }

    /// A list of entitlements.
    pub fn entitlements(ents: &[Entitlement]) -> String {
        render(
            &["PRODUCT", "VERSIONS", "UNTIL (UTC)", "STATE"],
            ents.iter()
                .map(|e| {
                    vec![
                        e.product.clone(),
                        e.versions.clone(),
                        // Stored as the first instant it no longer holds; shown as the
                        // last minute it does (`--until 2027-01-31` shows 2027-01-31 23:59).
                        e.expires_at
                            .map(|t| day(t - chrono::Duration::seconds(1)))
                            .unwrap_or_else(|| "-".to_owned()),
                        if e.expired { "expired" } else { "active" }.to_owned(),
                    ]
                })
                .collect(),
        )
    }

    /// `ffs history`.
    pub fn history(rows: &[HistoryRow]) -> String {
        render(
            &[
                "ID",
                "STAGED",
                "LOGIN",
                "PRODUCT",
                "VERSION",
                "FILES",
                "AREA",
                "CLIENT",
                "DELIVERED",
            ],
            rows.iter()
                .map(|h| {
                    vec![
                        h.id.to_string(),
                        day(h.staged_at),
                        h.login.clone(),
                        h.product.clone(),
                        h.version.clone(),
                        h.files.len().to_string(),
                        h.area_id.clone(),
                        h.client_addr.clone(),
                        format!("{} B in {}", h.delivered_bytes, h.deliveries),
                    ]
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_normalise() {
        assert_eq!(
            normalize_login("  Alice@Example.com ").unwrap(),
            "alice@example.com"
        );
        assert!(normalize_login("").is_err());
        assert!(normalize_login("a b").is_err());
        assert!(normalize_login(&"a".repeat(65)).is_err());
    }

    #[test]
    fn until_dates() {
        assert_eq!(
            parse_until("2027-01-31").unwrap().to_string(),
            "2027-02-01 00:00:00"
        );
        assert_eq!(
            parse_until("2027-01-31T18:00:00+01:00")
                .unwrap()
                .to_string(),
            "2027-01-31 17:00:00"
        );
        assert!(parse_until("31.01.2027").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table::entitlements(&[Entitlement {
            product: "widget".into(),
            versions: ">=2, <3".into(),
            expires_at: None,
            expired: false,
            created_at: Utc::now(),
        }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PRODUCT  VERSIONS"));
        assert!(lines[2].starts_with("widget   >=2, <3"));
    }
}
