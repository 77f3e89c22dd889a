//! `ffs bench staging`: per-file stage latency by method (hard link, reflink where the
//! filesystem supports it, copy) across file sizes, measured in one run; plus the latency of
//! a whole `stage` request (an N-file release, including the state-file write) through
//! [`Stager::stage`]. This module measures and returns a [`Report`]; the `ffs` binary
//! presents it (table, JSON, SVG chart) and draws the progress reported here.
//!
//! Source files hold real (pseudo-random) bytes, not sparse holes, so copying is measured
//! fairly. They were just written, so the copy reads from the page cache: the copy numbers
//! are a best case for copying.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use commlink::progress::Progress;
use commlink::stats::p50_p99_max;
use serde::Serialize;

use crate::config::StagerConfig;
use crate::error::{Result, StagerError};
use crate::repository::{Manifest, ManifestFile, Repository};
use crate::staging::{Method, Stager, reflink};

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
    let (p50, p99, max) = p50_p99_max(samples_ns);
    (
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        max as f64 / 1000.0,
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
pub fn run(opts: &BenchOptions, progress: &dyn Progress) -> Result<Report> {
    if opts.files == 0 || opts.rounds == 0 || opts.sizes.is_empty() {
        return Err(StagerError::Invalid(
            "need at least one size, file and round".into(),
        ));
    }
    fs::create_dir_all(&opts.dir).map_err(StagerError::io("create", &opts.dir))?;
    let scratch = opts
        .dir
        .join(format!("ffs-bench-{}", crate::fsutil::random_hex(4)));
    let result = run_in(opts, progress, &scratch);
    progress.finish();
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn run_in(opts: &BenchOptions, progress: &dyn Progress, scratch: &Path) -> Result<Report> {
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

    // Does this filesystem clone?
    let probe = src_dir.join("probe");
    write_pattern(&probe, 4096)?;
    let reflink_supported = reflink(&probe, &src_dir.join("probe.clone")).is_ok();
    let mut methods = vec![Method::HardLink];
    if reflink_supported {
        methods.push(Method::Reflink);
    }
    methods.push(Method::Copy);

    let mut stager: Option<Stager> = None;
    for &size in &opts.sizes {
        let (version, obj) = bench_release(&repo, &src_dir, size, opts.files, progress)?;
        for &method in &methods {
            // Copies of large files take seconds each: one round is enough to see them.
            let rounds = if method != Method::HardLink && size >= 64 << 20 {
                1
            } else {
                opts.rounds
            };
            let samples = place_samples(
                method,
                &obj,
                &cfg.areas_dir,
                size,
                rounds,
                opts.files,
                progress,
            )?;
            rows.push(Row::from_samples(size, method.name(), samples));
            if method == Method::HardLink {
                // Whole stage requests right after the hard links, before the copies: at
                // 1 GiB the copy round writes (and then deletes) gigabytes the disk is still
                // flushing for seconds afterwards, and each `mkdir`/`link` of a stage request
                // would wait behind that journal work, the benchmark's own baseline.
                let st = match &stager {
                    Some(s) => s,
                    None => stager.insert(Stager::open(&cfg)?),
                };
                let samples = stage_samples(st, &version, size, opts.rounds, progress)?;
                rows.push(Row::from_samples(size, "stage-request", samples));
            }
        }
        // Free the scratch space before the next size.
        let _ = fs::remove_file(&obj);
    }
    Ok(Report {
        files: opts.files,
        reflink_supported,
        filesystem: fs_type(scratch),
        rows,
    })
}

impl Row {
    fn from_samples(size: u64, method: &str, mut samples_ns: Vec<u64>) -> Row {
        let (p50, p99, max) = us(&mut samples_ns);
        Row {
            size,
            method: method.into(),
            samples: samples_ns.len(),
            p50_us: p50,
            p99_us: p99,
            max_us: max,
        }
    }
}

/// Publishes one `size`-byte file of real bytes and a release naming it `files` times
/// (same content under N names: staging cost does not depend on content, and it keeps the
/// scratch space at one copy per size). Returns the release's version and the object.
fn bench_release(
    repo: &Repository,
    src_dir: &Path,
    size: u64,
    files: usize,
    progress: &dyn Progress,
) -> Result<(String, PathBuf)> {
    let name = human(size);
    progress.phase(&format!("writing a {name} source file"), 0);
    let src = src_dir.join(format!("{name}.bin"));
    write_pattern(&src, size)?;
    let version = format!("{name}-n{files}");
    let m = crate::publish::publish(
        repo,
        "bench",
        &version,
        std::slice::from_ref(&src),
        "",
        &commlink::progress::Silent,
    )?;
    let _ = fs::remove_file(&src);
    let sha = m.files[0].sha256.clone();
    let release = Manifest {
        files: (0..files)
            .map(|i| ManifestFile {
                name: format!("f{i:03}.bin"),
                size,
                sha256: sha.clone(),
            })
            .collect(),
        ..m
    };
    repo.write_manifest(&release)?;
    Ok((version, repo.object_path(&sha)?))
}

/// Per-file latency of placing `obj` into fresh areas with `method`, in ns.
fn place_samples(
    method: Method,
    obj: &Path,
    areas_dir: &Path,
    size: u64,
    rounds: usize,
    files: usize,
    progress: &dyn Progress,
) -> Result<Vec<u64>> {
    progress.phase(
        &format!(
            "{}: {} × {files} files × {rounds} rounds",
            human(size),
            method.name()
        ),
        (rounds * files) as u64,
    );
    let mut samples = Vec::with_capacity(rounds * files);
    for r in 0..rounds {
        let area = areas_dir.join(format!("bench-{r}"));
        fs::create_dir_all(&area).map_err(StagerError::io("create", &area))?;
        for i in 0..files {
            let dst = area.join(format!("f{i:03}.bin"));
            let t = Instant::now();
            method
                .place(obj, &dst)
                .map_err(StagerError::io("place", &dst))?;
            samples.push(t.elapsed().as_nanos() as u64);
            progress.advance(1);
        }
        fs::remove_dir_all(&area).map_err(StagerError::io("remove", &area))?;
    }
    Ok(samples)
}

/// Latency of whole stage requests (hard link) for the release, as the web frontend sees
/// them minus the link, in ns.
fn stage_samples(
    st: &Stager,
    version: &str,
    size: u64,
    rounds: usize,
    progress: &dyn Progress,
) -> Result<Vec<u64>> {
    let req = commlink::msg::stager::StageRequest {
        product: "bench".into(),
        version: version.to_owned(),
        ..Default::default()
    };
    progress.phase(
        &format!("{}: whole stage requests × {rounds}", human(size)),
        rounds as u64,
    );
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let a = st.stage(&req)?;
        samples.push(t.elapsed().as_nanos() as u64);
        st.unstage(&a.area_id)?;
        progress.advance(1);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(100 << 20), "100MiB");
        assert_eq!(human(1 << 30), "1GiB");
        assert_eq!(human(1000), "1000B");
    }

    /// Counts what is reported, to check that progress arrives.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64);

    impl Progress for Count {
        fn phase(&self, _: &str, _: u64) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn advance(&self, n: u64) {
            self.1.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn small_run_measures_every_method_and_reports_progress() {
        let d = tempfile::tempdir().unwrap();
        let opts = BenchOptions {
            sizes: vec![64 << 10, 1 << 20],
            files: 3,
            rounds: 2,
            dir: d.path().to_path_buf(),
        };
        let progress = Count::default();
        let r = run(&opts, &progress).unwrap();
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
        let samples: usize = r.rows.iter().map(|x| x.samples).sum();
        assert_eq!(
            progress.1.load(std::sync::atomic::Ordering::Relaxed),
            samples as u64,
            "one step per sample"
        );
        assert!(progress.0.load(std::sync::atomic::Ordering::Relaxed) >= 6);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            0,
            "scratch removed"
        );
    }
}
