//! CR LF line framing. Pure: bytes in, lines out, no I/O.
//!
//! Every line on the wire is printable 7-bit ASCII (0x20–0x7e) ending in CR LF. The
//! decoder enforces the maximum line length *while reading*: as soon as the buffered bytes
//! exceed it without a CR LF, decoding fails, so the caller never buffers more.

/// Why a line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More than the maximum without a CR LF.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// A byte outside printable ASCII, or a CR or LF that is not part of CR LF.
    #[error("byte 0x{byte:02x} at offset {at} is not allowed in a line")]
    BadByte {
        /// The byte.
        byte: u8,
        /// Its offset in the line.
        at: usize,
    },
}

/// Splits a byte stream into lines.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max: usize,
    /// Bytes of the buffer already checked (none of them ends a line).
    scanned: usize,
}

impl LineDecoder {
    /// A decoder accepting lines of at most `max` bytes (not counting CR LF).
    pub fn new(max: usize) -> Self {
        LineDecoder { max, scanned: 0 }
    }

    /// The longest line accepted.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the next complete line (without CR LF) off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.find_line(buf, 0)?.map(|len| {
            let mut line: Vec<u8> = buf.drain(..len + 2).collect();
            line.truncate(len);
            line
        }))
    }

    /// Finds the next complete line in `buf[from..]` without moving or copying anything:
    /// `Some(len)` means the line is `buf[from..from + len]` and the next one starts at
    /// `from + len + 2` (after its CR LF). The same checks, errors and offsets (relative to
    /// `from`) as [`LineDecoder::decode`]; between calls the caller may move the unread bytes
    /// (e.g. to the front of its buffer) as long as `from` moves with them.
    pub fn find_line(&mut self, buf: &[u8], from: usize) -> Result<Option<usize>, FrameError> {
        let rest = buf.get(from..).unwrap_or_default();
        let i = self.scanned.min(rest.len());
        let cr = memchr::memchr(b'\r', &rest[i..]).map(|k| i + k);
        // Every byte before the CR (or before the end, if none came yet) must be printable.
        let checked_to = cr.unwrap_or(rest.len());
        if let Some(at) = first_unprintable(&rest[i..checked_to]) {
            return Err(FrameError::BadByte {
                byte: rest[i + at],
                at: i + at,
            });
        }
        if let Some(cr) = cr {
            match rest.get(cr + 1) {
                Some(b'\n') => {
                    if cr > self.max {
                        return Err(FrameError::TooLong(self.max));
                    }
                    self.scanned = 0;
                    return Ok(Some(cr));
                }
                Some(_) => {
                    return Err(FrameError::BadByte {
                        byte: b'\r',
                        at: cr,
                    });
                }
                // Wait for the LF.
                None => self.scanned = cr,
            }
        } else {
            self.scanned = rest.len();
        }
        // +1: a CR may be the last byte buffered.
        if rest.len() > self.max + 1 {
            return Err(FrameError::TooLong(self.max));
        }
        Ok(None)
    }
}

/// The offset of the first byte outside printable ASCII (0x20–0x7e), if any. The common
/// case (all printable) is one pass the compiler vectorizes.
fn first_unprintable(bytes: &[u8]) -> Option<usize> {
    let printable = |b: u8| b.wrapping_sub(0x20) < 0x5f;
    if bytes.iter().fold(true, |ok, &b| ok & printable(b)) {
        return None;
    }
    bytes.iter().position(|&b| !printable(b))
}

