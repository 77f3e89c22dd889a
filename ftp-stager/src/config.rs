//! The `[stager]` section of ffs.toml.

use std::path::{Path, PathBuf};

/// What to do when the repository and the areas directory are on different filesystems
/// (hard links are then impossible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Refuse to start (the default): staging must be a hard link.
    #[default]
    None,
    /// Clone the file with the FICLONE ioctl (btrfs, XFS); copy if the clone fails.
    Reflink,
    /// Copy the bytes (slow for large files; every use is logged).
    Copy,
}

/// This role's section of ffs.toml.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagerConfig {
    /// The repository: `objects/` (content-addressed, read-only) and `releases/` (manifests).
    pub repository: PathBuf,
    /// Where download areas are created (must be on the repository's filesystem).
    pub areas_dir: PathBuf,
    /// The stager's own state: area records, deliveries log, generated TLS certificate.
    pub state_dir: PathBuf,
    /// Commlink listen address (the web frontend dials it).
    pub link_listen: String,
    /// FTP control listen address.
    pub ftp_listen: String,
    /// FTP passive data ports, inclusive, "LOW-HIGH".
    pub passive_ports: String,
    /// HTTPS listen address.
    pub https_listen: String,
    /// Host name (or address) put into the FTP and HTTPS URLs handed to customers.
    pub public_host: String,
    /// FTP port in URLs (0 = the port of `ftp_listen`).
    pub public_ftp_port: u16,
    /// HTTPS port in URLs (0 = the port of `https_listen`).
    pub public_https_port: u16,
    /// PEM certificate chain for HTTPS and FTPS; empty = self-signed, generated into state_dir.
    pub tls_cert: PathBuf,
    /// PEM private key (mode 0600) for `tls_cert`.
    pub tls_key: PathBuf,
    /// Offer FTPS (explicit, AUTH TLS) on the FTP port.
    pub ftps: bool,
    /// Default area lifetime in seconds.
    pub area_ttl_secs: u64,
    /// Longest lifetime a stage request may ask for.
    pub max_ttl_secs: u64,
    /// How often the sweeper looks for expired areas, seconds.
    pub sweep_interval_secs: u64,
    /// "none" (default: refuse to start unless repository and areas share a filesystem),
    /// "reflink" or "copy".
    pub fallback: Fallback,
    /// When started as root: drop to this user after binding the ports (empty = stay).
    pub run_as_user: String,
    /// minisign secret key (mode 0600) `ffs publish` signs each release's `SHA256SUMS` with;
    /// empty = releases are published unsigned. Create with `ffs keys signing generate`.
    pub signing_key: PathBuf,
    /// File (mode 0600) holding the passphrase of a passphrase-protected `signing_key`
    /// (its first line); empty = the key is unencrypted.
    pub signing_key_passphrase_file: PathBuf,
    /// Remote publishing: largest object (file) a publish token may upload, bytes.
    pub publish_max_object_bytes: u64,
    /// Remote publishing: object uploads one publish token may run at once (more get 429).
    pub publish_uploads_per_token: u32,
    /// Remote publishing: a partial upload untouched this long, seconds, is removed by the
    /// sweeper.
    pub publish_abandoned_after_secs: u64,
    /// Replication: the HTTPS base URL of the stager this one follows (pulls every release
    /// from), e.g. `https://stager-a:8444`; empty = this stager follows nobody.
    pub replicate_from: String,
    /// Replication: file (mode 0600) holding the replication token the source made with
    /// `ffs replication-token create`.
    pub replicate_token_file: PathBuf,
    /// Replication: trust exactly the source certificate with this SHA-256 fingerprint (the
    /// `tls_sha256` the source logs; for a self-signed source).
    pub replicate_pin: String,
    /// Replication: PEM CA certificates for the source (when no pin); empty = system roots.
    pub replicate_ca_cert: PathBuf,
    /// Replication: seconds between polls of the source.
    pub replicate_interval_secs: u64,
}

impl Default for StagerConfig {
    fn default() -> Self {
        StagerConfig {
            repository: PathBuf::from("stager/repository"),
            areas_dir: PathBuf::from("stager/areas"),
            state_dir: PathBuf::from("stager/state"),
            link_listen: "127.0.0.1:7711".into(),
            ftp_listen: "127.0.0.1:2121".into(),
            passive_ports: "30000-30099".into(),
            https_listen: "127.0.0.1:8444".into(),
            public_host: "127.0.0.1".into(),
            public_ftp_port: 0,
            public_https_port: 0,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            ftps: true,
            area_ttl_secs: 24 * 3600,
            max_ttl_secs: 7 * 24 * 3600,
            sweep_interval_secs: 30,
            fallback: Fallback::None,
            run_as_user: String::new(),
            signing_key: PathBuf::new(),
            signing_key_passphrase_file: PathBuf::new(),
            publish_max_object_bytes: 1 << 40,
            publish_uploads_per_token: crate::upload::MAX_UPLOADS_PER_TOKEN as u32,
            publish_abandoned_after_secs: 24 * 3600,
            replicate_from: String::new(),
            replicate_token_file: PathBuf::new(),
            replicate_pin: String::new(),
            replicate_ca_cert: PathBuf::new(),
            replicate_interval_secs: 10,
        }
    }
}

