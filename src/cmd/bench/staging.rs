//! `ffs bench staging`: presents `ftp_stager::bench` (per-file staging latency by method
//! across sizes, and whole stage requests) as a table, JSON and an SVG chart.

use std::path::PathBuf;

use anyhow::Context as _;
use ftp_stager::bench::{BenchOptions, Report, human};

use super::{Align, Bars, Table, f1};

/// `ffs bench staging` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File sizes, comma-separated (KiB, MiB, GiB).
    #[arg(long, default_value = "1MiB,100MiB,1GiB")]
    pub sizes: String,
    /// Files per release.
    #[arg(long, default_value_t = 10)]
    pub files: usize,
    /// Rounds per size and method (copies of files ≥ 64 MiB run one round).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Scratch directory (default: beside the configured areas directory, so the
    /// filesystem is the one staging really uses).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Runs `ffs bench staging`.
pub async fn run(args: Args, cfg: &crate::config::FfsConfig) -> anyhow::Result<()> {
    let sizes = args
        .sizes
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<u64>, String>>()
        .map_err(anyhow::Error::msg)?;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let areas = &cfg.stager.areas_dir;
            let parent = areas
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            if parent.exists() {
                parent
            } else {
                std::env::temp_dir()
            }
        }
    };
    let opts = BenchOptions {
        sizes,
        files: args.files,
        rounds: args.rounds,
        dir,
    };
    let quiet = args.json;
    let report =
        tokio::task::spawn_blocking(move || ftp_stager::bench::run(&opts, &Bars::new(quiet)))
            .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    if let Some(p) = args.svg {
        std::fs::write(&p, render_svg(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
        if !args.json {
            println!("chart written to {}", p.display());
        }
    }
    Ok(())
}

/// Parses sizes such as `1MiB`, `100MiB`, `1GiB`, `4096`, `10KB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(format!("bad size unit in {s:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// A plain-text table with the copy/hard-link ratio per size.
fn render_table(r: &Report) -> String {
    let mut s = format!(
        "per-file staging latency, {} files per release, filesystem {}, reflink {}\n",
        r.files,
        r.filesystem,
        if r.reflink_supported {
            "supported"
        } else {
            "not supported"
        }
    );
    let mut t = Table::new(&[
        ("size", Align::Right),
        ("method", Align::Left),
        ("samples", Align::Right),
        ("p50 µs", Align::Right),
        ("p99 µs", Align::Right),
        ("max µs", Align::Right),
    ]);
    for row in &r.rows {
        t.row(vec![
            human(row.size),
            row.method.clone(),
            row.samples.to_string(),
            f1(row.p50_us),
            f1(row.p99_us),
            f1(row.max_us),
        ]);
    }
    s += &t.render();
    let mut sizes: Vec<u64> = r.rows.iter().map(|x| x.size).collect();
    sizes.dedup();
    for size in sizes {
        if let (Some(h), Some(c)) = (r.p50(size, "hardlink"), r.p50(size, "copy"))
            && h > 0.0
        {
            s += &format!(
                "{:>8}  copy / hard link (p50): {:.0}×\n",
                human(size),
                c / h
            );
        }
    }
    s
}

/// A grouped bar chart (log scale, p50 bars with p99 ticks) as standalone SVG.
fn render_svg(r: &Report) -> String {
    let methods: Vec<&str> = ["hardlink", "reflink", "copy", "stage-request"]
        .into_iter()
        .filter(|m| r.rows.iter().any(|x| x.method == *m))
        .collect();
    let color = |m: &str| match m {
        "hardlink" => "#2b8a3e",
        "reflink" => "#1971c2",
        "copy" => "#c92a2a",
        _ => "#868e96",
    };
    let mut sizes: Vec<u64> = r.rows.iter().map(|x| x.size).collect();
    sizes.dedup();
    let (w, h, left, top, bottom) = (760.0, 420.0, 70.0, 40.0, 60.0);
    let plot_h = h - top - bottom;
    let max = r
        .rows
        .iter()
        .map(|x| x.p99_us.max(x.p50_us))
        .fold(1.0f64, f64::max);
    let min = r
        .rows
        .iter()
        .map(|x| x.p50_us)
        .filter(|v| *v > 0.0)
        .fold(max, f64::min)
        .max(0.1);
    let lo = min.log10().floor();
    let hi = max.log10().ceil().max(lo + 1.0);
    let y = |v: f64| top + plot_h * (1.0 - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
    let group_w = (w - left - 20.0) / sizes.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / methods.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\">Per-file staging latency (p50 bar, p99 tick; µs, log scale; {} files/release)</text>\n",
        r.files
    );
    let mut e = lo;
    while e <= hi {
        let yy = y(10f64.powf(e));
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            w - 20.0,
            left - 6.0,
            yy + 4.0,
            fmt_us(10f64.powf(e))
        ));
        e += 1.0;
    }
    for (gi, size) in sizes.iter().enumerate() {
        let gx = left + gi as f64 * group_w + group_w * 0.1;
        for (mi, m) in methods.iter().enumerate() {
            let Some(row) = r.rows.iter().find(|x| x.size == *size && x.method == *m) else {
                continue;
            };
            let x = gx + mi as f64 * bar_w;
            let yt = y(row.p50_us);
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{yt:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: p50 {:.1} µs, p99 {:.1} µs</title></rect>\n",
                bar_w * 0.9,
                (top + plot_h - yt).max(0.0),
                color(m),
                human(*size),
                m,
                row.p50_us,
                row.p99_us
            ));
            let y99 = y(row.p99_us);
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{y99:.1}\" y2=\"{y99:.1}\" stroke=\"black\" stroke-width=\"2\"/>\n",
                x + bar_w * 0.9
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            gx + group_w * 0.4,
            top + plot_h + 18.0,
            human(*size)
        ));
    }
    for (mi, m) in methods.iter().enumerate() {
        let x = left + mi as f64 * 130.0;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            h - 24.0,
            color(m),
            x + 16.0,
            h - 14.0,
            if *m == "stage-request" {
                "whole stage request"
            } else {
                m
            }
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.0} s", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.0} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftp_stager::bench::Row;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10KB").unwrap(), 10_000);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    fn report() -> Report {
        let row = |size, method: &str, p50_us| Row {
            size,
            method: method.into(),
            samples: 10,
            p50_us,
            p99_us: p50_us * 2.0,
            max_us: p50_us * 3.0,
        };
        Report {
            files: 10,
            reflink_supported: false,
            filesystem: "ext4".into(),
            rows: vec![
                row(1 << 20, "hardlink", 10.0),
                row(1 << 20, "copy", 500.0),
                row(1 << 20, "stage-request", 200.0),
            ],
        }
    }

    #[test]
    fn table_shows_rows_and_ratio() {
        let t = render_table(&report());
        assert!(t.contains("reflink not supported"), "{t}");
        assert!(t.contains("1MiB  hardlink"), "{t}");
        assert!(t.contains("copy / hard link (p50): 50×"), "{t}");
    }

    #[test]
    fn svg_has_a_bar_per_row() {
        let svg = render_svg(&report());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 3, "{svg}");
        assert!(svg.contains("hardlink: p50 10.0 µs"));
    }
}
