//! `atom.yaml`: read as written ([`raw`]), then validated into [`Config`],
//! the only form the rest of the runtime sees. Unknown keys and bad values
//! are refused with the file, the key and the reason.

pub mod raw;

use std::path::{Path, PathBuf};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the file was read from (relative paths in it are resolved
    /// against its directory).
    pub source: Option<PathBuf>,
    /// The Atom's name, shown in receipts and logs.
    pub name: String,
    /// Data directory: keystore, store, admin token.
    pub data_dir: PathBuf,
}

/// A configuration error that names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid { path: PathBuf, key: String, reason: String },
}

impl Default for Config {
    fn default() -> Self {
        Config { source: None, name: "atom".into(), data_dir: PathBuf::from("data") }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Validates configuration text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid { path: path.to_path_buf(), key: key.into(), reason };
        let defaults = Config::default();
        let name = raw.atom.as_ref().and_then(|a| a.name.clone()).unwrap_or(defaults.name);
        if name.trim().is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(invalid("atom.name", format!("{name:?} must be 1 to 64 printable characters")));
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let data_dir = match raw.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => return Err(invalid("data_dir", "must not be empty".into())),
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => base.join(dir),
            None => base.join(defaults.data_dir),
        };
        Ok(Config { source: Some(path.to_path_buf()), name, data_dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_atom_yaml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("atom.yaml");
        let config = Config::load(&path).expect("atom.yaml loads");
        assert_eq!(config.data_dir, Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let path = Path::new("/etc/atom/atom.yaml");
        let err = Config::parse("atom:\n  name: a\n  nmae: b\n", path).expect_err("typo refused");
        let text = err.to_string();
        assert!(text.contains("/etc/atom/atom.yaml") && text.contains("nmae"), "{text}");
        let err = Config::parse("data_dir: ''\n", path).expect_err("empty refused");
        assert_eq!(err.to_string(), "/etc/atom/atom.yaml: key `data_dir`: must not be empty");
        let err = Config::parse("atom:\n  name: ''\n", path).expect_err("empty name refused");
        assert!(err.to_string().contains("atom.name"));
        let ok = Config::parse("data_dir: /var/lib/atom\n", path).expect("absolute path");
        assert_eq!(ok.data_dir, PathBuf::from("/var/lib/atom"));
        let ok = Config::parse("{}\n", path).expect("defaults");
        assert_eq!(ok.data_dir, PathBuf::from("/etc/atom/data"));
    }
}
