//! Cipher suites, per-connection key derivation, and packet sealing. Pure: no I/O.
//!
//! A sealed packet is `base64(seq ‖ C ‖ tag)` where `seq` is the 8-byte big-endian packet
//! number in this direction. With the default AEAD suite `aes256-gcm`,
//! `C ‖ tag = AES-256-GCM(enc_key, nonce = 0⁴ ‖ seq, aad = seq, payload)`. With the CBC suites
//! (3DES, DES), `C = CBC(enc_key, IV, PKCS7(payload))` with `IV = HMAC(iv_key, seq)[..8]`
//! and `tag = HMAC(mac_key, seq ‖ C)[..16]`. Keys are derived
//! per connection and per direction from the bag entry and both sides' nonces (see
//! [`derive`] and PROTOCOL.md), so a packet recorded on one connection, reflected back to its
//! sender, replayed, reordered, truncated or altered fails to open.

use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::keys::ENTRY_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the sequence number at the start of a packet.
pub const SEQ_LEN: usize = 8;
/// Bytes of the tag at the end of a packet (the GCM tag, or the truncated HMAC-SHA256).
pub const TAG_LEN: usize = 16;
/// Bytes of each side's handshake nonce.
pub const NONCE_LEN: usize = 16;
/// The DES block size.
pub const BLOCK: usize = 8;
/// Bytes of the AES-GCM nonce: four zero bytes then the packet number, big-endian.
pub const GCM_NONCE_LEN: usize = 12;

/// A cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suite {
    /// AES-256 in GCM mode (an AEAD; AES-NI and PCLMULQDQ when the CPU has them). The default.
    #[default]
    Aes256Gcm,
    /// 3-key triple DES (EDE) in CBC mode with HMAC-SHA256 (encrypt-then-MAC). For peers
    /// that predate `aes256-gcm`; 64-bit block (Sweet32), no longer approved for encryption
    /// (NIST SP 800-131A Rev. 2).
    Tdes,
    /// Single DES in CBC mode with HMAC-SHA256: the patent's cipher. **Legacy**: a 56-bit
    /// key can be searched exhaustively; use only to talk to old peers.
    Des,
}

impl Suite {
    /// The suite's name in config files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes256Gcm => "aes256-gcm",
            Suite::Tdes => "3des-cbc-hmac-sha256",
            Suite::Des => "des-cbc",
        }
    }

    /// Every suite, the default first.
    pub const ALL: [Suite; 3] = [Suite::Aes256Gcm, Suite::Tdes, Suite::Des];

    /// The suite with this name.
    pub fn from_name(name: &str) -> Option<Suite> {
        match name {
            "aes256-gcm" => Some(Suite::Aes256Gcm),
            "3des-cbc-hmac-sha256" => Some(Suite::Tdes),
            "des-cbc" => Some(Suite::Des),
            _ => None,
        }
    }

    /// Bytes of cipher key.
    pub fn key_len(self) -> usize {
        match self {
            Suite::Aes256Gcm => 32,
            Suite::Tdes => 24,
            Suite::Des => 8,
        }
    }

    /// Whether this suite is kept only for compatibility.
    pub fn is_legacy(self) -> bool {
        self == Suite::Des
    }

    /// Whether this is a CBC suite (HMAC tag, PKCS#7 padding) rather than the AEAD.
    pub fn is_cbc(self) -> bool {
        self != Suite::Aes256Gcm
    }

    /// CBC-encrypts `plain` (PKCS#7 padded). `key` is [`Suite::key_len`] bytes. The AEAD
    /// suite has no CBC mode: it yields an empty output (see [`Suite::is_cbc`]).
    pub fn cbc_encrypt(self, key: &[u8], iv: &[u8; BLOCK], plain: &[u8]) -> Vec<u8> {
        // Key lengths are fixed by `derive`; a wrong length is a programming error caught
        // by the tests, so fall back to an empty output rather than panic.
        match self {
            Suite::Aes256Gcm => Vec::new(),
            Suite::Tdes => cbc::Encryptor::<des::TdesEde3>::new_from_slices(key, iv)
                .map(|e| e.encrypt_padded_vec::<Pkcs7>(plain))
                .unwrap_or_default(),
            Suite::Des => cbc::Encryptor::<des::Des>::new_from_slices(key, iv)
                .map(|e| e.encrypt_padded_vec::<Pkcs7>(plain))
                .unwrap_or_default(),
        }
    }

    /// CBC-decrypts and unpads; `None` if the padding is invalid.
    pub fn cbc_decrypt(self, key: &[u8], iv: &[u8; BLOCK], cipher: &[u8]) -> Option<Vec<u8>> {
        match self {
            Suite::Aes256Gcm => None,
            Suite::Tdes => cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec::<Pkcs7>(cipher)
                .ok(),
            Suite::Des => cbc::Decryptor::<des::Des>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec::<Pkcs7>(cipher)
                .ok(),
        }
    }
}

