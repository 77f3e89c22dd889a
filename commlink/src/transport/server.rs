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

/// [`serve_dialout_via`] on a thread of its own, with a single-threaded runtime: every task
/// of the link (its reader, the carrier's own tasks and connections, the service calls
/// that wait) runs on that one thread, so they hand work to one another without waking
/// a worker on another CPU. Meant for the HTTP relay, whose round trip is a chain of about
/// nine such hand-overs: on two workers tokio sends most of them to the other worker
/// (`docs/benchmarks.md`, "The relay's cost is the scheduler"). Blocking work the service
/// gives to `spawn_blocking` still runs on that runtime's blocking threads.
///
/// Ends when `shutdown` completes or this future is dropped (the thread is then told to
/// stop and ends on its own); fails only if the thread or its runtime cannot start.
pub async fn serve_dialout_on_own_thread<C: Carrier, S: Service>(
    carrier: C,
    cfg: LinkConfig,
    service: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let name = format!("ffs-link {}", carrier.target());
    std::thread::Builder::new().name(name).spawn(move || {
        rt.block_on(async move {
            // The link is a task, not the thread's `block_on` future: a task woken by
            // another task on this thread is queued and run in turn, where waking the
            // `block_on` future writes to the runtime's eventfd and waits until every
            // queued task has run (e.g. an HTTP answer read before the request behind it).
            let link = tokio::spawn(serve_dialout_via(carrier, cfg, service, async move {
                tokio::select! {
                    () = shutdown => {}
                    _ = stopped => {} // told to stop, or the caller went away
                }
            }));
            let _ = link.await;
            // The carrier's own tasks say goodbye (the relay tells the web the link
            // ended, so its end goes down at once); bounded, then the runtime drops them.
            let metrics = tokio::runtime::Handle::current().metrics();
            let deadline = tokio::time::Instant::now() + GOODBYE;
            while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let _ = done.send(());
    })?;
    // Dropping `stop` (with this future) stops the thread.
    let _stop = stop;
    let _ = finished.await;
    Ok(())
}

/// How long [`serve_dialout_on_own_thread`] lets the link's tasks finish after a stop.
const GOODBYE: Duration = Duration::from_secs(3);
