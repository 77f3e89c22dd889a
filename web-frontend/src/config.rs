//! `[web]`: this role's section of `ffs.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the frontend reaches the db agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// The frontend dials the db agent's commlink listener (the patent's direction).
    #[default]
    Connect,
    /// The frontend listens on `db_agent_listen` and the db agent dials out to it, so the
    /// firewall needs no inbound rule toward the db agent's host.
    Accept,
}

/// One of `[web] stagers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagerEntry {
    /// Its name (admin pages; the key of its delivery log at the agent).
    pub name: String,
    /// Its commlink address.
    pub addr: String,
    /// The name its deliveries are recorded under at the agent: the name, or `""` for the
    /// one stager of `stager_addr` (so records from before several stagers carry on).
    #[serde(skip)]
    pub delivery_key: String,
}

/// The web frontend's settings. Every field has a loopback default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// HTTPS listen address.
    pub listen: String,
    /// Optional plain-HTTP listen address that only redirects to HTTPS; empty = off.
    pub http_redirect_listen: String,
    /// Host name used in redirects to HTTPS; empty = taken from the request's Host header.
    pub public_host: String,
    /// TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// TLS private key (PEM, mode 0600).
    pub tls_key: PathBuf,
    /// Generate a self-signed certificate at these paths on first start when they are missing.
    pub tls_generate: bool,
    /// Names put into a generated certificate.
    pub tls_names: Vec<String>,
    /// Session cookie key file (64 random bytes, mode 0600; generated on first start).
    pub session_key: PathBuf,
    /// `db_agent_mode`: `connect` (dial `db_agent_addr`) or `accept` (listen on
    /// `db_agent_listen`; the db agent dials out). `agent_mode`, the earlier name, still reads.
    #[serde(rename = "db_agent_mode", alias = "agent_mode")]
    pub agent_mode: AgentMode,
    /// `db_agent_addr`: the db agents' commlink addresses, for `db_agent_mode = "connect"`
    /// (`agent_addr` still reads): one address, or several (a TOML list, or separated by
    /// commas); requests go to a live one ([`WebConfig::agent_addrs`]).
    #[serde(
        rename = "db_agent_addr",
        alias = "agent_addr",
        deserialize_with = "one_or_many"
    )]
    pub agent_addr: String,
    /// `db_agent_listen`: where to listen for the db agent, for `db_agent_mode = "accept"`
    /// (`agent_listen` still reads).
    #[serde(rename = "db_agent_listen", alias = "agent_listen")]
    pub agent_listen: String,
    /// The stager's commlink address (one stager; see `stagers` for several).
    pub stager_addr: String,
    /// Several stagers, each `{ name, addr }`; when set, `stager_addr` is not used. The name
    /// shows on the admin pages and keys the stager's delivery log at the agent, so every
    /// web frontend must give one stager the same name, and a name must not be reused for
    /// another stager ([`WebConfig::stager_list`]).
    pub stagers: Vec<StagerEntry>,
    /// A session unused this long is over.
    pub session_idle_secs: u64,
    /// A session is over this long after login, however busy.
    pub session_absolute_secs: u64,
    /// Failed logins allowed per client address within `login_window_secs`.
    pub login_attempts: u32,
    /// The per-address login throttling window.
    pub login_window_secs: u64,
    /// Longest wait for a reply from the agent or stager before the page says "unavailable".
    pub backend_timeout_ms: u64,
    /// Seconds between polls of the stager's delivery log.
    pub delivery_poll_secs: u64,
    /// Seconds between polls of the agent's revocation feed (a disabled customer's sessions
    /// end and their staged areas are revoked within about this long).
    pub revocation_poll_secs: u64,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// HTTP worker threads; 0 = one per CPU.
    pub workers: usize,
    /// Release-signing public keys (minisign `.pub` files), the current key first; older
    /// keys stay listed so releases they signed can still be verified. Empty = releases are
    /// shown as unsigned.
    pub signing_public_keys: Vec<PathBuf>,
    /// Path prefix under which the HTTPS listener serves the commlink carriers (the https
    /// carrier at `<prefix>/v1/link`, the HTTP relay under `<prefix>/v1/relay/`), e.g.
    /// `/ffs-link`. Empty = off: those paths answer 404 like any unknown page.
    pub link_path: String,
    /// The most https-carrier links one client address may hold open at once.
    pub link_max_per_address: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8443".into(),
            http_redirect_listen: String::new(),
            public_host: String::new(),
            tls_cert: PathBuf::from("web-cert.pem"),
            tls_key: PathBuf::from("web-key.pem"),
            tls_generate: true,
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            session_key: PathBuf::from("web-session.key"),
            agent_mode: AgentMode::Connect,
            agent_addr: "127.0.0.1:7701".into(),
            agent_listen: "127.0.0.1:7702".into(),
            stager_addr: "127.0.0.1:7711".into(),
            stagers: Vec::new(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            login_attempts: 10,
            login_window_secs: 300,
            backend_timeout_ms: 1500,
            delivery_poll_secs: 2,
            revocation_poll_secs: 2,
            trust_forwarded_for: false,
            workers: 0,
            signing_public_keys: Vec::new(),
            link_path: String::new(),
            link_max_per_address: 4,
        }
    }
}

