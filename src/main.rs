//! `ffs`: the file-delivery fulfillment system. One binary, a subcommand per role and tool.

mod cmd;
mod config;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::FfsConfig;

/// mimalloc instead of glibc malloc: with many threads (actix workers, tokio workers, the
/// blocking pool) glibc's arena locks and consolidation took a fifth of the CPU of a page
/// load run (`docs/benchmarks.md`, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ffs", version, about = "File-delivery fulfillment system")]
struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = "ffs.toml")]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Agent(cmd::agent::AgentCmd),
    #[command(flatten)]
    Stager(cmd::stager::StagerCmd),
    #[command(flatten)]
    Web(cmd::web::WebCmd),
    /// Runs everything on loopback: key bag, config, SQLite database with an admin and a
    /// demo customer, a demo repository, and the three roles wired over real commlinks.
    Demo(cmd::demo::DemoArgs),
    /// Key bag tools.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Config file tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Writes a new key bag from the OS random number generator, mode 0600.
    Generate {
        /// Number of entries, N (key index = source port mod N).
        #[arg(long, default_value_t = commlink::keys::DEFAULT_COUNT)]
        count: usize,
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a key bag and prints its size and public fingerprint.
    Check {
        /// The key bag file.
        file: PathBuf,
    },
    /// Release signing keys (minisign format, Ed25519).
    #[command(subcommand)]
    Signing(SigningCmd),
}

#[derive(Debug, Subcommand)]
enum SigningCmd {
    /// Makes a new Ed25519 signing key: the secret key (minisign format, mode 0600) for
    /// `[stager] signing_key`, and the public key customers verify with
    /// (`minisign -Vm SHA256SUMS -p ffs.pub`) for `[web] signing_public_keys`. On a
    /// terminal it asks twice (no echo) for a passphrase protecting the secret key (empty
    /// for none); elsewhere the key is unencrypted unless `--passphrase-file` is given.
    Generate {
        /// Where to write the secret key (must not exist).
        #[arg(long, default_value = "ffs.key")]
        out: PathBuf,
        /// Where to write the public key (must not exist; default: OUT with `.pub`).
        #[arg(long)]
        public: Option<PathBuf>,
        /// Protect the secret key with the passphrase in this file (mode 0600, first line;
        /// the file `[stager] signing_key_passphrase_file` then names).
        #[arg(long, conflicts_with = "no_passphrase")]
        passphrase_file: Option<PathBuf>,
        /// Do not ask for a passphrase: write the secret key unencrypted.
        #[arg(long)]
        no_passphrase: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Writes a commented ffs.toml with every role's section and working defaults.
    Init {
        /// Where to write it (must not exist).
        #[arg(long, default_value = "ffs.toml")]
        out: PathBuf,
    },
    /// Checks the config file (`--config`) and the key bag it names without starting
    /// anything: what each role would refuse at start-up, said before you deploy.
    Check {
        /// Only these roles' sections (default: all three).
        #[arg(long, value_enum, value_delimiter = ',')]
        role: Vec<config::Role>,
    },
}

fn main() -> std::process::ExitCode {
    // First, before any thread or file: on AMD, start again with glibc's vector copies.
    commlink::fast_copies::reexec_with_vector_copies();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Our code does not panic on input, but a dependency might inside one connection's
    // task (libunftp 0.24 unwraps a failed FTPS data-channel handshake). Tokio contains it
    // to that task; this makes it one ERROR line in the log instead of a bare stderr dump.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let bt = std::backtrace::Backtrace::capture(); // only with RUST_BACKTRACE=1
        if bt.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(at = %at, "a task panicked (contained to that task): {what}\n{bt}");
        } else {
            tracing::error!(at = %at, "a task panicked (contained to that task): {what}");
        }
    }));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || FfsConfig::load(&cli.config);
    match cli.cmd {
        Cmd::Agent(c) => c.run(&load()?).await,
        // Remote publishing needs no local config (it runs on a build machine).
        Cmd::Stager(c @ cmd::stager::StagerCmd::Publish(_)) if c.is_remote() => {
            c.run(&crate::config::FfsConfig::default()).await
        }
        Cmd::Stager(c) => c.run(&load()?).await,
        Cmd::Web(c) => c.run(&load()?).await,
        Cmd::Demo(args) => cmd::demo::run(args).await,
        Cmd::Keys(KeysCmd::Generate { count, out }) => {
            let bag = commlink::KeyBag::generate(count)?;
            bag.write_new(&out)?;
            println!(
                "wrote {} ({} entries, mode 0600, fingerprint {}); copy it to every ffs host",
                out.display(),
                bag.len(),
                bag.fingerprint()
            );
            Ok(())
        }
        Cmd::Keys(KeysCmd::Check { file }) => {
            let bag = commlink::KeyBag::load(&file)?;
            println!(
                "{}: {} entries, fingerprint {}",
                file.display(),
                bag.len(),
                bag.fingerprint()
            );
            Ok(())
        }
        Cmd::Keys(KeysCmd::Signing(SigningCmd::Generate {
            out,
            public,
            passphrase_file,
            no_passphrase,
        })) => cmd::keys::signing_generate(&out, public, passphrase_file.as_deref(), no_passphrase),
        Cmd::Config(ConfigCmd::Init { out }) => {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .with_context(|| {
                    format!("cannot create {} (does it exist already?)", out.display())
                })?;
            f.write_all(FfsConfig::template().as_bytes())?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Config(ConfigCmd::Check { role }) => {
            let roles = if role.is_empty() {
                vec![config::Role::Agent, config::Role::Stager, config::Role::Web]
            } else {
                role
            };
            for line in load()?.check(&roles)? {
                println!("ok  {line}");
            }
            println!("{}: config OK", cli.config.display());
            Ok(())
        }
        Cmd::Bench(cmd::bench::BenchCmd::Commlink(args)) => cmd::bench::commlink::run(args).await,
        Cmd::Bench(cmd::bench::BenchCmd::Staging(args)) => {
            let cfg = if cli.config.exists() {
                load()?
            } else {
                FfsConfig::default()
            };
            cmd::bench::staging::run(args, &cfg).await
        }
    }
}
