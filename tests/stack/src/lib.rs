//! [`Stack`]: a real db agent + stager in one process on loopback port 0, and what the web
//! frontend needs to reach them. Used by web-frontend's integration tests and its
//! `loadstack` example (the web load test), so it lives in a crate of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use commlink::{Client, LinkConfig};
use internal_db_agent::admin::{self, NewCustomer};
use tokio::sync::watch;

pub const PASSWORD: &str = "correct horse battery";

/// A running agent + stager, and what the web frontend needs to reach them.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub link: LinkConfig,
    pub agent_addr: String,
    pub stager_addr: String,
    /// Files published: (product, version, name) -> bytes.
    pub files: Vec<(String, String, String, Vec<u8>)>,
    agent_stop: watch::Sender<bool>,
    stager_stop: watch::Sender<bool>,
    agent: Option<Arc<internal_db_agent::Agent>>,
    agent_cfg: internal_db_agent::AgentConfig,
}

/// Another db agent on the stack's database (active-active), listening on its own port.
pub struct ExtraAgent {
    /// Its commlink address.
    pub addr: String,
    stop: watch::Sender<bool>,
}

/// Another stager with a copy of the stack's repository (its own directories), reachable
/// by the web over its own link.
pub struct ExtraStager {
    /// Its commlink address (kept across restarts).
    pub addr: String,
    cfg: ftp_stager::config::StagerConfig,
    link: LinkConfig,
    stop: watch::Sender<bool>,
}

