//! The FFS commlink: the encrypted link between ffs hosts (seed 002's "FFS protocol").
//!
//! Packets are lines of printable ASCII ending in CR LF. Each carries one [`Tobj`] (tagged
//! object) encrypted with a DES-family cipher keyed from a bag of N pre-shared keys
//! ([`KeyBag`]); the bag entry is chosen per connection as *index = P mod N*, P being the
//! TCP initiator's ephemeral source port. The default suite is 3-key triple DES with
//! HMAC-SHA256 (encrypt-then-MAC), per-connection keys, sequence numbers and direction
//! binding; single DES (`des-cbc`) exists for fidelity to the patent and is legacy.
//! `PROTOCOL.md` beside this crate specifies the wire format byte by byte.
//!
//! Layers, innermost first:
//! - [`tobj`]: the message format (pure, no I/O);
//! - [`keys`]: the key bag file;
//! - [`crypto`]: suites, key derivation and packet sealing (pure, no I/O);
//! - [`frame`]: CR LF line framing with a length limit enforced while reading (pure);
//! - [`handshake`]: the plaintext hello lines that start a connection (pure);
//! - [`transport`]: async client and server over TCP, both dial directions (the I/O edge);
//! - [`msg`]: the typed messages the ffs roles exchange.

#![deny(missing_docs)]

pub mod crypto;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod msg;
pub mod tobj;
pub mod transport;

pub use crypto::Suite;
pub use keys::{KeyBag, KeyBagError};
pub use tobj::{Fields, Message, Request, Tobj, TobjError, Value};
pub use transport::{Client, LinkConfig, LinkError, Service, error_reply, serve, serve_dialout};
