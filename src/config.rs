//! The one config file, `ffs.toml`: a section per role plus the shared `[link]` section.
//!
//! Every setting has a default, so an empty file is a working loopback configuration.
//! Relative paths are resolved against the directory that holds the config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FfsConfig {
    /// Settings shared by every commlink (key bag, suite, limits).
    pub link: LinkSection,
    /// The db agent: `[db-agent]` (`[agent]`, its earlier name, still reads).
    #[serde(rename = "db-agent", alias = "agent")]
    pub agent: internal_db_agent::AgentConfig,
    /// The ftp-stager.
    pub stager: ftp_stager::StagerConfig,
    /// The web frontend.
    pub web: web_frontend::WebConfig,
    /// Directory holding the config file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[link]`: the commlink settings both ends of every link share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSection {
    /// The key bag file (mode 0600; the same file on every host).
    pub keys: PathBuf,
    /// `aes256-gcm` (default), `3des-cbc-hmac-sha256` (for older peers) or `des-cbc`
    /// (legacy, the patent's single DES).
    pub suite: String,
    /// Longest packet line accepted, in bytes.
    pub max_line: usize,
    /// Seconds a request may wait for its reply.
    pub request_timeout_secs: f64,
    /// Seconds allowed for TCP connect plus handshake.
    pub connect_timeout_secs: f64,
    /// Seconds between heartbeats; a link silent for three of them is dropped.
    pub heartbeat_secs: f64,
    /// When dialing, bind the source port in this range, e.g. "40000-40999"; empty = any.
    pub source_ports: String,
    /// As the accepting end: take initiators that connect through a proxy and announce a
    /// virtual port (PROTOCOL.md §4). Off: such initiators are refused with `virtual-port`.
    pub accept_proxied: bool,
}

impl Default for LinkSection {
    fn default() -> Self {
        LinkSection {
            keys: PathBuf::from("keys.bag"),
            suite: commlink::Suite::default().name().to_owned(),
            max_line: 1 << 20,
            request_timeout_secs: 10.0,
            connect_timeout_secs: 2.0,
            heartbeat_secs: 5.0,
            source_ports: String::new(),
            accept_proxied: false,
        }
    }
}

/// The `[link]` section of the template, commented.
pub const LINK_TEMPLATE: &str = r#"[link]
# Key bag shared by every host (mode 0600). Create with `ffs keys generate --out keys.bag`.
keys = "keys.bag"
# "aes256-gcm" (default), "3des-cbc-hmac-sha256" (for peers older than aes256-gcm) or
# "des-cbc" (legacy single DES, the patent's cipher). Every host of a link must agree.
suite = "aes256-gcm"
# Longest packet line accepted, in bytes (checked while reading).
max_line = 1048576
request_timeout_secs = 10.0
connect_timeout_secs = 2.0
# A link silent for three heartbeats is dropped and redialed.
heartbeat_secs = 5.0
# Bind dialing source ports in this range so a firewall rule can name it, e.g. "40000-40999".
source_ports = ""
# As the accepting end of a link, take initiators that reach it through a proxy (they
# announce a virtual port instead of their source port; PROTOCOL.md §4). Raw TCP initiators
# keep their port-mismatch check either way.
accept_proxied = false
"#;