impl ExtraStager {
    /// Stops it (links close; areas stay on disk).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Starts it again on the same link address, with its areas.
    pub async fn restart(&mut self) {
        let mut cfg = self.cfg.clone();
        cfg.link_listen = self.addr.clone();
        let (stop, addr, _) = loop {
            match try_start_stager_keeping(&cfg, &self.link).await {
                Some(s) => break s,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert_eq!(addr, self.addr);
        self.stop = stop;
    }

    /// Removes a release from this stager's repository (it no longer holds it).
    pub fn forget_release(&self, product: &str, version: &str) {
        let repo = ftp_stager::repository::Repository::open(&self.cfg.repository).unwrap();
        std::fs::remove_file(repo.manifest_path(product, version).unwrap()).unwrap();
    }
}

impl Drop for ExtraStager {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ExtraAgent {
    /// Stops it (its listener and open links close).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ExtraAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The test link settings (one definition for the workspace: `ffs_testkit::link`).
pub fn link_config() -> LinkConfig {
    ffs_testkit::link::config()
}

impl Stack {
    /// Starts the agent (listen mode) and the stager, with customers `alice` (entitled to
    /// `alpha >=2.0, <3`), `bob` (entitled to `beta`) and `root` (admin), and releases
    /// alpha 1.0, 2.0, 2.1, 3.0, and beta 1.0.
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let link = link_config();

        // Agent.
        let agent_cfg = internal_db_agent::AgentConfig {
            database: format!("sqlite://{}", dir.path().join("agent.db").display()),
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            lockout_threshold: 3,
            ..Default::default()
        };
        let agent = Arc::new(
            internal_db_agent::Agent::open_async(&agent_cfg)
                .await
                .unwrap(),
        );
        let hasher = agent_cfg.hasher().unwrap();
        let svc = agent.service();
        let pool = svc.pool().clone();
        tokio::task::spawn_blocking(move || {
            admin::with(&pool, |c| {
                for (login, name, adm) in [
                    ("alice", "Alice Example", false),
                    ("bob", "Bob Example", false),
                    ("root", "Root Admin", true),
                ] {
                    admin::add_customer(
                        c,
                        &hasher,
                        &NewCustomer {
                            login,
                            name,
                            email: &format!("{login}@example.com"),
                            password: PASSWORD,
                            admin: adm,
                        },
                    )?;
                }
                admin::entitle(c, "alice", "alpha", ">=2.0, <3", None)?;
                admin::entitle(c, "bob", "beta", "*", None)?;
                Ok(())
            })
        })
        .await
        .unwrap()
        .unwrap();
        let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_addr = agent_listener.local_addr().unwrap().to_string();
        let (agent_stop, rx) = watch::channel(false);
        {
            let agent = agent.clone();
            let link = link.clone();
            tokio::spawn(async move { agent.serve(agent_listener, link, stopped(rx)).await });
        }

        // Stager with a published repository.
        let scfg = stager_config(dir.path());
        let repo = ftp_stager::repository::Repository::open(&scfg.repository).unwrap();
        let mut files = Vec::new();
        // Release-signing keys: alpha 2.0 is signed with an older key, alpha 2.1 with the
        // current one; the rest are unsigned.
        let keys_dir = dir.path().join("signing");
        std::fs::create_dir_all(&keys_dir).unwrap();
        let mut signers = Vec::new();
        for name in ["old", "new"] {
            let sk = keys_dir.join(format!("{name}.key"));
            ftp_stager::signing::generate(&sk, &keys_dir.join(format!("{name}.pub"))).unwrap();
            signers.push(ftp_stager::Signer::load(&sk).unwrap());
        }
        for (product, version) in [
            ("alpha", "1.0"),
            ("alpha", "2.0"),
            ("alpha", "2.1"),
            ("alpha", "3.0"),
            ("beta", "1.0"),
        ] {
            let src = dir.path().join(format!("src-{product}-{version}"));
            std::fs::create_dir_all(src.join("docs")).unwrap();
            let a: Vec<u8> = (0..70_000u32)
                .map(|i| (i.wrapping_mul(31) ^ version.len() as u32) as u8)
                .collect();
            let b = format!("{product} {version} readme\n").into_bytes();
            std::fs::write(src.join(format!("{product}-{version}.bin")), &a).unwrap();
            std::fs::write(src.join("docs/README.txt"), &b).unwrap();
            let signer = match (product, version) {
                ("alpha", "2.0") => Some(&signers[0]),
                ("alpha", "2.1") => Some(&signers[1]),
                _ => None,
            };
            ftp_stager::publish_signed(
                &repo,
                product,
                version,
                std::slice::from_ref(&src),
                &format!("Release notes for {product} {version}."),
                &commlink::progress::Silent,
                signer,
            )
            .unwrap();
            files.push((
                product.into(),
                version.into(),
                format!("{product}-{version}.bin"),
                a,
            ));
            files.push((product.into(), version.into(), "docs/README.txt".into(), b));
        }
        let stager_stop = start_stager(&scfg, &link, None).await;
        let stager_addr = stager_stop.1;

        Stack {
            dir,
            link,
            agent_addr,
            stager_addr,
            files,
            agent_stop,
            stager_stop: stager_stop.0,
            agent: Some(agent),
            agent_cfg,
        }
    }

    /// A web config whose files live in the temp dir.
    pub fn web_config(&self) -> web_frontend::WebConfig {
        let mut c = web_frontend::WebConfig {
            listen: "127.0.0.1:0".into(),
            agent_addr: self.agent_addr.clone(),
            stager_addr: self.stager_addr.clone(),
            backend_timeout_ms: 1500,
            login_attempts: 5,
            signing_public_keys: vec![self.public_key("new"), self.public_key("old")],
            ..Default::default()
        };
        c.resolve_paths(&self.dir.path().join("web"));
        c
    }

    /// The public key file of signing key `name` ("new" signed alpha 2.1, "old" alpha 2.0).
    pub fn public_key(&self, name: &str) -> PathBuf {
        self.dir.path().join("signing").join(format!("{name}.pub"))
    }

    /// Its key id.
    pub fn key_id(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.public_key(name)).unwrap();
        web_frontend::signing::SigningKey::parse(&text)
            .unwrap()
            .key_id
    }

    pub fn agent_client(&self) -> Client {
        Client::dial(self.agent_addr.clone(), self.link.clone())
    }

    pub fn stager_client(&self) -> Client {
        Client::dial(self.stager_addr.clone(), self.link.clone())
    }

    /// Starts another db agent process-alike (its own pool) on the same database.
    pub async fn extra_agent(&self) -> ExtraAgent {
        let agent = internal_db_agent::Agent::open_async(&self.agent_cfg)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, rx) = watch::channel(false);
        let link = self.link.clone();
        tokio::spawn(async move { agent.serve(listener, link, stopped(rx)).await });
        ExtraAgent { addr, stop }
    }

    /// Starts another stager named `name` whose repository is a copy of the stack's (the
    /// same releases), in its own directories.
    pub async fn extra_stager(&self, name: &str) -> ExtraStager {
        let base = self.dir.path().join(format!("stager-{name}"));
        let cfg = stager_config(&base);
        std::fs::create_dir_all(cfg.repository.parent().unwrap()).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.dir.path().join("stager/repository"))
            .arg(&cfg.repository)
            .status()
            .unwrap();
        assert!(status.success(), "cp -a of the repository failed");
        let (stop, addr, cfg) = try_start_stager_keeping(&cfg, &self.link).await.unwrap();
        ExtraStager {
            addr,
            cfg,
            link: self.link.clone(),
            stop,
        }
    }

