//! Throughput helper: publishes one file into a scratch repository, starts the stager on
//! loopback (FTP, HTTPS), stages the file and prints the URLs, then serves until stdin
//! closes. Used by `ftp-stager/bench/throughput.sh`.
//!
//! ```text
//! cargo run --release -p ftp-stager --example serve_file -- SCRATCH_DIR FILE
//! ```

use std::path::PathBuf;

use commlink::msg::stager::StageRequest;
use ftp_stager::server::{Listeners, StagerServer};
use ftp_stager::{Repository, StagerConfig};

/// The `ffs` binary's allocator, so the download benchmarks measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As the `ffs` binary starts: glibc's vector copies on AMD first, then the runtime.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    commlink::fast_copies::reexec_with_vector_copies();
    run()
}

#[tokio::main]
async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: serve_file SCRATCH_DIR FILE");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let cfg = StagerConfig {
        repository: dir.join("repo"),
        areas_dir: dir.join("areas"),
        state_dir: dir.join("state"),
        // FFS_PASSIVE_PORTS: a wider range for many concurrent FTP streams (memory.sh).
        passive_ports: std::env::var("FFS_PASSIVE_PORTS").unwrap_or_else(|_| "31000-31099".into()),
        ..Default::default()
    };
    let repo = Repository::open(&cfg.repository)?;
    if repo.manifest("bench", "1").is_err() {
        ftp_stager::publish(
            &repo,
            "bench",
            "1",
            &[PathBuf::from(file)],
            "",
            &commlink::progress::Silent,
        )?;
    }
    let listeners = Listeners::loopback(false).await?;
    let server = StagerServer::new(&cfg)?;
    server.use_listener_ports(&listeners);
    let a = server.stager().stage(&StageRequest {
        product: "bench".into(),
        version: "1".into(),
        ..Default::default()
    })?;
    println!("HTTPS {}", a.https_base);
    println!("FTP {}", a.ftp_url);
    println!("FILE {}", a.files[0].name);
    println!("SHA256 {}", a.files[0].sha256);
    let stop = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await;
    };
    server.serve(None, listeners, stop).await?;
    Ok(())
}
