//! The responders: [`serve`] answers requesters that dial in, [`serve_dialout`] dials out to
//! the requester and answers it (seed 000's direction).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::warn;

use super::conn::run_responder;
use super::dial::{accept_one, redial};
use super::{Carrier, LinkConfig, Service, Tcp};

/// Serves `service` to every requester that connects to `listener` (the patent's
/// direction), until `shutdown` completes; open connections are then closed.
pub async fn serve<S: Service>(
    listener: TcpListener,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!("commlink accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (cfg, service) = (cfg.clone(), service.clone());
                conns.spawn(async move {
                    match accept_one(stream, peer, &cfg).await {
                        Ok(est) => {
                            run_responder(est, cfg, service, peer.to_string()).await;
                        }
                        Err(e) => warn!("{e}"),
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }
    }
    conns.shutdown().await;
    Ok(())
}

/// Dials out to the requester at `addr` over raw TCP and serves `service` over that
/// connection (seed 000's direction: the inside host only dials out), redialing after a
/// drop, until `shutdown` completes.
pub async fn serve_dialout<S: Service>(
    addr: String,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) {
    serve_dialout_via(Tcp::new(addr), cfg, service, shutdown).await
}

/// [`serve_dialout`] over any [`Carrier`].
pub async fn serve_dialout_via<C: Carrier, S: Service>(
    carrier: C,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connected = |est, peer| {
        let (cfg, service) = (cfg.clone(), service.clone());
        async move {
            run_responder(est, cfg, service, peer).await;
        }
    };
    let work = redial(&carrier, &cfg, connected, |_| {});
    tokio::select! {
        _ = &mut shutdown => {}
        _ = work => {}
    }
}
