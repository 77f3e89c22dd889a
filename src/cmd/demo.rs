//! `ffs demo`: the whole system on loopback in one command.
//!
//! Creates (or reuses) a working directory with a key bag, `ffs.toml`, an SQLite database
//! holding an admin and a demo customer, and a demo repository; then starts the db agent,
//! the stager and the web frontend as separate tasks wired exactly as in production: over
//! real commlink sockets, with the agent dialing *out* to the web frontend's agent port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rand::RngExt as _;
use tokio::sync::watch;

use crate::config::FfsConfig;

/// `ffs demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Working directory (created if missing; reused if it exists).
    #[arg(long, default_value = "ffs-demo")]
    pub dir: PathBuf,
    /// Set everything up, print what would run, and exit without serving.
    #[arg(long)]
    pub setup_only: bool,
}

/// The demo's products: (product, version, notes, entitled versions for the demo customer).
const PRODUCTS: &[(&str, &str, &str)] = &[
    (
        "acme-studio",
        "1.0.0",
        "First release of the Acme Studio suite.",
    ),
    (
        "acme-studio",
        "2.0.0",
        "Faster renders, a new timeline, and the 120 MiB offline installer.",
    ),
    ("rocket-cli", "1.4.2", "Bug fixes for the 1.x line."),
    ("rocket-cli", "2.0.0", "Major release: new plugin API."),
];

/// Size of the large demo file (≥ 100 MB, written sparse so set-up stays quick).
const BIG_FILE: u64 = 120 * 1024 * 1024;

/// Rewrites the template for the demo: the agent dials out, the web accepts it.
pub fn demo_config_text() -> anyhow::Result<String> {
    let t = FfsConfig::template();
    let replaced = t
        .replacen("mode = \"listen\"", "mode = \"dial-out\"", 1)
        .replacen(
            "db_agent_mode = \"connect\"",
            "db_agent_mode = \"accept\"",
            1,
        );
    let header = "# Written by `ffs demo`: every role on loopback, the db agent dialing out to the\n\
                  # web frontend's agent port as it would from behind a firewall.\n";
    let text = format!("{header}{replaced}");
    let cfg: FfsConfig = toml::from_str(&text).context("demo config does not parse")?;
    if cfg.agent.mode != internal_db_agent::Mode::DialOut
        || cfg.web.agent_mode != web_frontend::AgentMode::Accept
    {
        bail!("could not switch the demo config to dial-out mode; the templates changed");
    }
    Ok(text)
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY3479";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Creates the directory, key bag and config if missing; returns the loaded config.
fn prepare_dir(dir: &Path) -> anyhow::Result<FfsConfig> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let keys = dir.join("keys.bag");
    if !keys.exists() {
        commlink::KeyBag::generate(commlink::keys::DEFAULT_COUNT)?.write_new(&keys)?;
    }
    let config = dir.join("ffs.toml");
    if !config.exists() {
        std::fs::write(&config, demo_config_text()?)
            .with_context(|| format!("cannot write {}", config.display()))?;
    }
    FfsConfig::load(&config)
}

/// A login created now (with its password) or found from an earlier run.
struct Login {
    login: &'static str,
    password: Option<String>,
}

