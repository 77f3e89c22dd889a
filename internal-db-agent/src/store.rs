//! The queries, written once for both backends against [`AnyConnection`].
//!
//! Every function takes a connection, so it runs in the pool, in a transaction or in a test.
//! Downloads and deliveries are only ever inserted (append-only history).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::db::AnyConnection;
use crate::lockout::FailureState;
use crate::model::{CustomerProfile, Entitlement, HistoryRow, Revocation};
use crate::schema::{
    customers, deliveries, downloads, entitlements, login_failures, revocations, roles,
    withdrawn_areas,
};

/// The role name of administrators.
pub const ADMIN: &str = "admin";
/// The role every customer holds.
pub const CUSTOMER: &str = "customer";

/// A whole customers row, hash included; stays inside this crate (deliberately no `Debug`,
/// so it cannot be logged).
#[derive(Queryable)]
pub(crate) struct CustomerRow {
    pub id: i64,
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable)]
struct EntitlementRow {
    _id: i64,
    _customer_id: i64,
    product: String,
    versions: String,
    expires_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable)]
struct DownloadRow {
    id: i64,
    customer_id: i64,
    product: String,
    version: String,
    files: String,
    area_id: String,
    staged_at: NaiveDateTime,
    client_addr: String,
}

/// The current instant as stored (UTC, microseconds, which both backends keep exactly).
pub fn now() -> NaiveDateTime {
    let n = Utc::now().naive_utc();
    n.with_nanosecond_truncated()
}

trait TruncateMicros {
    fn with_nanosecond_truncated(self) -> Self;
}

impl TruncateMicros for NaiveDateTime {
    fn with_nanosecond_truncated(self) -> Self {
        use chrono::Timelike as _;
        let micros = self.nanosecond() / 1000 * 1000;
        self.with_nanosecond(micros).unwrap_or(self)
    }
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    DateTime::from_naive_utc_and_offset(t, Utc)
}

/// Inserts and returns the new row's id; `RETURNING` is run on the inner connection since
/// the shared backend does not offer it.
macro_rules! insert_returning_id {
    ($conn:expr, $table:path, $values:expr, $id:path) => {
        match $conn {
            AnyConnection::Postgresql(c) => diesel::insert_into($table)
                .values($values)
                .returning($id)
                .get_result::<i64>(c),
            AnyConnection::Sqlite(c) => diesel::insert_into($table)
                .values($values)
                .returning($id)
                .get_result::<i64>(c),
        }
    };
}

/// Runs one query on the inner connection: the same diesel expression, typed for each
/// backend. For the hot queries (the prepare and product-page path): through the shared
/// `AnyConnection` backend diesel writes the whole SQL text again on every execution (to
/// translate it for the inner backend), even when the statement is cached.
macro_rules! on_inner {
    ($conn:expr, |$c:ident| $query:expr) => {
        match $conn {
            AnyConnection::Postgresql($c) => $query,
            AnyConnection::Sqlite($c) => $query,
        }
    };
}

/// The one row a lookup by a unique key found, if any.
///
/// Lookups by a primary or unique key load without `LIMIT`: diesel binds a limit as a
/// parameter, and SQLite's planner (3.53, the bundled one) reads a bound `LIMIT`'s value,
/// which marks the statement to be prepared again whenever a value is bound: diesel's cached
/// statement would be re-prepared on every call. Without it the statement stays prepared.
fn unique<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

pub(crate) fn customer_row_by_login(
    c: &mut AnyConnection,
    login: &str,
) -> QueryResult<Option<CustomerRow>> {
    // `login` is UNIQUE.
    customers::table
        .filter(customers::login.eq(login))
        .load::<CustomerRow>(c)
        .map(unique)
}

pub(crate) fn customer_row(c: &mut AnyConnection, id: i64) -> QueryResult<Option<CustomerRow>> {
    // `id` is the primary key.
    on_inner!(c, |c| customers::table
        .filter(customers::id.eq(id))
        .load::<CustomerRow>(c))
    .map(unique)
}

