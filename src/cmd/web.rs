//! `ffs web`: the web frontend role.

use anyhow::Context as _;

/// Subcommands of this role.
#[derive(Debug, clap::Subcommand)]
pub enum WebCmd {
    /// Runs the web frontend (HTTPS pages for customers and admins) until Ctrl-C.
    Web,
}

impl WebCmd {
    /// Runs the subcommand.
    pub async fn run(self, cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
        match self {
            WebCmd::Web => {
                let link = cfg.link_config()?;
                let app = web_frontend::Application::from_config(cfg.web.clone(), link)
                    .await
                    .context("starting the web frontend")?;
                println!(
                    "ffs web: https://{} (port {}), certificate SHA-256 {}",
                    cfg.web.listen,
                    app.port(),
                    app.fingerprint()
                );
                if let Some(p) = app.http_port() {
                    println!("ffs web: plain HTTP on port {p} redirects to HTTPS");
                }
                app.run_until(super::shutdown_signal())
                    .await
                    .context("web server")?;
                Ok(())
            }
        }
    }
}