/// Creates the admin and demo customer if missing and entitles the demo customer.
fn prepare_customers(cfg: &FfsConfig) -> anyhow::Result<Vec<Login>> {
    use internal_db_agent::admin;
    let pool = internal_db_agent::db::Pool::open(&cfg.agent.database, 1)
        .context("cannot open the demo database")?;
    let hasher = cfg.agent.hasher()?;
    let mut out = Vec::new();
    for (login, name, email, is_admin) in [
        ("admin", "Demo Administrator", "admin@example.com", true),
        ("demo", "Dana Demo", "demo@example.com", false),
    ] {
        let exists = admin::with(&pool, |c| match admin::show_customer(c, login) {
            Ok(_) => Ok(true),
            Err(admin::AdminError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        })?;
        let password = if exists {
            None
        } else {
            let pw = random_password();
            admin::with(&pool, |c| {
                admin::add_customer(
                    c,
                    &hasher,
                    &admin::NewCustomer {
                        login,
                        name,
                        email,
                        password: &pw,
                        admin: is_admin,
                    },
                )
            })?;
            Some(pw)
        };
        out.push(Login { login, password });
    }
    admin::with(&pool, |c| {
        admin::entitle(c, "demo", "acme-studio", "*", None)?;
        // Only the 1.x line of rocket-cli: 2.0.0 exists but is not theirs.
        admin::entitle(c, "demo", "rocket-cli", ">=1.0, <2", None)?;
        Ok(())
    })?;
    Ok(out)
}

/// Writes the demo's source files and publishes any release the repository lacks.
fn prepare_repository(cfg: &FfsConfig, dir: &Path) -> anyhow::Result<()> {
    let repo = ftp_stager::repository::Repository::open(&cfg.stager.repository)?;
    let have: Vec<(String, String)> = repo
        .catalog(true)?
        .into_iter()
        .map(|m| (m.product, m.version))
        .collect();
    for (product, version, notes) in PRODUCTS {
        if have.iter().any(|(p, v)| p == product && v == version) {
            continue;
        }
        let src = dir.join("demo-src").join(product).join(version);
        std::fs::create_dir_all(src.join("docs"))?;
        std::fs::write(
            src.join("README.txt"),
            format!("{product} {version}\n\n{notes}\n"),
        )?;
        std::fs::write(
            src.join("docs/CHANGES.md"),
            format!("# {product} {version}\n\n- {notes}\n"),
        )?;
        // A few hundred KiB of varied bytes: different per release, so no dedup.
        let mut rng = rand::rng();
        let mut blob = vec![0u8; 256 * 1024];
        rng.fill(&mut blob[..]);
        std::fs::write(
            src.join(format!("{product}-{version}-linux-x86_64.tar.gz")),
            &blob,
        )?;
        if *product == "acme-studio" && *version == "2.0.0" {
            let big = src.join("acme-studio-2.0.0-offline-installer.iso");
            let f = std::fs::File::create(&big)?;
            f.set_len(BIG_FILE)?;
        }
        ftp_stager::publish::publish(
            &repo,
            product,
            version,
            std::slice::from_ref(&src),
            notes,
            &super::bench::Bars::bytes(false),
        )
        .with_context(|| format!("cannot publish demo release {product} {version}"))?;
    }
    // The repository holds its own copies; the sources are scratch.
    let _ = std::fs::remove_dir_all(dir.join("demo-src"));
    Ok(())
}

fn print_logins(logins: &[Login], dir: &Path) {
    for l in logins {
        match &l.password {
            Some(pw) => println!(
                "  Login  {:<6} password {pw}   (shown once; keep it)",
                l.login
            ),
            None => println!(
                "  Login  {:<6} password as printed on the first run (reset: ffs --config {} customer passwd {})",
                l.login,
                dir.join("ffs.toml").display(),
                l.login
            ),
        }
    }
}

/// What `ffs demo` prints once it is running: the URL, the certificate, the logins.
fn print_banner(
    ready: Duration,
    web_port: u16,
    web_fingerprint: &str,
    logins: &[Login],
    dir: &Path,
) {
    let url = format!("https://127.0.0.1:{web_port}/");
    println!();
    println!("  ffs demo is running (ready in {} ms)", ready.as_millis());
    println!();
    println!("  Open   {url}");
    println!("         (self-signed certificate, SHA-256 {web_fingerprint})");
    println!();
    print_logins(logins, dir);
    println!();
    println!("  Try: sign in as demo, open acme-studio 2.0.0, Prepare download, then fetch the");
    println!("  HTTPS link with curl -k or the FTP URL with any FTP client; sign in as admin to");
    println!(
        "  see active areas, history and staging latency. Working directory: {}",
        dir.display()
    );
    println!("  Ctrl-C stops everything.");
    println!();
}

/// Runs `ffs demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = &args.dir;
    let cfg = tokio::task::block_in_place(|| prepare_dir(dir))?;
    let logins = tokio::task::block_in_place(|| prepare_customers(&cfg))?;
    tokio::task::block_in_place(|| prepare_repository(&cfg, dir))?;
    let link = cfg.link_config()?;
    let setup = started.elapsed();
    if args.setup_only {
        println!(
            "demo set up in {} ({} ms)",
            dir.display(),
            setup.as_millis()
        );
        print_logins(&logins, dir);
        return Ok(());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Web first: in dial-out mode the agent dials its agent port.
    let agent_client = web_frontend::agent_client(&cfg.web, link.clone())
        .await
        .context("cannot open the web frontend's agent port")?;
    let stager_client = commlink::Client::dial(cfg.stager.link_listen.clone(), link.clone());
    let web_listeners =
        web_frontend::Listeners::bind(&cfg.web).context("cannot bind the web frontend's port")?;
    let web = web_frontend::Application::build(
        cfg.web.clone(),
        agent_client.clone(),
        stager_client.clone(),
        web_listeners,
    )
    .context("cannot start the web frontend")?;
    let web_port = web.port();
    let web_fingerprint = web.fingerprint().to_owned();
    let both_up = || agent_client.is_up() && stager_client.is_up();

    let stager_listeners = ftp_stager::server::Listeners::bind(&cfg.stager, true)
        .await
        .context("cannot bind the stager's ports")?;
    let stager = tokio::task::block_in_place(|| ftp_stager::server::StagerServer::new(&cfg.stager))
        .context("cannot open the stager")?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let stop = stopped();
        async move { web.run_until(stop).await.context("web frontend") }
    });
    tasks.spawn({
        let (stop, link) = (stopped(), link.clone());
        async move {
            stager
                .serve(Some(link), stager_listeners, stop)
                .await
                .context("stager")
        }
    });
    tasks.spawn({
        let (stop, link, agent_cfg) = (stopped(), link.clone(), cfg.agent.clone());
        async move {
            internal_db_agent::run(agent_cfg, link, stop)
                .await
                .context("db agent")
        }
    });

    // Ready when the web frontend has both links up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !both_up() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    print_banner(started.elapsed(), web_port, &web_fingerprint, &logins, dir);
    if !both_up() {
        tracing::warn!("the web frontend's links are not all up yet; see the log above");
    }

    let outcome = tokio::select! {
        _ = super::shutdown_signal() => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Err(anyhow::anyhow!("a role stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a role crashed: {e}")),
        },
    };
    println!("stopping…");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    outcome
}