/// Whether the customer holds the admin role.
pub fn is_admin(c: &mut AnyConnection, id: i64) -> QueryResult<bool> {
    let n: i64 = roles::table
        .filter(roles::customer_id.eq(id))
        .filter(roles::role.eq(ADMIN))
        .count()
        .get_result(c)?;
    Ok(n > 0)
}

pub(crate) fn view(c: &mut AnyConnection, row: &CustomerRow) -> QueryResult<CustomerProfile> {
    Ok(CustomerProfile {
        id: row.id,
        login: row.login.clone(),
        name: row.display_name.clone(),
        email: row.email.clone(),
        admin: is_admin(c, row.id)?,
        disabled: row.disabled,
        created_at: utc(row.created_at),
    })
}

/// A customer by login, without the hash.
pub fn customer_by_login(
    c: &mut AnyConnection,
    login: &str,
) -> QueryResult<Option<CustomerProfile>> {
    match customer_row_by_login(c, login)? {
        Some(r) => view(c, &r).map(Some),
        None => Ok(None),
    }
}

/// A customer by id, without the hash.
pub fn customer_by_id(c: &mut AnyConnection, id: i64) -> QueryResult<Option<CustomerProfile>> {
    match customer_row(c, id)? {
        Some(r) => view(c, &r).map(Some),
        None => Ok(None),
    }
}

/// Adds a customer (role `customer`, plus `admin` if asked) and returns the id.
pub fn insert_customer(
    c: &mut AnyConnection,
    login: &str,
    name: &str,
    email: &str,
    password_hash: &str,
    admin: bool,
) -> QueryResult<i64> {
    c.transaction(|c| {
        let id = insert_returning_id!(
            c,
            customers::table,
            (
                customers::login.eq(login),
                customers::display_name.eq(name),
                customers::email.eq(email),
                customers::password_hash.eq(password_hash),
                customers::disabled.eq(false),
                customers::created_at.eq(now()),
            ),
            customers::id
        )?;
        diesel::insert_into(roles::table)
            .values((roles::customer_id.eq(id), roles::role.eq(CUSTOMER)))
            .execute(c)?;
        if admin {
            diesel::insert_into(roles::table)
                .values((roles::customer_id.eq(id), roles::role.eq(ADMIN)))
                .execute(c)?;
        }
        Ok(id)
    })
}

/// Every customer, by login.
pub fn list_customers(c: &mut AnyConnection) -> QueryResult<Vec<CustomerProfile>> {
    let rows = customers::table
        .order(customers::login.asc())
        .load::<CustomerRow>(c)?;
    let admins: Vec<i64> = roles::table
        .filter(roles::role.eq(ADMIN))
        .select(roles::customer_id)
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|r| CustomerProfile {
            admin: admins.contains(&r.id),
            id: r.id,
            login: r.login,
            name: r.display_name,
            email: r.email,
            disabled: r.disabled,
            created_at: utc(r.created_at),
        })
        .collect())
}

/// Sets the disabled flag; returns whether the customer exists.
pub fn set_disabled(c: &mut AnyConnection, id: i64, disabled: bool) -> QueryResult<bool> {
    let n = diesel::update(customers::table.filter(customers::id.eq(id)))
        .set(customers::disabled.eq(disabled))
        .execute(c)?;
    Ok(n > 0)
}

/// Replaces the password hash.
pub fn set_password_hash(c: &mut AnyConnection, id: i64, hash: &str) -> QueryResult<bool> {
    let n = diesel::update(customers::table.filter(customers::id.eq(id)))
        .set(customers::password_hash.eq(hash))
        .execute(c)?;
    Ok(n > 0)
}

/// Grants or removes the admin role.
pub fn set_admin(c: &mut AnyConnection, id: i64, admin: bool) -> QueryResult<()> {
    c.transaction(|c| {
        diesel::delete(
            roles::table
                .filter(roles::customer_id.eq(id))
                .filter(roles::role.eq(ADMIN)),
        )
        .execute(c)?;
        if admin {
            diesel::insert_into(roles::table)
                .values((roles::customer_id.eq(id), roles::role.eq(ADMIN)))
                .execute(c)?;
        }
        Ok(())
    })
}

