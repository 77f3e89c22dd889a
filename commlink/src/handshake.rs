//! Handshake lines.
