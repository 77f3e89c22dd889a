//! Starting the stager: bind (or take bound) listeners, load TLS, drop privileges, then run
//! the commlink service, the FTP server, the HTTPS server and the sweeper until shutdown.
//!
//! ```no_run
//! # async fn demo(cfg: ftp_stager::StagerConfig, link: commlink::LinkConfig) -> Result<(), ftp_stager::StagerError> {
//! use ftp_stager::server::{Listeners, StagerServer};
//! let listeners = Listeners::bind(&cfg, true).await?;      // or bind 127.0.0.1:0 yourself
//! let server = StagerServer::new(&cfg)?;                   // opens repository, areas, TLS
//! let stager = server.stager().clone();                    // stage/catalog in-process too
//! server.serve(Some(link), listeners, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::StagerConfig;
use crate::error::{Result, StagerError};
use crate::ftp::{self, FtpOptions};
use crate::https;
use crate::service::StagerService;
use crate::staging::Stager;
use crate::tls::{self, TlsMaterial};

/// The stager's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// Commlink (the web frontend dials it); `None` = no commlink (tests, in-process use).
    pub link: Option<tokio::net::TcpListener>,
    /// FTP control connections.
    pub ftp: tokio::net::TcpListener,
    /// HTTPS.
    pub https: std::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses in the config (`with_link`: also the commlink address).
    pub async fn bind(cfg: &StagerConfig, with_link: bool) -> Result<Listeners> {
        let link = if with_link {
            Some(bind_tokio(&cfg.link_listen).await?)
        } else {
            None
        };
        let ftp = bind_tokio(&cfg.ftp_listen).await?;
        let https = std::net::TcpListener::bind(&cfg.https_listen)
            .map_err(StagerError::io("bind", &cfg.https_listen))?;
        https
            .set_nonblocking(true)
            .map_err(StagerError::io("configure", &cfg.https_listen))?;
        Ok(Listeners { link, ftp, https })
    }

    /// Binds FTP and HTTPS (and the commlink if `with_link`) on 127.0.0.1 with OS-chosen
    /// ports: for tests and `ffs demo`.
    pub async fn loopback(with_link: bool) -> Result<Listeners> {
        let cfg = StagerConfig {
            link_listen: "127.0.0.1:0".into(),
            ftp_listen: "127.0.0.1:0".into(),
            https_listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        Self::bind(&cfg, with_link).await
    }

    /// The bound addresses: (commlink, ftp, https).
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.link.as_ref().and_then(|l| l.local_addr().ok()),
            self.ftp.local_addr().ok(),
            self.https.local_addr().ok(),
        )
    }
}

async fn bind_tokio(addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(StagerError::io("bind", addr))
}

/// If running as root and `run_as_user` is set, switches to that user (call after binding).
pub fn drop_privileges(cfg: &StagerConfig) -> Result<()> {
    use nix::unistd::{Uid, User, setgid, setgroups, setuid};
    if cfg.run_as_user.is_empty() {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        tracing::info!(user = %cfg.run_as_user, "not root: run_as_user ignored");
        return Ok(());
    }
    let user = User::from_name(&cfg.run_as_user)
        .map_err(|e| StagerError::Config(format!("run_as_user {:?}: {e}", cfg.run_as_user)))?
        .ok_or_else(|| {
            StagerError::Config(format!("run_as_user {:?}: no such user", cfg.run_as_user))
        })?;
    setgroups(&[user.gid])
        .and_then(|()| setgid(user.gid))
        .and_then(|()| setuid(user.uid))
        .map_err(|e| StagerError::Config(format!("cannot switch to {:?}: {e}", cfg.run_as_user)))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(StagerError::Config(
            "privileges could be regained after dropping them".into(),
        ));
    }
    tracing::info!(user = %cfg.run_as_user, uid = user.uid.as_raw(), "dropped root privileges");
    Ok(())
}

/// Binds from the config, loads TLS, drops privileges, and serves until `shutdown`.
/// This is what `ffs stager` runs.
pub async fn run(
    cfg: &StagerConfig,
    link: commlink::LinkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let listeners = Listeners::bind(cfg, true).await?;
    let tls = tls::load_or_generate(cfg)?;
    drop_privileges(cfg)?;
    let server = StagerServer::with_tls(cfg, tls)?;
    server.serve(Some(link), listeners, shutdown).await
}

/// An opened stager ready to serve.
#[derive(Debug)]
pub struct StagerServer {
    stager: Arc<Stager>,
    tls: TlsMaterial,
    cfg: StagerConfig,
    follower: Option<crate::replicate_follow::Follower>,
}

impl StagerServer {
    /// Opens the repository and areas, checks staging can hard-link, loads (or generates)
    /// the TLS certificate.
    pub fn new(cfg: &StagerConfig) -> Result<StagerServer> {
        let tls = tls::load_or_generate(cfg)?;
        Self::with_tls(cfg, tls)
    }

    fn with_tls(cfg: &StagerConfig, tls: TlsMaterial) -> Result<StagerServer> {
        cfg.passive_range().map_err(StagerError::Config)?;
        let stager = Arc::new(Stager::open(cfg)?);
        let follower =
            crate::replicate_follow::Follower::from_config(cfg, stager.repository().clone())?;
        Ok(StagerServer {
            stager,
            tls,
            cfg: cfg.clone(),
            follower,
        })
    }

