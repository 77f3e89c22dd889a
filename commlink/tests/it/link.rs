//! The commlink over real loopback TCP, in both dial directions.

use std::sync::Arc;
use std::time::Duration;

use commlink::crypto::{self, Side};
use commlink::handshake::{Hello, Welcome};
use commlink::{
    Client, Fields, KeyBag, LinkConfig, LinkError, Service, Suite, Tobj, serve, serve_dialout,
};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Replies with the request's payload reversed, so each reply proves which request it answers.
struct Reverse;

impl Service for Reverse {
    async fn call(&self, request: Tobj) -> Tobj {
        if request.kind == "test.fail" {
            return commlink::error_reply(commlink::RefusalCode::Denied, "as requested");
        }
        let text = request.fields.req_text("text").unwrap_or("").to_owned();
        // Finish out of order so replies overtake each other.
        let delay = text.len() as u64 % 7;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Tobj::with_fields(
            "test.reversed",
            0,
            Fields::new().text("text", text.chars().rev().collect::<String>()),
        )
    }
}

fn cfg(bag: &Arc<KeyBag>, suite: Suite) -> LinkConfig {
    let mut c = ffs_testkit::link::config_with(bag.clone());
    c.suite = suite;
    c
}

fn bag() -> Arc<KeyBag> {
    Arc::new(KeyBag::generate(128).unwrap())
}

async fn ask(client: &Client, text: &str) -> Result<String, LinkError> {
    let req = Tobj::with_fields("test.reverse", 0, Fields::new().text("text", text));
    let reply = client.call(req).await?;
    Ok(reply.fields.req_text("text")?.to_owned())
}

async fn thousand_concurrent(client: &Client) {
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let text = format!("request {i} <&> ünïcode\r\n");
            let got = ask(&c, &text).await.unwrap();
            assert_eq!(
                got,
                text.chars().rev().collect::<String>(),
                "reply {i} mismatched"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn listener_responder_serves_1000_concurrent_requests_per_suite() {
    for suite in Suite::ALL {
        let bag = bag();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            cfg(&bag, suite),
            Arc::new(Reverse),
            async {
                let _ = stopped.await;
            },
        ));
        let client = Client::dial(addr.to_string(), cfg(&bag, suite));
        thousand_concurrent(&client).await;
        // An error reply surfaces as Remote, and the link keeps working.
        let err = client.call(Tobj::new("test.fail", 0)).await.unwrap_err();
        assert!(
            err.refusal_code() == Some(commlink::RefusalCode::Denied),
            "{err}"
        );
        assert_eq!(ask(&client, "ok").await.unwrap(), "ko");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn dialout_responder_serves_1000_concurrent_requests() {
    let bag = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The requester listens; the responder (the inside host) dials out.
    let client = Client::accept(listener, cfg(&bag, Suite::Aes256Gcm));
    assert!(!client.is_up());
    let (stop, stopped) = oneshot::channel::<()>();
    let responder = tokio::spawn(serve_dialout(
        addr.to_string(),
        cfg(&bag, Suite::Aes256Gcm),
        Arc::new(Reverse),
        async {
            let _ = stopped.await;
        },
    ));
    assert!(client.wait_up(Duration::from_secs(5)).await);
    thousand_concurrent(&client).await;
    let _ = stop.send(());
    responder.await.unwrap();
    // The requester notices the responder has gone.
    assert!(ffs_testkit::wait::until(Duration::from_secs(10), || !client.is_up()).await);
    let err = ask(&client, "x").await.unwrap_err();
    assert!(matches!(err, LinkError::Down(_)), "{err}");
}

#[tokio::test]
async fn wrong_bag_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&bag(), Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let client = Client::dial(addr.to_string(), cfg(&bag(), Suite::Aes256Gcm));
    let err = ask(&client, "x").await.unwrap_err().to_string();
    assert!(
        err.contains("bag-mismatch") && err.contains("copy the same key bag"),
        "{err}"
    );
}

#[tokio::test]
async fn suite_mismatch_is_a_clear_error() {
    // An old-suite initiator against a default (aes256-gcm) acceptor, and the reverse: no
    // end falls back to the other's suite.
    for (accepts, offers) in [
        (Suite::Aes256Gcm, Suite::Tdes),
        (Suite::Tdes, Suite::Aes256Gcm),
        (Suite::Aes256Gcm, Suite::Des),
    ] {
        let b = bag();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            cfg(&b, accepts),
            Arc::new(Reverse),
            std::future::pending(),
        ));
        let client = Client::dial(addr.to_string(), cfg(&b, offers));
        let err = ask(&client, "x").await.unwrap_err().to_string();
        assert!(err.contains("suite"), "{err}");
        assert!(err.contains(accepts.name()), "{err}");
    }
}

