//! Link addresses as written in `ffs.toml`: a URL naming the carrier (`tcp://host:port`), or
//! a bare `host:port`, which keeps meaning raw TCP. Any other scheme is refused, so a typo
//! or a carrier this version does not have is reported at startup instead of being dialed.

/// Why a link address was refused. The message names the value; the caller names the
/// setting it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// A `scheme://` this version does not know.
    #[error("{value:?}: unknown scheme {scheme:?}; use tcp://HOST:PORT (or plain HOST:PORT)")]
    UnknownScheme {
        /// The whole value.
        value: String,
        /// The scheme as written.
        scheme: String,
    },
    /// Not `HOST:PORT` with a port in 1..=65535.
    #[error("{0:?}: expected HOST:PORT or tcp://HOST:PORT, e.g. \"tcp://127.0.0.1:7702\"")]
    Malformed(String),
}

/// A parsed link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAddr {
    /// Raw TCP to `host:port` (the link of seed 000, unchanged on the wire).
    Tcp(String),
}

impl LinkAddr {
    /// Parses `tcp://host:port`, `tcp://host:port/` or `host:port` (no name lookup).
    pub fn parse(value: &str) -> Result<LinkAddr, AddrError> {
        let v = value.trim();
        let rest = match v.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => rest,
            Some((scheme, _)) => {
                return Err(AddrError::UnknownScheme {
                    value: value.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            None => v,
        };
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        let ok = match hostport.rsplit_once(':') {
            Some((host, port)) => {
                !host.is_empty()
                    && !host.contains(['/', '@', ' '])
                    && !port.starts_with(['+', '0'])
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            }
            None => false,
        };
        if !ok {
            return Err(AddrError::Malformed(value.to_owned()));
        }
        Ok(LinkAddr::Tcp(hostport.to_owned()))
    }

    /// The `host:port` a socket connects to or binds.
    pub fn host_port(&self) -> &str {
        match self {
            LinkAddr::Tcp(a) => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_urls_and_bare_addresses_mean_raw_tcp() {
        for (written, meant) in [
            ("tcp://web.example.com:7702", "web.example.com:7702"),
            ("tcp://127.0.0.1:7702/", "127.0.0.1:7702"),
            ("TCP://[::1]:7702", "[::1]:7702"),
            ("127.0.0.1:7702", "127.0.0.1:7702"),
            (" web:1 ", "web:1"),
        ] {
            assert_eq!(
                LinkAddr::parse(written),
                Ok(LinkAddr::Tcp(meant.into())),
                "{written}"
            );
        }
    }

    #[test]
    fn unknown_schemes_are_refused_by_name() {
        let err = LinkAddr::parse("ftp://web:7702").unwrap_err();
        assert!(matches!(err, AddrError::UnknownScheme { ref scheme, .. } if scheme == "ftp"));
        assert!(err.to_string().contains("\"ftp\""), "{err}");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "web",
            "web:",
            ":7702",
            "web:0",
            "web:65536",
            "web:+1",
            "web:07702",
            "tcp://",
            "tcp://web",
            "tcp://web:7702/path",
            "tcp://u@web:7702",
        ] {
            assert!(
                matches!(LinkAddr::parse(bad), Err(AddrError::Malformed(_))),
                "{bad:?} accepted"
            );
        }
    }
}