/// A customer's entitlements by product; expired ones flagged (and left out unless
/// `include_expired`).
pub fn entitlements_of(
    c: &mut AnyConnection,
    customer_id: i64,
    include_expired: bool,
    at: NaiveDateTime,
) -> QueryResult<Vec<Entitlement>> {
    let rows = on_inner!(c, |c| entitlements::table
        .filter(entitlements::customer_id.eq(customer_id))
        .order(entitlements::product.asc())
        .load::<EntitlementRow>(c))?;
    Ok(rows
        .into_iter()
        .map(|r| Entitlement {
            expired: r.expires_at.is_some_and(|e| e <= at),
            product: r.product,
            versions: r.versions,
            expires_at: r.expires_at.map(utc),
            created_at: utc(r.created_at),
        })
        .filter(|e| include_expired || !e.expired)
        .collect())
}

/// The customer's entitlement to one product, expired or not.
pub fn entitlement_for(
    c: &mut AnyConnection,
    customer_id: i64,
    product: &str,
    at: NaiveDateTime,
) -> QueryResult<Option<Entitlement>> {
    // (`customer_id`, `product`) is UNIQUE.
    let row = on_inner!(c, |c| entitlements::table
        .filter(entitlements::customer_id.eq(customer_id))
        .filter(entitlements::product.eq(product))
        .load::<EntitlementRow>(c))
    .map(unique)?;
    Ok(row.map(|r| Entitlement {
        expired: r.expires_at.is_some_and(|e| e <= at),
        product: r.product,
        versions: r.versions,
        expires_at: r.expires_at.map(utc),
        created_at: utc(r.created_at),
    }))
}