#[tokio::test]
async fn unknown_suite_is_refused_with_code_suite() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&b, Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let s = TcpStream::connect(addr).await.unwrap();
    let port = s.local_addr().unwrap().port();
    let (r, mut w) = s.into_split();
    let hello = format!(
        "FFS/1 HELLO chacha99-poly {port} {} {}\r\n",
        "ab".repeat(16),
        b.fingerprint()
    );
    w.write_all(hello.as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.unwrap();
    assert!(line.starts_with("FFS/1 ERROR suite "), "{line}");
    assert!(
        line.contains("chacha99-poly") && line.contains("aes256-gcm"),
        "{line}"
    );
}

/// A port-rewriting middlebox: forwards bytes, but from its own source port, like NAT.
/// Linux may give a connection to another address the same ephemeral port the client
/// bound, which would be no rewrite at all: such an outbound connection is made again.
async fn nat(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, client)) = front.accept().await else {
                return;
            };
            tokio::spawn(async move {
                for _ in 0..10 {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    if outbound
                        .local_addr()
                        .is_ok_and(|a| a.port() == client.port())
                    {
                        continue;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn rewritten_source_port_is_detected() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&b, Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let client = Client::dial(nat(addr).await.to_string(), cfg(&b, Suite::Aes256Gcm));
    let err = ask(&client, "x").await.unwrap_err().to_string();
    assert!(
        err.contains("port-mismatch") && err.contains("NAT"),
        "{err}"
    );
}

#[tokio::test]
async fn client_reconnects_after_listener_restart() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        cfg(&b, Suite::Aes256Gcm),
        Arc::new(Reverse),
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::dial(addr.to_string(), cfg(&b, Suite::Aes256Gcm));
    assert_eq!(ask(&client, "abc").await.unwrap(), "cba");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ask(&client, "down").await.is_err());
    // Restart on the same port; the client redials by itself.
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&b, Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    assert!(
        client.wait_up(Duration::from_secs(5)).await,
        "client did not reconnect"
    );
    assert_eq!(ask(&client, "again").await.unwrap(), "niaga");
}

#[tokio::test]
async fn dialing_binds_inside_the_source_port_range() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = cfg(&bag(), Suite::Aes256Gcm);
    c.source_ports = Some((41_000, 41_099));
    let _client = Client::dial(addr.to_string(), c);
    let (_s, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        (41_000..=41_099).contains(&peer.port()),
        "port {}",
        peer.port()
    );
}

/// A hand-driven initiator: performs a real handshake, then sends whatever lines a test likes.
struct RawPeer {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    sealer: crypto::Sealer,
}

impl RawPeer {
    async fn connect(addr: std::net::SocketAddr, bag: &KeyBag) -> RawPeer {
        let s = TcpStream::connect(addr).await.unwrap();
        let port = s.local_addr().unwrap().port();
        let (r, mut w) = s.into_split();
        let mut reader = BufReader::new(r);
        let hello = Hello {
            suite: Suite::Aes256Gcm,
            port,
            virtual_port: false,
            nonce: [9; 16],
            bag: bag.fingerprint(),
        };
        w.write_all(format!("{}\r\n", hello.to_line()).as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let welcome = Welcome::parse(line.trim_end().as_bytes()).unwrap();
        let (sealer, _) = crypto::derive(
            Suite::Aes256Gcm,
            bag.entry_for_port(port),
            port,
            &[9; 16],
            &welcome.nonce,
            Side::Initiator,
        );
        RawPeer {
            reader,
            writer: w,
            sealer,
        }
    }

    async fn send(&mut self, line: &str) {
        let _ = self
            .writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await;
    }

    fn seal(&mut self, t: &Tobj) -> String {
        self.sealer.seal(t.encode().as_bytes())
    }

    /// Reads until the responder closes; true if it did within 3 s.
    async fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                sink.clear();
                match self.reader.read_until(b'\n', &mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        r.is_ok()
    }
}

fn hello_req() -> Tobj {
    Tobj::with_fields("ffs.hello", 0, Fields::new().text("role", "requester"))
}

#[tokio::test]
async fn tampered_replayed_and_oversized_packets_close_the_connection_only() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = cfg(&b, Suite::Aes256Gcm);
    c.max_line = 4096;
    tokio::spawn(serve(
        listener,
        c.clone(),
        Arc::new(Reverse),
        std::future::pending(),
    ));

