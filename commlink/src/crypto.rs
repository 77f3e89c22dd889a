//! Cipher suites, key derivation and packet sealing. Pure: no I/O.

/// A cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suite {
    /// 3-key triple DES in CBC mode with HMAC-SHA256 (encrypt-then-MAC). The default.
    #[default]
    Tdes,
    /// Single DES in CBC mode with HMAC-SHA256: the patent's cipher, legacy (56-bit key).
    Des,
}

impl Suite {
    /// The suite's name in config files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Tdes => "3des-cbc-hmac-sha256",
            Suite::Des => "des-cbc",
        }
    }

    /// The suite with this name.
    pub fn from_name(name: &str) -> Option<Suite> {
        match name {
            "3des-cbc-hmac-sha256" => Some(Suite::Tdes),
            "des-cbc" => Some(Suite::Des),
            _ => None,
        }
    }
}