impl WebConfig {
    /// Makes relative paths absolute against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.tls_cert, &mut self.tls_key, &mut self.session_key]
            .into_iter()
            .chain(self.signing_public_keys.iter_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The db agent addresses of `db_agent_addr`, in order.
    pub fn agent_addrs(&self) -> Vec<&str> {
        split_list(&self.agent_addr)
    }

    /// The stagers to use: `stagers`, or else the one at `stager_addr` (named after its
    /// address, its deliveries keyed `""`).
    pub fn stager_list(&self) -> Vec<StagerEntry> {
        if self.stagers.is_empty() {
            return vec![StagerEntry {
                name: self.stager_addr.clone(),
                addr: self.stager_addr.clone(),
                delivery_key: String::new(),
            }];
        }
        self.stagers
            .iter()
            .map(|s| StagerEntry {
                delivery_key: s.name.clone(),
                ..s.clone()
            })
            .collect()
    }

    /// The carriers' path prefix from `link_path`: `None` when off, else `/seg[/seg…]`
    /// without a trailing slash. Refused: no leading `/`, empty or dot segments, and
    /// characters outside `A-Za-z0-9-._~` (so the prefix never needs escaping).
    pub fn link_prefix(&self) -> Result<Option<String>, String> {
        let v = self.link_path.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "{v:?}: expected an absolute path such as \"/ffs-link\" (segments of \
                 A-Z a-z 0-9 - . _ ~, no \".\" or \"..\")"
            )
        };
        let body = v.strip_prefix('/').ok_or_else(bad)?;
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Err(format!(
                "{v:?}: the prefix cannot be \"/\" (it would shadow the pages)"
            ));
        }
        for seg in body.split('/') {
            let ok = !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !ok {
                return Err(bad());
            }
        }
        Ok(Some(format!("/{body}")))
    }

    /// The backend reply deadline.
    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms.clamp(50, 60_000))
    }
}

/// The addresses of a list setting stored as one comma-separated string.
pub fn split_list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// A string, or a list of strings (joined with commas; an address holds none).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.join(","),
    })
}

