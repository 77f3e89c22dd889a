//! placeholder (being written by the bench helper)

/// `ffs bench commlink` options.
#[derive(Debug, clap::Args)]
pub struct BenchCommlinkArgs {}

/// Runs `ffs bench commlink`.
pub async fn bench_commlink(_args: BenchCommlinkArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