/// Grants a product, replacing an existing entitlement to it.
pub fn put_entitlement(
    c: &mut AnyConnection,
    customer_id: i64,
    product: &str,
    versions: &str,
    expires_at: Option<NaiveDateTime>,
) -> QueryResult<()> {
    c.transaction(|c| {
        remove_entitlement(c, customer_id, product)?;
        diesel::insert_into(entitlements::table)
            .values((
                entitlements::customer_id.eq(customer_id),
                entitlements::product.eq(product),
                entitlements::versions.eq(versions),
                entitlements::expires_at.eq(expires_at),
                entitlements::created_at.eq(now()),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// Removes the entitlement to a product; returns how many rows went (0 or 1).
pub fn remove_entitlement(
    c: &mut AnyConnection,
    customer_id: i64,
    product: &str,
) -> QueryResult<usize> {
    diesel::delete(
        entitlements::table
            .filter(entitlements::customer_id.eq(customer_id))
            .filter(entitlements::product.eq(product)),
    )
    .execute(c)
}

/// A download to append to the history.
#[derive(Debug, Clone)]
pub struct NewDownload<'a> {
    /// Who.
    pub customer_id: i64,
    /// Product.
    pub product: &'a str,
    /// Version.
    pub version: &'a str,
    /// Files staged.
    pub files: &'a [String],
    /// The stager's area.
    pub area_id: &'a str,
    /// The customer's address.
    pub client_addr: &'a str,
}

/// Appends a download; returns its history id.
pub fn insert_download(c: &mut AnyConnection, d: &NewDownload<'_>) -> QueryResult<i64> {
    let files = d.files.join("\n");
    insert_returning_id!(
        c,
        downloads::table,
        (
            downloads::customer_id.eq(d.customer_id),
            downloads::product.eq(d.product),
            downloads::version.eq(d.version),
            downloads::files.eq(&files),
            downloads::area_id.eq(d.area_id),
            downloads::staged_at.eq(now()),
            downloads::client_addr.eq(d.client_addr),
        ),
        downloads::id
    )
}

/// Whether the web frontend withdrew `area_id` (a record of it then comes too late).
pub fn area_withdrawn(c: &mut AnyConnection, area_id: &str) -> QueryResult<bool> {
    use diesel::dsl::exists;
    diesel::select(exists(
        withdrawn_areas::table.filter(withdrawn_areas::area_id.eq(area_id)),
    ))
    .get_result(c)
}

/// Withdraws `area_id` of `customer_id`: remembers it (once) and removes its history rows.
/// Returns the rows removed.
pub fn withdraw_download(
    c: &mut AnyConnection,
    customer_id: i64,
    area_id: &str,
) -> QueryResult<usize> {
    if !area_withdrawn(c, area_id)? {
        diesel::insert_into(withdrawn_areas::table)
            .values((
                withdrawn_areas::area_id.eq(area_id),
                withdrawn_areas::customer_id.eq(customer_id),
                withdrawn_areas::withdrawn_at.eq(now()),
            ))
            .execute(c)?;
    }
    diesel::delete(
        downloads::table
            .filter(downloads::area_id.eq(area_id))
            .filter(downloads::customer_id.eq(customer_id)),
    )
    .execute(c)
}

/// A completed transfer to record.
pub struct NewDelivery<'a> {
    /// The stager's area id.
    pub area_id: &'a str,
    /// File name within the area.
    pub file: &'a str,
    /// Bytes sent.
    pub bytes: i64,
    /// `ftp`, `ftps` or `https`.
    pub protocol: &'a str,
    /// The stager (`""`: the one unnamed stager) and its log's seq, when known.
    pub stager: &'a str,
    /// The seq in that stager's delivery log.
    pub stager_seq: Option<i64>,
}

/// Appends a delivery; `Ok(None)` when (`stager`, `stager_seq`) was recorded before. The
/// unique index on that pair makes this exactly-once however many agents record it at once.
pub fn insert_delivery(c: &mut AnyConnection, d: &NewDelivery<'_>) -> QueryResult<Option<i64>> {
    let NewDelivery {
        area_id,
        file,
        bytes,
        protocol,
        stager,
        stager_seq,
    } = *d;
    if let Some(seq) = stager_seq {
        let seen: i64 = deliveries::table
            .filter(deliveries::stager.eq(stager))
            .filter(deliveries::stager_seq.eq(seq))
            .count()
            .get_result(c)?;
        if seen > 0 {
            return Ok(None);
        }
    }
    let r = insert_returning_id!(
        c,
        deliveries::table,
        (
            deliveries::area_id.eq(area_id),
            deliveries::file.eq(file),
            deliveries::bytes.eq(bytes),
            deliveries::protocol.eq(protocol),
            deliveries::stager_seq.eq(stager_seq),
            deliveries::stager.eq(stager),
            deliveries::delivered_at.eq(now()),
        ),
        deliveries::id
    );
    match r {
        Ok(id) => Ok(Some(id)),
        // Two reports of one seq raced past the check above.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) if stager_seq.is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The highest seq recorded from `stager`'s log.
pub fn max_stager_seq(c: &mut AnyConnection, stager: &str) -> QueryResult<Option<i64>> {
    deliveries::table
        .filter(deliveries::stager.eq(stager))
        .select(diesel::dsl::max(deliveries::stager_seq))
        .get_result::<Option<i64>>(c)
}

/// How far back the revocation feed reaches: a little over the stager's longest area
/// lifetime (`max_ttl_secs`, 7 days by default), so a web frontend that restarts replays every
/// revocation whose areas could still be live, and refuses every session it could still
/// accept (12 hours at most).
pub const REVOCATION_HORIZON_SECS: i64 = 8 * 24 * 3600;

/// The most areas one revocation lists (newest first).
pub const REVOKE_MAX_AREAS: i64 = 1000;

/// Takes the customer's row lock until the transaction ends (a no-op update: a row lock on
/// PostgreSQL, the database write lock on SQLite). A disable, an `unentitle --revoke` and the
/// recording of a download take it first, so they are ordered: a download is either refused
/// or recorded before the revocation's instant, which then lists its area.
pub fn lock_customer(c: &mut AnyConnection, customer_id: i64) -> QueryResult<()> {
    on_inner!(c, |c| diesel::update(
        customers::table.filter(customers::id.eq(customer_id))
    )
    .set(customers::disabled.eq(customers::disabled))
    .execute(c))
    .map(|_| ())
}

/// Runs `f` in a transaction that holds the customer's lock (see [`lock_customer`]) from its
/// start, committed when `f` returns `Ok` and rolled back otherwise. On SQLite the lock is
/// the database's write lock taken by `BEGIN IMMEDIATE`, with no row written for it (the
/// no-op `UPDATE` cost a statement diesel does not cache and a page write per record); on
/// PostgreSQL it is the row lock of [`lock_customer`].
pub fn customer_transaction<T, E>(
    c: &mut AnyConnection,
    customer_id: i64,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Manager = <AnyConnection as Connection>::TransactionManager;
    match c {
        AnyConnection::Sqlite(s) => {
            AnsiTransactionManager::begin_transaction_sql(s, "BEGIN IMMEDIATE")?
        }
        AnyConnection::Postgresql(_) => {
            Manager::begin_transaction(c)?;
            if let Err(e) = lock_customer(c, customer_id) {
                let _ = Manager::rollback_transaction(c);
                return Err(e.into());
            }
        }
    }
    match f(c) {
        Ok(v) => {
            Manager::commit_transaction(c)?;
            Ok(v)
        }
        Err(e) => match Manager::rollback_transaction(c) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Records a revocation: `product` = `None` takes everything of the customer (a disable).
pub fn insert_revocation(
    c: &mut AnyConnection,
    customer_id: i64,
    product: Option<&str>,
) -> QueryResult<i64> {
    insert_returning_id!(
        c,
        revocations::table,
        (
            revocations::customer_id.eq(customer_id),
            revocations::product.eq(product),
            revocations::created_at.eq(now()),
        ),
        revocations::id
    )
}

/// Revocations after feed position `after` decided since `since`, oldest first, at most
/// `limit`, each with the areas staged for it up to its instant (never later ones, so
/// replaying the feed cannot touch areas staged after a customer was enabled again).
pub fn revocations_after(
    c: &mut AnyConnection,
    after: i64,
    since: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<Revocation>> {
    let rows: Vec<(i64, i64, Option<String>, NaiveDateTime)> = revocations::table
        .filter(revocations::id.gt(after))
        .filter(revocations::created_at.ge(since))
        .order(revocations::id.asc())
        .limit(limit)
        .load(c)?;
    let horizon = chrono::Duration::seconds(REVOCATION_HORIZON_SECS);
    rows.into_iter()
        .map(|(id, customer_id, product, at)| {
            let mut q = downloads::table
                .filter(downloads::customer_id.eq(customer_id))
                .filter(downloads::staged_at.le(at))
                .filter(downloads::staged_at.ge(at - horizon))
                .select(downloads::area_id)
                .order(downloads::id.desc())
                .limit(REVOKE_MAX_AREAS)
                .into_boxed();
            if let Some(p) = &product {
                q = q.filter(downloads::product.eq(p.clone()));
            }
            Ok(Revocation {
                id,
                customer_id,
                product,
                at: DateTime::from_naive_utc_and_offset(at, Utc),
                area_ids: q.load(c)?,
            })
        })
        .collect()
}

/// Download history, newest first, with deliveries summed per area.
pub fn history(
    c: &mut AnyConnection,
    customer_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<HistoryRow>> {
    let mut q = downloads::table
        .inner_join(customers::table)
        .select((
            (
                downloads::id,
                downloads::customer_id,
                downloads::product,
                downloads::version,
                downloads::files,
                downloads::area_id,
                downloads::staged_at,
                downloads::client_addr,
            ),
            customers::login,
        ))
        .order(downloads::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(id) = customer_id {
        q = q.filter(downloads::customer_id.eq(id));
    }
    let rows: Vec<(DownloadRow, String)> = q.load(c)?;
    let mut areas: Vec<String> = rows.iter().map(|(d, _)| d.area_id.clone()).collect();
    areas.sort();
    areas.dedup();
    let mut sums: HashMap<String, (u64, u64)> = HashMap::new();
    // Chunks keep the IN list well inside every backend's parameter limit.
    for chunk in areas.chunks(500) {
        let ds: Vec<(String, i64)> = deliveries::table
            .filter(deliveries::area_id.eq_any(chunk))
            .select((deliveries::area_id, deliveries::bytes))
            .load(c)?;
        for (area, bytes) in ds {
            let e = sums.entry(area).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(u64::try_from(bytes).unwrap_or(0));
        }
    }
    Ok(rows
        .into_iter()
        .map(|(d, login)| {
            let (n, bytes) = sums.get(&d.area_id).copied().unwrap_or_default();
            HistoryRow {
                id: d.id,
                customer_id: d.customer_id,
                login,
                product: d.product,
                version: d.version,
                files: d
                    .files
                    .split('\n')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
                area_id: d.area_id,
                staged_at: utc(d.staged_at),
                client_addr: d.client_addr,
                deliveries: n,
                delivered_bytes: bytes,
            }
        })
        .collect())
}

/// The failure counter for a login.
pub fn failure_state(c: &mut AnyConnection, login: &str) -> QueryResult<Option<FailureState>> {
    // `login` is the primary key.
    login_failures::table
        .filter(login_failures::login.eq(login))
        .select((
            login_failures::failures,
            login_failures::first_failure_at,
            login_failures::locked_until,
        ))
        .load::<(i32, NaiveDateTime, Option<NaiveDateTime>)>(c)
        .map(|rows| {
            unique(rows).map(|(failures, first_failure_at, locked_until)| FailureState {
                failures,
                first_failure_at,
                locked_until,
            })
        })
}

/// Counts one failed login atomically: within one transaction the login's counter row is
/// locked (created first if missing; a no-op update takes the row lock on PostgreSQL, the
/// write lock on SQLite), read, advanced by `next` and written back, so concurrent failures
/// (from several agents on one database, or one agent's pool) are each counted.
pub fn count_failure(
    c: &mut AnyConnection,
    login: &str,
    now: NaiveDateTime,
    next: impl FnOnce(Option<&FailureState>) -> FailureState,
) -> QueryResult<FailureState> {
    c.transaction(|c| {
        let lock = |c: &mut AnyConnection| {
            diesel::update(login_failures::table.filter(login_failures::login.eq(login)))
                .set(login_failures::failures.eq(login_failures::failures))
                .execute(c)
        };
        if lock(c)? == 0 {
            // A zero row to lock; another agent may insert it first (its savepoint keeps
            // this transaction usable on PostgreSQL).
            let inserted = c.transaction(|c| {
                diesel::insert_into(login_failures::table)
                    .values((
                        login_failures::login.eq(login),
                        login_failures::failures.eq(0),
                        login_failures::first_failure_at.eq(now),
                        login_failures::locked_until.eq(None::<NaiveDateTime>),
                    ))
                    .execute(c)
            });
            match inserted {
                Ok(_)
                | Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => {}
                Err(e) => return Err(e),
            }
            lock(c)?;
        }
        let state = failure_state(c, login)?.filter(|s| s.failures > 0);
        let s = next(state.as_ref());
        diesel::update(login_failures::table.filter(login_failures::login.eq(login)))
            .set((
                login_failures::failures.eq(s.failures),
                login_failures::first_failure_at.eq(s.first_failure_at),
                login_failures::locked_until.eq(s.locked_until),
            ))
            .execute(c)?;
        Ok(s)
    })
}

/// Forgets a login's failures (after a successful login or an operator unlock).
pub fn clear_failures(c: &mut AnyConnection, login: &str) -> QueryResult<()> {
    diesel::delete(login_failures::table.filter(login_failures::login.eq(login)))
        .execute(c)
        .map(|_| ())
}

/// Drops counters whose window and lock are both over (keeps the table small).
pub fn prune_failures(c: &mut AnyConnection, older_than: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(
        login_failures::table
            .filter(login_failures::first_failure_at.lt(older_than))
            .filter(
                login_failures::locked_until
                    .is_null()
                    .or(login_failures::locked_until.lt(older_than)),
            ),
    )
    .execute(c)
}
