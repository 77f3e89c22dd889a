//! placeholder (being written by the ftp-stager owner)

/// This role's section of ffs.toml.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagerConfig {}

impl StagerConfig {
    /// Makes relative paths absolute against the config file's directory.
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}
}

/// This role's section of ffs.toml, commented.
pub const TOML_TEMPLATE: &str = "";
