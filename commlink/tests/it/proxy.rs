//! The commlink through a real HTTP forward proxy (squid) with `CONNECT`: the tunnel carries
//! the link with a virtual port, the proxy's refusals reach the operator with their status
//! line, and nothing readable crosses the proxy.

use std::sync::Arc;
use std::time::Duration;

use commlink::{Client, Fields, KeyBag, LinkConfig, LinkError, Proxy, Service, Tobj, serve};
use ffs_testkit::port::free_port;
use ffs_testkit::squid::{Policy, Squid, USER};
use tokio::net::TcpListener;

/// Echoes the request's `text` back.
struct Echo;

impl Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        let text = request.fields.req_text("text").unwrap_or("").to_owned();
        Tobj::with_fields("test.echo", 0, Fields::new().text("text", text))
    }
}

/// The access log once it holds a line containing `needle` (squid writes a CONNECT's line
/// when its tunnel closes).
async fn access_log_with(squid: &Squid, needle: &str) -> String {
    let seen = ffs_testkit::wait::until(Duration::from_secs(60), || {
        squid.log("access.log").contains(needle)
    })
    .await;
    let log = squid.log("access.log");
    assert!(seen, "squid's access log never showed {needle:?}: {log}");
    log
}

/// A listening responder that takes proxied initiators; returns its port.
async fn acceptor(cfg: &LinkConfig) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut cfg = cfg.clone();
    cfg.accept_proxied = true;
    tokio::spawn(serve(
        listener,
        cfg,
        Arc::new(Echo),
        std::future::pending::<()>(),
    ));
    port
}

async fn echo(client: &Client, text: &str) -> Result<String, LinkError> {
    let reply = client
        .call(Tobj::with_fields(
            "test.echo",
            0,
            Fields::new().text("text", text),
        ))
        .await?;
    Ok(reply.fields.req_text("text")?.to_owned())
}

/// Calls until the link error mentions `needle` (the first call may still see "not yet
/// connected"); returns that error.
async fn down_with(client: &Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..10 {
        match echo(client, "x").await {
            Ok(r) => panic!("the link worked through a refusing proxy: {r}"),
            Err(e) => last = e.to_string(),
        }
        if last.contains(needle) {
            return last;
        }
    }
    panic!("the link error never named {needle:?}: {last}");
}

#[tokio::test]
async fn the_link_runs_through_squid_connect_with_basic_auth_and_nothing_readable_crosses() {
    let cfg = ffs_testkit::link::config_with(Arc::new(KeyBag::generate(128).expect("a bag")));
    let link_port = acceptor(&cfg).await;
    let Some(squid) = Squid::start(link_port, Policy::Auth) else {
        return;
    };
    let target = format!("127.0.0.1:{link_port}");
    let client = Client::dial_via(
        Proxy::new(&squid.url(true), target.clone()).expect("proxy URL"),
        cfg.clone(),
    );
    let secret_login = "alice-through-the-proxy@example.com";
    for i in 0..20 {
        let text = format!("{secret_login} request {i}");
        assert_eq!(echo(&client, &text).await.expect("echoed"), text);
    }
    drop(client);
    let log = access_log_with(&squid, "CONNECT").await;
    assert!(log.contains(&format!("CONNECT {target}")), "{log}");
    assert!(
        log.contains(USER),
        "squid logged the authenticated user: {log}"
    );
    let everything = format!("{log}{}", squid.log("cache.log"));
    assert!(
        !everything.contains("alice-through-the-proxy"),
        "{everything}"
    );

    // Without credentials the proxy says 407, and the operator sees that status line.
    let anonymous = Client::dial_via(
        Proxy::new(&squid.url(false), target.clone()).expect("proxy URL"),
        cfg.clone(),
    );
    let err = down_with(&anonymous, "407").await;
    assert!(err.contains("refused CONNECT"), "{err}");
    assert!(err.contains("Proxy Authentication Required"), "{err}");

    // A port the proxy's acl does not allow is refused (403) too.
    let elsewhere = Client::dial_via(
        Proxy::new(&squid.url(true), format!("127.0.0.1:{}", free_port())).expect("proxy URL"),
        cfg,
    );
    down_with(&elsewhere, "403").await;
}

#[tokio::test]
async fn a_proxy_that_denies_connect_is_reported_with_its_status_line() {
    let cfg = ffs_testkit::link::config_with(Arc::new(KeyBag::generate(128).expect("a bag")));
    let link_port = acceptor(&cfg).await;
    let Some(squid) = Squid::start(link_port, Policy::DenyConnect) else {
        return;
    };
    let client = Client::dial_via(
        Proxy::new(&squid.url(false), format!("127.0.0.1:{link_port}")).expect("proxy URL"),
        cfg,
    );
    let err = down_with(&client, "403").await;
    assert!(err.contains("HTTP/1.1 403 Forbidden"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", squid.port)), "{err}");
}

#[tokio::test]
async fn an_acceptor_not_configured_for_proxied_initiators_refuses_them_clearly() {
    let cfg = ffs_testkit::link::config_with(Arc::new(KeyBag::generate(128).expect("a bag")));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let link_port = listener.local_addr().expect("address").port();
    tokio::spawn(serve(
        listener,
        cfg.clone(),
        Arc::new(Echo),
        std::future::pending::<()>(),
    ));
    let Some(squid) = Squid::start(link_port, Policy::Open) else {
        return;
    };
    let client = Client::dial_via(
        Proxy::new(&squid.url(false), format!("127.0.0.1:{link_port}")).expect("proxy URL"),
        cfg,
    );
    let err = down_with(&client, "virtual-port").await;
    assert!(err.contains("accept_proxied"), "{err}");
}
