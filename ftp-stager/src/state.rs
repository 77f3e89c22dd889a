//! The stager's persistent state: the area records (`areas.json`, a snapshot written
//! atomically, plus `areas.journal`, the changes since, appended), and `deliveries.jsonl`
//! (append-only log of completed transfers). Both files are mode 0600.
//!
//! Areas: a stage request adds a record and an unstage or the sweeper removes one. Each
//! change is one appended journal line (`{"add":{…}}` or `{"remove":"id"}`), written in
//! groups with one `fdatasync` per group, so the cost of recording a change does not grow
//! with the number of live areas (rewriting the whole snapshot on every change did: at
//! tens of thousands of live areas, megabytes per stage). Once the journal holds more lines
//! than [`AreaJournal::compact_due`] allows (at least 4,096 and twice the live areas), the
//! snapshot is rewritten atomically and the journal emptied, so replay at start-up stays
//! bounded and compaction costs O(1) per change on average. Replay is idempotent (an add
//! sets the record, a remove drops it), and a torn last line (crash mid-append) is cut off,
//! so a crash at any point leaves a loadable state: the snapshot plus every journal line
//! whose `fdatasync` completed.
//!
//! The deliveries log is a buffer, not the record: the web frontend forwards each entry to
//! the db agent, whose download history is the durable record. So the log is bounded: past
//! `max_entries` it is compacted to its newest half (rewritten atomically, with a first line
//! carrying the dropped entries' totals), and the memory it holds stays bounded with it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use commlink::msg::stager::Delivery;
use serde::{Deserialize, Serialize};

use crate::areas::AreaRecord;
use crate::error::{Result, StagerError};
use crate::fsutil;

#[derive(Debug, Default, Serialize, Deserialize)]
struct AreasFile {
    areas: Vec<AreaRecord>,
}

#[derive(Serialize)]
struct AreasFileRef<'a> {
    areas: Vec<&'a AreaRecord>,
}

const SNAPSHOT: &str = "areas.json";
const JOURNAL: &str = "areas.journal";

/// Reads the area snapshot alone (none if the file does not exist yet).
pub fn load_areas(state_dir: &Path) -> Result<Vec<AreaRecord>> {
    let p = state_dir.join(SNAPSHOT);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice::<AreasFile>(&b)
            .map(|f| f.areas)
            .map_err(|e| StagerError::Corrupt {
                path: p,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StagerError::io("read", &p)(e)),
    }
}

/// Writes the area snapshot atomically.
pub fn save_areas<'a>(state_dir: &Path, areas: impl Iterator<Item = &'a AreaRecord>) -> Result<()> {
    let p = state_dir.join(SNAPSHOT);
    let f = AreasFileRef {
        areas: areas.collect(),
    };
    let bytes = serde_json::to_vec(&f).map_err(|e| StagerError::Corrupt {
        path: p.clone(),
        why: e.to_string(),
    })?;
    fsutil::atomic_write(&p, &bytes, 0o600).map_err(StagerError::io("write", &p))
}

/// One change to the set of areas.
#[derive(Debug, Clone)]
pub enum AreaChange {
    /// A new area (or a record replaced).
    Add(std::sync::Arc<AreaRecord>),
    /// An area removed, by id.
    Remove(String),
}

/// A journal line as written.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum JournalLineRef<'a> {
    Add(&'a AreaRecord),
    Remove(&'a str),
}

/// A journal line as read.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum JournalLine {
    Add(Box<AreaRecord>),
    Remove(String),
}

/// The append-only journal of area changes beside the `areas.json` snapshot.
#[derive(Debug)]
pub struct AreaJournal {
    state_dir: PathBuf,
    path: PathBuf,
    file: fs::File,
    /// Lines in the journal now.
    lines: usize,
}