/// This role's section of ffs.toml, commented, every setting at its default.
pub const TOML_TEMPLATE: &str = r#"[web]
# HTTPS listen address of the customer and admin pages.
listen = "127.0.0.1:8443"
# Optional plain-HTTP address that only redirects to HTTPS, e.g. "127.0.0.1:8080"; empty = off.
http_redirect_listen = ""
# Host name used in redirects to HTTPS; empty = the request's Host header.
public_host = ""
# TLS certificate chain and key (PEM; the key must be mode 0600).
tls_cert = "web-cert.pem"
tls_key = "web-key.pem"
# When the files above are missing, generate a self-signed certificate for these names
# and print its SHA-256 fingerprint.
tls_generate = true
tls_names = ["localhost", "127.0.0.1"]
# Session cookie key (64 random bytes, mode 0600), generated on first start.
session_key = "web-session.key"
# "connect": dial the db agent at db_agent_addr. "accept": listen on db_agent_listen and
# let the db agent dial out (no inbound firewall rule toward its host).
# Link addresses are URLs: "tcp://HOST:PORT" is raw TCP (a bare "HOST:PORT" means the same);
# any other scheme is refused at startup.
# Several db agents (active-active on one PostgreSQL): a list, e.g.
# db_agent_addr = ["10.0.2.1:7701", "10.0.2.2:7701"]; each request goes to a live one and
# moves to the next when a link is down (never resent once it may have been carried out).
# In "accept" mode every agent that dials in is used.
db_agent_mode = "connect"
db_agent_addr = "127.0.0.1:7701"
db_agent_listen = "127.0.0.1:7702"
# The stager's commlink address.
stager_addr = "127.0.0.1:7711"
# Several stagers instead (stager_addr is then unused): each prepare goes to a stager that is
# up and holds the release, fewest live areas first. The name shows on the admin pages and
# keys the stager's delivery log at the db agent: give one stager the same name on every web
# frontend, e.g.
# stagers = [{ name = "a", addr = "10.0.1.11:7711" }, { name = "b", addr = "10.0.1.12:7711" }]
stagers = []
# Session idle and absolute timeouts, in seconds.
session_idle_secs = 1800
session_absolute_secs = 43200
# Per-address login throttling: this many failed logins per window.
login_attempts = 10
login_window_secs = 300
# Longest wait for the agent or stager before a page says "temporarily unavailable".
backend_timeout_ms = 1500
# Seconds between polls of the stager's delivery log.
delivery_poll_secs = 2
# Seconds between polls of the agent's revocation feed: a disabled customer's sessions end,
# and revoked download areas stop serving, within about this long.
revocation_poll_secs = 2
# Take the client address from X-Forwarded-For (only behind a trusted proxy).
trust_forwarded_for = false
# HTTP worker threads; 0 = one per CPU.
workers = 0
# Release-signing public keys (minisign .pub files from `ffs keys signing generate`), the
# current key first, older keys after it. Shown and served at /keys/KEYID.pub so customers
# can verify SHA256SUMS with minisign. Empty = releases are shown as unsigned.
signing_public_keys = []
# Serve the commlink carriers on this HTTPS listener under this path prefix, e.g.
# "/ffs-link": a db agent behind a proxy that lets out only HTTPS then dials
# "https://THIS-HOST/ffs-link" (the https carrier at PREFIX/v1/link), or, behind a proxy
# that allows no CONNECT or inspects TLS, "relay+https://THIS-HOST/ffs-link" (the HTTP
# relay under PREFIX/v1/relay/, also served on the plain-HTTP listener). Needs
# db_agent_mode = "accept". Empty = off (those paths answer 404).
link_path = ""
# The most https-carrier links one client address (e.g. the proxy) may hold open at once.
link_max_per_address = 4
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        #[derive(Deserialize)]
        struct Wrap {
            web: WebConfig,
        }
        let w: Wrap = toml_parse(TOML_TEMPLATE);
        let d = WebConfig::default();
        assert_eq!(
            serde_json::to_value(&w.web).unwrap(),
            serde_json::to_value(&d).unwrap()
        );
    }

    fn toml_parse<T: serde::de::DeserializeOwned>(s: &str) -> T {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn agent_addr_takes_a_string_or_a_list() {
        #[derive(Deserialize)]
        struct Wrap {
            web: WebConfig,
        }
        let one: Wrap = toml_parse("[web]\ndb_agent_addr = \"10.0.0.1:1\"\n");
        assert_eq!(one.web.agent_addrs(), ["10.0.0.1:1"]);
        let many: Wrap =
            toml_parse("[web]\ndb_agent_addr = [\"10.0.0.1:1\", \"tcp://10.0.0.2:2\"]\n");
        assert_eq!(many.web.agent_addrs(), ["10.0.0.1:1", "tcp://10.0.0.2:2"]);
    }

    #[test]
    fn stagers_or_the_one_stager_addr() {
        #[derive(Deserialize)]
        struct Wrap {
            web: WebConfig,
        }
        let one: Wrap = toml_parse("[web]\nstager_addr = \"10.0.0.9:7711\"\n");
        let l = one.web.stager_list();
        assert_eq!(
            (l[0].name.as_str(), l[0].delivery_key.as_str()),
            ("10.0.0.9:7711", "")
        );
        let two: Wrap = toml_parse(
            "[web]\nstagers = [{ name = \"a\", addr = \"10.0.0.1:1\" }, { name = \"b\", addr = \"10.0.0.2:1\" }]\n",
        );
        let l = two.web.stager_list();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (
                l[1].name.as_str(),
                l[1].addr.as_str(),
                l[1].delivery_key.as_str()
            ),
            ("b", "10.0.0.2:1", "b")
        );
    }

    #[test]
    fn link_prefixes() {
        let prefix = |v: &str| {
            WebConfig {
                link_path: v.into(),
                ..WebConfig::default()
            }
            .link_prefix()
        };
        assert_eq!(prefix(""), Ok(None));
        assert_eq!(prefix("/ffs-link"), Ok(Some("/ffs-link".into())));
        assert_eq!(prefix(" /a/b_c~1/ "), Ok(Some("/a/b_c~1".into())));
        for bad in [
            "/", "ffs", "/a//b", "/a/../b", "/./a", "/a b", "/a%2f", "/a?x",
        ] {
            assert!(prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolve_paths_makes_absolute() {
        let mut c = WebConfig::default();
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.tls_key, PathBuf::from("/etc/ffs/web-key.pem"));
        assert_eq!(c.session_key, PathBuf::from("/etc/ffs/web-session.key"));
    }
}
