//! The serde model of `atom.yaml`, exactly as written. Every struct denies
//! unknown fields so that a typo is an error, not a silently ignored key.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub atom: Option<RawAtom>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAtom {
    pub name: Option<String>,
}
