//! `[db-agent]`: this role's section of `ffs.toml` (`[agent]`, its earlier name, still reads).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How the agent meets the web frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The agent listens on `listen`; the web frontend dials in.
    Listen,
    /// The agent dials the web frontend's agent port `dial` (no inbound firewall rule toward
    /// the db agent's host) and keeps the link up.
    DialOut,
}

/// The `[db-agent]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// `listen` or `dial-out`.
    pub mode: Mode,
    /// Address to listen on in `listen` mode.
    pub listen: String,
    /// The web frontends' agent ports, dialed in `dial-out` mode: one address, or several
    /// (a TOML list, or separated by commas), each dialed and served at once
    /// ([`AgentConfig::dial_addrs`], [`AgentConfig::carriers`]).
    #[serde(deserialize_with = "one_or_many")]
    pub dial: String,
    /// `dial-out` through this HTTP forward proxy with `CONNECT`
    /// (`http://[user:pass@]host:port`); empty = dial directly.
    pub proxy: String,
    /// Hosts dialed directly despite `proxy` (`NO_PROXY` style: `host`, `.domain`, `*`).
    pub no_proxy: String,
    /// For `dial = "relay+http(s)://…"` (the HTTP relay): long-poll the receive channel
    /// from the start instead of streaming it (the carrier also switches by itself when a
    /// proxy holds streamed responses).
    pub relay_poll: bool,
    /// For `dial = "https://…"`: trust exactly the web certificate with this SHA-256
    /// (`sha256:` + 64 hex digits, colons allowed; what `ffs web` logs). Empty = not pinned.
    pub https_pin: String,
    /// For `dial = "https://…"`: trust the CAs in this PEM file instead of the system's.
    /// Empty = the system CA bundle (unless `https_pin` is set).
    pub https_ca_file: String,
    /// `sqlite://PATH` (or a bare path; relative to the config file) or
    /// `postgres://user:pass@host:port/db`.
    pub database: String,
    /// Database connections kept open (also the number of queries run at once).
    pub pool_size: usize,
    /// PostgreSQL only: `synchronous_commit` for the agent's sessions (`on` or `off`, …).
    pub pg_synchronous_commit: String,
    /// Failed logins (for one login) that lock it.
    pub lockout_threshold: u32,
    /// Failures older than this many seconds no longer count.
    pub lockout_window_secs: u64,
    /// How long a locked login stays locked, in seconds.
    pub lockout_secs: u64,
    /// argon2id memory cost for new password hashes, KiB.
    pub argon2_memory_kib: u32,
    /// argon2id time cost (passes) for new password hashes.
    pub argon2_iterations: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            mode: Mode::Listen,
            listen: "127.0.0.1:7701".to_owned(),
            dial: "127.0.0.1:7702".to_owned(),
            proxy: String::new(),
            no_proxy: String::new(),
            relay_poll: false,
            https_pin: String::new(),
            https_ca_file: String::new(),
            database: "sqlite://ffs.db".to_owned(),
            pool_size: 4,
            pg_synchronous_commit: "on".to_owned(),
            lockout_threshold: 5,
            lockout_window_secs: 900,
            lockout_secs: 900,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
        }
    }
}

/// How `dial-out` reaches the web frontend.
#[derive(Debug, Clone)]
pub enum DialCarrier {
    /// Raw TCP to `dial`.
    Tcp(commlink::transport::Tcp),
    /// Through the configured proxy (a virtual port picks the key).
    Proxy(commlink::Proxy),
    /// The HTTP relay (`relay+http://` or `relay+https://`), directly or through the proxy.
    Relay(commlink::Relay),
    /// The https carrier to the web's HTTPS listener (directly or through the proxy).
    Https(commlink::transport::Https),
}

impl DialCarrier {
    /// Where it leads, as shown in messages.
    pub fn target(&self) -> &str {
        use commlink::Carrier as _;
        match self {
            DialCarrier::Tcp(c) => c.target(),
            DialCarrier::Proxy(c) => c.target(),
            DialCarrier::Https(c) => c.target(),
            DialCarrier::Relay(c) => c.target(),
        }
    }
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

impl AgentConfig {
    /// The addresses of `dial`, in order.
    pub fn dial_addrs(&self) -> Vec<&str> {
        self.dial
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }

