//! `ftp_stager::http_client` against a real stager's HTTPS listener: trust by CA file and
//! by pin (a wrong pin and an unrelated CA refused in the handshake), a streamed PUT whose
//! pieces are hashed on the way, an early answer to a PUT, a JSON POST, a download read
//! piece by piece through a base URL with a path prefix, and a file that shrinks while it
//! is sent.

use ftp_stager::http_client::{ClientError, HttpsClient, Trust, file_body, parse_pin};
use sha2::{Digest as _, Sha256};

fn cert_sha256(pem_path: &std::path::Path) -> String {
    let pem = std::fs::read(pem_path).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    hex::encode(Sha256::digest(der.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_streams_uploads_reads_answers_and_checks_the_certificate() {
    let r = crate::common::start().await;
    let token = ftp_stager::tokens::TokenStore::new(&r.cfg.state_dir)
        .create("ci", &[])
        .unwrap();
    let cert = r.cfg.state_dir.join("tls-cert.pem");
    let base = format!("https://127.0.0.1:{}", r.https.port());
    let c = HttpsClient::new(&base, Trust::CaFile(cert.clone()))
        .unwrap()
        .with_bearer(&token)
        .unwrap();

    // An object the stager lacks, uploaded from a file and hashed on the way.
    let data = crate::common::pattern(5 * 1024 * 1024 + 3, 7);
    let sha = crate::common::sha_hex(&data);
    let file = r.dir.path().join("obj.bin");
    std::fs::write(&file, &data).unwrap();
    let a = c.get(&format!("/publish/v1/objects/{sha}")).await.unwrap();
    assert_eq!((a.status, a.header("X-Upload-Offset")), (404, Some("0")));
    // A wrong offset is answered (409) with where to resume.
    let early = c
        .put_stream(
            &format!("/publish/v1/objects/{sha}?offset=5&size={}", data.len()),
            data.len() as u64 - 5,
            file_body(&file, 5, data.len() as u64 - 5, |_| {}),
        )
        .await
        .unwrap();
    assert_eq!(
        (early.status, early.header("X-Upload-Offset")),
        (409, Some("0"))
    );
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let put = c
        .put_stream(
            &format!("/publish/v1/objects/{sha}?offset=0&size={}", data.len()),
            data.len() as u64,
            file_body(&file, 0, data.len() as u64, move |piece| {
                h.lock().unwrap().update(piece)
            }),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    let seen = hex::encode(hasher.lock().unwrap().clone().finalize());
    assert_eq!(seen, sha, "every piece went through the callback, in order");
    let a = c.get(&format!("/publish/v1/objects/{sha}")).await.unwrap();
    assert_eq!(a.status, 200);
    let want_size = data.len().to_string();
    assert_eq!(a.header("X-Object-Size"), Some(want_size.as_str()));

    // A JSON POST (the commit).
    let body = serde_json::json!({"notes": "", "files": [{"name": "obj.bin", "size": data.len(), "sha256": sha}]});
    let p = c
        .post_json("/publish/v1/releases/viaclient/1.0", &body)
        .await
        .unwrap();
    assert_eq!(p.status, 201, "{}", p.text());
    let j: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(j["files"], 1);
    // Repeated small requests (an idle connection is reused) keep working.
    for _ in 0..3 {
        let again = c
            .post_json("/publish/v1/releases/viaclient/1.0", &body)
            .await
            .unwrap();
        assert_eq!(again.status, 409, "{}", again.text());
    }

    // A download through a base URL with a path prefix, read piece by piece, pinned.
    let area = r.stage(&["big.bin"], None);
    let pin = parse_pin(&cert_sha256(&cert)).unwrap();
    let d = HttpsClient::new(&area.https_base, Trust::Pin(pin)).unwrap();
    let mut s = d.get_stream("/big.bin").await.unwrap();
    assert_eq!(s.status, 200);
    let mut got = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = s.chunk().await.unwrap() {
        got.extend_from_slice(&piece);
        pieces += 1;
    }
    assert_eq!(got, crate::common::pattern(3 * 1024 * 1024 + 17, 1));
    assert!(pieces > 1, "streamed in pieces, not whole");

    // A wrong pin, and a CA that did not issue the stager's certificate: refused in the
    // handshake, with the reason.
    let wrong = HttpsClient::new(&base, Trust::Pin([7; 32])).unwrap();
    match wrong.get("/publish/v1/objects/x").await {
        Err(ClientError::Tls { source, .. }) => {
            assert!(source.to_string().contains("pinned"), "{source}")
        }
        other => panic!("a wrong pin must fail the handshake: {other:?}"),
    }
    let other_ca = r.dir.path().join("other.pem");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(&other_ca, ck.cert.pem()).unwrap();
    let untrusted = HttpsClient::new(&base, Trust::CaFile(other_ca)).unwrap();
    assert!(matches!(
        untrusted.get("/publish/v1/objects/x").await,
        Err(ClientError::Tls { .. })
    ));

    // A file shorter than announced ends the request with an error, not a hang or panic.
    let short = r.dir.path().join("short.bin");
    std::fs::write(&short, b"0123456789").unwrap();
    let sha_short = crate::common::sha_hex(b"0123456789abcdef");
    let cut = c
        .put_stream(
            &format!("/publish/v1/objects/{sha_short}?offset=0&size=16"),
            16,
            file_body(&short, 0, 16, |_| {}),
        )
        .await;
    assert!(cut.is_err(), "{cut:?}");
    r.stop().await;
}

/// Every HTTPS connection the stager accepts sends small writes at once (`TCP_NODELAY`,
/// as nginx's `tcp_nodelay`): a short answer (a range, a `304`, an upload's reply) must not
/// wait for the client's delayed ACK of the bytes before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_https_connection_sends_small_writes_at_once() {
    let r = crate::common::start().await;
    let cert = r.cfg.state_dir.join("tls-cert.pem");
    let (_held, me, head) = ffs_testkit::sockets::tls_exchange(
        r.https,
        &Trust::CaFile(cert),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        9,
    )
    .await;
    assert_eq!(&head, b"HTTP/1.1 ");
    assert_eq!(
        ffs_testkit::sockets::server_nodelay(r.https, me),
        Some(true),
        "the stager's HTTPS connection has Nagle on"
    );
}

/// FTP control connections send small writes at once too: a transfer's replies ("150",
/// then "226" once the data is sent) are small writes a moment apart, and with Nagle the
/// second waited for the client's delayed ACK of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ftp_control_connection_sends_small_writes_at_once() {
    use tokio::io::AsyncReadExt as _;

    let r = crate::common::start().await;
    let mut tcp = tokio::net::TcpStream::connect(r.ftp).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let mut greeting = [0u8; 3];
    tcp.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220");
    assert_eq!(
        ffs_testkit::sockets::server_nodelay(r.ftp, me),
        Some(true),
        "the stager's FTP control connection has Nagle on"
    );
}
