//! The stager's persistent state: `areas.json` (area records, rewritten atomically on every
//! change, mode 0600) and `deliveries.jsonl` (append-only log of completed transfers).

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

/// Reads the area records (none if the file does not exist yet).
pub fn load_areas(state_dir: &Path) -> Result<Vec<AreaRecord>> {
    let p = state_dir.join("areas.json");
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

/// Writes the area records atomically.
pub fn save_areas<'a>(state_dir: &Path, areas: impl Iterator<Item = &'a AreaRecord>) -> Result<()> {
    let p = state_dir.join("areas.json");
    let f = AreasFile {
        areas: areas.cloned().collect(),
    };
    let bytes = serde_json::to_vec(&f).map_err(|e| StagerError::Corrupt {
        path: p.clone(),
        why: e.to_string(),
    })?;
    fsutil::atomic_write(&p, &bytes, 0o600).map_err(StagerError::io("write", &p))
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

/// The append-only deliveries log, with its entries held in memory for polling.
#[derive(Debug)]
pub struct DeliveryLog {
    path: PathBuf,
    entries: Vec<Delivery>,
}

impl DeliveryLog {
    /// Opens the log, reading what is there. A torn last line (crash mid-append) is skipped.
    pub fn open(state_dir: &Path) -> Result<DeliveryLog> {
        let path = state_dir.join("deliveries.jsonl");
        let mut entries = Vec::new();
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
                    if let Ok(d) = serde_json::from_str::<DeliveryLine>(&line) {
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
        Ok(DeliveryLog { path, entries })
    }

    /// The newest seq (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.entries.last().map_or(0, |d| d.seq)
    }

    /// Appends one delivery (assigning its seq) and makes it durable.
    pub fn append(&mut self, mut d: Delivery) -> Result<Delivery> {
        d.seq = self.last_seq() + 1;
        let line = DeliveryLine {
            seq: d.seq,
            area_id: d.area_id.clone(),
            label: d.label.clone(),
            file: d.file.clone(),
            bytes: d.bytes,
            protocol: d.protocol.clone(),
            at: d.at.clone(),
        };
        let mut text = serde_json::to_string(&line).map_err(|e| StagerError::Corrupt {
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
        self.entries.push(d.clone());
        Ok(d)
    }

    /// Deliveries with seq > `after`, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Vec<Delivery> {
        let start = self.entries.partition_point(|d| d.seq <= after);
        self.entries[start..].iter().take(limit).cloned().collect()
    }

    /// (count, bytes) of all deliveries.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.entries.len() as u64,
            self.entries.iter().map(|d| d.bytes).sum(),
        )
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
        let log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.after(0, 10).len(), 3);
        assert_eq!(log.last_seq(), 3);
    }
}