/// Appends `line` and CR LF to `out`.
pub fn encode(line: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut d = LineDecoder::new(100);
        let mut buf = b"abc\r".to_vec();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\ndef\r\nxy");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), b"abc");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), b"def");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(buf, b"xy");
    }

    #[test]
    fn enforces_limit_before_the_line_ends() {
        let mut d = LineDecoder::new(8);
        let mut buf = b"123456789".to_vec();
        assert_eq!(d.decode(&mut buf).unwrap(), None, "8 bytes + maybe CR");
        buf.push(b'0');
        assert_eq!(d.decode(&mut buf), Err(FrameError::TooLong(8)));
        let mut d = LineDecoder::new(8);
        let mut ok = b"12345678\r\n".to_vec();
        assert_eq!(d.decode(&mut ok).unwrap().unwrap(), b"12345678");
        let mut long = b"123456789\r\n".to_vec();
        assert_eq!(d.decode(&mut long), Err(FrameError::TooLong(8)));
    }

    #[test]
    fn rejects_bare_cr_lf_and_8bit() {
        for bad in [&b"a\nb\r\n"[..], b"a\rb\r\n", b"a\x80\r\n", b"\x00\r\n"] {
            let mut d = LineDecoder::new(100);
            let mut buf = bad.to_vec();
            assert!(
                matches!(d.decode(&mut buf), Err(FrameError::BadByte { .. })),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn lines_round_trip(lines in proptest::collection::vec("[ -~]{0,50}", 0..10), chunk in 1usize..17) {
            let mut wire = Vec::new();
            for l in &lines { encode(l, &mut wire); }
            let mut d = LineDecoder::new(64);
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                buf.extend_from_slice(c);
                while let Some(l) = d.decode(&mut buf).unwrap() {
                    got.push(String::from_utf8(l).unwrap());
                }
            }
            prop_assert_eq!(got, lines);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = LineDecoder::new(32);
            let mut buf = data;
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }

        /// The scanning decoder gives exactly what the byte-at-a-time definition gives (lines,
        /// errors and their offsets), whatever the bytes and however they arrive.
        #[test]
        fn find_line_agrees_with_the_byte_at_a_time_definition(
            segments in proptest::collection::vec(
                prop_oneof![
                    // Mostly well-formed lines around the limit, sometimes a stray byte.
                    8 => "[ -~]{0,30}".prop_map(|l| format!("{l}\r\n").into_bytes()),
                    1 => any::<u8>().prop_map(|b| vec![b]),
                    1 => Just(b"\r".to_vec()),
                ],
                0..12,
            ),
            chunk in 1usize..40,
            max in 0usize..24,
        ) {
            let data = segments.concat();
            let (mut fast, mut slow) = (LineDecoder::new(max), Reference::new(max));
            let (mut fast_buf, mut slow_buf, mut from) = (Vec::new(), Vec::new(), 0);
            for c in data.chunks(chunk) {
                fast_buf.extend_from_slice(c);
                slow_buf.extend_from_slice(c);
                loop {
                    let want = slow.decode(&mut slow_buf);
                    let got = fast.find_line(&fast_buf, from).map(|o| o.map(|len| {
                        let line = fast_buf[from..from + len].to_vec();
                        from += len + 2;
                        line
                    }));
                    prop_assert_eq!(&got, &want);
                    match want {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                // The caller may move its unread bytes to the front between reads.
                if from > 0 && chunk % 2 == 0 {
                    fast_buf.drain(..from);
                    from = 0;
                }
            }
        }
    }

    /// The decoder as first written, one byte at a time: the definition `find_line` keeps.
    struct Reference {
        max: usize,
        scanned: usize,
    }

    impl Reference {
        fn new(max: usize) -> Self {
            Reference { max, scanned: 0 }
        }

        fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
            let mut i = self.scanned;
            while i < buf.len() {
                let b = buf[i];
                match b {
                    b'\r' => {
                        if i + 1 == buf.len() {
                            break;
                        }
                        if buf[i + 1] != b'\n' {
                            return Err(FrameError::BadByte { byte: b, at: i });
                        }
                        if i > self.max {
                            return Err(FrameError::TooLong(self.max));
                        }
                        let mut line: Vec<u8> = buf.drain(..i + 2).collect();
                        line.truncate(i);
                        self.scanned = 0;
                        return Ok(Some(line));
                    }
                    0x20..=0x7e => {}
                    _ => return Err(FrameError::BadByte { byte: b, at: i }),
                }
                i += 1;
            }
            self.scanned = i;
            if buf.len() > self.max + 1 {
                return Err(FrameError::TooLong(self.max));
            }
            Ok(None)
        }
    }
}