impl FfsConfig {
    /// Loads a config file; a missing file is an error that says how to make one.
    pub fn load(path: &Path) -> anyhow::Result<FfsConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config {}; create one with `ffs config init --out {}`",
                path.display(),
                path.display()
            )
        })?;
        let mut cfg: FfsConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", path.display()))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        cfg.resolve_paths(&base);
        Ok(cfg)
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.base_dir = base.to_path_buf();
        if self.link.keys.is_relative() {
            self.link.keys = base.join(&self.link.keys);
        }
        self.agent.resolve_paths(base);
        self.stager.resolve_paths(base);
        self.web.resolve_paths(base);
    }

    /// The commlink settings, with the key bag loaded (and its permissions checked).
    pub fn link_config(&self) -> anyhow::Result<commlink::LinkConfig> {
        let l = &self.link;
        let bag = commlink::KeyBag::load(&l.keys)?;
        let mut c = commlink::LinkConfig::new(Arc::new(bag));
        c.suite = commlink::Suite::from_name(&l.suite).with_context(|| {
            format!(
                "[link] suite = {:?}: use \"aes256-gcm\", \"3des-cbc-hmac-sha256\" or \"des-cbc\"",
                l.suite
            )
        })?;
        c.max_line = l.max_line;
        c.request_timeout = secs("request_timeout_secs", l.request_timeout_secs)?;
        c.connect_timeout = secs("connect_timeout_secs", l.connect_timeout_secs)?;
        c.heartbeat = secs("heartbeat_secs", l.heartbeat_secs)?;
        c.source_ports = parse_port_range(&l.source_ports)?;
        c.accept_proxied = l.accept_proxied;
        Ok(c)
    }

    /// The whole commented template for `ffs config init`.
    pub fn template() -> String {
        [
            "# ffs.toml: one file, a section per role. Every setting shows its default.\n",
            "# Relative paths are resolved against this file's directory.\n\n",
            LINK_TEMPLATE,
            "\n",
            internal_db_agent::TOML_TEMPLATE,
            "\n",
            ftp_stager::TOML_TEMPLATE,
            "\n",
            web_frontend::TOML_TEMPLATE,
        ]
        .concat()
    }
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v < 86_400.0) {
        bail!("[link] {name} = {v}: must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Which role's settings `ffs config check` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `[db-agent]` (`--role agent` also works).
    #[value(name = "db-agent", alias = "agent")]
    Agent,
    /// `[stager]`.
    Stager,
    /// `[web]`.
    Web,
}

impl FfsConfig {
    /// Checks what a role would refuse at start-up, without starting it or touching the
    /// network: the key bag (present, 0600, well-formed), the `[link]` settings, and the
    /// given roles' addresses, ranges, database URL and tuning. Returns one summary line per
    /// part checked; the first problem is the error.
    pub fn check(&self, roles: &[Role]) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let link = self.link_config()?;
        out.push(format!(
            "[link] key bag {}: {} entries, fingerprint {}; suite {}",
            self.link.keys.display(),
            link.bag.len(),
            link.bag.fingerprint(),
            link.suite.name()
        ));
        for role in roles {
            out.push(match role {
                Role::Agent => self.check_agent()?,
                Role::Stager => self.check_stager()?,
                Role::Web => self.check_web()?,
            });
        }
        Ok(out)
    }

    fn check_agent(&self) -> anyhow::Result<String> {
        use internal_db_agent::config::Mode;
        let a = &self.agent;
        let url = internal_db_agent::db::DbUrl::parse(&a.database)?;
        url.check_private().context("[db-agent] database")?;
        internal_db_agent::db::Tuning::new(&a.pg_synchronous_commit)
            .context("[db-agent] pg_synchronous_commit")?;
        a.hasher().context("[db-agent] argon2 settings")?;
        let how = match a.mode {
            Mode::Listen => format!(
                "listens on {}",
                link_address("db-agent", "listen", &a.listen)?
            ),
            Mode::DialOut => {
                // What the agent builds at start-up (carrier, proxy, relay URL) is the check.
                let carriers = a.carriers().map_err(|e| anyhow::anyhow!(e))?;
                if carriers.is_empty() {
                    link_addresses("db-agent", "dial", &a.dial_addrs())?;
                }
                format!("dials out to {}", a.dial_addrs().join(", "))
            }
        };
        Ok(format!("[db-agent] {how}; database {}", url.redacted()))
    }

    fn check_stager(&self) -> anyhow::Result<String> {
        let s = &self.stager;
        // Its message names the section and key already.
        let passive = s.passive_range().map_err(anyhow::Error::msg)?;
        address("stager", "link_listen", &s.link_listen)?;
        address("stager", "ftp_listen", &s.ftp_listen)?;
        address("stager", "https_listen", &s.https_listen)?;
        if s.tls_cert.as_os_str().is_empty() != s.tls_key.as_os_str().is_empty() {
            bail!("[stager] tls_cert and tls_key: set both or neither");
        }
        if !s.tls_key.as_os_str().is_empty() {
            commlink::secret_file::check_private(&s.tls_key).context("[stager] tls_key")?;
        }
        // Its messages name the setting.
        ftp_stager::replicate_follow::client_from_config(s)?;
        Ok(format!(
            "[stager] commlink {}, FTP {} (passive {}-{}), HTTPS {}; repository {}",
            s.link_listen,
            s.ftp_listen,
            passive.start(),
            passive.end(),
            s.https_listen,
            s.repository.display()
        ))
    }

    fn check_web(&self) -> anyhow::Result<String> {
        use web_frontend::config::AgentMode;
        let w = &self.web;
        address("web", "listen", &w.listen)?;
        if !w.http_redirect_listen.trim().is_empty() {
            address("web", "http_redirect_listen", &w.http_redirect_listen)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for st in &w.stagers {
            if st.name.trim().is_empty() || !names.insert(st.name.as_str()) {
                bail!(
                    "[web] stagers: each stager needs its own non-empty name (got {:?})",
                    st.name
                );
            }
            link_address("web", "stagers", &st.addr)?;
        }
        if w.stagers.is_empty() {
            link_address("web", "stager_addr", &w.stager_addr)?;
        }
        let agent = match w.agent_mode {
            AgentMode::Connect => {
                format!(
                    "dials the db agent at {}",
                    link_addresses("web", "db_agent_addr", &w.agent_addrs())?
                )
            }
            AgentMode::Accept => format!(
                "waits for the db agent on {}",
                link_address("web", "db_agent_listen", &w.agent_listen)?
            ),
        };
        w.link_prefix()
            .map_err(|e| anyhow::anyhow!("[web] link_path = {e}"))?;
        if w.tls_key.exists() {
            commlink::secret_file::check_private(&w.tls_key).context("[web] tls_key")?;
        } else if !w.tls_generate {
            bail!(
                "[web] no certificate at {} and tls_generate = false",
                w.tls_cert.display()
            );
        }
        if w.session_key.exists() {
            commlink::secret_file::check_private(&w.session_key).context("[web] session_key")?;
        }
        Ok(format!(
            "[web] HTTPS on {}; {agent}; stager at {}",
            w.listen,
            w.stager_list()
                .iter()
                .map(|s| s.addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Checks that `value` is `HOST:PORT` with a port in 1..=65535 (no name lookup).
fn address<'a>(section: &str, key: &str, value: &'a str) -> anyhow::Result<&'a str> {
    let bad =
        || format!("[{section}] {key} = {value:?}: expected HOST:PORT, e.g. \"127.0.0.1:7702\"");
    match value.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(value)
        }
        _ => bail!(bad()),
    }
}

/// Checks a commlink address: `tcp://HOST:PORT` or `HOST:PORT` (raw TCP), and for the db
/// agent's `dial` also `https://HOST[:PORT][/PREFIX]`; other schemes are refused with a
/// message naming the setting.
fn link_address<'a>(section: &str, key: &str, value: &'a str) -> anyhow::Result<&'a str> {
    let parsed = commlink::LinkAddr::parse(value).and_then(|a| {
        if (section, key) == ("db-agent", "dial") {
            Ok(a)
        } else {
            a.tcp_only(value)
        }
    });
    match parsed {
        Ok(_) => Ok(value),
        Err(e) => bail!("[{section}] {key} = {e}"),
    }
}

