//! Dialing and accepting within the connect timeout, and the redial loop that keeps a
//! dialing end's link up.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::handshake_io::{Established, SeenPort, accept_handshake, initiate};
use super::refusals::RefusalLog;
use super::{Carrier, LinkConfig};

/// Opens a stream over `carrier` and runs the initiator's handshake within the connect
/// timeout. Returns the connection and the peer's name for logs.
pub(super) async fn dial<C: Carrier>(
    carrier: &C,
    cfg: &LinkConfig,
) -> Result<(Established<C::Stream>, String), String> {
    let addr = carrier.target();
    let work = async {
        let (stream, port) = carrier
            .open(cfg)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        if cfg.suite.is_legacy() {
            warn!("commlink to {addr} uses the LEGACY single-DES suite des-cbc (56-bit key)");
        }
        debug!(
            addr,
            port,
            key_index = cfg.bag.index_for_port(port),
            "commlink dialed"
        );
        initiate(stream, cfg, port, carrier.virtual_port())
            .await
            .map(|e| (e, addr.to_owned()))
            .map_err(|e| format!("handshake with {addr} failed: {e}"))
    };
    match tokio::time::timeout(cfg.connect_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {addr} within {:?}",
            cfg.connect_timeout
        )),
    }
}

/// Accepts one TCP connection's handshake within the connect timeout.
pub(super) async fn accept_one(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &LinkConfig,
) -> Result<Established<TcpStream>, String> {
    let _ = stream.set_nodelay(true);
    accept_stream(stream, SeenPort::Tcp(peer.port()), &peer.to_string(), cfg).await
}

/// Accepts the handshake on any stream (raw TCP, or one a carrier endpoint accepted) within
/// the connect timeout; `peer` names it in messages.
pub(super) async fn accept_stream<S: AsyncRead + AsyncWrite>(
    stream: S,
    seen: SeenPort,
    peer: &str,
    cfg: &LinkConfig,
) -> Result<Established<S>, String> {
    match tokio::time::timeout(cfg.connect_timeout, accept_handshake(stream, cfg, seen)).await {
        Ok(Ok(e)) => {
            if cfg.suite.is_legacy() {
                warn!(%peer, "commlink uses the LEGACY single-DES suite des-cbc (56-bit key)");
            }
            Ok(e)
        }
        Ok(Err(e)) => Err(format!("handshake from {peer} refused: {e}")),
        Err(_) => Err(format!(
            "no handshake from {peer} within {:?}",
            cfg.connect_timeout
        )),
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The dialing side of a link, in either direction: dials `carrier`, hands each established
/// connection to `connected` (which returns when it drops), and dials again. Failed dials
/// go to `failed` and back off exponentially (50 ms up to 2 s, reset by a success); each
/// new cause of failure is logged at once, repeats once a minute with their count.
pub(super) async fn redial<C: Carrier, F>(
    carrier: &C,
    cfg: &LinkConfig,
    mut connected: impl FnMut(Established<C::Stream>, String) -> F,
    mut failed: impl FnMut(String),
) where
    F: Future<Output = ()>,
{
    let mut backoff = BACKOFF_MIN;
    let mut log = RefusalLog::default();
    loop {
        match dial(carrier, cfg).await {
            Ok((est, peer)) => {
                backoff = BACKOFF_MIN;
                if let Some(line) = log.succeeded() {
                    info!(%peer, "commlink {line}");
                }
                connected(est, peer).await;
            }
            Err(e) => {
                if let Some(line) = log.failed(&e, std::time::Instant::now()) {
                    warn!("{line}");
                }
                failed(e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;

    use super::*;
    use crate::keys::KeyBag;
    use crate::transport::Tcp;

    fn cfg() -> LinkConfig {
        LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")))
    }

    #[tokio::test]
    async fn dial_and_accept_meet() {
        let cfg = cfg();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let acceptor = {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let (stream, peer) = listener.accept().await.expect("accept");
                accept_one(stream, peer, &cfg).await.map(|_| ())
            })
        };
        let (_, peer) = dial(&Tcp::new(addr.clone()), &cfg).await.expect("dials");
        assert_eq!(peer, addr);
        acceptor.await.expect("joined").expect("accepted");
    }

    #[tokio::test]
    async fn dial_names_the_address_it_could_not_reach() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        drop(listener);
        let err = dial(&Tcp::new(addr.clone()), &cfg())
            .await
            .err()
            .expect("fails");
        assert!(err.contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn redial_dials_again_after_each_drop() {
        let cfg = cfg();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let acceptor = {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = listener.accept().await.expect("accept");
                    // Each connection is handshaken and then dropped at once.
                    let _ = accept_one(stream, peer, &cfg).await;
                }
            })
        };
        let connections = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut done_tx = Some(done_tx);
        let counted = connections.clone();
        let carrier = Tcp::new(addr);
        let looping = redial(
            &carrier,
            &cfg,
            move |_est, _peer| {
                if counted.fetch_add(1, Ordering::SeqCst) + 1 == 3
                    && let Some(tx) = done_tx.take()
                {
                    let _ = tx.send(());
                }
                async {}
            },
            |_| {},
        );
        tokio::select! {
            _ = looping => panic!("the redial loop never ends"),
            r = tokio::time::timeout(Duration::from_secs(60), done_rx) => {
                r.expect("three connections within a minute").expect("sent");
            }
        }
        assert!(connections.load(Ordering::SeqCst) >= 3);
        acceptor.abort();
    }
}
