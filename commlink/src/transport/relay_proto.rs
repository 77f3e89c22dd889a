//! The HTTP relay's framing and its reliable-stream state, on bytes only (no I/O).
//!
//! The relay carries the commlink's CR LF lines, unchanged, inside HTTP bodies. Each end
//! numbers the lines it sends (1, 2, 3, …), keeps them until the peer acknowledges them, and
//! sends them again after a reconnect; the receiver delivers each number once, in order, and
//! drops what it already has. Records, one per CR LF line of an HTTP body:
//!
//! - `D <seq> <line>`: data line number `seq` (the commlink line without its CR LF);
//! - `A <n>`: cumulative acknowledgement: the sender has received every line up to `n`
//!   (`A 0`: none yet). Also the heartbeat;
//! - `C <reason>`: the attachment is closed; `reason` is printable ASCII for logs.
//!
//! Numbers are decimal without sign or leading zeros (`0` alone is zero), at most
//! 2^63 − 1. Records are printable 7-bit ASCII like the commlink's own lines.

use std::collections::VecDeque;

use crate::frame::{FrameError, LineDecoder};

/// Bytes a record adds around a commlink line (`D `, the number, a space, CR LF).
pub const RECORD_OVERHEAD: usize = 2 + 19 + 1 + 2;

/// Why relay bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayProtoError {
    /// A record line broke the framing rules.
    #[error("relay framing: {0}")]
    Frame(#[from] FrameError),
    /// Not one of the three records.
    #[error("relay record not understood: {0}")]
    Malformed(String),
    /// Data numbered past the next expected line (lines were lost on the way).
    #[error("relay data line {got} arrived while {expected} was expected")]
    Gap {
        /// The next number the receiver can take.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// An acknowledgement of lines never sent.
    #[error("relay acknowledgement {ack} is beyond the last line sent ({sent})")]
    AckBeyond {
        /// The number acknowledged.
        ack: u64,
        /// The last number sent.
        sent: u64,
    },
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A numbered commlink line.
    Data {
        /// Its number.
        seq: u64,
        /// The line, without CR LF.
        line: Vec<u8>,
    },
    /// Everything up to this number was received.
    Ack(u64),
    /// The attachment is closed.
    Close(String),
}

impl Record {
    /// Appends the record's wire form (with CR LF) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Data { seq, line } => encode_data(*seq, line, out),
            Record::Ack(n) => out.extend_from_slice(format!("A {n}\r\n").as_bytes()),
            Record::Close(reason) => {
                out.extend_from_slice(b"C ");
                out.extend(
                    reason
                        .bytes()
                        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' }),
                );
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

fn encode_data(seq: u64, line: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("D {seq} ").as_bytes());
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Parses a number as the relay writes it.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
}

/// Parses one record line (without CR LF).
pub fn parse_record(line: &[u8]) -> Result<Record, RelayProtoError> {
    let bad = || {
        let shown: String = line.iter().take(40).map(|&b| b as char).collect();
        RelayProtoError::Malformed(shown)
    };
    match line {
        [b'D', b' ', rest @ ..] => {
            let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
            let seq = number(&rest[..sp]).filter(|n| *n > 0).ok_or_else(bad)?;
            Ok(Record::Data {
                seq,
                line: rest[sp + 1..].to_vec(),
            })
        }
        [b'A', b' ', rest @ ..] => Ok(Record::Ack(number(rest).ok_or_else(bad)?)),
        [b'C', b' ', rest @ ..] => Ok(Record::Close(String::from_utf8_lossy(rest).into_owned())),
        _ => Err(bad()),
    }
}

/// Splits relay bytes into records as they arrive (an HTTP body in chunks).
#[derive(Debug)]
pub struct RecordDecoder {
    buf: Vec<u8>,
    lines: LineDecoder,
}

impl RecordDecoder {
    /// A decoder for records carrying commlink lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> RecordDecoder {
        RecordDecoder {
            buf: Vec::new(),
            lines: LineDecoder::new(max_line.saturating_add(RECORD_OVERHEAD)),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, if any.
    pub fn next_record(&mut self) -> Result<Option<Record>, RelayProtoError> {
        match self.lines.decode(&mut self.buf)? {
            Some(line) => parse_record(&line).map(Some),
            None => Ok(None),
        }
    }

    /// Whether bytes of an incomplete record are held (a body that ends here was cut).
    pub fn partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Decodes a whole body into records.
pub fn decode_body(body: &[u8], max_line: usize) -> Result<Vec<Record>, RelayProtoError> {
    let mut d = RecordDecoder::new(max_line);
    d.push(body);
    let mut out = Vec::new();
    while let Some(r) = d.next_record()? {
        out.push(r);
    }
    if d.partial() {
        return Err(RelayProtoError::Malformed(
            "body ends inside a record".into(),
        ));
    }
    Ok(out)
}

/// Bounds of what one direction holds unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// At most this many lines.
    pub lines: usize,
    /// At most this many bytes of lines.
    pub bytes: usize,
}

/// The sending half: numbers lines and keeps them until acknowledged.
#[derive(Debug)]
pub struct Outgoing {
    window: Window,
    next_seq: u64,
    unacked: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
}

impl Outgoing {
    /// Nothing sent yet; holds at most `window` unacknowledged.
    pub fn new(window: Window) -> Outgoing {
        Outgoing {
            window,
            next_seq: 1,
            unacked: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Whether another line of `len` bytes fits in the window (a line always fits when
    /// nothing is held, so an oversized line cannot wedge the stream).
    pub fn has_room(&self, len: usize) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < self.window.lines
                && self.bytes.saturating_add(len) <= self.window.bytes)
    }

    /// Numbers a line and keeps it; returns its number. Check [`Outgoing::has_room`] first.
    pub fn push(&mut self, line: Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += line.len();
        self.unacked.push_back((seq, line));
        seq
    }

    /// The peer has everything up to `ack`: forget those lines.
    pub fn ack(&mut self, ack: u64) -> Result<(), RelayProtoError> {
        let sent = self.next_seq - 1;
        if ack > sent {
            return Err(RelayProtoError::AckBeyond { ack, sent });
        }
        while self.unacked.front().is_some_and(|(s, _)| *s <= ack) {
            if let Some((_, l)) = self.unacked.pop_front() {
                self.bytes -= l.len();
            }
        }
        Ok(())
    }

    /// How many lines wait for an acknowledgement.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Encodes the unacknowledged lines numbered above `after`, oldest first, into `out`
    /// while `out` stays within `max_bytes` (at least one line is taken if any is due).
    /// Returns the last number encoded (or `after`).
    pub fn encode_from(&self, after: u64, max_bytes: usize, out: &mut Vec<u8>) -> u64 {
        let mut last = after;
        for (seq, line) in self.unacked.iter().filter(|(s, _)| *s > after) {
            if last != after && out.len() + line.len() + RECORD_OVERHEAD > max_bytes {
                break;
            }
            encode_data(*seq, line, out);
            last = *seq;
        }
        last
    }
}

/// What the receiving half makes of a data record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next line: deliver it (then call [`Incoming::delivered`]).
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
}

/// The receiving half: delivers each number once, in order.
#[derive(Debug, Default)]
pub struct Incoming {
    received: u64,
}

impl Incoming {
    /// What to do with data line `seq`.
    pub fn check(&self, seq: u64) -> Result<Verdict, RelayProtoError> {
        if seq <= self.received {
            Ok(Verdict::Duplicate)
        } else if seq == self.received + 1 {
            Ok(Verdict::Deliver)
        } else {
            Err(RelayProtoError::Gap {
                expected: self.received + 1,
                got: seq,
            })
        }
    }

    /// Line `received + 1` was delivered.
    pub fn delivered(&mut self) {
        self.received += 1;
    }

    /// The cumulative acknowledgement to send.
    pub fn ack(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        lines: 4,
        bytes: 100,
    };

    #[test]
    fn records_round_trip_on_the_wire() {
        let mut out = Vec::new();
        Record::Data {
            seq: 7,
            line: b"AAAA+/==".to_vec(),
        }
        .encode(&mut out);
        Record::Ack(0).encode(&mut out);
        Record::Close("expired\r\n".into()).encode(&mut out);
        assert_eq!(out, b"D 7 AAAA+/==\r\nA 0\r\nC expired??\r\n");
        let back = decode_body(&out, 64).expect("decodes");
        assert_eq!(
            back,
            vec![
                Record::Data {
                    seq: 7,
                    line: b"AAAA+/==".to_vec()
                },
                Record::Ack(0),
                Record::Close("expired??".into())
            ]
        );
    }

    #[test]
    fn an_empty_line_is_data_too() {
        assert_eq!(
            parse_record(b"D 1 "),
            Ok(Record::Data {
                seq: 1,
                line: vec![]
            })
        );
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [
            &b"D 0 x"[..],
            b"D 01 x",
            b"D +1 x",
            b"D 1",
            b"A",
            b"A -1",
            b"A 1 ",
            b"A 9223372036854775808",
            b"X 1",
            b"d 1 x",
            b"",
        ] {
            assert!(
                matches!(parse_record(bad), Err(RelayProtoError::Malformed(_))),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_record(b"A 9223372036854775807"),
            Ok(Record::Ack(i64::MAX as u64))
        );
    }

    #[test]
    fn a_cut_body_is_refused_and_a_stream_waits_for_the_rest() {
        assert!(decode_body(b"A 1\r\nD 2 ab", 64).is_err());
        let mut d = RecordDecoder::new(64);
        d.push(b"A 3\r\nD 4 a");
        assert_eq!(d.next_record(), Ok(Some(Record::Ack(3))));
        assert_eq!(d.next_record(), Ok(None));
        assert!(d.partial());
        d.push(b"b\r\n");
        assert_eq!(
            d.next_record(),
            Ok(Some(Record::Data {
                seq: 4,
                line: b"ab".to_vec()
            }))
        );
        assert!(!d.partial());
    }

    #[test]
    fn the_record_length_is_bounded_while_reading() {
        let mut d = RecordDecoder::new(8);
        d.push(&[b'x'; 200]);
        assert!(matches!(d.next_record(), Err(RelayProtoError::Frame(_))));
        let mut d = RecordDecoder::new(8);
        d.push(b"D 1 \x01\r\n");
        assert!(matches!(d.next_record(), Err(RelayProtoError::Frame(_))));
    }

    #[test]
    fn outgoing_keeps_lines_until_acknowledged_and_resends_them() {
        let mut o = Outgoing::new(W);
        assert_eq!(o.push(b"one".to_vec()), 1);
        assert_eq!(o.push(b"two".to_vec()), 2);
        assert_eq!(o.push(b"three".to_vec()), 3);
        let mut out = Vec::new();
        assert_eq!(o.encode_from(0, 1000, &mut out), 3);
        assert_eq!(out, b"D 1 one\r\nD 2 two\r\nD 3 three\r\n");
        o.ack(1).expect("in range");
        let mut out = Vec::new();
        assert_eq!(o.encode_from(0, 1000, &mut out), 3);
        assert_eq!(
            out, b"D 2 two\r\nD 3 three\r\n",
            "after a reconnect: 2 and 3 again"
        );
        let mut out = Vec::new();
        assert_eq!(o.encode_from(2, 1000, &mut out), 3);
        assert_eq!(out, b"D 3 three\r\n");
        assert_eq!(
            o.ack(4),
            Err(RelayProtoError::AckBeyond { ack: 4, sent: 3 })
        );
        o.ack(3).expect("in range");
        o.ack(2).expect("an old acknowledgement is harmless");
        assert_eq!(o.unacked(), 0);
        let mut out = Vec::new();
        assert_eq!(o.encode_from(0, 1000, &mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_batch_stops_at_the_body_limit_but_takes_at_least_one_line() {
        let mut o = Outgoing::new(Window {
            lines: 10,
            bytes: 10_000,
        });
        o.push(vec![b'a'; 50]);
        o.push(vec![b'b'; 50]);
        let mut out = Vec::new();
        assert_eq!(o.encode_from(0, 60, &mut out), 1);
        let mut out = Vec::new();
        assert_eq!(
            o.encode_from(1, 10, &mut out),
            2,
            "one line even if too long"
        );
    }

    #[test]
    fn the_window_bounds_lines_and_bytes() {
        let mut o = Outgoing::new(W);
        assert!(o.has_room(1000), "an empty window takes any line");
        o.push(vec![b'x'; 90]);
        assert!(!o.has_room(20));
        assert!(o.has_room(10));
        for _ in 0..3 {
            o.push(vec![]);
        }
        assert!(!o.has_room(0), "four lines held");
        o.ack(4).expect("in range");
        assert!(o.has_room(100));
    }

    #[test]
    fn incoming_delivers_once_in_order() {
        let mut i = Incoming::default();
        assert_eq!(i.ack(), 0);
        assert_eq!(i.check(1), Ok(Verdict::Deliver));
        i.delivered();
        assert_eq!(i.check(1), Ok(Verdict::Duplicate));
        assert_eq!(
            i.check(3),
            Err(RelayProtoError::Gap {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(i.check(2), Ok(Verdict::Deliver));
        i.delivered();
        assert_eq!(i.ack(), 2);
    }
}
