//! `ffs bench …`: presentation only. Each subject's measuring lives in its library
//! (`commlink::bench`, `ftp_stager::bench`) and returns data; this module turns the data
//! into tables, JSON and charts and draws the progress the libraries report.
//! One module per subject; the shared pieces (progress bar, table) are here.

pub mod commlink;
pub mod staging;

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// `ffs bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Commlink round-trip latency and throughput per suite, beside plain TCP and TLS.
    Commlink(commlink::Args),
    /// Per-file staging latency by method (hard link, reflink, copy) across sizes.
    Staging(staging::Args),
}

/// Draws a library's progress reports as an indicatif bar per phase on stderr (hidden when
/// stderr is not a terminal, and when `quiet`).
pub struct Bars {
    quiet: bool,
    bytes: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars on stderr, or nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Bars {
        Bars {
            quiet,
            bytes: false,
            current: Mutex::new(None),
        }
    }

    /// Bars whose steps are bytes (shown as sizes and a rate), or nothing when `quiet`.
    pub fn bytes(quiet: bool) -> Bars {
        Bars {
            bytes: true,
            ..Bars::new(quiet)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ::commlink::progress::Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        let mut current = self.lock();
        if let Some(pb) = current.take() {
            pb.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let pb = if total == 0 {
            let pb = ProgressBar::new_spinner();
            pb.set_message(name.to_owned());
            pb
        } else {
            let template = if self.bytes {
                "{prefix:<40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{prefix:<52} [{bar:30}] {pos:>6}/{len:6} {per_sec:>12} {elapsed}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::new(total)
                .with_style(style)
                .with_prefix(name.to_owned())
        };
        *current = Some(pb);
    }

    fn advance(&self, n: u64) {
        if let Some(pb) = self.lock().as_ref() {
            pb.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.lock().take() {
            pb.finish_and_clear();
        }
    }
}

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// A plain-text table: a header row and rows of cells, each column as wide as its widest
/// cell, two spaces between columns.
#[derive(Debug, Default)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| cell(r, i).chars().count())
                    .chain([self.columns[i].0.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let mut out = String::new();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let pad = " ".repeat(w.saturating_sub(c.chars().count()));
                if i > 0 {
                    out.push_str("  ");
                }
                match align {
                    Align::Left => {
                        out.push_str(c);
                        out.push_str(&pad);
                    }
                    Align::Right => {
                        out.push_str(&pad);
                        out.push_str(c);
                    }
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut s = line(self.columns.iter().map(|(h, _)| h.clone()).collect());
        for r in &self.rows {
            s.push_str(&line(r.clone()));
        }
        s
    }
}

/// A number with one decimal.
pub fn f1(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&[("name", Align::Left), ("µs", Align::Right)]);
        t.row(vec!["tcp".into(), f1(12.345)]);
        t.row(vec!["commlink aes".into(), f1(7.0)]);
        assert_eq!(
            t.render(),
            "name            µs\ntcp           12.3\ncommlink aes   7.0\n"
        );
    }
}