/// Which end of the TCP connection this is. Keys are bound to the direction of travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The TCP dialer (its source port picks the bag entry).
    Initiator,
    /// The TCP listener.
    Acceptor,
}

/// Keys for one direction of one connection.
#[derive(Clone)]
pub struct DirectionKeys {
    suite: Suite,
    cipher: Cipher,
}

/// The keyed cipher of one direction.
#[derive(Clone)]
enum Cipher {
    /// AES-256-GCM, key schedule expanded once per connection. `ring`'s (the same one the
    /// TLS stack uses): for a ~200-byte packet its fixed cost per call is well under half
    /// that of RustCrypto `aes-gcm` 0.11 here, whose VAES-512 backend works in 64-block
    /// batches and so encrypts a short packet's blocks one at a time; the bytes are the
    /// same (tested against `aes-gcm`).
    Gcm(Box<ring::aead::LessSafeKey>),
    /// A CBC suite with its HMAC keys.
    Cbc {
        enc: Vec<u8>,
        mac: [u8; 32],
        iv: [u8; 32],
    },
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectionKeys({})", self.suite.name())
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The handshake transcript hash every derived key is bound to.
pub fn transcript(
    suite: Suite,
    port: u16,
    nonce_i: &[u8; NONCE_LEN],
    nonce_a: &[u8; NONCE_LEN],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"FFS/1\0");
    h.update(suite.name().as_bytes());
    h.update(b"\0");
    h.update(port.to_be_bytes());
    h.update(nonce_i);
    h.update(nonce_a);
    h.finalize().into()
}

/// Derives the keys of one direction (`"i2a"` or `"a2i"`).
pub fn direction_keys(
    suite: Suite,
    entry: &[u8; ENTRY_LEN],
    th: &[u8; 32],
    dir: &str,
) -> DirectionKeys {
    let enc = hmac(entry, &[b"ffs1 enc ", dir.as_bytes(), th]);
    let cipher = match suite {
        // The AEAD needs no MAC or IV keys: the nonce is the packet number.
        Suite::Aes256Gcm => Cipher::Gcm(Box::new(gcm_key(&enc))),
        Suite::Tdes | Suite::Des => Cipher::Cbc {
            enc: enc[..suite.key_len()].to_vec(),
            mac: hmac(entry, &[b"ffs1 mac ", dir.as_bytes(), th]),
            iv: hmac(entry, &[b"ffs1 iv ", dir.as_bytes(), th]),
        },
    };
    DirectionKeys { suite, cipher }
}

