//! The staging benchmark outside the `ffs` binary (same code as `ffs bench staging`):
//!
//! ```text
//! cargo run --release -p ftp-stager --example bench_staging -- DIR SIZES FILES ROUNDS SVG JSON
//! ```

use ftp_stager::bench;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        eprintln!("usage: bench_staging DIR SIZES FILES ROUNDS SVG_OUT JSON_OUT");
        std::process::exit(2);
    }
    let sizes = a[1]
        .split(',')
        .map(bench::parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    let report = bench::run(&bench::BenchOptions {
        sizes,
        files: a[2].parse()?,
        rounds: a[3].parse()?,
        dir: a[0].clone().into(),
        progress: true,
    })?;
    print!("{}", bench::render_table(&report));
    std::fs::write(&a[4], bench::render_svg(&report))?;
    std::fs::write(&a[5], serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
