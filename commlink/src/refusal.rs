//! The codes an `ffs.error` reply carries ([`RefusalCode`]): one type instead of string
//! literals, so a misspelt code does not compile. The wire spelling is [`RefusalCode::as_str`].

use std::fmt;
use std::str::FromStr;

/// Why a peer refused a request or closed a connection (the `code` of an `ffs.error`).
///
/// `#[non_exhaustive]`: a later version may add codes; a receiver that meets a code it does
/// not know gets an [`UnknownCode`] from [`FromStr`] and treats the reply as unexpected.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// `bad-request`: the request was malformed or its values out of range.
    BadRequest,
    /// `denied`: not allowed (wrong password, not entitled, not an admin, ...).
    Denied,
    /// `locked`: the login is locked after repeated failures.
    Locked,
    /// `not-found`: the thing asked about does not exist.
    NotFound,
    /// `unavailable`: a resource behind the peer (its database) is unreachable for now.
    Unavailable,
    /// `internal`: the peer failed; its log says why.
    Internal,
    /// `damaged`: what was asked for failed an integrity check (the stager found a
    /// repository object whose size no longer matches its manifest) and is refused rather
    /// than served.
    Damaged,
    /// `bad-line`: a line could not be decoded (sent with id 0 before closing).
    BadLine,
    /// `bad-packet`: a packet failed to open (sent with id 0 before closing).
    BadPacket,
    /// `protocol`: any other breach of the protocol (sent with id 0 before closing).
    Protocol,
}

impl RefusalCode {
    /// Every code, in the order PROTOCOL.md lists them.
    pub const ALL: [RefusalCode; 10] = [
        RefusalCode::BadRequest,
        RefusalCode::Denied,
        RefusalCode::Locked,
        RefusalCode::NotFound,
        RefusalCode::Unavailable,
        RefusalCode::Internal,
        RefusalCode::Damaged,
        RefusalCode::BadLine,
        RefusalCode::BadPacket,
        RefusalCode::Protocol,
    ];

    /// The code as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadRequest => "bad-request",
            RefusalCode::Denied => "denied",
            RefusalCode::Locked => "locked",
            RefusalCode::NotFound => "not-found",
            RefusalCode::Unavailable => "unavailable",
            RefusalCode::Internal => "internal",
            RefusalCode::Damaged => "damaged",
            RefusalCode::BadLine => "bad-line",
            RefusalCode::BadPacket => "bad-packet",
            RefusalCode::Protocol => "protocol",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown refusal code {0:?}")]
pub struct UnknownCode(pub String);

impl FromStr for RefusalCode {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RefusalCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_spelling() {
        for c in RefusalCode::ALL {
            assert_eq!(c.as_str().parse::<RefusalCode>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(
            "Denied".parse::<RefusalCode>(),
            Err(UnknownCode("Denied".into()))
        );
    }

    /// PROTOCOL.md names every code this type knows.
    #[test]
    fn every_code_is_in_the_protocol() {
        let spec = include_str!("../PROTOCOL.md");
        for c in RefusalCode::ALL {
            assert!(
                spec.contains(&format!("`{c}`")),
                "{c} missing from PROTOCOL.md"
            );
        }
    }
}