/// Derives this side's sealer (outgoing) and opener (incoming) for a connection.
pub fn derive(
    suite: Suite,
    entry: &[u8; ENTRY_LEN],
    port: u16,
    nonce_i: &[u8; NONCE_LEN],
    nonce_a: &[u8; NONCE_LEN],
    side: Side,
) -> (Sealer, Opener) {
    let th = transcript(suite, port, nonce_i, nonce_a);
    let i2a = direction_keys(suite, entry, &th, "i2a");
    let a2i = direction_keys(suite, entry, &th, "a2i");
    let (out, inc) = match side {
        Side::Initiator => (i2a, a2i),
        Side::Acceptor => (a2i, i2a),
    };
    (
        Sealer {
            keys: out,
            seq: 0,
            scratch: Vec::new(),
        },
        Opener {
            keys: inc,
            expected: 0,
            scratch: Vec::new(),
        },
    )
}

/// The AES-256-GCM key `key`.
fn gcm_key(key: &[u8; 32]) -> ring::aead::LessSafeKey {
    // AES-256 takes exactly the 32 bytes given, so this cannot fail.
    let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
        .unwrap_or_else(|_| unreachable!("AES-256-GCM takes a 32-byte key"));
    ring::aead::LessSafeKey::new(key)
}

/// The wire's base64: the standard alphabet, padded, canonical padding and trailing bits
/// (exactly `general_purpose::STANDARD`'s configuration), through base64's AVX2 kernels
/// where the CPU has them (detected once) and its scalar code elsewhere; the ends of a line
/// and every check take the scalar path either way.
fn wire_base64() -> &'static base64::engine::Simd {
    static ENGINE: std::sync::LazyLock<base64::engine::Simd> = std::sync::LazyLock::new(|| {
        base64::engine::Simd::standard(base64::engine::general_purpose::PAD)
    });
    &ENGINE
}

fn cbc_iv(iv_key: &[u8; 32], seq: u64) -> [u8; BLOCK] {
    let full = hmac(iv_key, &[&seq.to_be_bytes()]);
    let mut iv = [0u8; BLOCK];
    iv.copy_from_slice(&full[..BLOCK]);
    iv
}

/// The AES-GCM nonce of packet `seq`: `0x00000000 ‖ BE64(seq)`.
pub fn gcm_nonce(seq: u64) -> [u8; GCM_NONCE_LEN] {
    let mut n = [0u8; GCM_NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Seals outgoing packets, numbering them 0, 1, 2, …
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: DirectionKeys,
    seq: u64,
    /// Reused packet buffer of [`Sealer::seal_line_into`].
    scratch: Vec<u8>,
}

impl Sealer {
    /// Seals one payload into a wire line (without the CR LF).
    pub fn seal(&mut self, payload: &[u8]) -> String {
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        self.seal_packet(payload, &mut pkt);
        let line = wire_base64().encode(&pkt);
        if pkt.capacity() <= 64 * 1024 {
            self.scratch = pkt;
        }
        line
    }

    /// Seals one payload and appends its wire line and CR LF to `out`: the same line as
    /// [`Sealer::seal`], without allocating once `out` and this sealer's scratch buffer
    /// have grown to the packet size.
    pub fn seal_line_into(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        self.seal_packet(payload, &mut pkt);
        let start = out.len();
        // Padded base64 of n bytes: 4 * ceil(n / 3), which cannot overflow for packets
        // bounded by the line limit.
        out.resize(start + pkt.len().div_ceil(3) * 4, 0);
        let written = wire_base64()
            .encode_slice(&pkt, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\r\n");
        if pkt.capacity() <= 64 * 1024 {
            self.scratch = pkt;
        }
    }

    /// Seals one payload into the binary packet `seq ‖ cipher text ‖ tag`, in `pkt`.
    fn seal_packet(&mut self, payload: &[u8], pkt: &mut Vec<u8>) {
        let seq = self.seq;
        self.seq += 1;
        let header = seq.to_be_bytes();
        match &self.keys.cipher {
            Cipher::Gcm(aead) => {
                pkt.reserve(SEQ_LEN + payload.len() + TAG_LEN);
                pkt.extend_from_slice(&header);
                pkt.extend_from_slice(payload);
                // Fails only for payloads over 64 GiB, far beyond any line limit.
                match aead.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(gcm_nonce(seq)),
                    ring::aead::Aad::from(header),
                    &mut pkt[SEQ_LEN..],
                ) {
                    Ok(tag) => pkt.extend_from_slice(tag.as_ref()),
                    Err(_) => pkt.truncate(SEQ_LEN),
                }
            }
            Cipher::Cbc { enc, mac, iv } => {
                let c = self.keys.suite.cbc_encrypt(enc, &cbc_iv(iv, seq), payload);
                pkt.reserve(SEQ_LEN + c.len() + TAG_LEN);
                pkt.extend_from_slice(&header);
                pkt.extend_from_slice(&c);
                let tag = hmac(mac, &[&pkt[..]]);
                pkt.extend_from_slice(&tag[..TAG_LEN]);
            }
        }
    }
}

/// Why an incoming packet was rejected. Every case closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not valid base64 (standard alphabet, padded).
    #[error("packet is not valid base64")]
    Base64,
    /// Too short, or (CBC suites) the cipher text is not whole blocks: truncated.
    #[error("packet has an impossible length ({0} bytes): truncated or corrupted")]
    Length(usize),
    /// The MAC (or the AEAD tag) does not match.
    #[error(
        "packet failed authentication: altered in transit, reflected back, recorded on another connection, or keyed from a different bag entry"
    )]
    Mac,
    /// Authentic, but not the packet number expected next.
    #[error("packet number {got} where {expected} was expected: replayed or reordered")]
    Sequence {
        /// The packet's number.
        got: u64,
        /// The number expected next.
        expected: u64,
    },
    /// Authentic and in order, but the padding is wrong (cannot happen without the keys).
    #[error("packet padding is invalid")]
    Padding,
}

