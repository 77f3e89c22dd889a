//! More than one back end per role: a web frontend dialing two db agents on one database
//! uses whichever is up and moves on when a link is down, within one backend deadline, but
//! never sends a request again once it may have been carried out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use commlink::{Client, Service, Tobj};
use web_frontend::backend::{Backend, BackendError, StagedArea};
use web_frontend::metrics::Metrics;

use crate::common::{PASSWORD, Stack};

/// The backend deadline these tests give the web: generous, so a loaded machine's slow
/// argon2 verification is not mistaken for a failure. What is asserted is the kind of
/// answer (served, or unreachable because the link was lost), not how fast it came.
const DEADLINE: Duration = Duration::from_secs(5);

fn backend(stack: &Stack, agents: Vec<Client>) -> Backend {
    Backend::with_agents(
        agents,
        stack.stager_client(),
        DEADLINE,
        Arc::new(Metrics::default()),
    )
}

async fn up(c: &Client) {
    assert!(c.wait_up(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_requests_fail_over_to_a_live_agent() {
    let mut stack = Stack::start().await;
    let extra = stack.extra_agent().await;
    let (a, b) = (
        stack.agent_client(),
        Client::dial(extra.addr.clone(), stack.link.clone()),
    );
    up(&a).await;
    up(&b).await;
    let be = backend(&stack, vec![a.clone(), b.clone()]);
    for _ in 0..6 {
        be.login("alice", PASSWORD, "192.0.2.1").await.unwrap();
    }
    assert_eq!(be.agents_up(), 2);

    // The first agent goes away: every request is still answered, each within one deadline.
    stack.stop_agent();
    assert!(ffs_testkit::wait::until(Duration::from_secs(10), || !a.is_up()).await);
    for _ in 0..6 {
        // Within the one deadline: a timeout would be an error here.
        be.login("alice", PASSWORD, "192.0.2.1").await.unwrap();
    }
    assert!(be.agent_up());

    // Both gone: unreachable (a 503 page), not a hang.
    extra.stop();
    assert!(ffs_testkit::wait::until(Duration::from_secs(10), || !b.is_up()).await);
    let e = be.login("alice", PASSWORD, "192.0.2.1").await.unwrap_err();
    assert!(matches!(e, BackendError::Unreachable(..)), "{e}");
    assert!(!be.agent_up());

    // One comes back: served again.
    stack.restart_agent().await;
    up(&a).await;
    be.login("alice", PASSWORD, "192.0.2.1").await.unwrap();
}

/// A commlink responder that takes requests and never answers (an agent that dies with the
/// request in flight).
struct BlackHole(Arc<AtomicUsize>);

impl Service for BlackHole {
    async fn call(&self, _request: Tobj) -> Tobj {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_in_flight_is_not_resent() {
    let stack = Stack::start().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hole = tokio::spawn(commlink::serve(
        listener,
        stack.link.clone(),
        Arc::new(BlackHole(seen.clone())),
        async {
            let _ = stopped.await;
        },
    ));
    let (dead, live) = (
        Client::dial(hole_addr, stack.link.clone()),
        stack.agent_client(),
    );
    up(&dead).await;
    up(&live).await;
    // The first request goes to the first agent (both up).
    let be = backend(&stack, vec![dead, live]);
    let alice = be.login("root", PASSWORD, "192.0.2.1").await;
    assert!(alice.is_err(), "the black hole took the first request");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let bob = be.login("bob", PASSWORD, "192.0.2.1").await.unwrap();

    // A history write lands on the black hole, which then dies: the web answers 503 at
    // once and does not send the write to the live agent (it may have been carried out).
    let area = StagedArea {
        area_id: "lost-in-flight".into(),
        ..staged()
    };
    let be2 = be.clone();
    let write = tokio::spawn(async move {
        be2.record_download(bob.id, &area, "beta", "1.0", "192.0.2.1")
            .await
    });
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(5), || seen.load(Ordering::SeqCst) == 2).await
    );
    let _ = stop.send(());
    let e = write.await.unwrap().unwrap_err();
    assert!(matches!(e, BackendError::Unreachable(..)), "{e}");
    // Answered because the link was lost, not after waiting out the deadline.
    assert!(!e.to_string().contains("no reply within"), "{e}");
    let _ = hole.await;
    let history = be.history(Some(bob.id), 100).await.unwrap();
    assert!(
        history.iter().all(|h| h.area_id != "lost-in-flight"),
        "the lost write was sent again: {history:?}"
    );
    // The next write goes to the live agent (the dead link is down, so skipped at once).
    let area = StagedArea {
        area_id: "after".into(),
        ..staged()
    };
    be.record_download(bob.id, &area, "beta", "1.0", "192.0.2.1")
        .await
        .unwrap();
    let history = be.history(Some(bob.id), 100).await.unwrap();
    assert_eq!(history.len(), 1);
}

fn staged() -> StagedArea {
    StagedArea {
        area_id: String::new(),
        ftp_user: String::new(),
        ftp_password: String::new(),
        token: String::new(),
        ftp_url: String::new(),
        https_base: String::new(),
        expires_at: String::new(),
        signed_by: String::new(),
        files: Vec::new(),
    }
}

// Several stagers.

use std::collections::BTreeMap;

use web_frontend::backend::StagerPeer;
use web_frontend::deliveries::Forwarder;

fn web_over(stack: &Stack, stagers: &[(&str, &str)]) -> Backend {
    Backend::with_peers(
        vec![stack.agent_client()],
        stagers
            .iter()
            .map(|(name, addr)| {
                StagerPeer::new(
                    *name,
                    *name,
                    Client::dial(addr.to_string(), stack.link.clone()),
                )
            })
            .collect(),
        DEADLINE,
        Arc::new(Metrics::default()),
    )
}

/// area id -> the stager that lists it.
async fn where_areas_are(be: &Backend) -> BTreeMap<String, String> {
    be.areas()
        .await
        .unwrap()
        .into_iter()
        .map(|(stager, a)| (a.area_id, stager))
        .collect()
}

/// Downloads one file of an area over HTTPS (curl) and checks its bytes.
async fn download(
    stack: &Stack,
    area: &web_frontend::backend::StagedArea,
    name: &str,
    want: &[u8],
) {
    let url = web_frontend::views::file_url(&area.https_base, name);
    let out = tokio::process::Command::new("curl")
        .args(["-skf", "--max-time", "20", &url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        crate::common::sha256_hex(&out.stdout),
        crate::common::sha256_hex(want),
        "{url}"
    );
    let _ = stack;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepares_spread_over_the_stagers_that_hold_the_release() {
    let stack = Stack::start().await;
    let mut b = stack.extra_stager("b").await;
    b.forget_release("alpha", "2.1");
    let be = web_over(&stack, &[("a", &stack.stager_addr), ("b", &b.addr)]);
    for s in be.stagers() {
        up(&s.client).await;
    }
    let alice = be.login("alice", PASSWORD, "192.0.2.1").await.unwrap();

    // alpha 2.0 is on both: prepares spread (fewest live areas first), and each area's
    // links name the stager that holds it.
    let mut staged = Vec::new();
    for _ in 0..6 {
        let area = be.stage("alpha", "2.0", vec![], "alice").await.unwrap();
        be.record_download(alice.id, &area, "alpha", "2.0", "192.0.2.1")
            .await
            .unwrap();
        staged.push(area);
    }
    let at = where_areas_are(&be).await;
    let on = |s: &str| staged.iter().filter(|a| at[&a.area_id] == s).count();
    assert_eq!((on("a"), on("b")), (3, 3), "{at:?}");
    let base_of = |s: &str| {
        let a = staged.iter().find(|a| at[&a.area_id] == s).unwrap();
        a.https_base.split("/d/").next().unwrap().to_owned()
    };
    assert_ne!(base_of("a"), base_of("b"));

    // alpha 2.1 only on a: every prepare lands there.
    for _ in 0..3 {
        let area = be.stage("alpha", "2.1", vec![], "alice").await.unwrap();
        assert_eq!(where_areas_are(&be).await[&area.area_id], "a");
    }

    // b goes down: new prepares land on a at once (its link is down, so it is skipped).
    let on_b = staged
        .iter()
        .find(|a| at[&a.area_id] == "b")
        .unwrap()
        .clone();
    b.stop();
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(10), || !be.stagers()[1].client.is_up()).await
    );
    for _ in 0..3 {
        // Within the deadline (a timeout would be an error): the down stager is skipped.
        let area = be.stage("alpha", "2.0", vec![], "alice").await.unwrap();
        assert_eq!(where_areas_are(&be).await[&area.area_id], "a");
    }
    assert!(be.stager_up());
    // The catalog still answers from the stager that is up.
    assert!(!be.catalog(false).await.unwrap().is_empty());

    // b returns: its areas work again.
    b.restart().await;
    up(&be.stagers()[1].client).await;
    download(
        &stack,
        &on_b,
        "alpha-2.0.bin",
        stack.file("alpha", "2.0", "alpha-2.0.bin"),
    )
    .await;

    // Deliveries from both stagers reach the agent once each, even with two web frontends
    // forwarding at the same time (each (stager, seq) is stored once).
    let on_a = staged
        .iter()
        .find(|a| at[&a.area_id] == "a")
        .unwrap()
        .clone();
    download(
        &stack,
        &on_a,
        "alpha-2.0.bin",
        stack.file("alpha", "2.0", "alpha-2.0.bin"),
    )
    .await;
    let other_web = web_over(&stack, &[("a", &stack.stager_addr), ("b", &b.addr)]);
    for s in other_web.stagers() {
        up(&s.client).await;
    }
    let metrics = Arc::new(Metrics::default());
    let mut f1 = Forwarder::new(be.clone(), metrics.clone(), Duration::from_secs(1));
    let mut f2 = Forwarder::new(other_web.clone(), metrics, Duration::from_secs(1));
    let (r1, r2) = tokio::join!(f1.poll_once(), f2.poll_once());
    r1.unwrap();
    r2.unwrap();
    let history = be.history(Some(alice.id), 100).await.unwrap();
    let delivered = |id: &str| history.iter().find(|h| h.area_id == id).unwrap().deliveries;
    assert_eq!(delivered(&on_a.area_id), 1);
    assert_eq!(delivered(&on_b.area_id), 1);
    assert_eq!(history.iter().map(|h| h.deliveries).sum::<u64>(), 2);
    assert!(be.delivery_cursor("a").await.unwrap() >= 1);
    assert!(be.delivery_cursor("b").await.unwrap() >= 1);

    // Unstaging asks every stager; the one holding the area removes it.
    assert!(be.unstage(&on_b.area_id).await.unwrap());
    assert!(!be.unstage(&on_b.area_id).await.unwrap());
    assert!(!where_areas_are(&be).await.contains_key(&on_b.area_id));

    // A yank reaches every stager: nowhere to stage it any more.
    assert!(be.yank("alpha", "2.0").await.unwrap());
    let e = be.stage("alpha", "2.0", vec![], "alice").await.unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::Refused {
                code: web_frontend::backend::RefusalCode::NotFound,
                ..
            }
        ),
        "{e}"
    );
    let status = be.stager_status().await;
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|s| s.up && s.stats.is_some()));
}