    // A flipped bit.
    let mut p = RawPeer::connect(addr, &b).await;
    let h = p.seal(&hello_req());
    p.send(&h).await;
    let mut pkt = p.seal(&Tobj::with_fields(
        "test.reverse",
        1,
        Fields::new().text("text", "x"),
    ));
    let last = pkt.pop().unwrap();
    pkt.push(if last == 'A' { 'B' } else { 'A' });
    p.send(&pkt).await;
    assert!(
        p.closed().await,
        "tampered packet did not close the connection"
    );

    // A replayed packet.
    let mut p = RawPeer::connect(addr, &b).await;
    let h = p.seal(&hello_req());
    p.send(&h).await;
    let pkt = p.seal(&Tobj::with_fields(
        "test.reverse",
        1,
        Fields::new().text("text", "x"),
    ));
    p.send(&pkt).await;
    p.send(&pkt).await;
    assert!(
        p.closed().await,
        "replayed packet did not close the connection"
    );

    // An oversized line is refused while it is still arriving.
    let mut p = RawPeer::connect(addr, &b).await;
    p.send(&"A".repeat(10_000)).await;
    assert!(
        p.closed().await,
        "oversized line did not close the connection"
    );

    // 8-bit garbage.
    let mut p = RawPeer::connect(addr, &b).await;
    let _ = p.writer.write_all(b"\xff\xfe\r\n").await;
    assert!(p.closed().await);

    // The responder keeps serving well-behaved clients.
    let client = Client::dial(addr.to_string(), c);
    assert_eq!(ask(&client, "still here").await.unwrap(), "ereh llits");
}

#[tokio::test]
async fn garbage_handshake_is_refused_with_an_error_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&bag(), Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    w.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.unwrap();
    assert!(line.starts_with("FFS/1 ERROR malformed"), "{line}");
}

#[tokio::test]
async fn silent_peer_is_dropped_after_three_heartbeats() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = cfg(&b, Suite::Aes256Gcm);
    c.heartbeat = Duration::from_millis(200);
    tokio::spawn(serve(
        listener,
        c,
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let mut p = RawPeer::connect(addr, &b).await;
    let h = p.seal(&hello_req());
    p.send(&h).await;
    // Say nothing more: the responder must give up on us.
    assert!(p.closed().await, "silent peer was not dropped");
}

#[tokio::test]
async fn only_the_one_spelling_of_a_hello_is_accepted_on_the_wire() {
    let b = bag();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        cfg(&b, Suite::Aes256Gcm),
        Arc::new(Reverse),
        std::future::pending(),
    ));
    let nonce = "0123456789abcdef0123456789abcdef";
    let fp = b.fingerprint();
    // Each variant: how the port, nonce and fingerprint are spelled, and the reply expected.
    type Spell = fn(u16, &str, &str) -> String;
    let variants: [(Spell, &str); 6] = [
        (
            |p, n, f| format!("{p} {n} {f}"),
            "FFS/1 WELCOME aes256-gcm ",
        ),
        (|p, n, f| format!("0{p} {n} {f}"), "FFS/1 ERROR malformed"),
        (|p, n, f| format!("+{p} {n} {f}"), "FFS/1 ERROR malformed"),
        (
            |p, n, f| format!("{p} {} {f}", n.to_uppercase()),
            "FFS/1 ERROR malformed",
        ),
        (
            |p, n, f| format!("{p} {n} {}", f.to_uppercase()),
            "FFS/1 ERROR malformed",
        ),
        (|p, n, f| format!("{p}  {n} {f}"), "FFS/1 ERROR malformed"),
    ];
    for (spell, expected) in variants {
        let s = TcpStream::connect(addr).await.unwrap();
        let port = s.local_addr().unwrap().port();
        let hello = format!("FFS/1 HELLO aes256-gcm {}\r\n", spell(port, nonce, &fp));
        let (r, mut w) = s.into_split();
        w.write_all(hello.as_bytes()).await.unwrap();
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await.unwrap();
        assert!(line.starts_with(expected), "{hello:?} got {line:?}");
    }
}
