//! Starting the agent: open the database, then serve the commlink in either direction.

use std::future::Future;
use std::sync::Arc;

use commlink::LinkConfig;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::config::{AgentConfig, DialCarrier, Mode};
use crate::db::{DbError, Pool, Tuning};
use crate::passwords::PasswordError;
use crate::service::AgentService;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The password-hash settings are invalid.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} ([db-agent] listen): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A link address in the config is not a usable URL.
    #[error("[db-agent] {key} = {source}")]
    Address {
        /// The setting (`listen` or `dial`).
        key: &'static str,
        /// What is wrong with it.
        source: commlink::AddrError,
    },
    /// The dial-out carrier settings are unusable (the message names the setting).
    #[error("{0}")]
    Config(String),
    /// The commlink server failed.
    #[error("commlink server failed: {0}")]
    Serve(std::io::Error),
}

/// An opened agent: database pool plus request handler, not yet serving.
pub struct Agent {
    service: Arc<AgentService>,
}

impl Agent {
    /// Checks and opens the database (creating and migrating it as needed) and prepares
    /// the service. Blocking: call from a blocking context or [`Agent::open_async`].
    pub fn open(cfg: &AgentConfig) -> Result<Agent, AgentError> {
        let hasher = cfg.hasher()?;
        let tuning = Tuning::new(&cfg.pg_synchronous_commit)?;
        let pool = Pool::open_tuned(&cfg.database, cfg.pool_size, tuning)?;
        info!(database = %pool.redacted_url(), "database ready");
        Ok(Agent {
            service: Arc::new(AgentService::new(Arc::new(pool), hasher, cfg.lockout())),
        })
    }

    /// [`Agent::open`] on the blocking pool.
    pub async fn open_async(cfg: &AgentConfig) -> Result<Agent, AgentError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Agent::open(&cfg))
            .await
            .map_err(|e| AgentError::Db(DbError::Worker(e.to_string())))?
    }

    /// The request handler (also usable without a socket).
    pub fn service(&self) -> Arc<AgentService> {
        Arc::clone(&self.service)
    }

    /// Listen mode: serves requesters connecting to `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        link: LinkConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        commlink::serve(listener, link, self.service(), shutdown)
            .await
            .map_err(AgentError::Serve)
    }

    /// Dial-out mode: dials the web frontend's agent port `addr`, serves over that link and
    /// redials after a drop, until `shutdown`.
    pub async fn serve_dialout(
        &self,
        addr: String,
        link: LinkConfig,
        shutdown: impl Future<Output = ()>,
    ) {
        commlink::serve_dialout(addr, link, self.service(), shutdown).await
    }
}

fn link_addr(key: &'static str, value: &str) -> Result<commlink::LinkAddr, AgentError> {
    commlink::LinkAddr::parse(value)
        .and_then(|a| a.tcp_only(value))
        .map_err(|source| AgentError::Address { key, source })
}

/// Runs the agent as configured (`mode = "listen"` or `"dial-out"`) until `shutdown`.
pub async fn run(
    cfg: AgentConfig,
    link: LinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent = Agent::open_async(&cfg).await?;
    match cfg.mode {
        Mode::Listen => {
            let addr = link_addr("listen", &cfg.listen)?;
            let listener = TcpListener::bind(addr.host_port())
                .await
                .map_err(|source| AgentError::Bind {
                    addr: cfg.listen.clone(),
                    source,
                })?;
            info!(addr = %cfg.listen, "db agent listening (mode = listen)");
            agent.serve(listener, link, shutdown).await?;
        }
        Mode::DialOut => {
            let carriers = cfg.carriers().map_err(AgentError::Config)?;
            // One link per web frontend, all stopped by the one shutdown.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut links = tokio::task::JoinSet::new();
            for carrier in carriers {
                let (link, svc, mut stopped) = (link.clone(), agent.service(), stopped.clone());
                links.spawn(dial_out(carrier, link, svc, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }));
            }
            shutdown.await;
            let _ = stop.send(true);
            while links.join_next().await.is_some() {}
        }
    }
    info!("db agent stopped");
    Ok(())
}

/// Serves one dial-out link over `carrier` until `shutdown`.
async fn dial_out(
    carrier: DialCarrier,
    link: LinkConfig,
    svc: Arc<AgentService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    match carrier {
        DialCarrier::Tcp(tcp) => {
            info!(addr = %commlink::Carrier::target(&tcp), "db agent dialing the web frontend (mode = dial-out)");
            commlink::serve_dialout_via(tcp, link, svc, shutdown).await
        }
        DialCarrier::Proxy(proxy) => {
            info!(via = %commlink::Carrier::target(&proxy), "db agent dialing through a proxy");
            commlink::serve_dialout_via(proxy, link, svc, shutdown).await
        }
        DialCarrier::Relay(relay) => {
            info!(via = %commlink::Carrier::target(&relay), "db agent dialing over the HTTP relay");
            // The relay's round trip is a chain of task hand-overs: kept on one thread.
            if let Err(e) = commlink::serve_dialout_on_own_thread(relay, link, svc, shutdown).await
            {
                error!("the HTTP relay link could not start its thread: {e}");
            }
        }
        DialCarrier::Https(https) => {
            info!(via = %commlink::Carrier::target(&https), "db agent dialing over the https carrier");
            commlink::serve_dialout_via(https, link, svc, shutdown).await
        }
    }
}
