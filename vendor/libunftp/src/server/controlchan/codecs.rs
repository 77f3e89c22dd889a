use super::{Reply, command::Command, error::ControlChanError, line_parser};

use bytes::BytesMut;
use std::io::Write;
use tokio_util::codec::{Decoder, Encoder};

// FTPCodec implements tokio's `Decoder` and `Encoder` traits for the control channel, that we'll
// use to decode FTP commands and encode their responses.
pub struct FtpCodec {
    // Stored index of the next index to examine for a '\n' character. This is used to optimize
    // searching. For example, if `decode` was called with `abc`, it would hold `3`, because that
    // is the next index to examine. The next time `decode` is called with `abcde\n`, we will only
    // look at `de\n` before returning.
    next_index: usize,
}

impl FtpCodec {
    pub fn new() -> Self {
        FtpCodec { next_index: 0 }
    }
}

// Telnet (RFC 854) bytes that may appear on an FTP control connection.
const TELNET_IAC: u8 = 0xFF;
const TELNET_WILL: u8 = 0xFB;
const TELNET_DONT: u8 = 0xFE;
const TELNET_SE: u8 = 0xF0;

// Removes Telnet commands from a control-channel line. RFC 959 §4.1.3 has clients send
// `IAC IP` and `IAC DM` (the Telnet "Interrupt Process" and "Synch" signals) before ABOR and
// STAT; lftp does, with the DM byte as TCP urgent data. Two-byte commands (`IAC x`, x in
// 0xF0..=0xFA) and option negotiation (`IAC WILL/WONT/DO/DONT opt`) are dropped, `IAC IAC`
// is a literal 0xFF, and an `IAC` not followed by a command byte (its DM was taken out of
// band) is dropped. None of this can change valid UTF-8, which never contains 0xFF.
fn strip_telnet(line: BytesMut) -> BytesMut {
    if !line.contains(&TELNET_IAC) {
        return line;
    }
    let mut out = BytesMut::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b != TELNET_IAC {
            out.extend_from_slice(&[b]);
            i += 1;
            continue;
        }
        match line.get(i + 1).copied() {
            Some(TELNET_IAC) => {
                out.extend_from_slice(&[TELNET_IAC]);
                i += 2;
            }
            Some(TELNET_WILL..=TELNET_DONT) => i += 3,
            Some(TELNET_SE..) => i += 2,
            _ => i += 1,
        }
    }
    out
}

impl Decoder for FtpCodec {
    // A line that does not parse is an `Ok(Some(Err(..)))` item, not a decoder error: a
    // decoder error ends the `Framed` stream for good (tokio-util 0.7), which closed the
    // session at the next command after any bad parameter (`REST abc`, say).
    type Item = Result<Command, ControlChanError>;
    type Error = ControlChanError;

    // Here we decode the incoming bytes into a meaningful command. We'll split on newlines, and
    // parse the resulting line using `Command::parse()`. This method will be called by tokio.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(newline_offset) = buf[self.next_index..].iter().position(|b| *b == b'\n') {
            let newline_index = newline_offset + self.next_index;
            let line = strip_telnet(buf.split_to(newline_index + 1));
            self.next_index = 0;
            Ok(Some(line_parser::parse(line).map_err(ControlChanError::from)))
        } else {
            self.next_index = buf.len();
            Ok(None)
        }
    }
}

impl Encoder<Reply> for FtpCodec {
    type Error = ControlChanError;

    // Here we encode the outgoing response
    fn encode(&mut self, reply: Reply, buf: &mut BytesMut) -> Result<(), Self::Error> {
        let mut buffer = vec![];
        match reply {
            Reply::None => {
                return Ok(());
            }
            Reply::CodeAndMsg { code, msg } => {
                if msg.is_empty() {
                    writeln!(buffer, "{}\r", code as u32)?;
                } else {
                    writeln!(buffer, "{} {}\r", code as u32, msg)?;
                }
            }
            Reply::MultiLine { code, mut lines } => {
                // Get the last line since it needs to be preceded by the response code.
                let last_line = lines.pop().unwrap_or_default();

                // Lines starting with a digit should be indented
                for it in lines.iter_mut() {
                    if it.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                        it.insert(0, ' ');
                    }
                }
                if lines.is_empty() {
                    writeln!(buffer, "{} {}\r", code as u32, last_line)?;
                } else {
                    write!(buffer, "{}-{}\r\n{} {}\r\n", code as u32, lines.join("\r\n"), code as u32, last_line)?;
                }
            }
        }
        buf.extend(&buffer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReplyCode;
    use super::*;

    #[test]
    fn encode_multiline_reply_with_blank_line_does_not_panic() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::new();
        let reply = Reply::new_multiline(ReplyCode::HelpMessage, vec!["Usage: foo", "", "Options:"]);

        codec.encode(reply, &mut buf).unwrap();

        assert_eq!(buf, "214-Usage: foo\r\n\r\n214 Options:\r\n".as_bytes());
    }

    fn decode_all(input: &[u8]) -> Vec<Result<Command, ControlChanError>> {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn telnet_ip_and_synch_before_abor_are_ignored() {
        for input in [&b"\xff\xf4\xff\xf2ABOR\r\n"[..], &b"\xff\xf4\xffABOR\r\n"[..], &b"\xff\xfd\x06ABOR\r\n"[..]] {
            let cmds = decode_all(input);
            assert!(matches!(cmds.as_slice(), [Ok(Command::Abor)]), "{:?}: {:?}", input, cmds);
        }
    }

    #[test]
    fn a_bad_line_is_an_item_and_decoding_goes_on() {
        let cmds = decode_all(b"REST abc\r\nNOOP\r\n");
        assert!(matches!(cmds.as_slice(), [Err(_), Ok(Command::Noop)]), "{:?}", cmds);
    }
}
