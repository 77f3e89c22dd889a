//! The FFS commlink: the encrypted link between ffs hosts (seed 002's "FFS protocol").
//!
//! Packets are lines of printable ASCII ending in CR LF. Each carries one [`Tobj`] (tagged
//! object) encrypted with a key from a bag of N pre-shared keys ([`KeyBag`]); the bag entry
//! is chosen per connection as *index = P mod N*, P being the TCP initiator's ephemeral
//! source port. The default suite is AES-256-GCM (`aes256-gcm`), with per-connection keys,
//! sequence numbers and direction binding; 3-key triple DES with HMAC-SHA256
//! (`3des-cbc-hmac-sha256`) stays for older peers, and single DES (`des-cbc`) exists for
//! fidelity to the patent and is legacy.
//! `PROTOCOL.md` beside this crate specifies the wire format byte by byte.
//!
//! Layers, innermost first:
//! - [`tobj`]: the message format (pure, no I/O);
//! - [`keys`]: the key bag file;
//! - [`secret_file`]: the owner-only (0600) rule every secret file on every host obeys;
//! - [`crypto`]: suites, key derivation and packet sealing (pure, no I/O);
//! - [`frame`]: CR LF line framing with a length limit enforced while reading (pure);
//! - [`handshake`]: the plaintext hello lines that start a connection (pure);
//! - [`transport`]: async client and server over a carrier (raw TCP, a CONNECT proxy, or a
//!   stream a carrier endpoint accepted and handed to [`Client::accepting`]), both dial directions
//!   (the I/O edge);
//! - [`msg`]: the typed messages the ffs roles exchange.
//!
//! Beside them: [`atomic_file`] (the one atomic file replacement), [`fast_copies`] (every
//! binary's first step: glibc's copies off `rep movsb` on AMD), [`stats`] (percentiles, shared by every role's statistics and benchmark),
//! [`progress`] (how libraries report long work without drawing it), with the `tls` feature
//! `tls` (the one TLS certificate loader of the roles that serve TLS, generating a
//! self-signed pair on first start) and, with the `bench` feature, `bench` (what
//! `ffs bench commlink` measures).

#![deny(missing_docs)]

pub mod atomic_file;
#[cfg(feature = "bench")]
pub mod bench;
pub mod crypto;
pub mod fast_copies;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod msg;
pub mod progress;
pub mod refusal;
pub mod secret_file;
pub mod stats;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tobj;
pub mod transport;

pub use crypto::Suite;
pub use keys::{KeyBag, KeyBagError};
pub use refusal::{RefusalCode, UnknownCode};
pub use tobj::{Fields, Link, Message, Request, Tobj, TobjError, Value};
pub use transport::{
    Acceptor, AddrError, Carrier, Client, Incoming, LinkAddr, LinkConfig, LinkError, LinkStream,
    Proxy, Service, answer_blocking, error_reply, serve, serve_dialout,
    serve_dialout_on_own_thread, serve_dialout_via,
};
pub use transport::{
    ReceiveChannel, ReceiveParams, Relay, RelayError, RelayHub, RelayLimits, RelayOptions,
    RelaySetupError, RelayStream, Trust,
};

#[doc(hidden)]
/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
pub mod fuzzing {
    /// Feeds arbitrary bytes to the line decoder, then each line to the handshake parsers
    /// and the packet opener.
    pub fn frame_decoder(data: &[u8]) {
        let mut dec = crate::frame::LineDecoder::new(4096);
        let mut buf = data.to_vec();
        let mut openers: Vec<_> = crate::Suite::ALL
            .into_iter()
            .map(|suite| {
                crate::crypto::derive(
                    suite,
                    &[7; 32],
                    1,
                    &[1; 16],
                    &[2; 16],
                    crate::crypto::Side::Initiator,
                )
                .1
            })
            .collect();
        while let Ok(Some(line)) = dec.decode(&mut buf) {
            let _ = crate::handshake::Hello::parse(&line);
            let _ = crate::handshake::Welcome::parse(&line);
            for opener in &mut openers {
                let _ = opener.open(&line);
            }
        }
    }

    /// Feeds arbitrary text to the tobj parser; whatever parses must re-encode to itself.
    pub fn tobj_parser(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data)
            && let Ok(t) = crate::tobj::Tobj::parse(s, &crate::tobj::Limits::default())
        {
            let again = t.encode();
            let back = crate::tobj::Tobj::parse(&again, &crate::tobj::Limits::default());
            assert_eq!(back.as_ref(), Ok(&t), "re-encoding changed the message");
        }
    }
}