/// Checks a list of commlink addresses (at least one), each as [`link_address`].
fn link_addresses(section: &str, key: &str, values: &[&str]) -> anyhow::Result<String> {
    if values.is_empty() {
        link_address(section, key, "")?;
    }
    for v in values {
        link_address(section, key, v)?;
    }
    Ok(values.join(", "))
}

/// Parses "A-B" (inclusive) or "" (none).
pub fn parse_port_range(s: &str) -> anyhow::Result<Option<(u16, u16)>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("port range {s:?}: expected LOW-HIGH, e.g. 40000-40999");
    let (a, b) = s.split_once('-').with_context(bad)?;
    let a: u16 = a.trim().parse().with_context(bad)?;
    let b: u16 = b.trim().parse().with_context(bad)?;
    if a == 0 || a > b {
        bail!(bad());
    }
    Ok(Some((a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        let cfg: FfsConfig = toml::from_str(&FfsConfig::template()).unwrap();
        assert_eq!(cfg.link.suite, "aes256-gcm");
        assert_eq!(cfg.link.max_line, 1 << 20);
    }

    #[test]
    fn the_db_agent_section_and_keys_read_under_their_earlier_names_too() {
        let old = "[agent]\nmode = \"dial-out\"\n[web]\nagent_mode = \"accept\"\n\
                   agent_addr = \"10.0.0.1:1\"\nagent_listen = \"10.0.0.2:2\"\n";
        let new = "[db-agent]\nmode = \"dial-out\"\n[web]\ndb_agent_mode = \"accept\"\n\
                   db_agent_addr = \"10.0.0.1:1\"\ndb_agent_listen = \"10.0.0.2:2\"\n";
        for text in [old, new] {
            let cfg: FfsConfig = toml::from_str(text).unwrap();
            assert_eq!(cfg.agent.mode, internal_db_agent::Mode::DialOut, "{text}");
            assert_eq!(
                cfg.web.agent_mode,
                web_frontend::AgentMode::Accept,
                "{text}"
            );
            assert_eq!(cfg.web.agent_addr, "10.0.0.1:1");
            assert_eq!(cfg.web.agent_listen, "10.0.0.2:2");
        }
        // Written out, only the current names appear.
        let written = toml::to_string(&toml::from_str::<FfsConfig>(old).unwrap()).unwrap();
        assert!(written.contains("[db-agent]") && written.contains("db_agent_mode"));
        assert!(!written.contains("[agent]") && !written.contains("\nagent_mode"));
    }

    #[test]
    fn link_addresses_are_urls_and_unknown_schemes_name_the_setting() {
        assert!(link_address("db-agent", "dial", "tcp://web.example.com:7702").is_ok());
        assert!(link_address("db-agent", "dial", "web.example.com:7702").is_ok());
        let err = link_address("db-agent", "dial", "gopher://web:7702").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("[db-agent] dial = "), "{text}");
        assert!(text.contains("gopher"), "{text}");
        let err = link_address("web", "stager_addr", "tcp://web").unwrap_err();
        assert!(err.to_string().starts_with("[web] stager_addr = "), "{err}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("").unwrap(), None);
        assert_eq!(
            parse_port_range("40000-40999").unwrap(),
            Some((40000, 40999))
        );
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("x").is_err());
    }
}
