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