/// Opens incoming packets, requiring numbers 0, 1, 2, … in order.
#[derive(Debug, Clone)]
pub struct Opener {
    keys: DirectionKeys,
    expected: u64,
    /// Reused packet buffer of [`Opener::open_in_place`].
    scratch: Vec<u8>,
}

impl Opener {
    /// Opens one wire line (without the CR LF) and returns its payload.
    pub fn open(&mut self, line: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open_in_place(line).map(<[u8]>::to_vec)
    }

    /// [`Opener::open`] into this opener's own buffer: the payload is valid until the next
    /// call, and no allocation is made once the buffer has grown to the packet size.
    pub fn open_in_place(&mut self, line: &[u8]) -> Result<&[u8], OpenError> {
        let mut pkt = std::mem::take(&mut self.scratch);
        let opened = self.open_packet(line, &mut pkt);
        self.scratch = pkt;
        let payload = opened?;
        Ok(&self.scratch[payload])
    }

    /// Decodes `line` into `pkt` (replacing what it held), checks and decrypts it, and
    /// returns where the payload lies in `pkt`.
    fn open_packet(
        &mut self,
        line: &[u8],
        pkt: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>, OpenError> {
        // Canonical padded base64 of n bytes is 4 * ceil(n / 3) characters.
        pkt.clear();
        pkt.resize(line.len() / 4 * 3 + 3, 0);
        let n = wire_base64()
            .decode_slice(line, pkt.as_mut_slice())
            .map_err(|_| OpenError::Base64)?;
        pkt.truncate(n);
        let cbc = self.keys.suite.is_cbc();
        let shortest = SEQ_LEN + TAG_LEN + if cbc { BLOCK } else { 0 };
        if n < shortest || (cbc && !(n - SEQ_LEN - TAG_LEN).is_multiple_of(BLOCK)) {
            return Err(OpenError::Length(n));
        }
        let mut header = [0u8; SEQ_LEN];
        header.copy_from_slice(&pkt[..SEQ_LEN]);
        let seq = u64::from_be_bytes(header);
        let payload = match &self.keys.cipher {
            Cipher::Gcm(aead) => {
                let (body, tag) = pkt.split_at_mut(n - TAG_LEN);
                let tag = ring::aead::Tag::try_from(&tag[..]).map_err(|_| OpenError::Length(n))?;
                // Verifies the tag first; decrypts in place only if it matches.
                aead.open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(gcm_nonce(seq)),
                    ring::aead::Aad::from(header),
                    tag,
                    &mut body[SEQ_LEN..],
                    0..,
                )
                .map_err(|_| OpenError::Mac)?;
                self.check_seq(seq)?;
                SEQ_LEN..n - TAG_LEN
            }
            Cipher::Cbc { enc, mac, iv } => {
                let (body, tag) = pkt.split_at(n - TAG_LEN);
                let want = hmac(mac, &[body]);
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&want[..TAG_LEN], tag)) {
                    return Err(OpenError::Mac);
                }
                self.check_seq(seq)?;
                let plain = self
                    .keys
                    .suite
                    .cbc_decrypt(enc, &cbc_iv(iv, seq), &body[SEQ_LEN..])
                    .ok_or(OpenError::Padding)?;
                *pkt = plain;
                0..pkt.len()
            }
        };
        self.expected += 1;
        Ok(payload)
    }

    fn check_seq(&self, seq: u64) -> Result<(), OpenError> {
        if seq == self.expected {
            Ok(())
        } else {
            Err(OpenError::Sequence {
                got: seq,
                expected: self.expected,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{AeadInOut as _, KeyInit as _};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// FIPS 81 Appendix C (CBC): "Now is the time for all " under 0123456789abcdef.
    #[test]
    fn des_cbc_fips81_vector() {
        let key = h("0123456789abcdef");
        let iv: [u8; 8] = h("1234567890abcdef").try_into().unwrap();
        let pt = b"Now is the time for all ";
        let ct = Suite::Des.cbc_encrypt(&key, &iv, pt);
        // Our PKCS#7 padding appends one whole block; the first 24 bytes are FIPS 81's.
        assert_eq!(
            ct[..24],
            h("e5c7cdde872bf27c 43e934008c389c0f 683788499a7c05f6")[..]
        );
        assert_eq!(Suite::Des.cbc_decrypt(&key, &iv, &ct).unwrap(), pt);
    }

    /// NIST SP 800-17 Table A.1 (variable plaintext KAT), first entry, with a zero IV
    /// (so CBC equals ECB on the first block); also the 3DES K1=K2=K3 degenerate case.
    #[test]
    fn des_sp800_17_kat() {
        let key = h("0101010101010101");
        let iv = [0u8; 8];
        let ct = Suite::Des.cbc_encrypt(&key, &iv, &h("8000000000000000"));
        assert_eq!(ct[..8], h("95f8a5e5dd31d900")[..]);
        let k3 = h("010101010101010101010101010101010101010101010101");
        let ct3 = Suite::Tdes.cbc_encrypt(&k3, &iv, &h("8000000000000000"));
        assert_eq!(ct3[..8], h("95f8a5e5dd31d900")[..]);
    }

    /// NIST SP 800-67 Rev.1 Appendix B example: 3-key TDEA, three blocks (ECB, so each
    /// block is checked with a zero IV after chaining is undone).
    #[test]
    fn tdes_sp800_67_vector() {
        let key = h("0123456789abcdef 23456789abcdef01 456789abcdef0123");
        let pt = h("5468652071756663 6b2062726f776e20 666f78206a756d70");
        let want = h("a826fd8ce53b855f cce21c8112256fe6 68d5c05dd9b6b900");
        let zero = [0u8; 8];
        for i in 0..3 {
            let ct = Suite::Tdes.cbc_encrypt(&key, &zero, &pt[i * 8..i * 8 + 8]);
            assert_eq!(ct[..8], want[i * 8..i * 8 + 8], "block {i}");
        }
    }

    /// The GCM specification's (McGrew–Viega) test cases 13 and 14: AES-256, zero key and
    /// IV, empty and one zero block of plaintext, no AAD.
    #[test]
    fn aes256_gcm_kat() {
        let aead = Aes256Gcm::new(&[0u8; 32].into());
        let nonce = [0u8; GCM_NONCE_LEN].into();
        let mut empty: [u8; 0] = [];
        let tag = aead
            .encrypt_inout_detached(&nonce, b"", empty.as_mut_slice().into())
            .unwrap();
        assert_eq!(tag[..], h("530f8afbc74536b9a963b4f1c4cb738b")[..]);
        let mut block = [0u8; 16];
        let tag = aead
            .encrypt_inout_detached(&nonce, b"", block.as_mut_slice().into())
            .unwrap();
        assert_eq!(block[..], h("cea7403d4d606b6e074ec5d3baf39d18")[..]);
        assert_eq!(tag[..], h("d0d1c8a799996bf0265b98b5d48ab919")[..]);
    }

    /// The same test cases through `ring`, the AEAD the suite uses.
    #[test]
    fn aes256_gcm_kat_ring() {
        let key = gcm_key(&[0u8; 32]);
        let nonce = || ring::aead::Nonce::assume_unique_for_key([0u8; GCM_NONCE_LEN]);
        let aad = ring::aead::Aad::empty();
        let tag = key
            .seal_in_place_separate_tag(nonce(), aad, &mut [])
            .unwrap();
        assert_eq!(tag.as_ref(), &h("530f8afbc74536b9a963b4f1c4cb738b")[..]);
        let mut block = [0u8; 16];
        let tag = key
            .seal_in_place_separate_tag(nonce(), aad, &mut block)
            .unwrap();
        assert_eq!(block[..], h("cea7403d4d606b6e074ec5d3baf39d18")[..]);
        assert_eq!(tag.as_ref(), &h("d0d1c8a799996bf0265b98b5d48ab919")[..]);
    }

    /// aes256-gcm packets are byte for byte what RustCrypto `aes-gcm` (the AEAD this suite
    /// used before) makes from the same key, and open the same way, at every length around
    /// the block and batch sizes.
    #[test]
    fn gcm_packets_match_the_aes_gcm_crate() {
        let entry = [7u8; 32];
        let th = transcript(Suite::Aes256Gcm, 50_000, &[1; 16], &[2; 16]);
        let enc = hmac(&entry, &[b"ffs1 enc ", b"i2a", &th]);
        let reference = Aes256Gcm::new(&enc.into());
        let (mut sealer, _) = derive(
            Suite::Aes256Gcm,
            &entry,
            50_000,
            &[1; 16],
            &[2; 16],
            Side::Initiator,
        );
        let (_, mut opener) = derive(
            Suite::Aes256Gcm,
            &entry,
            50_000,
            &[1; 16],
            &[2; 16],
            Side::Acceptor,
        );
        let lens = (0..=80).chain([127, 128, 129, 200, 255, 256, 257, 1023, 1024, 1025, 5000]);
        for (seq, n) in (0u64..).zip(lens) {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let header = seq.to_be_bytes();
            let mut want = header.to_vec();
            want.extend_from_slice(&payload);
            let tag = reference
                .encrypt_inout_detached(
                    &gcm_nonce(seq).into(),
                    &header,
                    want[SEQ_LEN..].as_mut().into(),
                )
                .unwrap();
            want.extend_from_slice(&tag);
            let want = base64::engine::general_purpose::STANDARD.encode(&want);
            let line = sealer.seal(&payload);
            assert_eq!(line, want, "{n} bytes");
            assert_eq!(opener.open_in_place(line.as_bytes()), Ok(&payload[..]));
        }
    }

    #[test]
    fn gcm_nonce_is_zeros_then_seq() {
        assert_eq!(
            gcm_nonce(0x0102_0304_0506_0708)[..],
            h("00000000 0102030405060708")[..]
        );
    }

    fn pair(suite: Suite) -> ((Sealer, Opener), (Sealer, Opener)) {
        let entry = [7u8; 32];
        let ni = [1u8; 16];
        let na = [2u8; 16];
        (
            derive(suite, &entry, 50_000, &ni, &na, Side::Initiator),
            derive(suite, &entry, 50_000, &ni, &na, Side::Acceptor),
        )
    }

    #[test]
    fn both_directions_open_in_order() {
        for suite in Suite::ALL {
            let ((mut is, mut io), (mut a_s, mut ao)) = pair(suite);
            for msg in [&b""[..], b"x", b"12345678", &[0xffu8; 1000]] {
                let line = is.seal(msg);
                assert!(
                    line.bytes().all(|b| (0x21..0x7f).contains(&b)),
                    "7-bit safe"
                );
                assert_eq!(ao.open(line.as_bytes()).unwrap(), msg);
                let back = a_s.seal(msg);
                assert_eq!(io.open(back.as_bytes()).unwrap(), msg);
            }
        }
    }

    #[test]
    fn sealing_into_a_buffer_gives_the_same_lines() {
        for suite in Suite::ALL {
            let ((mut a, _), (_, mut open)) = pair(suite);
            let mut b = a.clone();
            let mut out = b"earlier\r\n".to_vec();
            let mut want = out.clone();
            for payload in [&b""[..], b"x", &[7u8; 200][..], &[9u8; 5000][..]] {
                want.extend_from_slice(a.seal(payload).as_bytes());
                want.extend_from_slice(b"\r\n");
                b.seal_line_into(payload, &mut out);
            }
            assert_eq!(out, want, "{suite:?}");
            let lines: Vec<&[u8]> = out.split(|&c| c == b'\n').skip(1).collect();
            for (line, len) in lines.iter().zip([0, 1, 200, 5000]) {
                let plain = open.open(line.strip_suffix(b"\r").unwrap()).unwrap();
                assert_eq!(plain.len(), len, "{suite:?}");
            }
        }
    }

    #[test]
    fn rejects_replay() {
        for suite in Suite::ALL {
            let ((mut s, _), (_, mut o)) = pair(suite);
            let p0 = s.seal(b"pay 1");
            assert!(o.open(p0.as_bytes()).is_ok());
            assert_eq!(
                o.open(p0.as_bytes()),
                Err(OpenError::Sequence {
                    got: 0,
                    expected: 1
                })
            );
        }
    }

    #[test]
    fn rejects_reordering() {
        for suite in Suite::ALL {
            let ((mut s, _), (_, mut o)) = pair(suite);
            let _p0 = s.seal(b"first");
            let p1 = s.seal(b"second");
            assert_eq!(
                o.open(p1.as_bytes()),
                Err(OpenError::Sequence {
                    got: 1,
                    expected: 0
                })
            );
        }
    }

    #[test]
    fn rejects_reflection() {
        for suite in Suite::ALL {
            let ((mut s, mut own_opener), _) = pair(suite);
            let p0 = s.seal(b"to the acceptor");
            // Sent back to the initiator, it is keyed for the other direction.
            assert_eq!(own_opener.open(p0.as_bytes()), Err(OpenError::Mac));
        }
    }

    #[test]
    fn rejects_truncation() {
        for suite in Suite::ALL {
            let ((mut s, _), (_, mut o)) = pair(suite);
            let p = s.seal(&[b'a'; 40]);
            // Drop whole base64 quanta (3 bytes each) so it still decodes, then less.
            let cut = &p.as_bytes()[..p.len() - 12];
            assert!(matches!(
                o.open(cut),
                Err(OpenError::Length(_) | OpenError::Mac)
            ));
            assert_eq!(o.open(&p.as_bytes()[..p.len() - 1]), Err(OpenError::Base64));
            let short = base64::engine::general_purpose::STANDARD.encode([0u8; 20]);
            assert_eq!(o.open(short.as_bytes()), Err(OpenError::Length(20)));
        }
    }

    #[test]
    fn rejects_every_flipped_bit() {
        for suite in Suite::ALL {
            let ((mut s, _), (_, o)) = pair(suite);
            let p = s.seal(b"authorize alice product 2.1");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&p)
                .unwrap();
            for bit in 0..raw.len() * 8 {
                let mut bad = raw.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let line = base64::engine::general_purpose::STANDARD.encode(&bad);
                let mut fresh = o.clone();
                assert!(fresh.open(line.as_bytes()).is_err(), "bit {bit} accepted");
            }
        }
    }

    /// The in-place opener (what connections use) gives the same payloads and the same
    /// errors as `open`, across a run of packets of varied sizes and with damage.
    #[test]
    fn opening_in_place_agrees_with_open() {
        for suite in Suite::ALL {
            let ((mut s, _), (_, o)) = pair(suite);
            let (mut a, mut b) = (o.clone(), o);
            for n in [0usize, 1, 7, 8, 9, 200, 1000, 3, 64 * 1024, 5] {
                let payload: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
                let line = s.seal(&payload);
                let want = a.open(line.as_bytes());
                assert_eq!(want.as_deref(), Ok(&payload[..]), "{} {n}", suite.name());
                assert_eq!(b.open_in_place(line.as_bytes()), Ok(&payload[..]));
            }
            let last = s.seal(b"one more");
            let mut damaged = last.clone().into_bytes();
            damaged[3] = if damaged[3] == b'A' { b'B' } else { b'A' };
            for bad in [&damaged[..], b"not base64!", b"QUJD", &last.as_bytes()[..8]] {
                let mut fresh = b.clone();
                let got = fresh.open_in_place(bad).map(<[u8]>::to_vec);
                assert_eq!(got, a.clone().open(bad), "{} {bad:?}", suite.name());
            }
        }
    }

    #[test]
    fn other_connection_cannot_open() {
        for suite in Suite::ALL {
            let entry = [7u8; 32];
            let (mut s1, _) = derive(suite, &entry, 50_000, &[1; 16], &[2; 16], Side::Initiator);
            let (_, mut o2) = derive(suite, &entry, 50_000, &[1; 16], &[3; 16], Side::Acceptor);
            assert_eq!(
                o2.open(s1.seal(b"recorded").as_bytes()),
                Err(OpenError::Mac)
            );
        }
    }

    proptest::proptest! {
        /// The wire's base64 engine (AVX2 where the CPU has it) writes exactly what
        /// `general_purpose::STANDARD` writes, and accepts and refuses exactly what it does:
        /// random bytes, their encodings with one character replaced, cut or extended, and
        /// random text over the alphabet, `=` and a few strangers.
        #[test]
        fn wire_base64_is_standard_base64(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            at in 0usize..400,
            with in proptest::sample::select(b"A/+=a9-_ \r\n\x00".to_vec()),
            junk in "[A-Za-z0-9+/=_ -]{0,120}",
        ) {
            use base64::engine::general_purpose::STANDARD;
            let enc = STANDARD.encode(&bytes);
            proptest::prop_assert_eq!(wire_base64().encode(&bytes), enc.clone());
            let mut variants = vec![enc.clone().into_bytes(), junk.into_bytes()];
            let mut e = enc.into_bytes();
            if !e.is_empty() {
                let i = at % e.len();
                let mut replaced = e.clone();
                replaced[i] = with;
                variants.push(replaced);
                variants.push(e[..i].to_vec());
            }
            e.push(with);
            variants.push(e);
            for v in variants {
                proptest::prop_assert_eq!(wire_base64().decode(&v), STANDARD.decode(&v), "{:?}", String::from_utf8_lossy(&v));
            }
        }
    }
}
