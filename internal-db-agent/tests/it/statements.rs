//! The queries of the prepare and product-page path stay prepared: each is one diesel
//! cached statement (prepared once per connection, taken from the cache afterwards), and
//! none binds a `LIMIT`, which SQLite's planner reads, so binding it again would make SQLite
//! re-prepare the cached statement on every call. On SQLite and PostgreSQL.

use std::sync::{Arc, Mutex};

use diesel::Connection as _;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use internal_db_agent::admin;
use internal_db_agent::store;

use crate::common::{Backend, TestDb, seeded_agent};

/// What diesel reported: the SQL of each query run and of each statement it prepared for
/// its cache.
#[derive(Default)]
struct Seen {
    run: Vec<String>,
    cached: Vec<String>,
}

fn record(seen: &Arc<Mutex<Seen>>) -> impl Instrumentation {
    let seen = Arc::clone(seen);
    move |event: InstrumentationEvent<'_>| {
        let mut s = seen.lock().unwrap();
        match event {
            InstrumentationEvent::StartQuery { query, .. } => s.run.push(query.to_string()),
            InstrumentationEvent::CacheQuery { sql, .. } => s.cached.push(sql.to_string()),
            _ => {}
        }
    }
}

async fn hot_queries_stay_prepared(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _cfg) = seeded_agent(&db).await;
    let pool = agent.service().pool().clone();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let bob = admin::with(&pool, |c| {
        Ok(store::customer_by_login(c, "bob")?.expect("bob").id)
    })
    .unwrap();
    // The queries an authorize, a recorded download (less its insert) and a product page
    // make, plus the other lookups by a unique key; twice on one connection.
    let round = |c: &mut internal_db_agent::db::AnyConnection| -> diesel::QueryResult<()> {
        let now = store::now();
        let e = store::entitlement_for(c, bob, "widget", now)?.expect("bob's widget");
        assert_eq!(e.versions, ">=2.0, <3");
        assert!(store::entitlement_for(c, bob, "nothing", now)?.is_none());
        assert_eq!(store::entitlements_of(c, bob, true, now)?.len(), 2);
        assert_eq!(
            store::customer_by_id(c, bob)?.map(|p| p.login),
            Some("bob".to_string())
        );
        assert!(store::customer_by_login(c, "nobody")?.is_none());
        assert!(store::failure_state(c, "bob")?.is_none());
        assert_eq!(store::max_stager_seq(c, "s1")?, None);
        Ok(())
    };
    // A connection of its own, so nothing was prepared on it before.
    let mut c = internal_db_agent::db::DbUrl::parse(&db.url)
        .unwrap()
        .connect()
        .unwrap();
    c.set_instrumentation(record(&seen));
    round(&mut c).unwrap();
    let first = std::mem::take(&mut *seen.lock().unwrap());
    round(&mut c).unwrap();
    let second = std::mem::take(&mut *seen.lock().unwrap());
    assert!(first.run.len() >= 8, "queries seen: {:?}", first.run);
    for q in first.run.iter().chain(&second.run) {
        assert!(
            !q.to_uppercase().contains("LIMIT"),
            "a bound LIMIT makes SQLite re-prepare the statement on every call: {q}"
        );
    }
    // Every distinct query was prepared into the cache the first time…
    let mut distinct: Vec<&str> = first
        .run
        .iter()
        .map(|q| q.split(" -- binds").next().unwrap_or(q))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        first.cached.len(),
        distinct.len(),
        "each query should be a cached statement: cached {:?}, run {:?}",
        first.cached,
        distinct
    );
    // …and taken from it the second time.
    assert_eq!(second.run.len(), first.run.len(), "{:?}", second.run);
    assert!(
        second.cached.is_empty(),
        "prepared again: {:?}",
        second.cached
    );
}

on_both_backends!(hot_queries_stay_prepared);
