//! Subcommands, one module per role; the lead's tools (keys, config, demo, bench) live here too.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod keys;
pub mod remote_publish;
pub mod stager;
pub mod web;

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what systemd and `kill` send): every role
/// stops cleanly on either.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
