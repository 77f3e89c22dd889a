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
    /// Repository integrity tools.
    #[command(subcommand)]
    Repo(RepoCmd),
    /// Tokens that let a build pipeline publish to this stager remotely.
    #[command(subcommand, name = "publish-token")]
    PublishToken(PublishTokenCmd),
    /// Tokens that let a follower stager replicate this one (`[stager] replicate_from`).
    #[command(subcommand, name = "replication-token")]
    ReplicationToken(ReplicationTokenCmd),
}

/// `ffs replication-token …` (works on the source stager's state directory).
#[derive(Debug, clap::Subcommand)]
pub enum ReplicationTokenCmd {
    /// Makes a token for one follower and prints it once (only its hash is stored); put
    /// it in the follower's `replicate_token_file` (mode 0600).
    Create {
        /// A unique name, e.g. the follower's host name.
        #[arg(long)]
        name: String,
    },
    /// Lists tokens (names, created, revoked; never the tokens).
    List,
    /// Revokes a token by name: that follower is refused from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `ffs publish-token …` (works on the stager's state directory).
#[derive(Debug, clap::Subcommand)]
pub enum PublishTokenCmd {
    /// Makes a token and prints it once (only its hash is stored).
    Create {
        /// A unique name, e.g. the pipeline's.
        #[arg(long)]
        name: String,
        /// Only these products (repeat the option); default any.
        #[arg(long = "product")]
        products: Vec<String>,
    },
    /// Lists tokens (names, products, created, revoked; never the tokens).
    List,
    /// Revokes a token by name: it is refused from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `ffs repo …`.
#[derive(Debug, clap::Subcommand)]
pub enum RepoCmd {
    /// Re-hashes every object and checks every release's signature; reports anything
    /// altered and exits non-zero if something is.
    Verify(VerifyArgs),
}

/// `ffs repo verify` options.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Withdraw each altered release (like `ffs yank`, recorded as quarantined), move the
    /// altered objects to repository/quarantine/ and unlink download areas' copies of them.
    #[arg(long)]
    pub quarantine: bool,
    /// Trust only these public keys (minisign .pub files) instead of the repository's own
    /// copies in repository/keys/ (the stronger check: a copy kept off the stager host).
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Publishing to a remote stager instead of the local repository.
    #[command(flatten)]
    pub remote: super::remote_publish::RemoteArgs,
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
    /// Whether this is `ffs publish --remote …` (which needs no local config).
    pub fn is_remote(&self) -> bool {
        matches!(self, StagerCmd::Publish(a) if a.remote.remote.is_some())
    }

