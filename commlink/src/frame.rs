//! CR LF line framing.