    /// Stops the agent's listener (existing connections close with it).
    pub fn stop_agent(&self) {
        let _ = self.agent_stop.send(true);
    }

    /// Restarts the agent on the same address.
    pub async fn restart_agent(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(&self.agent_addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (tx, rx) = watch::channel(false);
        self.agent_stop = tx;
        let agent = self.agent.clone().unwrap();
        let link = self.link.clone();
        tokio::spawn(async move { agent.serve(listener, link, stopped(rx)).await });
    }

    /// Also serves the agent in dial-out mode toward `addr` (a web frontend in accept mode).
    pub fn serve_dialout(&self, addr: String) {
        let agent = self.agent.clone().unwrap();
        let link = self.link.clone();
        let rx = self.agent_stop.subscribe();
        tokio::spawn(async move { agent.serve_dialout(addr, link, stopped(rx)).await });
    }

    /// Also serves the agent dialing out over `carrier` (e.g. the HTTP relay).
    pub fn serve_dialout_via<C: commlink::Carrier>(&self, carrier: C) {
        let service = self.agent.clone().unwrap().service();
        let link = self.link.clone();
        let rx = self.agent_stop.subscribe();
        tokio::spawn(commlink::serve_dialout_via(
            carrier,
            link,
            service,
            stopped(rx),
        ));
    }

    pub fn stop_stager(&self) {
        let _ = self.stager_stop.send(true);
    }

    pub fn file(&self, product: &str, version: &str, name: &str) -> &[u8] {
        &self
            .files
            .iter()
            .find(|f| f.0 == product && f.1 == version && f.2 == name)
            .unwrap()
            .3
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.agent_stop.send(true);
        let _ = self.stager_stop.send(true);
    }
}

pub fn stager_config(dir: &Path) -> ftp_stager::config::StagerConfig {
    ftp_stager::config::StagerConfig {
        repository: dir.join("stager/repository"),
        areas_dir: dir.join("stager/areas"),
        state_dir: dir.join("stager/state"),
        link_listen: "127.0.0.1:0".into(),
        ftp_listen: "127.0.0.1:0".into(),
        https_listen: "127.0.0.1:0".into(),
        passive_ports: "47100-47199".into(),
        ftps: false,
        ..Default::default()
    }
}

async fn start_stager(
    cfg: &ftp_stager::config::StagerConfig,
    link: &LinkConfig,
    _addr: Option<String>,
) -> (watch::Sender<bool>, String) {
    try_start_stager(cfg, link).await.unwrap()
}

/// Starts a stager; `None` while its addresses cannot be bound yet.
async fn try_start_stager(
    cfg: &ftp_stager::config::StagerConfig,
    link: &LinkConfig,
) -> Option<(watch::Sender<bool>, String)> {
    try_start_stager_keeping(cfg, link)
        .await
        .map(|(tx, addr, _)| (tx, addr))
}

/// [`try_start_stager`] that also returns the config with the ports it bound.
async fn try_start_stager_keeping(
    cfg: &ftp_stager::config::StagerConfig,
    link: &LinkConfig,
) -> Option<(
    watch::Sender<bool>,
    String,
    ftp_stager::config::StagerConfig,
)> {
    let listeners = ftp_stager::server::Listeners::bind(cfg, true).await.ok()?;
    let addr = listeners.addrs().0.unwrap().to_string();
    // Later restarts keep the ports (links handed out stay valid).
    let mut cfg = cfg.clone();
    let (_, ftp, https) = listeners.addrs();
    cfg.ftp_listen = ftp.unwrap().to_string();
    cfg.https_listen = https.unwrap().to_string();
    let cfg = &cfg;
    let server = ftp_stager::server::StagerServer::new(cfg).unwrap();
    let (tx, rx) = watch::channel(false);
    let link = link.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(Some(link), listeners, stopped(rx)).await {
            eprintln!("stager stopped: {e}");
        }
    });
    Some((tx, addr, cfg.clone()))
}