impl StagerConfig {
    /// Makes relative paths absolute against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.repository,
            &mut self.areas_dir,
            &mut self.state_dir,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.signing_key,
            &mut self.signing_key_passphrase_file,
            &mut self.replicate_token_file,
            &mut self.replicate_ca_cert,
        ] {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The passive port range, parsed.
    pub fn passive_range(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let s = self.passive_ports.trim();
        let bad = || format!("[stager] passive_ports = {s:?}: expected LOW-HIGH, e.g. 30000-30099");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok(a..=b)
    }
}

/// This role's section of ffs.toml, commented.
pub const TOML_TEMPLATE: &str = r#"[stager]
# Repository: objects/ (content-addressed by SHA-256, read-only) and releases/ (manifests).
repository = "stager/repository"
# Download areas; must be on the repository's filesystem so staging is a hard link.
areas_dir = "stager/areas"
# Area records, the deliveries log and the generated TLS certificate.
state_dir = "stager/state"
# Commlink address the web frontend dials.
link_listen = "127.0.0.1:7711"
ftp_listen = "127.0.0.1:2121"
# Passive data ports (open them in the firewall).
passive_ports = "30000-30099"
https_listen = "127.0.0.1:8444"
# Host name put into the ftp:// and https:// links handed to customers.
public_host = "127.0.0.1"
# Ports in those links; 0 = the listen port (set them when behind NAT or a port map).
public_ftp_port = 0
public_https_port = 0
# PEM certificate and key (key mode 0600) for HTTPS and FTPS. Empty = a self-signed
# certificate generated into state_dir on first start (its fingerprint is logged).
tls_cert = ""
tls_key = ""
# Offer explicit FTPS (AUTH TLS) on the FTP port.
ftps = true
# Default and longest area lifetime, seconds.
area_ttl_secs = 86400
max_ttl_secs = 604800
sweep_interval_secs = 30
# When repository and areas_dir are on different filesystems: "none" refuses to start,
# "reflink" clones (btrfs/XFS, falls back to copying), "copy" copies. Each use is logged.
fallback = "none"
# If started as root, switch to this user after binding ports ("" = do not switch).
run_as_user = ""
# Secret key (minisign format, mode 0600) `ffs publish` signs SHA256SUMS of each release
# with; "" = publish unsigned. Create with `ffs keys signing generate`, and give the web
# frontend the public key ([web] signing_public_keys).
signing_key = ""
# For a passphrase-protected signing_key (`ffs keys signing generate --passphrase-file`, or
# `minisign -G`): a file, mode 0600, whose first line is the passphrase ("" = unencrypted).
signing_key_passphrase_file = ""
# Remote publishing (`ffs publish --remote`, publish tokens): largest object in bytes
# (1 TiB), uploads one token may run at once (more are answered 429), and the age in
# seconds after which the sweeper removes an untouched partial upload.
publish_max_object_bytes = 1099511627776
publish_uploads_per_token = 4
publish_abandoned_after_secs = 86400
# Replication (one repository, many stagers): the HTTPS URL of the stager this one follows,
# e.g. "https://stager-a:8444" ("" = follow nobody). It pulls every release from there by
# hash (objects checked against their SHA-256, manifest last), yanks included.
replicate_from = ""
# The replication token (`ffs replication-token create --name THIS-HOST` on the source),
# in a file of mode 0600.
replicate_token_file = ""
# Trust the source's certificate by its SHA-256 (the tls_sha256 it logs), or by a CA file;
# both empty = the system's CA roots.
replicate_pin = ""
replicate_ca_cert = ""
# Seconds between polls of the source.
replicate_interval_secs = 10
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Wrap {
        stager: StagerConfig,
    }

    #[test]
    fn template_is_the_defaults() {
        let w: Wrap = toml::from_str(TOML_TEMPLATE).unwrap();
        let d = StagerConfig::default();
        assert_eq!(
            serde_json::to_value(&w.stager).unwrap(),
            serde_json::to_value(&d).unwrap()
        );
        assert_eq!(d.passive_range().unwrap(), 30000..=30099);
    }

    #[test]
    fn resolves_relative_paths_only() {
        let mut c = StagerConfig {
            state_dir: "/abs/state".into(),
            ..Default::default()
        };
        c.resolve_paths(Path::new("/etc/ffs"));
        assert_eq!(c.repository, Path::new("/etc/ffs/stager/repository"));
        assert_eq!(c.state_dir, Path::new("/abs/state"));
        assert_eq!(c.tls_cert, Path::new(""));
    }

    #[test]
    fn rejects_bad_fallback_and_unknown_keys() {
        assert!(toml::from_str::<Wrap>("[stager]\nfallback = \"symlink\"").is_err());
        assert!(toml::from_str::<Wrap>("[stager]\nbogus = 1").is_err());
        let w: Wrap = toml::from_str("[stager]\nfallback = \"copy\"").unwrap();
        assert_eq!(w.stager.fallback, Fallback::Copy);
    }
}
