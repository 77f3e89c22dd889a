//! `ffs bench staging`: per-file stage latency by method (hard link, reflink where the
//! filesystem supports it, copy) across file sizes, measured in one run; plus the latency of
//! a whole `stage` request (an N-file release, including the state-file write) through
//! [`Stager::stage`]. Output as a table, JSON, and a hand-written SVG chart.
//!
//! Source files hold real (pseudo-random) bytes, not sparse holes, so copying is measured
//! fairly. They were just written, so the copy reads from the page cache: the copy numbers
//! are a best case for copying.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::StagerConfig;
use crate::error::{Result, StagerError};
use crate::repository::{Manifest, ManifestFile, Repository};
use crate::staging::{Method, Stager, percentile, reflink};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// File sizes in bytes.
    pub sizes: Vec<u64>,
    /// Files per release.
    pub files: usize,
    /// Rounds per (size, method); copy of files ≥ 64 MiB does one round.
    pub rounds: usize,
    /// Scratch directory (repository and areas are created inside; removed afterwards).
    pub dir: PathBuf,
    /// Show progress on stderr.
    pub progress: bool,
}

/// Latency of one (size, method) pair.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// File size in bytes.
    pub size: u64,
    /// `hardlink`, `reflink`, `copy`, or `stage-request` (a whole N-file stage request).
    pub method: String,
    /// Number of measurements.
    pub samples: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Worst, microseconds.
    pub max_us: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Files per release.
    pub files: usize,
    /// Whether FICLONE worked on this filesystem.
    pub reflink_supported: bool,
    /// Filesystem type of the scratch directory, when known.
    pub filesystem: String,
    /// The measurements.
    pub rows: Vec<Row>,
}

impl Report {
    /// p50 of a (size, method) pair.
    pub fn p50(&self, size: u64, method: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.size == size && r.method == method)
            .map(|r| r.p50_us)
    }
}

/// Parses sizes such as `1MiB`, `100MiB`, `1GiB`, `4096`, `10KB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
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

/// Human size (binary units).
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

