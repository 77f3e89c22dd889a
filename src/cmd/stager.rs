//! `ffs stager`, `ffs publish`, `ffs catalog` and `ffs yank`: thin
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
                    let signer = if sc.signing_key.as_os_str().is_empty() {
                        None
                    } else {
                        Some(ftp_stager::Signer::load(&sc.signing_key)?)
                    };
                    let repo = ftp_stager::Repository::open(&sc.repository)?;
                    ftp_stager::publish_signed(
                        &repo,
                        &a.product,
                        &a.version,
                        &a.paths,
                        &a.notes,
                        true,
                        signer.as_ref(),
                    )
                })
                .await??;
                println!(
                    "published {} {}: {} files, {} bytes, {}",
                    m.product,
                    m.version,
                    m.files.len(),
                    m.bytes(),
                    signature_state(&m)
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

/// "signed by key ID" or "unsigned": what the manifest records. Whether the signature still
/// verifies is `ffs repo verify`'s job; an unsigned release is never called verified.
fn signature_state(m: &ftp_stager::Manifest) -> String {
    match &m.signature {
        Some(s) => format!("signed by key {}", s.key_id),
        None => "unsigned".to_owned(),
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
            "{} {}{}  published {}  {} files, {} bytes  {}",
            m.product,
            m.version,
            if m.yanked { " [yanked]" } else { "" },
            m.published_at.format("%Y-%m-%d %H:%M UTC"),
            m.files.len(),
            m.bytes(),
            signature_state(m)
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
