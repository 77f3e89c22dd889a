//! The commlink under test: an echo service and a client dialed to it on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::{BenchError, Kind, Options, shares};
use crate::progress::Progress;
use crate::{Client, KeyBag, LinkConfig, Suite, Tobj};

/// Answers every request with itself.
struct Echo;

impl crate::Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        request
    }
}

/// One call whose reply must equal the request.
pub(super) async fn call_checked(client: &Client, message: &Tobj) -> Result<(), BenchError> {
    let reply = client
        .call(message.clone())
        .await
        .map_err(|source| BenchError::Link {
            what: "a commlink call".into(),
            source,
        })?;
    if reply.kind != message.kind || reply.fields != message.fields {
        return Err(BenchError::Failed(
            "the reply differs from the request".into(),
        ));
    }
    Ok(())
}

/// A commlink server (echo service) and a client dialed to it, on loopback.
pub(super) struct CommlinkBed {
    suite: Suite,
    pub(super) client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl CommlinkBed {
    pub(super) async fn start(suite: Suite) -> Result<CommlinkBed, BenchError> {
        let bag = KeyBag::generate(128)
            .map_err(|e| BenchError::Failed(format!("generating a key bag: {e}")))?;
        let mut cfg = LinkConfig::new(Arc::new(bag));
        cfg.suite = suite;
        cfg.request_timeout = Duration::from_secs(30);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::io("binding the commlink server"))?;
        let addr = listener
            .local_addr()
            .map_err(BenchError::io("binding the commlink server"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, cfg.clone(), Arc::new(Echo), async {
            let _ = stopped.await;
        }));
        let client = Client::dial(addr.to_string(), cfg);
        if !client.wait_up(Duration::from_secs(10)).await {
            return Err(BenchError::Failed(format!(
                "the {} commlink to {addr} did not come up within 10 s",
                suite.name()
            )));
        }
        Ok(CommlinkBed {
            suite,
            client,
            stop,
            server,
        })
    }

    /// Request rate: C tasks sharing the one connection.
    pub(super) async fn concurrent(
        &self,
        opts: &Options,
        message: &Tobj,
        progress: &Arc<dyn Progress>,
    ) -> Result<Duration, BenchError> {
        let kind = Kind::Commlink(self.suite);
        progress.phase(
            &format!("{}: concurrent", kind.name()),
            opts.requests as u64,
        );
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in shares(opts.requests, opts.concurrency) {
            let (client, message, progress) =
                (self.client.clone(), message.clone(), progress.clone());
            tasks.spawn(async move {
                for _ in 0..n {
                    call_checked(&client, &message).await?;
                    progress.advance(1);
                }
                Ok::<(), BenchError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| BenchError::Failed(format!("a {} worker failed: {e}", kind.name())))??;
        }
        Ok(start.elapsed())
    }

    pub(super) async fn stop(self) -> Result<(), BenchError> {
        drop(self.client);
        let _ = self.stop.send(());
        self.server
            .await
            .map_err(|e| BenchError::Failed(format!("the commlink server task failed: {e}")))?
            .map_err(BenchError::io("the commlink server"))
    }
}
