//! The HTTP `CONNECT` proxy carrier: for an inside host whose only way out is a web proxy.
//! It dials the proxy, asks it for a tunnel with `CONNECT host:port HTTP/1.1` (Basic auth
//! when the proxy URL carries `user:pass@`), reads the status line and headers (bounded),
//! and then the commlink runs inside the tunnel unchanged: the proxy relays sealed packets
//! it cannot read. The proxy hides our source port, so the key index comes from a virtual
//! port announced in HELLO (`v<P>`, PROTOCOL.md §4).

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{AddrError, Carrier, LinkAddr, LinkConfig};

/// Longest proxy reply head (status line plus headers) read before the tunnel.
const MAX_REPLY_HEAD: usize = 8 * 1024;

/// A link to `target` through the HTTP forward proxy of a `http://[user:pass@]host:port`
/// URL.
#[derive(Clone)]
pub struct Proxy {
    proxy: String,
    auth: Option<String>,
    dest: String,
    label: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Proxy")
            .field("proxy", &self.proxy)
            .field("target", &self.dest)
            .finish()
    }
}

impl Proxy {
    /// A carrier to `target` (`host:port`) through the proxy at `proxy_url`
    /// (`http://host:port` or `http://user:pass@host:port`, user and password
    /// percent-encoded as in any URL).
    pub fn new(proxy_url: &str, target: impl Into<String>) -> Result<Proxy, AddrError> {
        let bad = || AddrError::Malformed(redact(proxy_url));
        let v = proxy_url.trim();
        let rest = match v.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(AddrError::UnknownScheme {
                    value: redact(proxy_url),
                    scheme: scheme.to_owned(),
                });
            }
            None => return Err(bad()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(bad)?;
                let pass = percent_decode(pass).ok_or_else(bad)?;
                let token = base64::engine::general_purpose::STANDARD
                    .encode([user.as_slice(), b":", pass.as_slice()].concat());
                (Some(token), hostport)
            }
            None => (None, rest),
        };
        let proxy = LinkAddr::parse(hostport).map_err(|_| bad())?;
        let target = target.into();
        let label = format!("{target} via proxy {}", proxy.host_port());
        Ok(Proxy {
            proxy: proxy.host_port().to_owned(),
            auth,
            dest: target,
            label,
        })
    }
}

impl Proxy {
    /// The proxy's `host:port`.
    pub(super) fn address(&self) -> &str {
        &self.proxy
    }

    /// The Basic credentials token, when the proxy URL has them.
    pub(super) fn basic_auth(&self) -> Option<&str> {
        self.auth.as_deref()
    }
}

/// The URL with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether `host` is exempt from the proxy under a `NO_PROXY`-style list: entries separated
/// by commas or spaces; `*` matches every host; `example.com` and `.example.com` match that
/// host and every name under it; an IP address matches itself. A `:port` on an entry is
/// ignored, as curl does.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[');
            let entry = match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') && p.bytes().all(|c| c.is_ascii_digit()) => h,
                _ => entry,
            };
            let entry = entry.trim_end_matches(']').trim_start_matches('.');
            let entry = entry.to_ascii_lowercase();
            host == entry || host.ends_with(&format!(".{entry}"))
        })
}

impl Carrier for Proxy {
    type Stream = TcpStream;

    fn target(&self) -> &str {
        &self.label
    }

    fn virtual_port(&self) -> bool {
        true
    }

    async fn open(&self, cfg: &LinkConfig) -> std::io::Result<(TcpStream, u16)> {
        let mut stream = super::tcp::connect(&self.proxy, None)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("proxy {}: {e}", self.proxy)))?;
        let _ = stream.set_nodelay(true);
        let mut request = format!(
            "CONNECT {t} HTTP/1.1\r\nHost: {t}\r\nUser-Agent: ffs-commlink\r\n",
            t = self.dest
        );
        if let Some(token) = &self.auth {
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head = read_head(&mut stream)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("proxy {}: {e}", self.proxy)))?;
        let status_line = head.lines().next().unwrap_or("").trim_end();
        let code = status_line.split(' ').nth(1).unwrap_or("");
        if !status_line.starts_with("HTTP/1.") || !code.starts_with('2') || code.len() != 3 {
            let shown: String = status_line
                .chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .take(200)
                .collect();
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "proxy {} refused CONNECT {}: {shown}",
                    self.proxy, self.dest
                ),
            ));
        }
        Ok((stream, virtual_port(cfg.source_ports)))
    }
}

/// A fresh virtual port: uniformly random in the configured source-port range, or in
/// 1..=65535.
pub(super) fn virtual_port(range: Option<(u16, u16)>) -> u16 {
    use rand::RngExt as _;
    let (lo, hi) = range.unwrap_or((1, u16::MAX));
    rand::rng().random_range(lo.max(1)..=hi.max(1))
}

/// Reads the proxy's reply head up to and including the blank line, one byte at a time so
/// that nothing of the tunnel is consumed (the acceptor speaks only after our HELLO anyway).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_REPLY_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("reply head longer than {MAX_REPLY_HEAD} bytes"),
            ));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed the connection before answering CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_with_and_without_credentials() {
        let p = Proxy::new("http://proxy.corp:3128", "web:443").expect("parses");
        assert_eq!(p.proxy, "proxy.corp:3128");
        assert_eq!(p.auth, None);
        assert_eq!(p.target(), "web:443 via proxy proxy.corp:3128");
        let p = Proxy::new("http://al%40ice:p%3Ass@proxy.corp:3128/", "web:443").expect("parses");
        assert_eq!(
            p.auth.as_deref(),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode("al@ice:p:ss")
                    .as_str()
            )
        );
        assert!(!format!("{p:?}").contains("p%3Ass"));
        let err = Proxy::new("socks5://u:secret@proxy:1080", "web:443").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("socks5"), "{err}");
        assert!(Proxy::new("http://proxy", "web:443").is_err());
        assert!(Proxy::new("proxy:3128", "web:443").is_err());
    }

    #[test]
    fn no_proxy_lists() {
        let list = "localhost, .internal.corp,10.1.2.3 example.com:443";
        assert!(no_proxy_matches(list, "localhost"));
        assert!(no_proxy_matches(list, "web.internal.corp"));
        assert!(no_proxy_matches(list, "internal.corp"));
        assert!(no_proxy_matches(list, "10.1.2.3"));
        assert!(no_proxy_matches(list, "EXAMPLE.com"));
        assert!(no_proxy_matches(list, "a.example.com"));
        assert!(!no_proxy_matches(list, "notexample.com"));
        assert!(!no_proxy_matches(list, "web.example.org"));
        assert!(!no_proxy_matches("", "localhost"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(no_proxy_matches("::1", "[::1]"));
    }

    #[test]
    fn virtual_ports_stay_inside_the_range() {
        for _ in 0..100 {
            assert!((41000..=41009).contains(&virtual_port(Some((41000, 41009)))));
            assert!(virtual_port(None) >= 1);
        }
    }
}
