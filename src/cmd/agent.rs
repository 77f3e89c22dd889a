//! placeholder (being written by the agent owner)

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Not yet.
    #[command(name = "agent-placeholder", hide = true)]
    Placeholder,
}

impl AgentCmd {
    /// Runs the subcommand.
    pub async fn run(self, _cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        anyhow::bail!("not yet")
    }
}