    /// Runs the subcommand.
    // Over 100 lines, knowingly: one short match arm per subcommand of this role.
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
            StagerCmd::Publish(a) if a.remote.remote.is_some() => {
                super::remote_publish::run(&a.product, &a.version, &a.paths, &a.notes, &a.remote)
                    .await
            }
            StagerCmd::Publish(a) => {
                let m = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let signer = super::keys::cli_signer(&sc)?;
                    let repo = ftp_stager::Repository::open(&sc.repository)?;
                    Ok(ftp_stager::publish_signed(
                        &repo,
                        &a.product,
                        &a.version,
                        &a.paths,
                        &a.notes,
                        &super::bench::Bars::bytes(false),
                        signer.as_ref(),
                    )?)
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
            StagerCmd::Repo(RepoCmd::Verify(a)) => repo_verify(&sc, a).await,
            StagerCmd::PublishToken(c) => {
                let store = ftp_stager::tokens::TokenStore::new(&sc.state_dir);
                match c {
                    PublishTokenCmd::Create { name, products } => {
                        let token = store.create(&name, &products)?;
                        println!("{token}");
                        eprintln!(
                            "publish token {name:?} created for {}; it is shown only this once (only its hash is stored)",
                            if products.is_empty() {
                                "any product".to_owned()
                            } else {
                                format!("products {}", products.join(", "))
                            }
                        );
                    }
                    PublishTokenCmd::List => {
                        let tokens = store.list()?;
                        if tokens.is_empty() {
                            println!(
                                "(no publish tokens; make one with `ffs publish-token create --name NAME`)"
                            );
                        }
                        for t in tokens {
                            println!(
                                "{:<20} {:<30} created {}{}",
                                t.name,
                                if t.products.is_empty() {
                                    "any product".to_owned()
                                } else {
                                    t.products.join(",")
                                },
                                t.created_at.format("%Y-%m-%d %H:%M UTC"),
                                t.revoked_at
                                    .map(|r| format!(
                                        "  REVOKED {}",
                                        r.format("%Y-%m-%d %H:%M UTC")
                                    ))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    PublishTokenCmd::Revoke { name } => {
                        if store.revoke(&name)? {
                            println!("revoked publish token {name:?}");
                        } else {
                            println!("publish token {name:?} was revoked already");
                        }
                    }
                }
                Ok(())
            }
            StagerCmd::ReplicationToken(c) => {
                let store = ftp_stager::tokens::TokenStore::replication(&sc.state_dir);
                match c {
                    ReplicationTokenCmd::Create { name } => {
                        println!("{}", store.create(&name, &[])?);
                        eprintln!(
                            "replication token {name:?} created; it is shown only this once (only its hash is stored)"
                        );
                    }
                    ReplicationTokenCmd::List => {
                        let tokens = store.list()?;
                        if tokens.is_empty() {
                            println!(
                                "(no replication tokens; make one with `ffs replication-token create --name NAME`)"
                            );
                        }
                        for t in tokens {
                            let revoked = t
                                .revoked_at
                                .map(|r| format!("  REVOKED {}", r.format("%Y-%m-%d %H:%M UTC")));
                            println!(
                                "{:<20} created {}{}",
                                t.name,
                                t.created_at.format("%Y-%m-%d %H:%M UTC"),
                                revoked.unwrap_or_default()
                            );
                        }
                    }
                    ReplicationTokenCmd::Revoke { name } => {
                        if store.revoke(&name)? {
                            println!("revoked replication token {name:?}");
                        } else {
                            println!("replication token {name:?} was revoked already");
                        }
                    }
                }
                Ok(())
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

async fn repo_verify(sc: &ftp_stager::StagerConfig, a: VerifyArgs) -> anyhow::Result<()> {
    let sc = sc.clone();
    let json = a.json;
    let (report, outcome) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let repo = ftp_stager::Repository::open(&sc.repository)?;
        let mut keys = a
            .keys
            .iter()
            .map(|p| ftp_stager::signing::PublicKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        let only = !keys.is_empty();
        if !only && let Some(s) = super::keys::cli_signer(&sc)? {
            keys.push(ftp_stager::signing::PublicKey::parse(&s.public_key_text())?);
        }
        let report =
            ftp_stager::verify::verify(&repo, &keys, only, &super::bench::Bars::bytes(json))?;
        let outcome = if a.quarantine && report.altered() {
            Some(ftp_stager::verify::quarantine(
                &repo,
                &report,
                Some(&sc.areas_dir),
            )?)
        } else {
            None
        };
        Ok((report, outcome))
    })
    .await??;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "altered": report.altered(),
                "report": report,
                "quarantine": outcome,
            }))?
        );
    } else {
        for r in &report.releases {
            println!(
                "{:<8} {} {}{}  {} ({} files re-hashed)",
                if r.altered() { "ALTERED" } else { "ok" },
                r.product,
                r.version,
                if r.quarantined.is_some() {
                    " [quarantined]"
                } else if r.yanked {
                    " [yanked]"
                } else {
                    ""
                },
                r.signature_state(),
                r.files
            );
            for p in &r.problems {
                println!("         {p}");
            }
        }
        for o in &report.orphans {
            println!(
                "ALTERED  object {} (named by no release): {}",
                o.sha256, o.why
            );
        }
        for t in &report.twins {
            println!(
                "ALTERED  twin {} of object {} (a copy areas link to): {}",
                t.twin, t.sha256, t.why
            );
        }
        let bad = report.releases.iter().filter(|r| r.altered()).count();
        println!(
            "{} releases checked, {} objects ({} bytes) re-hashed: {}",
            report.releases.len(),
            report.objects,
            report.bytes,
            if report.altered() {
                format!(
                    "{bad} releases, {} stray objects and {} twins altered",
                    report.orphans.len(),
                    report.twins.len()
                )
            } else {
                "nothing altered".to_owned()
            }
        );
        if let Some(q) = &outcome {
            println!(
                "quarantined {} releases (withdrawn, as by ffs yank), moved {} objects to repository/quarantine/, removed {} download-area links to them",
                q.releases.len(),
                q.objects_moved,
                q.area_links_removed
            );
        } else if report.altered() {
            println!("run again with --quarantine to withdraw the altered releases");
        }
    }
    if report.altered() {
        anyhow::bail!("the repository holds altered data (see above)");
    }
    Ok(())
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
        if let Some(q) = &m.quarantined {
            writeln!(out, "  quarantined {q}")?;
        }
        if !m.notes.is_empty() {
            writeln!(out, "  notes: {}", m.notes)?;
        }
        for f in &m.files {
            writeln!(out, "  {}  {:>12}  {}", f.sha256, f.size, f.name)?;
        }
    }
    Ok(())
}
