//! An accepting client with several responders dialed in (several db agents serving one web
//! frontend): requests spread over all of them, and killing one costs only the requests in
//! flight on it.

use std::sync::Arc;
use std::time::Duration;

use commlink::{Client, Fields, KeyBag, LinkError, Service, Tobj, serve_dialout};
use tokio::net::TcpListener;

/// Answers with its own name; `test.hang` is never answered (a request in flight).
struct Named(&'static str);

impl Service for Named {
    async fn call(&self, request: Tobj) -> Tobj {
        if request.kind == "test.hang" {
            std::future::pending::<()>().await;
        }
        Tobj::with_fields("test.named", 0, Fields::new().text("name", self.0))
    }
}

async fn who(client: &Client) -> Result<String, LinkError> {
    let reply = client
        .call(Tobj::with_fields("test.who", 0, Fields::new()))
        .await?;
    Ok(reply.fields.req_text("name")?.to_owned())
}

#[tokio::test]
async fn requests_spread_over_responders_and_survive_one_killed() {
    let bag = Arc::new(KeyBag::generate(64).unwrap());
    let cfg = ffs_testkit::link::config_with(bag);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client = Client::accept(listener, cfg.clone());
    let start = |name: &'static str| {
        tokio::spawn(serve_dialout(
            addr.clone(),
            cfg.clone(),
            Arc::new(Named(name)),
            std::future::pending::<()>(),
        ))
    };
    let a = start("a");
    let b = start("b");
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(10), || client.live_connections() == 2).await
    );

    // Both responders take requests.
    let mut names = Vec::new();
    for _ in 0..40 {
        names.push(who(&client).await.unwrap());
    }
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    assert!(names.iter().any(|n| n == "b"), "{names:?}");

    // One request in flight on each (the least-waiting choice puts the second on the
    // other connection).
    let hang = |c: &Client| {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(Tobj::with_fields("test.hang", 0, Fields::new()))
                .await
        })
    };
    let h1 = hang(&client);
    let h2 = hang(&client);
    // Both are waiting before a responder dies.
    tokio::task::yield_now().await;
    let mut answered = Vec::new();
    for _ in 0..10 {
        answered.push(who(&client).await.unwrap());
    }
    assert!(answered.iter().any(|n| n == "a") && answered.iter().any(|n| n == "b"));

    // Kill responder a (its socket is dropped, as a SIGKILL would).
    a.abort();
    // The request in flight on a fails as lost (it may have been carried out), at once
    // rather than after the request timeout; the one on b is still waiting.
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            r = h1 => (r.unwrap(), 1),
            r = h2 => (r.unwrap(), 2),
        }
    })
    .await
    .expect("the request on the killed responder fails promptly");
    assert!(matches!(first.0, Err(LinkError::Lost(_))), "{:?}", first.0);

    // Every new request is answered by b, without waiting for a to come back.
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(10), || client.live_connections() == 1).await
    );
    for _ in 0..20 {
        assert_eq!(who(&client).await.unwrap(), "b");
    }
    assert!(client.is_up());

    // When a returns it takes requests again.
    let a2 = start("a");
    assert!(
        ffs_testkit::wait::until(Duration::from_secs(10), || client.live_connections() == 2).await
    );
    let mut names = Vec::new();
    for _ in 0..20 {
        names.push(who(&client).await.unwrap());
    }
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    a2.abort();
    b.abort();
}

#[tokio::test]
async fn no_responder_is_down_not_lost() {
    let bag = Arc::new(KeyBag::generate(64).unwrap());
    let mut cfg = ffs_testkit::link::config_with(bag);
    cfg.connect_timeout = Duration::from_millis(200);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Client::accept(listener, cfg);
    // Never sent: another peer could be asked.
    assert!(matches!(who(&client).await, Err(LinkError::Down(_))));
}
