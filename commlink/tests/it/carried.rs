//! Links over streams a carrier endpoint accepted itself (the web's HTTPS upgrade, a relay
//! attachment) and handed to [`Client::accepting`]: no source port is visible there, so the
//! initiator's HELLO must announce a virtual port, and a plain port is refused.

use std::sync::Arc;
use std::time::Duration;

use commlink::{
    Acceptor, Carrier, Client, Fields, Incoming, KeyBag, LinkConfig, LinkError, Service, Tobj,
    serve_dialout_via,
};

/// Echoes the request's `text` back.
struct Echo;

impl Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        let text = request.fields.req_text("text").unwrap_or("").to_owned();
        Tobj::with_fields("test.echo", 0, Fields::new().text("text", text))
    }
}

/// A carrier that makes an in-memory stream pair and hands the far end to an accepting
/// client, as an HTTPS upgrade handler would; `announce_virtual` says what HELLO announces.
struct Handoff {
    acceptor: Acceptor,
    announce_virtual: bool,
}

impl Carrier for Handoff {
    type Stream = tokio::io::DuplexStream;

    fn target(&self) -> &str {
        "in-memory endpoint"
    }

    fn virtual_port(&self) -> bool {
        self.announce_virtual
    }

    async fn open(&self, _cfg: &LinkConfig) -> std::io::Result<(Self::Stream, u16)> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        self.acceptor
            .hand(Incoming::carried(far, "test handoff"))
            .await
            .map_err(|_| std::io::Error::other("the accepting client is gone"))?;
        Ok((near, 40_123))
    }
}

fn cfg() -> LinkConfig {
    // accept_proxied stays false: it governs raw TCP listeners only.
    LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")))
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

#[tokio::test]
async fn a_carried_stream_with_a_virtual_port_carries_the_link() {
    let cfg = cfg();
    let (client, acceptor) = Client::accepting(cfg.clone());
    let carrier = Handoff {
        acceptor,
        announce_virtual: true,
    };
    let responder = tokio::spawn(serve_dialout_via(
        carrier,
        cfg,
        Arc::new(Echo),
        std::future::pending::<()>(),
    ));
    assert!(client.wait_up(Duration::from_secs(10)).await, "link up");
    for i in 0..20 {
        let text = format!("hello {i}");
        assert_eq!(echo(&client, &text).await.expect("echo"), text);
    }
    responder.abort();
}

#[tokio::test]
async fn a_carried_stream_announcing_a_plain_port_is_refused() {
    let mut cfg = cfg();
    cfg.connect_timeout = Duration::from_secs(2);
    let (client, acceptor) = Client::accepting(cfg.clone());
    let carrier = Handoff {
        acceptor,
        announce_virtual: false,
    };
    let responder = tokio::spawn(serve_dialout_via(
        carrier,
        cfg,
        Arc::new(Echo),
        std::future::pending::<()>(),
    ));
    let err = echo(&client, "x").await.expect_err("never up");
    let text = err.to_string();
    assert!(
        text.contains("port-mismatch") || text.contains("virtual port"),
        "{text}"
    );
    assert!(!client.is_up());
    responder.abort();
}
