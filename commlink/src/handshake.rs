//! The plaintext handshake lines that open every connection. Pure: no I/O.
//!
//! ```text
//! initiator → acceptor:  FFS/1 HELLO <suite> <port> <nonce_i hex32> <bag fingerprint hex16>
//! acceptor → initiator:  FFS/1 WELCOME <suite> <nonce_a hex32>
//!                    or  FFS/1 ERROR <code> <human-readable text>
//! ```
//!
//! `<port>` is the source port the initiator bound; the acceptor compares it with the port
//! it sees, so a NAT that rewrote the port (which would silently pick another bag entry) is
//! reported as `port-mismatch` instead of as garbage. Through a proxy, which hides the
//! source port, the initiator writes a *virtual port* `v<port>` instead: a number it chose,
//! used for the key index and derivation exactly as a port; only acceptors configured for
//! proxied initiators take it.

use crate::crypto::{NONCE_LEN, Suite};

/// Protocol tag at the start of every handshake line.
pub const MAGIC: &str = "FFS/1";

/// Longest handshake line accepted.
pub const MAX_HANDSHAKE_LINE: usize = 512;

/// Why a handshake line could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a handshake line of this protocol.
    #[error("not an FFS/1 handshake line: {0}")]
    Malformed(String),
    /// A well-formed line naming a suite this implementation does not know (never a
    /// reason to fall back to another suite: the acceptor refuses with code `suite`).
    #[error("unknown suite {0:?} (this end knows aes256-gcm, 3des-cbc-hmac-sha256, des-cbc)")]
    UnknownSuite(String),
    /// The peer sent an ERROR line.
    #[error("peer refused the connection ({code}): {text}")]
    Refused {
        /// Machine-readable reason.
        code: String,
        /// Human-readable reason.
        text: String,
    },
}

/// The initiator's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The suite the initiator uses.
    pub suite: Suite,
    /// The number the key index is taken from: the source port the initiator bound, or,
    /// when `virtual_port` is set, the number it chose for a carrier that hides its port.
    pub port: u16,
    /// Whether `port` is a virtual port (written `v<P>`): the initiator reaches the acceptor
    /// through something (a proxy) that hides its TCP source port, so the acceptor cannot
    /// compare it with the port it sees.
    pub virtual_port: bool,
    /// The initiator's fresh nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The initiator's key bag fingerprint.
    pub bag: String,
}

/// The acceptor's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The suite (always the initiator's; a mismatch is refused with ERROR).
    pub suite: Suite,
    /// The acceptor's fresh nonce.
    pub nonce: [u8; NONCE_LEN],
}

fn words(line: &[u8], what: &str) -> Result<Vec<String>, HandshakeError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| HandshakeError::Malformed(format!("{what}: not ASCII")))?;
    let w: Vec<String> = text.split(' ').map(str::to_owned).collect();
    if w.first().map(String::as_str) != Some(MAGIC) {
        let shown: String = text.chars().take(40).collect();
        return Err(HandshakeError::Malformed(format!(
            "{what}: expected {MAGIC}, got {shown:?} (is the peer an ffs commlink of this version?)"
        )));
    }
    if w.get(1).map(String::as_str) == Some("ERROR") {
        let code = w.get(2).cloned().unwrap_or_default();
        let text = w.get(3..).map(|r| r.join(" ")).unwrap_or_default();
        return Err(HandshakeError::Refused { code, text });
    }
    Ok(w)
}

/// Lower-case hex digits only (`0-9a-f`), as PROTOCOL.md requires.
fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn nonce(s: &str) -> Option<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    (s.len() == NONCE_LEN * 2 && is_lower_hex(s) && hex::decode_to_slice(s, &mut n).is_ok())
        .then_some(n)
}

/// A port in its one spelling: decimal digits, no sign, no leading zero, 1 to 65535.
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn suite(s: &str) -> Result<Suite, HandshakeError> {
    let shown: String = s.chars().take(40).collect();
    Suite::from_name(s).ok_or(HandshakeError::UnknownSuite(shown))
}

impl Hello {
    /// The line (without CR LF).
    pub fn to_line(&self) -> String {
        format!(
            "{MAGIC} HELLO {} {}{} {} {}",
            self.suite.name(),
            if self.virtual_port { "v" } else { "" },
            self.port,
            hex::encode(self.nonce),
            self.bag
        )
    }

    /// Parses a HELLO line.
    pub fn parse(line: &[u8]) -> Result<Hello, HandshakeError> {
        let w = words(line, "HELLO")?;
        let bad = || {
            HandshakeError::Malformed("HELLO: expected `FFS/1 HELLO SUITE PORT NONCE BAG`".into())
        };
        if w.len() != 6 || w[1] != "HELLO" {
            return Err(bad());
        }
        let bag = &w[5];
        if bag.len() != 16 || !is_lower_hex(bag) {
            return Err(bad());
        }
        let (virtual_port, digits) = match w[3].strip_prefix('v') {
            Some(rest) => (true, rest),
            None => (false, w[3].as_str()),
        };
        Ok(Hello {
            suite: suite(&w[2])?,
            port: port(digits).ok_or_else(bad)?,
            virtual_port,
            nonce: nonce(&w[4]).ok_or_else(bad)?,
            bag: bag.clone(),
        })
    }
}

