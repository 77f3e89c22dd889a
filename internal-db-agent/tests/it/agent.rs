//! The agent's behaviour, on SQLite and on PostgreSQL (FFS_TEST_POSTGRES_URL; a run without
//! it fails unless FFS_TEST_SKIP names `postgres`): first through `AgentService` directly,
//! then over real commlink sockets in both connection modes.

use std::time::Duration;

use crate::common::{Backend, PASSWORD, TestDb, seeded_agent, serve};
use commlink::msg::agent as m;
use commlink::{Fields, LinkError, Message, Tobj};
use internal_db_agent::service::LOGIN_DENIED;
use internal_db_agent::{Agent, AgentService, Mode, admin};

pub(crate) fn login(l: &str, pw: &str) -> m::Login {
    m::Login {
        login: l.into(),
        password: pw.into(),
        client_addr: "192.0.2.7".into(),
    }
}

/// Sends a typed request straight to the service; `Err((code, message))` for refusals.
pub(crate) async fn ask<R: commlink::Request>(
    svc: &AgentService,
    req: &R,
) -> Result<R::Response, (String, String)> {
    let reply = svc.handle(req.to_tobj(1)).await;
    let text = reply.encode();
    assert!(!text.contains("$argon2"), "a reply carried a hash: {text}");
    assert!(
        !text.contains(PASSWORD),
        "a reply carried the password: {text}"
    );
    if reply.kind == "ffs.error" {
        return Err((
            reply.fields.req_text("code").unwrap().to_owned(),
            reply.fields.req_text("message").unwrap().to_owned(),
        ));
    }
    Ok(R::Response::from_tobj(&reply).unwrap())
}

fn code<T: std::fmt::Debug>(r: Result<T, (String, String)>) -> (String, String) {
    r.expect_err("expected a refusal")
}

async fn bob_id(svc: &AgentService) -> i64 {
    ask(svc, &login("bob", PASSWORD)).await.unwrap().customer.id
}

async fn login_replies(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();

    let ok = ask(&svc, &login("alice", PASSWORD)).await.unwrap();
    assert_eq!(ok.customer.login, "alice");
    assert!(ok.customer.admin && !ok.customer.disabled);
    assert_eq!(ok.customer.email, "alice@example.com");

    let upper = ask(&svc, &login("  ALICE ", PASSWORD)).await.unwrap();
    assert_eq!(
        upper.customer.id, ok.customer.id,
        "logins are case-insensitive"
    );

    let wrong = code(ask(&svc, &login("bob", "not the password")).await);
    let unknown = code(ask(&svc, &login("nobody", PASSWORD)).await);
    let malformed = code(ask(&svc, &login("no body", PASSWORD)).await);
    assert_eq!(wrong, ("denied".to_owned(), LOGIN_DENIED.to_owned()));
    assert_eq!(
        unknown, wrong,
        "unknown login and wrong password must look alike"
    );
    assert_eq!(malformed, wrong);

    let disabled = code(ask(&svc, &login("carol", PASSWORD)).await);
    assert_eq!(disabled.0, "denied");
    assert!(disabled.1.contains("disabled"), "{disabled:?}");
    // Without the right password a disabled account looks like any failure.
    assert_eq!(
        code(ask(&svc, &login("carol", "wrong password")).await),
        wrong
    );
}

async fn lockout(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    // Threshold 3 in the test config.
    for _ in 0..3 {
        assert_eq!(code(ask(&svc, &login("bob", "guess")).await).0, "denied");
    }
    let locked = code(ask(&svc, &login("bob", PASSWORD)).await);
    assert_eq!(locked.0, "locked", "{locked:?}");
    assert!(locked.1.contains("try again after"), "{locked:?}");
    // Unknown logins are counted and locked the same way.
    for _ in 0..3 {
        assert_eq!(code(ask(&svc, &login("ghost", "guess")).await).0, "denied");
    }
    assert_eq!(code(ask(&svc, &login("ghost", "guess")).await).0, "locked");
    // Others are not affected; a success resets the count.
    ask(&svc, &login("alice", PASSWORD)).await.unwrap();
    for _ in 0..2 {
        code(ask(&svc, &login("alice", "guess")).await);
    }
    ask(&svc, &login("alice", PASSWORD)).await.unwrap();
    code(ask(&svc, &login("alice", "guess")).await);
    ask(&svc, &login("alice", PASSWORD)).await.unwrap();
    // The operator lifts the lock.
    admin::with(svc.pool(), |c| admin::unlock(c, "bob")).unwrap();
    ask(&svc, &login("bob", PASSWORD)).await.unwrap();
}