impl AreaJournal {
    /// Opens the journal and returns it with the areas it and the snapshot hold (the
    /// snapshot's records in their order, then those the journal added). A torn last line
    /// is cut off; a line that does not parse anywhere else makes the state corrupt.
    pub fn open(state_dir: &Path) -> Result<(AreaJournal, Vec<AreaRecord>)> {
        let mut order: Vec<String> = Vec::new();
        let mut by_id: HashMap<String, AreaRecord> = HashMap::new();
        for r in load_areas(state_dir)? {
            order.push(r.id.clone());
            by_id.insert(r.id.clone(), r);
        }
        let path = state_dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(StagerError::io("open", &path))?;
        let bytes = fs::read(&path).map_err(StagerError::io("read", &path))?;
        let good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if good < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                bytes = bytes.len() - good,
                "cutting off a torn last line of the area journal (crash mid-append)"
            );
            file.set_len(good as u64)
                .map_err(StagerError::io("truncate", &path))?;
        }
        let mut lines = 0;
        for (n, line) in bytes[..good].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<JournalLine>(line) {
                Ok(JournalLine::Add(r)) => {
                    if !by_id.contains_key(&r.id) {
                        order.push(r.id.clone());
                    }
                    by_id.insert(r.id.clone(), *r);
                }
                Ok(JournalLine::Remove(id)) => {
                    by_id.remove(&id);
                }
                Err(e) => {
                    return Err(StagerError::Corrupt {
                        path,
                        why: format!("line {}: {e}", n + 1),
                    });
                }
            }
        }
        let areas = order
            .into_iter()
            .filter_map(|id| by_id.remove(&id))
            .collect();
        let j = AreaJournal {
            state_dir: state_dir.to_path_buf(),
            path,
            file,
            lines,
        };
        Ok((j, areas))
    }

    /// Appends the changes in one write and makes them durable (one `fdatasync`).
    pub fn append(&mut self, changes: &[AreaChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(changes.len() * 512);
        for c in changes {
            let line = match c {
                AreaChange::Add(r) => JournalLineRef::Add(r),
                AreaChange::Remove(id) => JournalLineRef::Remove(id),
            };
            serde_json::to_writer(&mut buf, &line).map_err(|e| StagerError::Corrupt {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .map_err(StagerError::io("append", &self.path))?;
        self.file
            .sync_data()
            .map_err(StagerError::io("fsync", &self.path))?;
        self.lines += changes.len();
        Ok(())
    }

    /// Whether the journal has grown enough, for `live` areas, to be folded into the
    /// snapshot: more than 4,096 lines and more than twice the live areas.
    pub fn compact_due(&self, live: usize) -> bool {
        self.lines > 4096.max(2 * live)
    }

    /// Lines in the journal.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Replaces the snapshot with `areas` (atomically) and empties the journal. `areas`
    /// must be the state after every line already appended (replaying those lines onto it
    /// gives it back, so a crash between the two steps loses nothing).
    pub fn compact<'a>(&mut self, areas: impl Iterator<Item = &'a AreaRecord>) -> Result<()> {
        save_areas(&self.state_dir, areas)?;
        self.file
            .set_len(0)
            .map_err(StagerError::io("truncate", &self.path))?;
        self.file
            .sync_all()
            .map_err(StagerError::io("fsync", &self.path))?;
        self.lines = 0;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct DeliveryLine {
    seq: u64,
    area_id: String,
    label: String,
    file: String,
    bytes: u64,
    protocol: String,
    at: String,
}

/// First line of a compacted log: what the dropped entries added up to.
#[derive(Serialize, Deserialize)]
struct CarriedLine {
    carried_count: u64,
    carried_bytes: u64,
}

/// Default bound on the deliveries log (entries), before it is compacted to half.
pub const DEFAULT_MAX_DELIVERIES: usize = 200_000;

/// The append-only deliveries log, with its newest entries held in memory for polling.
#[derive(Debug)]
pub struct DeliveryLog {
    path: PathBuf,
    entries: Vec<Delivery>,
    max_entries: usize,
    /// Totals of the entries compacted away, and of those held.
    carried: (u64, u64),
    held_bytes: u64,
    /// The highest seq a reader has asked to continue after (what has been consumed).
    consumed: u64,
}

impl DeliveryLog {
    /// Opens the log with the default bound. See [`DeliveryLog::open_bounded`].
    pub fn open(state_dir: &Path) -> Result<DeliveryLog> {
        Self::open_bounded(state_dir, DEFAULT_MAX_DELIVERIES)
    }

    /// Opens the log, reading what is there. A torn last line (crash mid-append) is skipped.
    /// Past `max_entries` (at least 2) the log is compacted to its newest half.
    pub fn open_bounded(state_dir: &Path, max_entries: usize) -> Result<DeliveryLog> {
        let path = state_dir.join("deliveries.jsonl");
        let mut entries = Vec::new();
        let mut carried = (0, 0);
        match fs::read(&path) {
            Ok(bytes) => {
                // A crash mid-append leaves a torn last line: cut it off so the next append
                // starts on a line of its own.
                let good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if good < bytes.len() {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(StagerError::io("open", &path))?;
                    f.set_len(good as u64)
                        .map_err(StagerError::io("truncate", &path))?;
                }
                for line in bytes[..good].lines() {
                    let line = line.map_err(StagerError::io("read", &path))?;
                    if let Ok(c) = serde_json::from_str::<CarriedLine>(&line) {
                        carried = (c.carried_count, c.carried_bytes);
                    } else if let Ok(d) = serde_json::from_str::<DeliveryLine>(&line) {
                        entries.push(Delivery {
                            seq: d.seq,
                            area_id: d.area_id,
                            label: d.label,
                            file: d.file,
                            bytes: d.bytes,
                            protocol: d.protocol,
                            at: d.at,
                        });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StagerError::io("open", &path)(e)),
        }
        let held_bytes = entries.iter().map(|d| d.bytes).sum();
        let mut log = DeliveryLog {
            path,
            entries,
            max_entries: max_entries.max(2),
            carried,
            held_bytes,
            consumed: 0,
        };
        log.compact_if_full()?;
        Ok(log)
    }

    /// Past the bound: keep the newest half, carry the rest's totals, rewrite atomically.
    fn compact_if_full(&mut self) -> Result<()> {
        if self.entries.len() <= self.max_entries {
            return Ok(());
        }
        let drop = self.entries.len() - self.max_entries / 2;
        let dropped: Vec<Delivery> = self.entries.drain(..drop).collect();
        let bytes: u64 = dropped.iter().map(|d| d.bytes).sum();
        self.carried = (
            self.carried.0 + dropped.len() as u64,
            self.carried.1 + bytes,
        );
        self.held_bytes -= bytes;
        let unforwarded = dropped.iter().filter(|d| d.seq > self.consumed).count();
        if unforwarded > 0 {
            tracing::warn!(
                unforwarded,
                "the deliveries log was compacted before these were forwarded to the db agent \
                 (is the web frontend's link to the stager down?)"
            );
        }
        let corrupt = |e: serde_json::Error| StagerError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        };
        let mut text = serde_json::to_string(&CarriedLine {
            carried_count: self.carried.0,
            carried_bytes: self.carried.1,
        })
        .map_err(corrupt)?;
        text.push('\n');
        for d in &self.entries {
            text.push_str(&serde_json::to_string(&DeliveryLine::from(d)).map_err(corrupt)?);
            text.push('\n');
        }
        fsutil::atomic_write(&self.path, text.as_bytes(), 0o600)
            .map_err(StagerError::io("write", &self.path))?;
        tracing::info!(
            dropped = dropped.len(),
            kept = self.entries.len(),
            "deliveries log compacted"
        );
        Ok(())
    }

    /// The newest seq (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.entries.last().map_or(0, |d| d.seq)
    }

    /// Appends one delivery (assigning its seq) and makes it durable.
    pub fn append(&mut self, mut d: Delivery) -> Result<Delivery> {
        d.seq = self.last_seq() + 1;
        let mut text =
            serde_json::to_string(&DeliveryLine::from(&d)).map_err(|e| StagerError::Corrupt {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
        text.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(StagerError::io("open", &self.path))?;
        f.write_all(text.as_bytes())
            .map_err(StagerError::io("append", &self.path))?;
        f.sync_data()
            .map_err(StagerError::io("fsync", &self.path))?;
        self.held_bytes += d.bytes;
        self.entries.push(d.clone());
        self.compact_if_full()?;
        Ok(d)
    }

    /// Deliveries with seq > `after`, at most `limit`. Asking marks everything up to
    /// `after` as consumed (the reader has it).
    pub fn after(&mut self, after: u64, limit: usize) -> Vec<Delivery> {
        self.consumed = self.consumed.max(after);
        let start = self.entries.partition_point(|d| d.seq <= after);
        self.entries[start..].iter().take(limit).cloned().collect()
    }

    /// (count, bytes) of all deliveries ever logged, compacted ones included.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.carried.0 + self.entries.len() as u64,
            self.carried.1 + self.held_bytes,
        )
    }

    /// How many entries are held (in memory and in the file).
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

impl From<&Delivery> for DeliveryLine {
    fn from(d: &Delivery) -> Self {
        DeliveryLine {
            seq: d.seq,
            area_id: d.area_id.clone(),
            label: d.label.clone(),
            file: d.file.clone(),
            bytes: d.bytes,
            protocol: d.protocol.clone(),
            at: d.at.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(file: &str) -> Delivery {
        Delivery {
            seq: 0,
            area_id: "a".into(),
            label: "l".into(),
            file: file.into(),
            bytes: 3,
            protocol: "ftp".into(),
            at: "now".into(),
        }
    }

    fn area(id: &str) -> std::sync::Arc<AreaRecord> {
        std::sync::Arc::new(AreaRecord {
            id: id.into(),
            label: "l".into(),
            product: "p".into(),
            version: "1".into(),
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            ftp_user: format!("u-{id}"),
            ftp_salt: "00".into(),
            ftp_hash: "11".into(),
            token_hash: format!("t-{id}"),
            files: vec![],
            method: "hardlink".into(),
        })
    }

    fn ids(v: &[AreaRecord]) -> Vec<&str> {
        v.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn area_journal_replays_adds_and_removes_over_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        save_areas(dir.path(), [&*area("a"), &*area("b")].into_iter()).unwrap();
        let (mut j, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["a", "b"]);
        j.append(&[AreaChange::Add(area("c")), AreaChange::Remove("a".into())])
            .unwrap();
        j.append(&[AreaChange::Add(area("d"))]).unwrap();
        assert_eq!(j.lines(), 3);
        let (j, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["b", "c", "d"]);
        assert_eq!(j.lines(), 3);
        let mode = fs::metadata(dir.path().join(JOURNAL))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn area_journal_cuts_a_torn_line_and_refuses_a_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = AreaJournal::open(dir.path()).unwrap();
        j.append(&[AreaChange::Add(area("a"))]).unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"add\":{\"id\":\"b").unwrap();
        let (mut j, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["a"]);
        // The next append starts on a line of its own.
        j.append(&[AreaChange::Add(area("c"))]).unwrap();
        let (_, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["a", "c"]);
        // A complete line that does not parse is damage, not a crash: refuse to guess.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"nonsense\":1}\n").unwrap();
        assert!(matches!(
            AreaJournal::open(dir.path()),
            Err(StagerError::Corrupt { .. })
        ));
    }

    #[test]
    fn area_journal_compaction_keeps_the_state_even_if_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = AreaJournal::open(dir.path()).unwrap();
        let live: Vec<_> = (0..5).map(|i| area(&format!("x{i}"))).collect();
        j.append(
            &live
                .iter()
                .cloned()
                .map(AreaChange::Add)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        j.append(&[AreaChange::Remove("x0".into())]).unwrap();
        // A crash after the snapshot was written but before the journal was emptied:
        // replaying the journal over the newer snapshot gives the same state.
        save_areas(dir.path(), live[1..].iter().map(|r| &**r)).unwrap();
        let (mut j, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["x1", "x2", "x3", "x4"]);
        assert_eq!(j.lines(), 6);
        j.compact(got.iter()).unwrap();
        assert_eq!(j.lines(), 0);
        assert_eq!(fs::metadata(dir.path().join(JOURNAL)).unwrap().len(), 0);
        j.append(&[AreaChange::Remove("x4".into())]).unwrap();
        let (_, got) = AreaJournal::open(dir.path()).unwrap();
        assert_eq!(ids(&got), ["x1", "x2", "x3"]);
        assert!(!j.compact_due(0));
    }

    #[test]
    fn log_survives_reopen_and_skips_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.append(d("x")).unwrap().seq, 1);
        assert_eq!(log.append(d("y")).unwrap().seq, 2);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("deliveries.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"are").unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.after(1, 10)[0].file, "y");
        assert!(log.after(2, 10).is_empty());
        assert_eq!(log.totals(), (2, 6));
        log.append(d("z")).unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.after(0, 10).len(), 3);
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn log_is_bounded_and_keeps_seq_and_totals_across_compaction_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open_bounded(dir.path(), 10).unwrap();
        for i in 0..25 {
            log.append(d(&format!("f{i}"))).unwrap();
        }
        assert!(log.held() <= 10, "held {}", log.held());
        assert_eq!(log.last_seq(), 25, "seq keeps counting");
        assert_eq!(log.totals(), (25, 75), "totals include what was compacted");
        // The newest entries are still there, in order, for a reader that kept up.
        let tail = log.after(20, 100);
        assert_eq!(
            tail.iter().map(|x| x.file.as_str()).collect::<Vec<_>>(),
            ["f20", "f21", "f22", "f23", "f24"]
        );
        // The file is bounded too, and a reopen sees the same state.
        let lines = fs::read_to_string(dir.path().join("deliveries.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 11, "{lines} lines");
        let mut again = DeliveryLog::open_bounded(dir.path(), 10).unwrap();
        assert_eq!(again.last_seq(), 25);
        assert_eq!(again.totals(), (25, 75));
        assert_eq!(again.after(24, 10)[0].file, "f24");
        assert_eq!(again.append(d("next")).unwrap().seq, 26);
    }
}