/// A release held only by a stager that is down is "temporarily unavailable" (503), not
/// "not found" (404): the stager may return, and the page offered it. A release no stager
/// holds, with every stager up, is still not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_only_a_down_stager_holds_is_unavailable_not_missing() {
    let stack = Stack::start().await;
    let b = stack.extra_stager("b").await;
    b.forget_release("alpha", "2.1");
    let c = stack.extra_stager("c").await;
    let be = web_over(&stack, &[("b", &b.addr), ("c", &c.addr)]);
    for s in be.stagers() {
        up(&s.client).await;
    }
    let not_found = |e: &BackendError| {
        matches!(
            e,
            BackendError::Refused {
                code: web_frontend::backend::RefusalCode::NotFound,
                ..
            }
        )
    };
    let e = be.stage("alpha", "9.9", vec![], "alice").await.unwrap_err();
    assert!(not_found(&e), "{e}");
    be.stage("alpha", "2.1", vec![], "alice").await.unwrap();

    c.stop();
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(10), || !be.stagers()[1].client.is_up()).await
    );
    let e = be.stage("alpha", "2.1", vec![], "alice").await.unwrap_err();
    assert!(matches!(e, BackendError::Unreachable(..)), "{e}");
    // What b holds is still staged there.
    be.stage("alpha", "2.0", vec![], "alice").await.unwrap();
    b.stop();
}

/// The web keeps the catalog it last received from a stager and names it (`if_not`): while
/// the stager's catalog is unchanged it is not sent again and the pages use the one held;
/// a change on the stager shows at the next page all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_catalog_is_not_sent_again_and_a_change_shows_at_once() {
    let stack = Stack::start().await;
    let b = stack.extra_stager("b").await;
    let be = web_over(&stack, &[("b", &b.addr)]);
    up(&be.stagers()[0].client).await;
    let first = be.catalog(false).await.unwrap();
    let holds = |c: &[commlink::msg::stager::ReleaseInfo]| {
        c.iter().any(|r| r.product == "alpha" && r.version == "2.1")
    };
    assert!(holds(&first), "{first:?}");
    let again = be.catalog(false).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the stager sent its unchanged catalog again"
    );
    b.forget_release("alpha", "2.1");
    let changed = be.catalog(false).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
    assert!(!holds(&changed), "{changed:?}");
    assert_eq!(changed.len() + 1, first.len());
    // The admin view (yanked releases too) is held on its own.
    let all = be.catalog(true).await.unwrap();
    assert!(Arc::ptr_eq(&all, &be.catalog(true).await.unwrap()));
    assert!(!Arc::ptr_eq(&all, &changed));
}