async fn revocation_feed(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let bob = bob_id(&svc).await;
    let feed = |after: i64| m::Revocations { after };
    // The seed disabled carol: that is the feed so far.
    let seed = ask(&svc, &feed(0)).await.unwrap().revocations;
    assert_eq!(seed.len(), 1, "{seed:?}");
    assert_eq!(seed[0].product, None);
    let start = seed[0].id;
    admin::with(svc.pool(), |c| admin::entitle(c, "bob", "tool", "*", None)).unwrap();
    let record = |product: &str, area: &str| m::RecordDownload {
        customer_id: bob,
        product: product.into(),
        version: "2.5".into(),
        files: vec!["f".into()],
        area_id: area.into(),
        client_addr: "192.0.2.1".into(),
    };
    ask(&svc, &record("widget", "w-1")).await.unwrap();
    ask(&svc, &record("tool", "t-1")).await.unwrap();

    // unentitle --revoke: that product's areas only; a plain unentitle records nothing.
    admin::with(svc.pool(), |c| admin::unentitle(c, "bob", "gadget", false)).unwrap();
    assert!(
        ask(&svc, &feed(start))
            .await
            .unwrap()
            .revocations
            .is_empty()
    );
    admin::with(svc.pool(), |c| admin::unentitle(c, "bob", "tool", true)).unwrap();
    let list = ask(&svc, &feed(start)).await.unwrap();
    assert_eq!(list.revocations.len(), 1, "{list:?}");
    let r = &list.revocations[0];
    assert_eq!((r.customer_id, r.product.as_deref()), (bob, Some("tool")));
    assert_eq!(r.area_ids, ["t-1"]);
    assert!(!list.more);

    // A disable: everything of the customer staged until then.
    admin::with(svc.pool(), |c| admin::set_disabled(c, "bob", true)).unwrap();
    let list = ask(&svc, &feed(r.id)).await.unwrap();
    assert_eq!(list.revocations.len(), 1, "{list:?}");
    let d = &list.revocations[0];
    assert_eq!((d.customer_id, d.product.as_deref()), (bob, None));
    assert_eq!(d.area_ids, ["t-1", "w-1"], "newest first");
    assert!(d.at.ends_with('Z'), "{}", d.at);
    // Enabling again records nothing; areas staged afterwards are never listed, so a web
    // frontend replaying the feed after a restart cannot revoke them.
    admin::with(svc.pool(), |c| admin::set_disabled(c, "bob", false)).unwrap();
    ask(&svc, &record("widget", "w-2")).await.unwrap();
    let all = ask(&svc, &feed(0)).await.unwrap();
    assert_eq!(all.revocations.len(), 3);
    assert!(
        all.revocations
            .iter()
            .all(|r| !r.area_ids.contains(&"w-2".to_string()))
    );
    assert!(ask(&svc, &feed(d.id)).await.unwrap().revocations.is_empty());
}

