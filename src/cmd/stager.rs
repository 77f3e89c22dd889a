//! placeholder (being written by the stager owner)

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum StagerCmd {
    /// Not yet.
    #[command(name = "stager-placeholder", hide = true)]
    Placeholder,
}

impl StagerCmd {
    /// Runs the subcommand.
    pub async fn run(self, _cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        anyhow::bail!("not yet")
    }
}

/// `ffs bench staging` options.
#[derive(Debug, clap::Args)]
pub struct BenchStagingArgs {}

/// Runs `ffs bench staging`.
pub async fn bench_staging(
    _args: BenchStagingArgs,
    _cfg: &crate::config::FfsConfig,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
