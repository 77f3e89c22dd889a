//! placeholder (being written by the web owner)

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum WebCmd {
    /// Not yet.
    #[command(name = "web-placeholder", hide = true)]
    Placeholder,
}

impl WebCmd {
    /// Runs the subcommand.
    pub async fn run(self, _cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        anyhow::bail!("not yet")
    }
}