impl Welcome {
    /// The line (without CR LF).
    pub fn to_line(&self) -> String {
        format!(
            "{MAGIC} WELCOME {} {}",
            self.suite.name(),
            hex::encode(self.nonce)
        )
    }

    /// Parses a WELCOME line (an ERROR line becomes [`HandshakeError::Refused`]).
    pub fn parse(line: &[u8]) -> Result<Welcome, HandshakeError> {
        let w = words(line, "WELCOME")?;
        let bad =
            || HandshakeError::Malformed("WELCOME: expected `FFS/1 WELCOME SUITE NONCE`".into());
        if w.len() != 4 || w[1] != "WELCOME" {
            return Err(bad());
        }
        Ok(Welcome {
            suite: suite(&w[2])?,
            nonce: nonce(&w[3]).ok_or_else(bad)?,
        })
    }
}

/// An ERROR line (without CR LF); the text is reduced to printable ASCII.
pub fn error_line(code: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(300)
        .collect();
    format!("{MAGIC} ERROR {code} {clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let h = Hello {
            suite: Suite::Aes256Gcm,
            port: 40_001,
            virtual_port: false,
            nonce: [0xab; 16],
            bag: "0123456789abcdef".into(),
        };
        assert_eq!(
            h.to_line(),
            "FFS/1 HELLO aes256-gcm 40001 abababababababababababababababab 0123456789abcdef"
        );
        assert_eq!(Hello::parse(h.to_line().as_bytes()).unwrap(), h);
    }

    #[test]
    fn a_virtual_port_is_written_with_a_v_and_keeps_the_one_spelling() {
        let h = Hello {
            suite: Suite::Aes256Gcm,
            port: 50_000,
            virtual_port: true,
            nonce: [0x11; 16],
            bag: "0123456789abcdef".into(),
        };
        let line = h.to_line();
        assert_eq!(
            line,
            "FFS/1 HELLO aes256-gcm v50000 11111111111111111111111111111111 0123456789abcdef"
        );
        assert_eq!(Hello::parse(line.as_bytes()).unwrap(), h);
        for bad in [
            "V50000", "v050000", "v+1", "v0", "v", "vv1", "v65536", "50000v",
        ] {
            let line = format!(
                "FFS/1 HELLO aes256-gcm {bad} 11111111111111111111111111111111 0123456789abcdef"
            );
            assert!(
                matches!(
                    Hello::parse(line.as_bytes()),
                    Err(HandshakeError::Malformed(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn welcome_and_error() {
        let w = Welcome {
            suite: Suite::Des,
            nonce: [1; 16],
        };
        assert_eq!(Welcome::parse(w.to_line().as_bytes()).unwrap(), w);
        let e = error_line("port-mismatch", "seen 1, claimed 2\r\n");
        assert_eq!(
            Welcome::parse(e.as_bytes()),
            Err(HandshakeError::Refused {
                code: "port-mismatch".into(),
                text: "seen 1, claimed 2??".into()
            })
        );
    }

    #[test]
    fn unknown_suite_is_its_own_error() {
        let line =
            b"FFS/1 HELLO aes128-ocb 40001 abababababababababababababababab 0123456789abcdef";
        assert_eq!(
            Hello::parse(line),
            Err(HandshakeError::UnknownSuite("aes128-ocb".into()))
        );
        assert_eq!(
            Welcome::parse(b"FFS/1 WELCOME rot13 abababababababababababababababab"),
            Err(HandshakeError::UnknownSuite("rot13".into()))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"GET / HTTP/1.1"[..],
            b"FFS/1 HELLO",
            b"FFS/1 HELLO aes 1 00 0123456789abcdef",
            b"FFS/1 HELLO des-cbc 99999 abababababababababababababababab 0123456789abcdef",
            b"FFS/1 WELCOME des-cbc zz",
            b"FFS/1 WELCOME aes256-gcm zz",
        ] {
            assert!(
                Hello::parse(bad).is_err() && Welcome::parse(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_the_one_spelling_of_port_nonce_and_bag_is_accepted() {
        let line = |port: &str, nonce: &str, bag: &str| {
            format!("FFS/1 HELLO aes256-gcm {port} {nonce} {bag}").into_bytes()
        };
        let (n, b) = ("abababababababababababababababab", "0123456789abcdef");
        assert_eq!(Hello::parse(&line("17123", n, b)).unwrap().port, 17123);
        assert_eq!(Hello::parse(&line("1", n, b)).unwrap().port, 1);
        assert_eq!(Hello::parse(&line("65535", n, b)).unwrap().port, 65535);
        for bad_port in [
            "017123", "+17123", "-1", "0", "00", "65536", "99999", "", "1e3", " 1",
        ] {
            assert!(
                matches!(
                    Hello::parse(&line(bad_port, n, b)),
                    Err(HandshakeError::Malformed(_))
                ),
                "port {bad_port:?} accepted"
            );
        }
        let upper_nonce = "ABABABABABABABABABABABABABABABAB";
        assert!(matches!(
            Hello::parse(&line("17123", upper_nonce, b)),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            Hello::parse(&line("17123", n, "0123456789ABCDEF")),
            Err(HandshakeError::Malformed(_))
        ));
        let welcome = format!("FFS/1 WELCOME aes256-gcm {upper_nonce}");
        assert!(matches!(
            Welcome::parse(welcome.as_bytes()),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(Welcome::parse(format!("FFS/1 WELCOME aes256-gcm {n}").as_bytes()).is_ok());
    }
}
