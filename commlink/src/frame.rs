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
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            match b {
                b'\r' => {
                    if i + 1 == buf.len() {
                        break; // wait for the LF
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
        // +1: a CR may be the last byte buffered.
        if buf.len() > self.max + 1 {
            return Err(FrameError::TooLong(self.max));
        }
        Ok(None)
    }
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
    }
}
