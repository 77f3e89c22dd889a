//! More than one back end per role: a web frontend dialing two db agents on one database
//! uses whichever is up and moves on when a link is down, within one backend deadline, but
//! never sends a request again once it may have been carried out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use commlink::{Client, Service, Tobj};
use web_frontend::backend::{Backend, BackendError, StagedArea};
use web_frontend::metrics::Metrics;

use crate::common::{PASSWORD, Stack};

const DEADLINE: Duration = Duration::from_millis(1500);

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
        let t = Instant::now();
        be.login("alice", PASSWORD, "192.0.2.1").await.unwrap();
        assert!(t.elapsed() < DEADLINE + Duration::from_millis(500));
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
    let t = Instant::now();
    let e = write.await.unwrap().unwrap_err();
    assert!(matches!(e, BackendError::Unreachable(..)), "{e}");
    assert!(t.elapsed() < DEADLINE);
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
