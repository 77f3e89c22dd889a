//! Two agents on one database at once (active-active, as several `ffs db-agent` processes
//! on one PostgreSQL): every request below is sent to both agents concurrently, and the
//! database must end up as if each had been handled once, in some order.

use std::sync::Arc;

use crate::agent::{ask, login};
use crate::common::{Backend, PASSWORD, TestDb, seeded_agent};
use commlink::msg::agent as m;
use internal_db_agent::{Agent, AgentService, admin, store};

/// Two agents (separate pools) on one fresh, seeded database with lockout threshold `n`.
async fn two_agents(db: &TestDb, threshold: u32) -> (Arc<AgentService>, Arc<AgentService>) {
    let (first, _) = seeded_agent(db).await;
    let mut cfg = db.config();
    cfg.lockout_threshold = threshold;
    let a = Agent::open_async(&cfg).await.unwrap();
    let b = Agent::open_async(&cfg).await.unwrap();
    drop(first);
    (a.service(), b.service())
}

/// Runs `n` requests made by `make(i)`, alternating between the agents, all at once.
async fn on_both<R, F>(
    a: &Arc<AgentService>,
    b: &Arc<AgentService>,
    n: usize,
    make: F,
) -> Vec<Result<R::Response, (String, String)>>
where
    R: commlink::Request + Send + Sync + 'static,
    R::Response: Send + 'static,
    F: Fn(usize) -> R,
{
    let mut tasks = Vec::new();
    for i in 0..n {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        let req = make(i);
        tasks.push(tokio::spawn(async move { ask(&svc, &req).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn same_delivery_recorded_once(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let (a, b) = two_agents(&db, 5).await;
    // 40 deliveries from stager "east", each reported 4 times (two webs forwarding, each to
    // either agent), plus the same seqs from stager "west": all at once.
    let delivery = |stager: &str, seq: u64| m::RecordDelivery {
        area_id: format!("area-{stager}-{seq}"),
        file: "f.bin".into(),
        bytes: seq,
        protocol: "https".into(),
        stager_seq: Some(seq),
        stager: Some(stager.into()),
    };
    let replies = on_both(&a, &b, 320, |i| {
        let stager = if i % 8 < 4 { "east" } else { "west" };
        delivery(stager, (i / 8) as u64 + 1)
    })
    .await;
    let mut stored = replies
        .iter()
        .map(|r| r.as_ref().expect("recorded or duplicate"))
        .filter(|r| !r.duplicate)
        .map(|r| r.delivery_id.expect("an id for a stored row"))
        .collect::<Vec<_>>();
    assert_eq!(stored.len(), 80, "each (stager, seq) stored exactly once");
    stored.sort_unstable();
    stored.dedup();
    assert_eq!(stored.len(), 80);
    let (east, west) = {
        let cursor = |s: &str| m::DeliveryCursor {
            stager: Some(s.into()),
        };
        (
            ask(&a, &cursor("east")).await.unwrap().last_seq,
            ask(&b, &cursor("west")).await.unwrap().last_seq,
        )
    };
    assert_eq!((east, west), (Some(40), Some(40)));
    let rows = admin::with(a.pool(), |c| {
        use diesel::prelude::*;
        use internal_db_agent::schema::deliveries;
        Ok(deliveries::table.count().get_result::<i64>(c)?)
    })
    .unwrap();
    assert_eq!(rows, 80, "no row doubled or lost");
}

async fn lockout_counts_every_concurrent_failure(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    // 24 wrong passwords at once through two agents: each is counted (a lost update would
    // leave fewer), so the 24th locks the login exactly.
    let (a, b) = two_agents(&db, 24).await;
    let replies = on_both(&a, &b, 23, |_| login("bob", "guess")).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.0 == "denied"))
    );
    let failures = admin::with(a.pool(), |c| Ok(store::failure_state(c, "bob")?))
        .unwrap()
        .expect("a counter row")
        .failures;
    assert_eq!(failures, 23);
    // Not yet locked; the next failure (on either agent) locks it for both.
    assert_eq!(
        ask(&a, &login("bob", PASSWORD))
            .await
            .unwrap()
            .customer
            .login,
        "bob"
    );
    let replies = on_both(&a, &b, 24, |_| login("bob", "guess")).await;
    assert!(replies.iter().all(|r| r.is_err()));
    let locked = ask(&b, &login("bob", PASSWORD)).await.unwrap_err();
    assert_eq!(locked.0, "locked", "{locked:?}");
    let locked = ask(&a, &login("bob", PASSWORD)).await.unwrap_err();
    assert_eq!(locked.0, "locked", "{locked:?}");
}

async fn history_rows_from_both_agents(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let (a, b) = two_agents(&db, 5).await;
    let bob = ask(&a, &login("bob", PASSWORD)).await.unwrap().customer.id;
    let replies = on_both(&a, &b, 30, |i| m::RecordDownload {
        customer_id: bob,
        product: "widget".into(),
        version: "2.5".into(),
        files: vec!["w.iso".into()],
        area_id: format!("area-{i}"),
        client_addr: "192.0.2.1".into(),
    })
    .await;
    let mut ids: Vec<i64> = replies.into_iter().map(|r| r.unwrap().history_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "one history row per prepared download");
    let h = ask(
        &b,
        &m::History {
            customer_id: Some(bob),
            limit: 100,
        },
    )
    .await
    .unwrap();
    assert_eq!(h.entries.len(), 30);
    let mut areas: Vec<_> = h.entries.iter().map(|e| e.area_id.clone()).collect();
    areas.sort();
    areas.dedup();
    assert_eq!(areas.len(), 30);
}

on_both_backends!(
    same_delivery_recorded_once,
    lockout_counts_every_concurrent_failure,
    history_rows_from_both_agents,
);

/// A dial-out agent given two web frontends (`dial` as a list) serves both at once, and
/// keeps serving one when the other goes away; two such agents on one database serve the
/// same web side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_agents_serve_every_web_they_are_given() {
    use std::time::Duration;

    use internal_db_agent::Mode;
    let db = TestDb::new(Backend::Sqlite).unwrap();
    drop(seeded_agent(&db).await);
    let bag = Arc::new(commlink::KeyBag::generate(8).unwrap());
    let link = crate::common::link_cfg(&bag, 1 << 20);
    let mut webs = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        webs.push(commlink::Client::accept(l, link.clone()));
    }
    let cfg = internal_db_agent::AgentConfig {
        mode: Mode::DialOut,
        dial: addrs.join(","),
        ..db.config()
    };
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(internal_db_agent::run(
            cfg.clone(),
            link.clone(),
            async move {
                let _ = stopped.await;
            },
        )));
    }
    // Each web has both agents dialed in.
    for web in &webs {
        assert!(
            ffs_testkit::wait::until(Duration::from_secs(10), || web.live_connections() == 2).await
        );
        for _ in 0..4 {
            web.request(&login("alice", PASSWORD)).await.unwrap();
        }
    }
    // One agent stops: both webs keep being served by the other, without waiting.
    let _ = stops.remove(0).send(());
    tokio::time::timeout(Duration::from_secs(5), tasks.remove(0))
        .await
        .expect("the agent stops on shutdown")
        .unwrap()
        .unwrap();
    for web in &webs {
        assert!(
            ffs_testkit::wait::until(Duration::from_secs(10), || web.live_connections() == 1).await
        );
        for _ in 0..4 {
            web.request(&login("alice", PASSWORD)).await.unwrap();
        }
    }
    let _ = stops.remove(0).send(());
    tokio::time::timeout(Duration::from_secs(5), tasks.remove(0))
        .await
        .expect("the agent stops on shutdown")
        .unwrap()
        .unwrap();
}