    /// One carrier per `dial` address (a dial-out agent serves several web frontends, one
    /// link each), each built by [`AgentConfig::carrier`].
    pub fn carriers(&self) -> Result<Vec<DialCarrier>, String> {
        let addrs = self.dial_addrs();
        if addrs.len() <= 1 {
            return self.carrier().map(|c| vec![c]);
        }
        addrs
            .into_iter()
            .map(|a| {
                AgentConfig {
                    dial: a.to_owned(),
                    ..self.clone()
                }
                .carrier()
            })
            .collect()
    }

    /// The carrier for `dial-out`: raw TCP to `dial`, or the https carrier for an
    /// `https://` URL; through `proxy` unless `no_proxy` names the host. Errors name the
    /// setting.
    pub fn carrier(&self) -> Result<DialCarrier, String> {
        if let Some(relay) = self.relay_carrier()? {
            return Ok(DialCarrier::Relay(relay));
        }
        let addr =
            commlink::LinkAddr::parse(&self.dial).map_err(|e| format!("[db-agent] dial = {e}"))?;
        let hostport = addr.host_port().to_owned();
        let host = match &addr {
            commlink::LinkAddr::Https(h) => h.host.clone(),
            commlink::LinkAddr::Tcp(_) => hostport
                .rsplit_once(':')
                .map_or(hostport.as_str(), |(h, _)| h)
                .to_owned(),
        };
        let direct = self.proxy.trim().is_empty()
            || commlink::transport::no_proxy_matches(&self.no_proxy, &host);
        if let commlink::LinkAddr::Https(_) = addr {
            return self.https_carrier((!direct).then_some(self.proxy.as_str()));
        }
        if !self.https_pin.trim().is_empty() || !self.https_ca_file.trim().is_empty() {
            return Err(format!(
                "[db-agent] https_pin / https_ca_file are set but dial = {:?} is not an https:// URL",
                self.dial
            ));
        }
        if direct {
            return Ok(DialCarrier::Tcp(commlink::transport::Tcp::new(hostport)));
        }
        commlink::Proxy::new(&self.proxy, hostport)
            .map(DialCarrier::Proxy)
            .map_err(|e| format!("[db-agent] proxy = {e}"))
    }

    /// The HTTP relay carrier when `dial` is a `relay+http(s)://` URL (through `proxy`
    /// unless `no_proxy` names the host; `relay+https://` trusts `https_pin`, else
    /// `https_ca_file`, else the system's CAs).
    fn relay_carrier(&self) -> Result<Option<commlink::Relay>, String> {
        let dial = self.dial.trim();
        let is_relay = dial
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().starts_with("relay+"));
        if !is_relay {
            return Ok(None);
        }
        let host = dial
            .split_once("://")
            .map_or("", |(_, rest)| rest.split(['/', ':']).next().unwrap_or(""));
        let direct = self.proxy.trim().is_empty()
            || commlink::transport::no_proxy_matches(&self.no_proxy, host);
        let ca = self.https_ca_file.trim();
        let trust = self.trust()?;
        let opts = commlink::RelayOptions {
            proxy: (!direct).then(|| self.proxy.trim().to_owned()),
            trust,
            poll: self.relay_poll,
            ..commlink::RelayOptions::default()
        };
        commlink::Relay::new(dial, opts)
            .map(Some)
            .map_err(|e| match e {
                commlink::RelaySetupError::Addr(e)
                    if !direct && e.to_string().contains("proxy") =>
                {
                    format!("[db-agent] proxy = {e}")
                }
                commlink::RelaySetupError::Tls(e) if !ca.is_empty() => {
                    format!("[db-agent] https_ca_file = {e}")
                }
                e => format!("[db-agent] dial = {e}"),
            })
    }

    /// How a `https://` or `relay+https://` dial checks the web's certificate: `https_pin`,
    /// else `https_ca_file`, else the system roots (setting both is refused).
    fn trust(&self) -> Result<commlink::Trust, String> {
        use commlink::{Trust, transport::parse_pin};
        let (pin, ca) = (self.https_pin.trim(), self.https_ca_file.trim());
        match (pin.is_empty(), ca.is_empty()) {
            (false, false) => {
                Err("[db-agent] https_pin and https_ca_file: set one of them, not both".into())
            }
            (false, true) => Ok(Trust::Pin(
                parse_pin(pin).map_err(|e| format!("[db-agent] https_pin = {e}"))?,
            )),
            (true, false) => Ok(Trust::CaFile(ca.into())),
            (true, true) => Ok(Trust::System),
        }
    }