    /// The replication follower's counters, when `[stager] replicate_from` is set.
    pub fn follower_stats(&self) -> Option<Arc<crate::replicate_follow::FollowStats>> {
        self.follower.as_ref().map(|f| f.stats().clone())
    }

    /// The staging engine (to stage or read the catalog in-process).
    pub fn stager(&self) -> &Arc<Stager> {
        &self.stager
    }

    /// Puts the listeners' actual ports into the URLs handed out, where the config's public
    /// ports are 0. [`serve`](Self::serve) does this too; call it first when you stage
    /// in-process before `serve` has started running.
    pub fn use_listener_ports(&self, listeners: &Listeners) {
        let (_, ftp_addr, https_addr) = listeners.addrs();
        let mut urls = self.stager.public_urls();
        if self.cfg.public_ftp_port == 0
            && let Some(a) = ftp_addr
        {
            urls.ftp_port = a.port();
        }
        if self.cfg.public_https_port == 0
            && let Some(a) = https_addr
        {
            urls.https_port = a.port();
        }
        self.stager.set_public_ports(urls.ftp_port, urls.https_port);
    }

    /// Serves on the given listeners until `shutdown` completes. When the config's public
    /// ports are 0, URLs use the listeners' actual ports.
    pub async fn serve(
        self,
        link: Option<commlink::LinkConfig>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let (link_addr, ftp_addr, https_addr) = listeners.addrs();
        self.use_listener_ports(&listeners);
        tracing::info!(
            ftp = ?ftp_addr,
            https = ?https_addr,
            link = ?link_addr,
            tls_sha256 = %self.tls.fingerprint,
            "stager listening"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let ftp_opts = FtpOptions {
            passive_ports: self.cfg.passive_range().map_err(StagerError::Config)?,
            ftps: self
                .cfg
                .ftps
                .then(|| (self.tls.cert_path.clone(), self.tls.key_path.clone())),
            // A literal IPv4 public_host (e.g. behind NAT) is what PASV announces.
            passive_host: self
                .cfg
                .public_host
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_loopback()),
        };
        // Fail early on a bad FTP configuration rather than per connection.
        ftp::build_server(&self.stager, &ftp_opts).map_err(StagerError::Config)?;
        let ftp_task = tokio::spawn(ftp_accept_loop(
            self.stager.clone(),
            ftp_opts,
            listeners.ftp,
            stopped(stop_rx.clone()),
        ));

        let mut replication = crate::replicate_serve::ServeStats::default();
        if let Some(f) = &self.follower {
            replication.following = Some((f.source().to_owned(), f.stats().clone()));
        }
        let https = https::server(
            self.stager.clone(),
            listeners.https,
            self.tls.server_config.clone(),
            replication,
        )
        .map_err(StagerError::io("serve https", "listener"))?;
        let https_handle = https.handle();
        let https_task = tokio::spawn(https);

        let sweeper = tokio::spawn(sweeper(
            self.stager.clone(),
            Duration::from_secs(self.cfg.sweep_interval_secs.max(1)),
            stopped(stop_rx.clone()),
        ));

        let follow_task = self.follower.map(|f| {
            let every = Duration::from_secs(self.cfg.replicate_interval_secs.max(1));
            tokio::spawn(f.run(every, stopped(stop_rx.clone())))
        });

        let link_task = match (link, listeners.link) {
            (Some(lc), Some(l)) => {
                let svc = Arc::new(StagerService::new(self.stager.clone()));
                Some(tokio::spawn(commlink::serve(
                    l,
                    lc,
                    svc,
                    stopped(stop_rx.clone()),
                )))
            }
            _ => None,
        };

        shutdown.await;
        tracing::info!("stager shutting down");
        let _ = stop_tx.send(true);
        https_handle.stop(true).await;
        let _ = https_task.await;
        let _ = ftp_task.await;
        let _ = sweeper.await;
        if let Some(t) = follow_task {
            let _ = t.await;
        }
        let st = self.stager.clone();
        let _ = tokio::task::spawn_blocking(move || st.flush()).await;
        if let Some(t) = link_task {
            match t.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "commlink server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "commlink server task failed"),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }
}

async fn ftp_accept_loop(
    stager: Arc<Stager>,
    opts: FtpOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "FTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Replies are small writes a moment apart ("150", then "226" after the
                // transfer): with Nagle the second waits for the client's delayed ACK.
                let _ = stream.set_nodelay(true);
                // libunftp's `service` consumes its Server, so each control connection gets
                // a freshly built one (cheap: a few Arcs and the options).
                match ftp::build_server(&stager, &opts) {
                    Ok(server) => {
                        tokio::spawn(async move {
                            if let Err(e) = server.service(stream).await {
                                tracing::debug!(%peer, error = %e, "FTP session ended with an error");
                            }
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "cannot build the FTP server"),
                }
            }
        }
    }
}

async fn sweeper(stager: Arc<Stager>, every: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                let s = stager.clone();
                match tokio::task::spawn_blocking(move || s.sweep()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "sweeper removed expired areas"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "sweep failed"),
                    Err(e) => tracing::error!(error = %e, "sweeper task failed"),
                }
            }
        }
    }
}
