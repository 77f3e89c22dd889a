//! `ffs stager`, `ffs publish`, `ffs catalog`, `ffs yank` and `ffs bench staging`: thin
//! wrappers over the `ftp_stager` crate.

use std::path::PathBuf;

use anyhow::Context as _;

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum StagerCmd {
    /// Runs the ftp-stager: commlink service, FTP/FTPS and HTTPS downloads, sweeper.
    Stager,
    /// Imports files or directory trees into the repository as a new release.
    Publish(PublishArgs),
    /// Lists products, releases and files with sizes and SHA-256.
    Catalog(CatalogArgs),
    /// Withdraws a release (staged areas keep working until they expire).
    Yank(YankArgs),
}

/// `ffs publish` options.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Product name (letters, digits, . _ + -).
    pub product: String,
    /// Version (letters, digits, . _ + -).
    pub version: String,
    /// Files or directories; a directory contributes its files under relative names.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Release notes.
    #[arg(long, default_value = "")]
    pub notes: String,
}

/// `ffs catalog` options.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Include yanked releases.
    #[arg(long)]
    pub all: bool,
}

/// `ffs yank` options.
#[derive(Debug, clap::Args)]
pub struct YankArgs {
    /// Product name.
    pub product: String,
    /// Version.
    pub version: String,
}

impl StagerCmd {
    /// Runs the subcommand.
    pub async fn run(self, cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        let sc = cfg.stager.clone();
        match self {
            StagerCmd::Stager => {
                let link = cfg.link_config()?;
                ftp_stager::server::run(&sc, link, super::shutdown_signal())
                    .await
                    .context("ftp-stager")?;
                Ok(())
            }
            StagerCmd::Publish(a) => {
                let m = tokio::task::spawn_blocking(move || {
                    let repo = ftp_stager::Repository::open(&sc.repository)?;
                    ftp_stager::publish(&repo, &a.product, &a.version, &a.paths, &a.notes, true)
                })
                .await??;
                println!(
                    "published {} {}: {} files, {} bytes",
                    m.product,
                    m.version,
                    m.files.len(),
                    m.bytes()
                );
                for f in &m.files {
                    println!("  {}  {:>12}  {}", f.sha256, f.size, f.name);
                }
                Ok(())
            }
            StagerCmd::Catalog(a) => {
                let repo = ftp_stager::Repository::open(&sc.repository)?;
                let releases = repo.catalog(a.all)?;
                match print_catalog(&releases, a.json) {
                    // `ffs catalog | head` closes the pipe early: not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => Ok(other?),
                }
            }
            StagerCmd::Yank(a) => {
                let repo = ftp_stager::Repository::open(&sc.repository)?;
                let m = repo.yank(&a.product, &a.version)?;
                println!(
                    "yanked {} {}: it can no longer be staged; areas already staged keep working until they expire",
                    m.product, m.version
                );
                Ok(())
            }
        }
    }
}

fn print_catalog(releases: &[ftp_stager::Manifest], json: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(releases).map_err(std::io::Error::other)?;
        return writeln!(out, "{text}");
    }
    if releases.is_empty() {
        writeln!(
            out,
            "(no releases; add one with `ffs publish PRODUCT VERSION PATH…`)"
        )?;
    }
    for m in releases {
        writeln!(
            out,
            "{} {}{}  published {}  {} files, {} bytes",
            m.product,
            m.version,
            if m.yanked { " [yanked]" } else { "" },
            m.published_at.format("%Y-%m-%d %H:%M UTC"),
            m.files.len(),
            m.bytes()
        )?;
        if !m.notes.is_empty() {
            writeln!(out, "  notes: {}", m.notes)?;
        }
        for f in &m.files {
            writeln!(out, "  {}  {:>12}  {}", f.sha256, f.size, f.name)?;
        }
    }
    Ok(())
}

/// `ffs bench staging` options.
#[derive(Debug, clap::Args)]
pub struct BenchStagingArgs {
    /// File sizes, comma-separated (KiB, MiB, GiB).
    #[arg(long, default_value = "1MiB,100MiB,1GiB")]
    pub sizes: String,
    /// Files per release.
    #[arg(long, default_value_t = 10)]
    pub files: usize,
    /// Rounds per size and method (copies of files ≥ 64 MiB run one round).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Scratch directory (default: beside the configured areas directory, so the
    /// filesystem is the one staging really uses).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Runs `ffs bench staging`.
pub async fn bench_staging(
    args: BenchStagingArgs,
    cfg: &crate::config::FfsConfig,
) -> anyhow::Result<()> {
    let sizes = args
        .sizes
        .split(',')
        .map(ftp_stager::bench::parse_size)
        .collect::<Result<Vec<u64>, String>>()
        .map_err(anyhow::Error::msg)?;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let areas = &cfg.stager.areas_dir;
            let parent = areas
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            if parent.exists() {
                parent
            } else {
                std::env::temp_dir()
            }
        }
    };
    let opts = ftp_stager::bench::BenchOptions {
        sizes,
        files: args.files,
        rounds: args.rounds,
        dir,
        progress: !args.json,
    };
    let report = tokio::task::spawn_blocking(move || ftp_stager::bench::run(&opts)).await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", ftp_stager::bench::render_table(&report));
    }
    if let Some(p) = args.svg {
        std::fs::write(&p, ftp_stager::bench::render_svg(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        if !args.json {
            println!("chart written to {}", p.display());
        }
    }
    Ok(())
}