    /// The https carrier to `dial`, trusting `https_pin`, else `https_ca_file`, else the
    /// system roots.
    fn https_carrier(&self, proxy: Option<&str>) -> Result<DialCarrier, String> {
        use commlink::transport::{Https, HttpsError, TrustError};
        let ca = self.https_ca_file.trim();
        let trust = self.trust()?;
        Https::new(&self.dial, &trust, proxy)
            .map(DialCarrier::Https)
            .map_err(|e| match e {
                HttpsError::Addr(e) if proxy.is_some() && e.to_string().contains("proxy") => {
                    format!("[db-agent] proxy = {e}")
                }
                HttpsError::Addr(e) => format!("[db-agent] dial = {e}"),
                HttpsError::Trust(TrustError::Roots { .. }) if !ca.is_empty() => {
                    format!("[db-agent] https_ca_file = {e}")
                }
                e => format!("[db-agent] dial = {:?}: {e}", self.dial),
            })
    }

    /// Makes relative paths (the SQLite file, `https_ca_file`) absolute against the config
    /// file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        let ca = self.https_ca_file.trim();
        if !ca.is_empty() && Path::new(ca).is_relative() {
            self.https_ca_file = base.join(ca).display().to_string();
        }
        if let Ok(crate::db::DbUrl::Sqlite(p)) = crate::db::DbUrl::parse(&self.database)
            && p.is_relative()
            && p.as_os_str() != ":memory:"
        {
            self.database = format!("sqlite://{}", base.join(p).display());
        }
    }

    /// The lockout policy.
    pub fn lockout(&self) -> crate::lockout::Policy {
        crate::lockout::Policy {
            threshold: self.lockout_threshold.max(1),
            window: chrono::Duration::seconds(clamp_secs(self.lockout_window_secs)),
            lock: chrono::Duration::seconds(clamp_secs(self.lockout_secs)),
        }
    }

    /// The password-hashing parameters.
    pub fn hasher(&self) -> Result<crate::passwords::Hasher, crate::passwords::PasswordError> {
        crate::passwords::Hasher::new(self.argon2_memory_kib, self.argon2_iterations)
    }
}

fn clamp_secs(s: u64) -> i64 {
    // Ten years is "forever" for a lockout; keeps chrono arithmetic far from overflow.
    s.min(315_360_000) as i64
}

