//! Link addresses as written in `ffs.toml`: a URL naming the carrier (`tcp://host:port`,
//! `https://host[:port][/prefix]`), or a bare `host:port`, which keeps meaning raw TCP. Any
//! other scheme is refused, so a typo or a carrier this version does not have is reported at
//! startup instead of being dialed.

/// Why a link address was refused. The message names the value; the caller names the
/// setting it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// A `scheme://` this version does not know.
    #[error(
        "{value:?}: unknown scheme {scheme:?}; use tcp://HOST:PORT (or plain HOST:PORT) or https://HOST[:PORT][/PREFIX]"
    )]
    UnknownScheme {
        /// The whole value.
        value: String,
        /// The scheme as written.
        scheme: String,
    },
    /// Not `HOST:PORT` with a port in 1..=65535.
    #[error("{0:?}: expected HOST:PORT or tcp://HOST:PORT, e.g. \"tcp://127.0.0.1:7702\"")]
    Malformed(String),
    /// Not `https://HOST[:PORT][/PREFIX]`.
    #[error(
        "{0:?}: expected https://HOST[:PORT][/PREFIX], e.g. \"https://web.example.com/ffs-link\" (no user, query or fragment)"
    )]
    MalformedHttps(String),
    /// A carrier this setting cannot use (e.g. `https://` where the web itself listens or
    /// dials raw TCP).
    #[error("{value:?}: {why}")]
    NotHere {
        /// The whole value.
        value: String,
        /// Why, and what to write instead.
        why: &'static str,
    },
}

/// A parsed link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAddr {
    /// Raw TCP to `host:port` (the link of seed 000, unchanged on the wire).
    Tcp(String),
    /// The https carrier: the commlink inside TLS to the web frontend's HTTPS listener.
    Https(HttpsAddr),
}

/// An `https://host[:port][/prefix]` link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsAddr {
    /// `host:port` to connect to (IPv6 literals bracketed; port 443 when not written).
    pub authority: String,
    /// The host as the TLS server name and `Host` header use it (no brackets).
    pub host: String,
    /// The path prefix (`[web] link_path`): empty or `/seg…`, no trailing slash.
    pub prefix: String,
}

impl LinkAddr {
    /// Parses `tcp://host:port`, `tcp://host:port/` or `host:port` (no name lookup).
    pub fn parse(value: &str) -> Result<LinkAddr, AddrError> {
        let v = value.trim();
        let rest = match v.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => rest,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                return parse_https(rest)
                    .map(LinkAddr::Https)
                    .ok_or_else(|| AddrError::MalformedHttps(value.to_owned()));
            }
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
            LinkAddr::Https(h) => &h.authority,
        }
    }

    /// This address if it is raw TCP; settings that bind a socket or that the web frontend
    /// dials take only that. `value` is the setting as written, for the message.
    pub fn tcp_only(self, value: &str) -> Result<LinkAddr, AddrError> {
        match self {
            LinkAddr::Tcp(_) => Ok(self),
            LinkAddr::Https(_) => Err(AddrError::NotHere {
                value: value.to_owned(),
                why: "https:// is for the db agent's dial-out ([db-agent] dial); here use tcp://HOST:PORT",
            }),
        }
    }
}

/// `host[:port][/prefix]` after `https://`.
fn parse_https(rest: &str) -> Option<HttpsAddr> {
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if hostport.is_empty() || hostport.contains(['@', ' ', '?', '#']) || path.contains(['?', '#']) {
        return None;
    }
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let (h, tail) = after.split_once(']')?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) if p.starts_with(['+', '0']) => return None,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
    };
    if host.is_empty() || (host.contains([':', '[', ']']) && !hostport.starts_with('[')) {
        return None;
    }
    let prefix = path.trim_end_matches('/');
    let segments_ok = prefix.is_empty()
        || prefix[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if !segments_ok {
        return None;
    }
    let authority = if hostport.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some(HttpsAddr {
        authority,
        host: host.to_owned(),
        prefix: prefix.to_owned(),
    })
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
    fn https_urls_name_host_port_and_prefix() {
        let https = |a: &str, h: &str, p: &str| {
            Ok(LinkAddr::Https(HttpsAddr {
                authority: a.into(),
                host: h.into(),
                prefix: p.into(),
            }))
        };
        assert_eq!(
            LinkAddr::parse("https://web.example.com/"),
            https("web.example.com:443", "web.example.com", "")
        );
        assert_eq!(
            LinkAddr::parse("HTTPS://web.example.com:8443/ffs-link/"),
            https("web.example.com:8443", "web.example.com", "/ffs-link")
        );
        assert_eq!(
            LinkAddr::parse("https://[::1]:8443/a/b"),
            https("[::1]:8443", "::1", "/a/b")
        );
        assert_eq!(
            LinkAddr::parse("https://10.0.0.1"),
            https("10.0.0.1:443", "10.0.0.1", "")
        );
        for bad in [
            "https://",
            "https:///x",
            "https://u:p@web/",
            "https://web:0/",
            "https://web:0443/",
            "https://web:x/",
            "https://web/a?b",
            "https://web/a#b",
            "https://web//a",
            "https://web/../a",
            "https://web/a%20b",
            "https://::1/",
        ] {
            assert!(
                matches!(LinkAddr::parse(bad), Err(AddrError::MalformedHttps(_))),
                "{bad:?} accepted"
            );
        }
        let err = LinkAddr::parse("https://web/")
            .and_then(|a| a.tcp_only("https://web/"))
            .unwrap_err();
        assert!(err.to_string().contains("[db-agent] dial"), "{err}");
        assert!(
            LinkAddr::parse("tcp://web:1")
                .and_then(|a| a.tcp_only("tcp://web:1"))
                .is_ok()
        );
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