fn write_pattern(path: &Path, size: u64) -> Result<()> {
    let mut f = fs::File::create(path).map_err(StagerError::io("create", path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size;
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .map_err(StagerError::io("write", path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(StagerError::io("fsync", path))
}

fn us(samples_ns: &mut [u64]) -> (f64, f64, f64) {
    samples_ns.sort_unstable();
    (
        percentile(samples_ns, 50.0) as f64 / 1000.0,
        percentile(samples_ns, 99.0) as f64 / 1000.0,
        samples_ns.last().copied().unwrap_or(0) as f64 / 1000.0,
    )
}

fn fs_type(dir: &Path) -> String {
    let Ok(s) = nix::sys::statfs::statfs(dir) else {
        return "unknown".into();
    };
    let magic = s.filesystem_type().0 as u64;
    match magic {
        0xEF53 => "ext4".into(),
        0x9123_683E => "btrfs".into(),
        0x5846_5342 => "xfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        m => format!("0x{m:x}"),
    }
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> Result<Report> {
    if opts.files == 0 || opts.rounds == 0 || opts.sizes.is_empty() {
        return Err(StagerError::Invalid(
            "need at least one size, file and round".into(),
        ));
    }
    fs::create_dir_all(&opts.dir).map_err(StagerError::io("create", &opts.dir))?;
    let scratch = opts
        .dir
        .join(format!("ffs-bench-{}", crate::fsutil::random_hex(4)));
    let result = run_in(opts, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn run_in(opts: &BenchOptions, scratch: &Path) -> Result<Report> {
    let cfg = StagerConfig {
        repository: scratch.join("repo"),
        areas_dir: scratch.join("areas"),
        state_dir: scratch.join("state"),
        ..Default::default()
    };
    let repo = Repository::open(&cfg.repository)?;
    let src_dir = scratch.join("src");
    fs::create_dir_all(&src_dir).map_err(StagerError::io("create", &src_dir))?;
    let mut rows = Vec::new();
    let say = |m: String| {
        if opts.progress {
            eprintln!("{m}");
        }
    };

    // Does this filesystem clone?
    let probe = src_dir.join("probe");
    write_pattern(&probe, 4096)?;
    let reflink_supported = reflink(&probe, &src_dir.join("probe.clone")).is_ok();

    let mut stager: Option<Stager> = None;
    for &size in &opts.sizes {
        let name = human(size);
        say(format!("writing a {name} source file"));
        let src = src_dir.join(format!("{name}.bin"));
        write_pattern(&src, size)?;
        let version = format!("{name}-n{}", opts.files);
        let m = crate::publish::publish(
            &repo,
            "bench",
            &version,
            std::slice::from_ref(&src),
            "",
            opts.progress,
        )?;
        let _ = fs::remove_file(&src);
        let sha = m.files[0].sha256.clone();
        // A release of N files (same content under N names: staging cost does not depend
        // on content, and it keeps the scratch space at one copy per size).
        let release = Manifest {
            files: (0..opts.files)
                .map(|i| ManifestFile {
                    name: format!("f{i:03}.bin"),
                    size,
                    sha256: sha.clone(),
                })
                .collect(),
            ..m
        };
        repo.write_manifest(&release)?;
        let obj = repo.object_path(&sha)?;

        let mut methods = vec![Method::HardLink];
        if reflink_supported {
            methods.push(Method::Reflink);
        }
        methods.push(Method::Copy);
        for method in methods {
            let rounds = if method != Method::HardLink && size >= 64 << 20 {
                1
            } else {
                opts.rounds
            };
            say(format!(
                "{name}: {} × {} files × {rounds} rounds",
                method.name(),
                opts.files
            ));
            let mut samples = Vec::with_capacity(rounds * opts.files);
            for r in 0..rounds {
                let area = cfg.areas_dir.join(format!("bench-{r}"));
                fs::create_dir_all(&area).map_err(StagerError::io("create", &area))?;
                for i in 0..opts.files {
                    let dst = area.join(format!("f{i:03}.bin"));
                    let t = Instant::now();
                    method
                        .place(&obj, &dst)
                        .map_err(StagerError::io("place", &dst))?;
                    samples.push(t.elapsed().as_nanos() as u64);
                }
                fs::remove_dir_all(&area).map_err(StagerError::io("remove", &area))?;
            }
            let (p50, p99, max) = us(&mut samples);
            rows.push(Row {
                size,
                method: method.name().into(),
                samples: samples.len(),
                p50_us: p50,
                p99_us: p99,
                max_us: max,
            });
        }

        // Whole stage requests (hard link), as the web frontend sees them minus the link.
        let st = match &stager {
            Some(s) => s,
            None => stager.insert(Stager::open(&cfg)?),
        };
        let req = commlink::msg::stager::StageRequest {
            product: "bench".into(),
            version: version.clone(),
            ..Default::default()
        };
        let mut samples = Vec::new();
        for _ in 0..opts.rounds {
            let t = Instant::now();
            let a = st.stage(&req)?;
            samples.push(t.elapsed().as_nanos() as u64);
            st.unstage(&a.area_id)?;
        }
        let (p50, p99, max) = us(&mut samples);
        rows.push(Row {
            size,
            method: "stage-request".into(),
            samples: samples.len(),
            p50_us: p50,
            p99_us: p99,
            max_us: max,
        });
        // Free the scratch space before the next size.
        drop(release);
        let _ = fs::remove_file(&obj);
    }
    Ok(Report {
        files: opts.files,
        reflink_supported,
        filesystem: fs_type(scratch),
        rows,
    })
}

/// A plain-text table with the copy/hard-link ratio per size.
pub fn render_table(r: &Report) -> String {
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
    s.push_str(&format!(
        "{:>8}  {:<14} {:>7} {:>12} {:>12} {:>12}\n",
        "size", "method", "samples", "p50 µs", "p99 µs", "max µs"
    ));
    for row in &r.rows {
        s.push_str(&format!(
            "{:>8}  {:<14} {:>7} {:>12.1} {:>12.1} {:>12.1}\n",
            human(row.size),
            row.method,
            row.samples,
            row.p50_us,
            row.p99_us,
            row.max_us
        ));
    }
    let mut sizes: Vec<u64> = r.rows.iter().map(|x| x.size).collect();
    sizes.dedup();
    for size in sizes {
        if let (Some(h), Some(c)) = (r.p50(size, "hardlink"), r.p50(size, "copy"))
            && h > 0.0
        {
            s.push_str(&format!(
                "{:>8}  copy / hard link (p50): {:.0}×\n",
                human(size),
                c / h
            ));
        }
    }
    s
}

/// A grouped bar chart (log scale, p50 bars with p99 ticks) as standalone SVG.
pub fn render_svg(r: &Report) -> String {
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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10KB").unwrap(), 10_000);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(human(100 << 20), "100MiB");
    }

    #[test]
    fn small_run_measures_every_method_and_renders() {
        let d = tempfile::tempdir().unwrap();
        let r = run(&BenchOptions {
            sizes: vec![64 << 10, 1 << 20],
            files: 3,
            rounds: 2,
            dir: d.path().to_path_buf(),
            progress: false,
        })
        .unwrap();
        for size in [64 << 10, 1 << 20] {
            for m in ["hardlink", "copy", "stage-request"] {
                let row = r
                    .rows
                    .iter()
                    .find(|x| x.size == size && x.method == m)
                    .unwrap();
                assert!(row.p50_us > 0.0 && row.p99_us >= row.p50_us, "{row:?}");
            }
        }
        let t = render_table(&r);
        assert!(t.contains("copy / hard link"), "{t}");
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.contains("hardlink"));
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            0,
            "scratch removed"
        );
    }
}