/// The `[db-agent]` section of the template, commented, every setting at its default.
pub const TOML_TEMPLATE: &str = r#"[db-agent]
# "listen": the web frontend dials in to `listen`.
# "dial-out": the db agent dials the web frontend's agent port `dial` and keeps the link up,
# so the firewall needs no inbound rule toward the db agent's host.
# Link addresses are URLs: "tcp://HOST:PORT" is raw TCP (a bare "HOST:PORT" means the same);
# any other scheme is refused at startup.
# Several web frontends: dial = ["10.0.1.1:7702", "10.0.1.2:7702"] (one link each, all
# served at once; each web uses every agent that dials in).
mode = "listen"
listen = "127.0.0.1:7701"
dial = "127.0.0.1:7702"
# dial-out through an HTTP forward proxy with CONNECT, e.g. "http://user:pass@proxy.corp:3128"
# (Basic auth; the web end then needs [link] accept_proxied = true). Empty: dial directly.
proxy = ""
# Hosts dialed directly despite `proxy`, NO_PROXY style: "localhost,.internal.corp".
no_proxy = ""
# dial may also be the web frontend's HTTP relay, for a proxy that allows no CONNECT or
# inspects TLS: "relay+https://web.example.com/ffs-link" (or relay+http://, the web's
# plain-HTTP listener): lines travel in HTTP requests (through `proxy` if set), sealed
# end to end; relay+https:// checks the web's certificate as https:// does (https_pin,
# https_ca_file below). relay_poll = true long-polls from the start (for proxies that hold
# a response until it ends; the agent also switches by itself when it sees one).
relay_poll = false
# dial may also be the web frontend's own HTTPS address with its [web] link_path, e.g.
# "https://web.example.com/ffs-link": the link then runs inside TLS to port 443 (through
# `proxy` if set), for a host that may only go out to the web. The web's certificate is
# checked against the system CAs, or the CAs in https_ca_file (a PEM file), or pinned
# by its SHA-256 with https_pin = "sha256:AB:CD:…" (as `ffs web` logs it; for a
# self-signed web). The web end needs [web] link_path and db_agent_mode = "accept".
https_pin = ""
https_ca_file = ""
# "sqlite://ffs.db" (a file next to this config; its directory must exist and be writable)
# or "postgres://user:password@host:5432/ffs".
database = "sqlite://ffs.db"
# Database connections kept open (also how many queries run at once).
pool_size = 4
# PostgreSQL only: "on" waits for each commit to reach disk (a recorded download survives
# a crash); "off" is several times faster per request on slow disks and may lose the last
# fraction of a second of history if the database server crashes (never corrupts it).
pg_synchronous_commit = "on"
# Lock a login for `lockout_secs` after `lockout_threshold` failures within
# `lockout_window_secs` (known and unknown logins alike).
lockout_threshold = 5
lockout_window_secs = 900
lockout_secs = 900
# argon2id cost for new password hashes (memory in KiB, passes).
argon2_memory_kib = 19456
argon2_iterations = 2
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_default() {
        #[derive(Deserialize)]
        struct File {
            #[serde(rename = "db-agent")]
            agent: AgentConfig,
        }
        let f: File = toml::from_str(TOML_TEMPLATE).unwrap();
        let d = AgentConfig::default();
        assert_eq!(
            serde_json::to_value(&f.agent).unwrap(),
            serde_json::to_value(&d).unwrap()
        );
    }

    #[test]
    fn relative_sqlite_paths_resolve_against_the_config_dir() {
        let mut c = AgentConfig::default();
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.database, "sqlite:///etc/ffs/ffs.db");
        let mut c = AgentConfig {
            database: "data/x.db".into(),
            ..AgentConfig::default()
        };
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.database, "sqlite:///etc/ffs/data/x.db");
        let mut c = AgentConfig {
            database: "postgres://u@h/db".into(),
            ..AgentConfig::default()
        };
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.database, "postgres://u@h/db");
        let mut c = AgentConfig {
            database: "sqlite:///var/lib/ffs.db".into(),
            ..AgentConfig::default()
        };
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.database, "sqlite:///var/lib/ffs.db");
    }

    #[test]
    fn a_relay_url_chooses_the_relay_carrier() {
        let mut c = AgentConfig {
            dial: "relay+http://web.example.com:8080/ffs-link".into(),
            ..AgentConfig::default()
        };
        match c.carrier() {
            Ok(DialCarrier::Relay(r)) => assert_eq!(
                commlink::Carrier::target(&r),
                "relay http://web.example.com:8080/ffs-link"
            ),
            other => panic!("expected the relay carrier, got {other:?}"),
        }
        c.proxy = "http://proxy.corp:3128".into();
        match c.carrier() {
            Ok(DialCarrier::Relay(r)) => assert_eq!(
                commlink::Carrier::target(&r),
                "relay http://web.example.com:8080/ffs-link via proxy proxy.corp:3128"
            ),
            other => panic!("expected the relay carrier, got {other:?}"),
        }
        c.no_proxy = ".example.com".into();
        match c.carrier() {
            Ok(DialCarrier::Relay(r)) => {
                assert!(!commlink::Carrier::target(&r).contains("via proxy"));
            }
            other => panic!("expected the relay carrier, got {other:?}"),
        }
        c.dial = "relay+https://web.example.com/ffs-link".into();
        c.https_pin = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(c.carrier(), Ok(DialCarrier::Relay(_))));
        c.https_pin = "sha256:00".into();
        assert!(
            c.carrier()
                .unwrap_err()
                .starts_with("[db-agent] https_pin = ")
        );
        c.https_pin.clear();
        c.https_ca_file = "/nonexistent/ca.pem".into();
        assert!(
            c.carrier()
                .unwrap_err()
                .starts_with("[db-agent] https_ca_file = ")
        );
        c.https_ca_file.clear();
        c.dial = "relay+http://web:0/".into();
        assert!(c.carrier().unwrap_err().starts_with("[db-agent] dial = "));
        c.dial = "relay+ftp://web/".into();
        assert!(c.carrier().unwrap_err().starts_with("[db-agent] dial = "));
    }

    #[test]
    fn the_dial_out_carrier_follows_proxy_and_no_proxy() {
        let mut c = AgentConfig {
            dial: "tcp://web.example.com:443".into(),
            ..AgentConfig::default()
        };
        assert!(matches!(c.carrier(), Ok(DialCarrier::Tcp(_))));
        c.proxy = "http://u:p@proxy.corp:3128".into();
        match c.carrier() {
            Ok(DialCarrier::Proxy(p)) => assert_eq!(
                commlink::Carrier::target(&p),
                "web.example.com:443 via proxy proxy.corp:3128"
            ),
            other => panic!("expected the proxy carrier, got {other:?}"),
        }
        c.no_proxy = "localhost,.example.com".into();
        assert!(matches!(c.carrier(), Ok(DialCarrier::Tcp(_))));
        c.no_proxy.clear();
        c.proxy = "socks5://proxy.corp:1080".into();
        let err = c.carrier().unwrap_err();
        assert!(err.starts_with("[db-agent] proxy = "), "{err}");
        c.dial = "udp://web:1".into();
        assert!(c.carrier().unwrap_err().starts_with("[db-agent] dial = "));
    }

    #[test]
    fn dial_takes_a_list_one_carrier_each() {
        #[derive(Deserialize)]
        struct Wrap {
            #[serde(rename = "db-agent")]
            agent: AgentConfig,
        }
        let w: Wrap = toml::from_str(
            "[db-agent]\nmode = \"dial-out\"\ndial = [\"10.0.0.1:7702\", \"tcp://10.0.0.2:7702\"]\n",
        )
        .unwrap();
        assert_eq!(
            w.agent.dial_addrs(),
            ["10.0.0.1:7702", "tcp://10.0.0.2:7702"]
        );
        let targets: Vec<String> = w
            .agent
            .carriers()
            .unwrap()
            .iter()
            .map(|c| c.target().to_owned())
            .collect();
        assert_eq!(targets, ["10.0.0.1:7702", "10.0.0.2:7702"]);
        let one: Wrap = toml::from_str("[db-agent]\ndial = \"10.0.0.1:7702\"\n").unwrap();
        assert_eq!(one.agent.carriers().unwrap().len(), 1);
        let bad: Wrap =
            toml::from_str("[db-agent]\ndial = [\"10.0.0.1:7702\", \"udp://x:1\"]\n").unwrap();
        assert!(
            bad.agent
                .carriers()
                .unwrap_err()
                .starts_with("[db-agent] dial = ")
        );
    }

    #[test]
    fn https_dial_chooses_the_https_carrier_and_its_trust() {
        let mut c = AgentConfig {
            dial: "https://web.example.com/ffs-link".into(),
            https_pin: format!("sha256:{}", "ab".repeat(32)),
            ..AgentConfig::default()
        };
        match c.carrier() {
            Ok(DialCarrier::Https(h)) => assert_eq!(
                commlink::Carrier::target(&h),
                "https://web.example.com:443/ffs-link"
            ),
            other => panic!("expected the https carrier, got {other:?}"),
        }
        c.proxy = "http://proxy.corp:3128".into();
        let via = c.carrier().expect("through the proxy");
        assert_eq!(
            via.target(),
            "https://web.example.com:443/ffs-link via proxy proxy.corp:3128"
        );
        c.https_pin = "sha256:00".into();
        let err = c.carrier().unwrap_err();
        assert!(err.starts_with("[db-agent] https_pin = "), "{err}");
        c.https_pin.clear();
        c.https_ca_file = "/nonexistent/ca.pem".into();
        let err = c.carrier().unwrap_err();
        assert!(err.starts_with("[db-agent] https_ca_file = "), "{err}");
        c.https_pin = "ab".repeat(32);
        assert!(c.carrier().unwrap_err().contains("not both"));
        c.dial = "tcp://web:7702".into();
        c.https_ca_file.clear();
        assert!(c.carrier().unwrap_err().contains("not an https:// URL"));
    }
}