async fn authorize(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let bob = bob_id(&svc).await;
    let az = |product: &str, version: &str| m::Authorize {
        customer_id: bob,
        product: product.into(),
        version: version.into(),
    };
    let ok = ask(&svc, &az("widget", "2.5.1")).await.unwrap();
    assert_eq!(ok.entitlement.versions, ">=2.0, <3");
    assert_eq!(
        (ok.product.as_str(), ok.version.as_str()),
        ("widget", "2.5.1")
    );
    ask(&svc, &az("widget", "2.0")).await.unwrap();

    for v in ["3.0", "1.9.9", "latest"] {
        let (c, msg) = code(ask(&svc, &az("widget", v)).await);
        assert_eq!(c, "denied");
        assert!(msg.contains("outside the entitlement"), "{msg}");
    }
    let (c, msg) = code(ask(&svc, &az("gadget", "1.0")).await);
    assert_eq!(c, "denied");
    assert!(msg.contains("ended"), "expired: {msg}");
    let (c, msg) = code(ask(&svc, &az("gizmo", "1.0")).await);
    assert_eq!(c, "denied");
    assert!(msg.contains("not entitled"), "{msg}");
    let (c, _) = code(
        ask(
            &svc,
            &m::Authorize {
                customer_id: 987_654,
                product: "widget".into(),
                version: "2.1".into(),
            },
        )
        .await,
    );
    assert_eq!(c, "not-found");

    // A disabled customer is refused even with an entitlement.
    admin::with(svc.pool(), |c| {
        admin::entitle(c, "carol", "widget", "*", None)
    })
    .unwrap();
    let carol = admin::with(svc.pool(), |c| admin::show_customer(c, "carol"))
        .unwrap()
        .0
        .id;
    let (c, msg) = code(
        ask(
            &svc,
            &m::Authorize {
                customer_id: carol,
                product: "widget".into(),
                version: "2.1".into(),
            },
        )
        .await,
    );
    assert_eq!(c, "denied");
    assert!(msg.contains("disabled"), "{msg}");

    let current = ask(
        &svc,
        &m::Entitlements {
            customer_id: bob,
            include_expired: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(current.entitlements.len(), 1);
    assert_eq!(current.entitlements[0].product, "widget");
    let all = ask(
        &svc,
        &m::Entitlements {
            customer_id: bob,
            include_expired: true,
        },
    )
    .await
    .unwrap();
    let gadget = all
        .entitlements
        .iter()
        .find(|e| e.product == "gadget")
        .unwrap();
    assert!(gadget.expired);
    assert_eq!(gadget.expires_at.as_deref(), Some("2020-01-02T00:00:00Z"));
}

async fn record_and_history(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let bob = bob_id(&svc).await;
    let rec = |version: &str| m::RecordDownload {
        customer_id: bob,
        product: "widget".into(),
        version: version.into(),
        files: vec!["widget-2.5.iso".into(), "NOTES.txt".into()],
        area_id: "ar-1".into(),
        client_addr: "2001:db8::7".into(),
    };
    let h = ask(&svc, &rec("2.5")).await.unwrap();
    assert!(h.history_id > 0);
    // Outside the entitlement: refused and not recorded.
    assert_eq!(code(ask(&svc, &rec("3.1")).await).0, "denied");

    let dl = |bytes: u64, seq: Option<u64>| m::RecordDelivery {
        area_id: "ar-1".into(),
        file: "widget-2.5.iso".into(),
        bytes,
        protocol: "https".into(),
        stager_seq: seq,
        stager: None,
    };
    let first = ask(&svc, &dl(100, Some(1))).await.unwrap();
    assert!(first.delivery_id.is_some() && !first.duplicate);
    let again = ask(&svc, &dl(100, Some(1))).await.unwrap();
    assert!(again.duplicate && again.delivery_id.is_none());
    ask(&svc, &dl(50, Some(2))).await.unwrap();
    ask(&svc, &dl(7, None)).await.unwrap();
    let cursor = ask(&svc, &m::DeliveryCursor::default()).await.unwrap();
    assert_eq!(cursor.last_seq, Some(2));
    // Another stager numbers its own log: its seq 1 is a new delivery, its cursor its own.
    let west = |seq| m::RecordDelivery {
        stager: Some("west".into()),
        ..dl(0, Some(seq))
    };
    assert!(!ask(&svc, &west(1)).await.unwrap().duplicate);
    assert!(ask(&svc, &west(1)).await.unwrap().duplicate);
    let cursor = |s: Option<&str>| m::DeliveryCursor {
        stager: s.map(str::to_owned),
    };
    assert_eq!(
        ask(&svc, &cursor(Some("west"))).await.unwrap().last_seq,
        Some(1)
    );
    assert_eq!(ask(&svc, &cursor(None)).await.unwrap().last_seq, Some(2));
    assert_eq!(
        ask(&svc, &cursor(Some("east"))).await.unwrap().last_seq,
        None
    );

    let mine = ask(
        &svc,
        &m::History {
            customer_id: Some(bob),
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(mine.entries.len(), 1);
    let e = &mine.entries[0];
    assert_eq!(e.id, h.history_id);
    assert_eq!(e.login, "bob");
    assert_eq!(e.files, vec!["widget-2.5.iso", "NOTES.txt"]);
    assert_eq!((e.deliveries, e.delivered_bytes), (4, 157));
    assert_eq!(e.client_addr, "2001:db8::7");
    assert!(e.staged_at.ends_with('Z'));

    ask(&svc, &rec("2.6")).await.unwrap();
    let all = ask(
        &svc,
        &m::History {
            customer_id: None,
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(all.entries.len(), 2);
    assert_eq!(all.entries[0].version, "2.6", "newest first");
    let alice_id = ask(&svc, &login("alice", PASSWORD))
        .await
        .unwrap()
        .customer
        .id;
    let none = ask(
        &svc,
        &m::History {
            customer_id: Some(alice_id),
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert!(none.entries.is_empty());
    // The CLI's view of the same history.
    let rows = admin::with(svc.pool(), |c| admin::history(c, Some("bob"), 1)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].version, "2.6");
}

async fn admin_requests(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let alice = ask(&svc, &login("alice", PASSWORD))
        .await
        .unwrap()
        .customer
        .id;
    let bob = bob_id(&svc).await;

    let list = ask(&svc, &m::Customers {}).await.unwrap();
    let logins: Vec<&str> = list.customers.iter().map(|c| c.login.as_str()).collect();
    assert_eq!(logins, ["alice", "bob", "carol"]);
    assert!(list.customers[2].disabled);

    let detail = ask(
        &svc,
        &m::CustomerLookup {
            login: "bob".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(detail.customer.id, bob);
    assert_eq!(detail.entitlements.len(), 2, "expired ones included");
    assert_eq!(
        code(
            ask(
                &svc,
                &m::CustomerLookup {
                    login: "nobody".into()
                }
            )
            .await
        )
        .0,
        "not-found"
    );

    let grant = |by: i64, versions: &str| m::Entitle {
        by_customer_id: by,
        login: "bob".into(),
        product: "gizmo".into(),
        versions: versions.into(),
        until: Some("2999-12-31".into()),
    };
    assert_eq!(
        code(ask(&svc, &grant(bob, "^1")).await).0,
        "denied",
        "not an admin"
    );
    assert_eq!(code(ask(&svc, &grant(alice, "~1")).await).0, "bad-request");
    let done = ask(&svc, &grant(alice, "^1")).await.unwrap();
    assert_eq!(done.entitlement.versions, "^1");
    ask(
        &svc,
        &m::Authorize {
            customer_id: bob,
            product: "gizmo".into(),
            version: "1.4".into(),
        },
    )
    .await
    .unwrap();

    let un = |by: i64| m::Unentitle {
        by_customer_id: by,
        login: "bob".into(),
        product: "gizmo".into(),
        revoke: false,
    };
    assert_eq!(code(ask(&svc, &un(bob)).await).0, "denied");
    assert_eq!(ask(&svc, &un(alice)).await.unwrap().removed, 1);
    assert_eq!(ask(&svc, &un(alice)).await.unwrap().removed, 0);

    let dis = |by: i64, l: &str, d: bool| m::SetDisabled {
        by_customer_id: by,
        login: l.into(),
        disabled: d,
    };
    assert_eq!(code(ask(&svc, &dis(bob, "bob", true)).await).0, "denied");
    assert_eq!(
        code(ask(&svc, &dis(alice, "alice", true)).await).0,
        "bad-request"
    );
    assert!(
        ask(&svc, &dis(alice, "bob", true))
            .await
            .unwrap()
            .customer
            .disabled
    );
    assert!(
        code(ask(&svc, &login("bob", PASSWORD)).await)
            .1
            .contains("disabled")
    );
    assert!(
        !ask(&svc, &dis(alice, "bob", false))
            .await
            .unwrap()
            .customer
            .disabled
    );
    ask(&svc, &login("bob", PASSWORD)).await.unwrap();
}

async fn malformed_requests(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let bad = |kind: &str, f: Fields| Tobj::with_fields(kind, 3, f);
    for t in [
        bad("agent.bogus", Fields::new()),
        bad("stager.stage", Fields::new()),
        bad("agent.login", Fields::new().text("login", "alice")),
        bad(
            "agent.authorize",
            Fields::new()
                .text("customer_id", "x")
                .text("product", "p")
                .text("version", "1"),
        ),
        bad(
            "agent.record-delivery",
            Fields::new()
                .text("area_id", "a")
                .text("file", "f")
                .num("bytes", u64::MAX)
                .text("protocol", "https"),
        ),
        bad(
            "agent.history",
            Fields::new().object("customer_id", Fields::new().text("x", "1")),
        ),
    ] {
        let kind = t.kind.clone();
        let reply = svc.handle(t).await;
        assert_eq!(reply.kind, "ffs.error", "{kind}");
        assert_eq!(
            reply.fields.req_text("code").unwrap(),
            "bad-request",
            "{kind}"
        );
        assert!(!reply.fields.req_text("message").unwrap().is_empty());
    }
    ask(&svc, &login("alice", PASSWORD)).await.unwrap();
}

fn remote(r: Result<impl std::fmt::Debug, LinkError>) -> (String, String) {
    match r {
        Err(LinkError::Remote { code, message }) => (code, message),
        other => panic!("expected a refusal from the agent, got {other:?}"),
    }
}

/// The list, over a real socket.
async fn over_the_link(b: Backend, mode: Mode) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let served = serve(agent.clone(), mode).await;
    let client = served.client.clone();

    let ok = client.request(&login("bob", PASSWORD)).await.unwrap();
    assert_eq!(ok.customer.login, "bob");
    let bob = ok.customer.id;
    let wrong = remote(client.request(&login("bob", "wrong password")).await);
    let unknown = remote(client.request(&login("mallory", PASSWORD)).await);
    assert_eq!(wrong, ("denied".into(), LOGIN_DENIED.into()));
    assert_eq!(unknown, wrong);
    let disabled = remote(client.request(&login("carol", PASSWORD)).await);
    assert_eq!(disabled.0, "denied");
    assert!(disabled.1.contains("disabled"));

    let az = |product: &str, version: &str| m::Authorize {
        customer_id: bob,
        product: product.into(),
        version: version.into(),
    };
    client.request(&az("widget", "2.9")).await.unwrap();
    let expired = remote(client.request(&az("gadget", "1.0")).await);
    assert_eq!(expired.0, "denied");
    assert!(expired.1.contains("ended"), "{expired:?}");
    let outside = remote(client.request(&az("widget", "3.0")).await);
    assert_eq!(outside.0, "denied");
    assert!(outside.1.contains("outside"), "{outside:?}");

    let rec = client
        .request(&m::RecordDownload {
            customer_id: bob,
            product: "widget".into(),
            version: "2.9".into(),
            files: vec!["w.iso".into()],
            area_id: "area-9".into(),
            client_addr: "198.51.100.4".into(),
        })
        .await
        .unwrap();
    assert!(rec.history_id > 0);

    // Malformed requests: a clear refusal, and the same link keeps working.
    let malformed = remote(
        client
            .call(Tobj::with_fields(
                "agent.authorize",
                0,
                Fields::new().text("customer_id", "seven"),
            ))
            .await,
    );
    assert_eq!(malformed.0, "bad-request");
    let unknown_type = remote(client.call(Tobj::new("agent.drop-tables", 0)).await);
    assert_eq!(unknown_type.0, "bad-request");
    assert!(unknown_type.1.contains("unknown request type"));
    client.request(&login("bob", PASSWORD)).await.unwrap();

    // An oversized request: refused (the agent drops that connection after saying why),
    // and the agent keeps serving once the link is re-established.
    let huge = login("bob", &"x".repeat(crate::common::AGENT_MAX_LINE * 2));
    let r = client.request(&huge).await;
    eprintln!("oversized request ({mode:?}): {r:?}");
    assert!(r.is_err(), "an oversized request was answered: {r:?}");
    // The agent's line limit refused it before any password check.
    assert!(format!("{r:?}").contains("longer than"), "{r:?}");
    let mut back = false;
    for _ in 0..50 {
        if client.wait_up(Duration::from_secs(1)).await
            && client.request(&login("bob", PASSWORD)).await.is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the agent did not keep serving after an oversized request"
    );
    served.shutdown().await;
}

async fn over_the_link_listen(b: Backend) {
    over_the_link(b, Mode::Listen).await
}

async fn over_the_link_dial_out(b: Backend) {
    over_the_link(b, Mode::DialOut).await
}

/// A prepare the web gave up (its record went unanswered, the area withdrawn, the customer
/// told it failed) leaves no history row, whichever reaches the agent first: a record that
/// arrived before the withdrawal is removed, one that arrives after is refused. Resends of
/// the withdrawal are harmless.
async fn withdrawn_prepares_leave_no_history(b: Backend) {
    let Some(db) = TestDb::new(b) else { return };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let bob = bob_id(&svc).await;
    let rec = |area: &str| m::RecordDownload {
        customer_id: bob,
        product: "widget".into(),
        version: "2.5".into(),
        files: vec!["widget-2.5.iso".into()],
        area_id: area.into(),
        client_addr: "192.0.2.9".into(),
    };
    let withdraw = |area: &str| m::WithdrawDownload {
        customer_id: bob,
        area_id: area.into(),
    };
    let areas = || async {
        ask(
            &svc,
            &m::History {
                customer_id: Some(bob),
                limit: 100,
            },
        )
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.area_id)
        .collect::<Vec<_>>()
    };
    // Kept: recorded and never withdrawn.
    ask(&svc, &rec("kept")).await.unwrap();
    // The record arrived, then the withdrawal: the row goes.
    ask(&svc, &rec("late-answer")).await.unwrap();
    assert_eq!(
        ask(&svc, &withdraw("late-answer")).await.unwrap().removed,
        1
    );
    assert_eq!(
        ask(&svc, &withdraw("late-answer")).await.unwrap().removed,
        0
    );
    // The withdrawal arrived first: the record is refused when it comes.
    assert_eq!(
        ask(&svc, &withdraw("late-record")).await.unwrap().removed,
        0
    );
    assert_eq!(code(ask(&svc, &rec("late-record")).await).0, "not-found");
    assert_eq!(areas().await, ["kept"]);
    // Malformed.
    assert_eq!(code(ask(&svc, &withdraw("")).await).0, "bad-request");
}

on_both_backends!(
    login_replies,
    lockout,
    revocation_feed,
    authorize,
    record_and_history,
    withdrawn_prepares_leave_no_history,
    admin_requests,
    malformed_requests,
    over_the_link_listen,
    over_the_link_dial_out,
);

// Start-up failures: clear messages naming the path and what to do.

async fn open_err(database: String) -> String {
    let cfg = internal_db_agent::AgentConfig {
        database,
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        ..Default::default()
    };
    match Agent::open_async(&cfg).await {
        Ok(_) => panic!("opened {}", cfg.database),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn startup_fails_clearly_when_the_db_directory_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("no-such-dir");
    let msg = open_err(format!("sqlite://{}/ffs.db", dir.display())).await;
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("does not exist") && msg.contains("mkdir -p"),
        "{msg}"
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn startup_fails_clearly_when_the_db_directory_is_unwritable() {
    // /proc refuses new files even for root.
    let msg = open_err("sqlite:///proc/ffs.db".into()).await;
    assert!(
        msg.contains("/proc") && msg.contains("not writable"),
        "{msg}"
    );
    // And for a non-root user, an ordinary read-only directory.
    let t = tempfile::tempdir().unwrap();
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let probe = ro.join("probe");
    let root = std::fs::write(&probe, b"x").is_ok();
    if !root {
        let msg = open_err(format!("sqlite://{}/ffs.db", ro.display())).await;
        assert!(msg.contains("not writable"), "{msg}");
    }
}

#[tokio::test]
async fn startup_keeps_the_real_postgres_error() {
    // Nothing listens on port 1: the backend's own message must survive, minus the password.
    let msg = open_err("postgres://ffs:s3cret@127.0.0.1:1/ffs".into()).await;
    assert!(
        msg.contains("cannot connect to postgres://ffs:***@127.0.0.1:1/ffs"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(!msg.contains("multiconnection"), "{msg}");
    assert!(
        msg.to_lowercase().contains("refused") || msg.contains("connect"),
        "{msg}"
    );
}

#[tokio::test]
async fn startup_refuses_an_unknown_scheme() {
    let msg = open_err("mysql://u@h/db".into()).await;
    assert!(
        msg.contains("sqlite://") && msg.contains("postgres://"),
        "{msg}"
    );
}

#[tokio::test]
async fn reopening_keeps_the_data_and_migrations_are_idempotent() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    {
        let (agent, _) = seeded_agent(&db).await;
        drop(agent);
    }
    let agent = Agent::open_async(&db.config()).await.unwrap();
    ask(&agent.service(), &login("alice", PASSWORD))
        .await
        .unwrap();
}

// `run`, as `ffs db-agent` calls it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_dial_out_mode_serves_until_shutdown() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    drop(seeded_agent(&db).await);
    let bag = std::sync::Arc::new(commlink::KeyBag::generate(8).unwrap());
    let web_side = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = web_side.local_addr().unwrap();
    let client = commlink::Client::accept(web_side, crate::common::link_cfg(&bag, 1 << 20));
    let cfg = internal_db_agent::AgentConfig {
        mode: Mode::DialOut,
        dial: addr.to_string(),
        ..db.config()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let link = crate::common::link_cfg(&bag, 1 << 20);
    let task = tokio::spawn(internal_db_agent::run(cfg, link, async move {
        let _ = stopped.await;
    }));
    assert!(client.wait_up(Duration::from_secs(5)).await);
    client.request(&login("alice", PASSWORD)).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run did not stop on shutdown")
        .unwrap()
        .unwrap();
}

/// The inside host's case: the agent's only way out is a web proxy. It dials out through a
/// real squid (Basic auth, CONNECT to the web's agent port only), the web end takes proxied
/// initiators, logins work, and squid's logs hold the CONNECT but not the login name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_dial_out_mode_through_a_connect_proxy() {
    use ffs_testkit::squid::{Policy, Squid};
    let db = TestDb::new(Backend::Sqlite).unwrap();
    drop(seeded_agent(&db).await);
    let bag = std::sync::Arc::new(commlink::KeyBag::generate(8).unwrap());
    let web_side = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = web_side.local_addr().unwrap();
    let Some(squid) = Squid::start(addr.port(), Policy::Auth) else {
        return;
    };
    let mut web_link = crate::common::link_cfg(&bag, 1 << 20);
    web_link.accept_proxied = true;
    let client = commlink::Client::accept(web_side, web_link);
    let cfg = internal_db_agent::AgentConfig {
        mode: Mode::DialOut,
        dial: format!("tcp://{addr}"),
        proxy: squid.url(true),
        ..db.config()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let link = crate::common::link_cfg(&bag, 1 << 20);
    let task = tokio::spawn(internal_db_agent::run(cfg, link, async move {
        let _ = stopped.await;
    }));
    assert!(
        client.wait_up(Duration::from_secs(10)).await,
        "{}",
        squid.log("cache.log")
    );
    client.request(&login("alice", PASSWORD)).await.unwrap();
    let wrong = remote(client.request(&login("alice", "wrong password")).await);
    assert_eq!(wrong, ("denied".into(), LOGIN_DENIED.into()));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run did not stop on shutdown")
        .unwrap()
        .unwrap();
    drop(client);
    ffs_testkit::wait::until(Duration::from_secs(60), || {
        squid.log("access.log").contains("CONNECT")
    })
    .await;
    let log = squid.log("access.log");
    assert!(log.contains(&format!("CONNECT {addr}")), "{log}");
    let all = format!("{log}{}", squid.log("cache.log"));
    assert!(!all.contains("alice") && !all.contains(PASSWORD), "{all}");
}

#[tokio::test]
async fn run_reports_a_busy_listen_address() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cfg = internal_db_agent::AgentConfig {
        listen: addr.clone(),
        ..db.config()
    };
    let bag = std::sync::Arc::new(commlink::KeyBag::generate(8).unwrap());
    let e = internal_db_agent::run(
        cfg,
        crate::common::link_cfg(&bag, 1 << 20),
        std::future::pending(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains(&addr) && e.contains("[db-agent] listen"), "{e}");
}

/// What `ffs demo` uses: repeatable provisioning.
#[tokio::test]
async fn ensure_customer_creates_then_resets() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (agent, cfg) = seeded_agent(&db).await;
    let svc = agent.service();
    let hasher = cfg.hasher().unwrap();
    let demo = |password: &'static str, is_admin: bool| admin::NewCustomer {
        login: "demo",
        name: "Demo Customer",
        email: "demo@example.com",
        password,
        admin: is_admin,
    };
    let first = admin::with(svc.pool(), |c| {
        let cu = admin::ensure_customer(c, &hasher, &demo("first password", true))?;
        admin::entitle(c, "demo", "widget", "^2", None)?;
        Ok(cu)
    })
    .unwrap();
    assert!(first.admin);
    ask(&svc, &login("demo", "first password")).await.unwrap();
    // Lock it and disable it; ensure_customer brings it back to the given state.
    for _ in 0..3 {
        code(ask(&svc, &login("demo", "guess")).await);
    }
    admin::with(svc.pool(), |c| admin::set_disabled(c, "demo", true)).unwrap();
    let again = admin::with(svc.pool(), |c| {
        admin::ensure_customer(c, &hasher, &demo("second password", false))
    })
    .unwrap();
    assert_eq!(again.id, first.id);
    assert!(!again.admin && !again.disabled);
    let ok = ask(&svc, &login("demo", "second password")).await.unwrap();
    assert!(!ok.customer.admin);
    assert_eq!(
        code(ask(&svc, &login("demo", "first password")).await).0,
        "denied"
    );
    // The entitlement survived.
    ask(
        &svc,
        &m::Authorize {
            customer_id: ok.customer.id,
            product: "widget".into(),
            version: "2.7".into(),
        },
    )
    .await
    .unwrap();
}

/// PostgreSQL restarts: pooled connections die; the agent answers clearly and reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_killed_under_the_agent_are_replaced() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    ask(&svc, &login("bob", PASSWORD)).await.unwrap();
    assert!(db.kill_pg_sessions() >= 1);
    let mut recovered = false;
    for _ in 0..5 {
        match ask(&svc, &login("bob", PASSWORD)).await {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err((code, msg)) => {
                eprintln!("while reconnecting: {code}: {msg}");
                assert!(code == "internal" || code == "unavailable", "{code}: {msg}");
            }
        }
    }
    assert!(recovered, "the agent did not reconnect to PostgreSQL");
}

/// Dial-out mode: when the web frontend goes away and comes back on its agent port, the
/// agent dials it again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_agent_redials_a_restarted_web_frontend() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (agent, _) = seeded_agent(&db).await;
    let bag = std::sync::Arc::new(commlink::KeyBag::generate(8).unwrap());
    let web_side = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = web_side.local_addr().unwrap();
    let client = commlink::Client::accept(web_side, crate::common::link_cfg(&bag, 1 << 20));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let link = crate::common::link_cfg(&bag, 1 << 20);
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.serve_dialout(addr.to_string(), link, async move {
            let _ = stopped.await;
        })
        .await
    });
    assert!(client.wait_up(Duration::from_secs(5)).await);
    client.request(&login("alice", PASSWORD)).await.unwrap();

    // The web frontend stops (its listener and connection close) and starts again.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let web_side = tokio::net::TcpListener::bind(addr).await.unwrap();
    let client = commlink::Client::accept(web_side, crate::common::link_cfg(&bag, 1 << 20));
    assert!(
        client.wait_up(Duration::from_secs(10)).await,
        "the agent did not redial"
    );
    client.request(&login("alice", PASSWORD)).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// Arbitrary field soup for every request type: always a reply (the typed one or an
/// `ffs.error`), never a panic, never a hash; the service still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_always_get_a_reply() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (agent, _) = seeded_agent(&db).await;
    let svc = agent.service();
    let kinds = [
        m::Login::TYPE,
        m::Entitlements::TYPE,
        m::Authorize::TYPE,
        m::RecordDownload::TYPE,
        m::RecordDelivery::TYPE,
        m::DeliveryCursor::TYPE,
        m::History::TYPE,
        m::Customers::TYPE,
        m::CustomerLookup::TYPE,
        m::Entitle::TYPE,
        m::Unentitle::TYPE,
        m::SetDisabled::TYPE,
        "agent.nope",
    ];
    let names = [
        "login",
        "password",
        "client_addr",
        "customer_id",
        "include_expired",
        "product",
        "version",
        "files",
        "area_id",
        "bytes",
        "protocol",
        "stager_seq",
        "limit",
        "by_customer_id",
        "versions",
        "until",
        "disabled",
        "file",
    ];
    let long = "y".repeat(5000);
    let values = [
        "",
        "0",
        "-1",
        "1",
        "2",
        "3",
        "9223372036854775807",
        "18446744073709551615",
        "99999999999999999999",
        "true",
        "false",
        "alice",
        "bob",
        "*",
        ">=1, <2",
        "^0",
        "2027-01-01",
        "2020-01-01T00:00:00Z",
        "x\u{1}y",
        "日本語",
        "a\nb",
        "widget",
        "2.5",
        &long,
    ];
    // xorshift: reproducible without a seed file.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..400 {
        let kind = kinds[next(kinds.len())];
        let mut f = Fields::new();
        for _ in 0..next(8) {
            let name = names[next(names.len())];
            f = match next(6) {
                0 => f.object(name, Fields::new().text("x", values[next(values.len())])),
                1 => f.text_list(name, "file", [values[next(values.len())], "b"]),
                _ => f.text(name, values[next(values.len())]),
            };
        }
        let reply = svc.handle(Tobj::with_fields(kind, 1, f)).await;
        let text = reply.encode();
        assert!(!text.contains("$argon2"), "{text}");
        let outcome = match reply.kind.as_str() {
            "ffs.error" => reply.fields.req_text("code").unwrap().to_owned(),
            _ => "ok".to_owned(),
        };
        *seen.entry(outcome).or_default() += 1;
        if reply.kind == "ffs.error" {
            let code = reply.fields.req_text("code").unwrap();
            assert!(
                ["bad-request", "denied", "locked", "not-found"].contains(&code),
                "{kind}: {text}"
            );
        } else {
            assert!(
                reply.kind.starts_with(kind),
                "{kind} answered with {}",
                reply.kind
            );
        }
    }
    eprintln!("outcomes: {seen:?}");
    // The soup reaches past the decoder, not only into bad-request.
    assert!(seen.len() >= 3, "{seen:?}");
    ask(&svc, &m::Customers {}).await.unwrap();
}

/// The ordering behind revocations, on PostgreSQL (row locks; on SQLite the database write
/// lock orders them the same way): while a download is being recorded (its transaction holds
/// the customer's row lock, as `agent.record-download` does), a disable waits; once the
/// download is in, the disable's revocation lists its area. So a download prepared at the
/// instant of a disable never escapes revocation.
#[test]
fn a_disable_waits_for_a_download_being_recorded_and_then_revokes_its_area() {
    use diesel::connection::SimpleConnection as _;
    use diesel::{Connection as _, RunQueryDsl as _};
    use internal_db_agent::db::{AnyConnection, DbUrl};
    use internal_db_agent::store;

    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (agent, _) = rt.block_on(seeded_agent(&db));
    let svc = agent.service();
    let bob = rt.block_on(bob_id(&svc));
    let before = rt
        .block_on(ask(&svc, &m::Revocations { after: 0 }))
        .unwrap()
        .revocations
        .last()
        .map_or(0, |r| r.id);

    // A: the recording transaction, held open with the customer's row lock.
    let mut a = DbUrl::parse(&db.url).unwrap().connect().unwrap();
    a.batch_execute("BEGIN").unwrap();
    store::lock_customer(&mut a, bob).unwrap();
    let AnyConnection::Postgresql(pg) = &mut a else {
        unreachable!("a PostgreSQL URL")
    };
    let a_pid = diesel::sql_query("SELECT pg_backend_pid()::bigint AS n")
        .get_result::<N>(pg)
        .unwrap()
        .n;

    // B: the operator disables bob meanwhile.
    let pool = svc.pool().clone();
    let b = std::thread::spawn(move || admin::with(&pool, |c| admin::set_disabled(c, "bob", true)));
    let mut watch = diesel::PgConnection::establish(&db.url).unwrap();
    let mut waiting = || {
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE {a_pid} = ANY(pg_blocking_pids(pid))"
        ))
        .get_result::<N>(&mut watch)
        .unwrap()
        .n
    };
    let mut waited = false;
    for _ in 0..600 {
        if waiting() > 0 {
            waited = true;
            break;
        }
        assert!(
            !b.is_finished(),
            "the disable did not wait for the row lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(waited, "the disable never reached the customer's row lock");

    // A finishes recording, then B goes through.
    let files = vec!["f".to_string()];
    store::insert_download(
        &mut a,
        &store::NewDownload {
            customer_id: bob,
            product: "widget",
            version: "2.5",
            files: &files,
            area_id: "raced-1",
            client_addr: "192.0.2.1",
        },
    )
    .unwrap();
    a.batch_execute("COMMIT").unwrap();
    b.join().unwrap().unwrap();

    let list = rt
        .block_on(ask(&svc, &m::Revocations { after: before }))
        .unwrap();
    assert_eq!(list.revocations.len(), 1, "{list:?}");
    assert_eq!(list.revocations[0].area_ids, ["raced-1"]);
}

/// On SQLite the customer's lock is the database write lock, taken when the recording
/// transaction begins (`BEGIN IMMEDIATE`, `store::customer_transaction`), before it writes
/// anything: a disable (any other writer) cannot slip in between the record's check and its
/// insert, and goes through once the record commits. A failed closure rolls back and
/// releases the lock.
#[test]
fn on_sqlite_a_record_holds_the_write_lock_from_its_start() {
    use diesel::connection::SimpleConnection as _;
    use internal_db_agent::db::DbUrl;
    use internal_db_agent::store;

    let db = TestDb::new(Backend::Sqlite).expect("SQLite needs nothing installed");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (agent, _) = rt.block_on(seeded_agent(&db));
    let bob = rt.block_on(bob_id(&agent.service()));
    let mut a = DbUrl::parse(&db.url).unwrap().connect().unwrap();
    let mut b = DbUrl::parse(&db.url).unwrap().connect().unwrap();
    b.batch_execute("PRAGMA busy_timeout = 0").unwrap();
    let other_writer = "UPDATE customers SET disabled = disabled WHERE login = 'bob'";

    let r: Result<(), diesel::result::Error> = store::customer_transaction(&mut a, bob, |_| {
        // Nothing written yet, and already no other writer gets in.
        let e = b
            .batch_execute(other_writer)
            .expect_err("the write lock is held");
        assert!(e.to_string().contains("locked"), "{e}");
        Ok(())
    });
    r.unwrap();
    b.batch_execute(other_writer)
        .expect("free again after the commit");

    let r: Result<(), diesel::result::Error> = store::customer_transaction(&mut a, bob, |_| {
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(r.is_err());
    b.batch_execute(other_writer)
        .expect("free again after the rollback");
}
