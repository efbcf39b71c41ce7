//! The process part of `process.yaml`: what runs after the start step.
//!
//! ```yaml
//! mode: low_latency_debug          # optional; else quotas.default_as2_workload
//! limits:
//!   max_execution_time_seconds: 60
//!   max_memory_mb: 64
//!   max_output_mb: 100
//!   max_concurrent_executions: 10  # Maximum Concurrent Executions per Listener
//!   retries: 3                     # runs again after a transient step failure
//!   retry_delay_seconds: 5         # first delay; doubles per retry, at most 300 s
//! settings:                        # environment variables of every guest
//!   ERP_PLANT: "1000"
//! steps:
//!   - wasm: transform.wat          # a module file in the bundle (.wasm or .wat)
//!   - disk:
//!       directory: out/orders      # inside data_dir, or delivery.allowed_directories
//!       file_name: "{as2_from}/{file_name}"
//!       if_exists: overwrite       # overwrite | unique | error
//!   - http:
//!       url: http://erp.internal/orders
//!       headers: { X-Partner: "{as2_from}" }
//!       retries: 3
//!       retry_backoff_ms: 1000
//!       timeout_seconds: 30
//!   - as2:
//!       partner: acme                # partners/acme.yaml (see `partners.rs`)
//!       file_name: "{file_name}"     # optional; Content-Disposition file name
//!       subject: "Invoice {file_name}"   # optional; else the profile's subject
//! ```

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atom_connectors::delivery::disk::{self, DiskTarget, IfExists};
use atom_connectors::delivery::http::{self, HttpTarget};
use atom_connectors::delivery::template::Template;
use serde::Deserialize;
use sha2::Digest;

use crate::config::WorkerMode;
use crate::engine::{GuestLimits, PreparedModule, ProcessEngine};
use crate::process::steps::as2::As2Step;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    max_execution_time_seconds: Option<u64>,
    max_memory_mb: Option<usize>,
    max_output_mb: Option<usize>,
    max_concurrent_executions: Option<usize>,
    retries: Option<u32>,
    retry_delay_seconds: Option<u64>,
}

/// One list item of `steps:`; exactly one key is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    wasm: Option<String>,
    disk: Option<RawDisk>,
    http: Option<RawHttp>,
    as2: Option<RawAs2>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAs2 {
    partner: String,
    file_name: Option<String>,
    subject: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    directory: PathBuf,
    file_name: String,
    if_exists: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    timeout_seconds: Option<u64>,
}

/// The raw process keys of process.yaml (beside `start`).
#[derive(Debug, Default)]
pub struct RawDefinition {
    pub mode: Option<String>,
    pub limits: Option<RawLimits>,
    pub settings: Option<std::collections::BTreeMap<String, String>>,
    pub steps: Option<Vec<RawStep>>,
}

/// Where `as2` steps find their partner profiles.
#[derive(Clone, Copy)]
pub struct Partners<'a> {
    /// `partners_dir` of atom.yaml.
    pub dir: &'a Path,
    /// Keys named `keystore:NAME` in a profile.
    pub keystore: &'a crate::keystore::Keystore,
}

/// Limits of every execution of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessLimits {
    pub guest: GuestLimits,
    pub max_concurrent_executions: usize,
    /// Runs after the first when a step fails transiently (full disk,
    /// unreachable endpoint); permanent failures are not retried.
    pub retries: u32,
    /// Delay before the first retry; it doubles for each one after, up
    /// to [`MAX_RETRY_DELAY`].
    pub retry_delay: Duration,
}

pub const DEFAULT_MAX_EXECUTION_TIME: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_MEMORY_MB: usize = 64;
pub const DEFAULT_MAX_OUTPUT_MB: usize = 100;
pub const DEFAULT_MAX_CONCURRENT_EXECUTIONS: usize = 10;
pub const DEFAULT_RETRIES: u32 = 3;
pub const MAX_RETRIES: u32 = 100;
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The doubling retry delay stops growing here.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

impl ProcessLimits {
    /// The delay before the retry that follows `retries_done` retries:
    /// the first delay doubled each time, at most [`MAX_RETRY_DELAY`].
    pub fn retry_delay_after(&self, retries_done: u32) -> Duration {
        let factor = 1u32.checked_shl(retries_done.min(31)).unwrap_or(u32::MAX);
        self.retry_delay
            .checked_mul(factor)
            .unwrap_or(MAX_RETRY_DELAY)
            .min(MAX_RETRY_DELAY)
    }
}

/// One step after the start step.
#[derive(Clone)]
pub enum Step {
    Wasm {
        /// The module file, relative to the bundle.
        file: String,
        /// SHA-256 of the module file, for the bundle's version.
        sha256: [u8; 32],
        module: Arc<dyn PreparedModule>,
    },
    Disk(DiskTarget),
    Http(HttpTarget),
    As2(Arc<As2Step>),
}

impl Step {
    /// How `atom processes` and logs name it.
    pub fn describe(&self) -> String {
        match self {
            Step::Wasm { file, .. } => format!("wasm {file}"),
            Step::Disk(d) => format!("disk {}/{}", d.directory.display(), d.file_name),
            Step::Http(h) => format!("http {}", h.url),
            Step::As2(a) => format!("as2 {}", a.partner.name),
        }
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A validated process: modules compiled and linked, templates parsed.
#[derive(Debug, Clone)]
pub struct ProcessDefinition {
    /// `None`: the runtime's default workload.
    pub mode: Option<WorkerMode>,
    pub limits: ProcessLimits,
    /// Passed to every guest as environment variables.
    pub settings: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

/// Environment names a setting may not take: the runtime sets them.
const RESERVED_PREFIXES: [&str; 3] = ["AS2_", "ATOM_", "DDP_"];

/// Validates the process keys; errors are `(key, reason)`. Disk steps
/// write inside `data_dir` or one of `allowed_directories`
/// (`delivery.allowed_directories` of atom.yaml).
pub fn load(
    raw: RawDefinition,
    bundle_dir: &Path,
    data_dir: &Path,
    allowed_directories: &[PathBuf],
    engine: &dyn ProcessEngine,
    partners: &Partners<'_>,
) -> Result<ProcessDefinition, (String, String)> {
    let mode = raw
        .mode
        .as_deref()
        .map(|m| {
            WorkerMode::parse(m).ok_or_else(|| {
                (
                    "mode".to_string(),
                    format!("{m:?} is not one of general, low_latency_debug"),
                )
            })
        })
        .transpose()?;
    let limits = limits(raw.limits.unwrap_or_default(), engine)?;
    let mut settings = Vec::new();
    for (name, value) in raw.settings.unwrap_or_default() {
        let key = format!("settings.{name}");
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err((key, "not a valid environment variable name".into()));
        }
        if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err((
                key,
                "names starting AS2_, ATOM_ or DDP_ are set by the runtime".into(),
            ));
        }
        settings.push((name, value));
    }
    let mut steps = Vec::new();
    for (index, raw_step) in raw.steps.unwrap_or_default().into_iter().enumerate() {
        let key = |field: &str| format!("steps[{index}].{field}");
        let step = match (raw_step.wasm, raw_step.disk, raw_step.http, raw_step.as2) {
            (None, None, None, Some(a)) => {
                let partner = crate::partners::load(partners.dir, &a.partner, partners.keystore)
                    .map_err(|e| (key("as2.partner"), e.to_string()))?;
                let template = |field: &str, value: Option<String>| {
                    value
                        .map(|v| Template::parse(&v).map_err(|e| (key(field), e.to_string())))
                        .transpose()
                };
                Step::As2(Arc::new(As2Step::new(
                    partner,
                    template("as2.file_name", a.file_name)?,
                    template("as2.subject", a.subject)?,
                )))
            }
            (Some(file), None, None, None) => {
                let path = inside_bundle(bundle_dir, &file).map_err(|r| (key("wasm"), r))?;
                let bytes = std::fs::read(&path)
                    .map_err(|e| (key("wasm"), format!("{}: {e}", path.display())))?;
                let module = engine
                    .prepare(&bytes)
                    .map_err(|r| (key("wasm"), format!("{file}: {r}")))?;
                let sha256 = sha2::Sha256::digest(&bytes).into();
                Step::Wasm {
                    file,
                    sha256,
                    module,
                }
            }
            (None, Some(d), None, None) => {
                let file_name = Template::parse(&d.file_name)
                    .map_err(|e| (key("disk.file_name"), e.to_string()))?;
                disk::check_template(&file_name).map_err(|r| (key("disk.file_name"), r))?;
                let if_exists = match d.if_exists.as_deref().unwrap_or("overwrite") {
                    "overwrite" => IfExists::Overwrite,
                    "unique" => IfExists::Unique,
                    "error" => IfExists::Error,
                    other => {
                        return Err((
                            key("disk.if_exists"),
                            format!("{other:?} is not one of overwrite, unique, error"),
                        ))
                    }
                };
                let (root, directory) = disk_directory(&d.directory, data_dir, allowed_directories)
                    .map_err(|r| (key("disk.directory"), r))?;
                Step::Disk(DiskTarget {
                    root,
                    directory,
                    file_name,
                    if_exists,
                })
            }
            (None, None, Some(h), None) => {
                let url = Template::parse(&h.url).map_err(|e| (key("http.url"), e.to_string()))?;
                http::check_url(&url).map_err(|r| (key("http.url"), r))?;
                let mut headers = Vec::new();
                for (name, value) in h.headers {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err((
                            key("http.headers"),
                            format!("{name:?} is not a header name"),
                        ));
                    }
                    let template = Template::parse(&value)
                        .map_err(|e| (key(&format!("http.headers.{name}")), e.to_string()))?;
                    headers.push((name, template));
                }
                let retries = h.retries.unwrap_or(3);
                if retries > 20 {
                    return Err((key("http.retries"), format!("{retries} is above 20")));
                }
                Step::Http(HttpTarget {
                    url,
                    headers,
                    retries,
                    first_backoff: Duration::from_millis(h.retry_backoff_ms.unwrap_or(1000)),
                    timeout: Duration::from_secs(h.timeout_seconds.unwrap_or(30).max(1)),
                })
            }
            _ => {
                return Err((
                    format!("steps[{index}]"),
                    "give exactly one of wasm, disk, http, as2".into(),
                ))
            }
        };
        steps.push(step);
    }
    Ok(ProcessDefinition {
        mode,
        limits,
        settings,
        steps,
    })
}

fn limits(raw: RawLimits, engine: &dyn ProcessEngine) -> Result<ProcessLimits, (String, String)> {
    let time = raw
        .max_execution_time_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_MAX_EXECUTION_TIME);
    if time.is_zero() || time > Duration::from_secs(24 * 3600) {
        return Err((
            "limits.max_execution_time_seconds".into(),
            "must be 1 to 86400".into(),
        ));
    }
    let memory_mb = raw.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB);
    let engine_mb = engine.max_memory() >> 20;
    if memory_mb == 0 || memory_mb > engine_mb {
        return Err((
            "limits.max_memory_mb".into(),
            format!("{memory_mb} is outside 1 to {engine_mb} (engine.max_memory_mb in atom.yaml)"),
        ));
    }
    let output_mb = raw.max_output_mb.unwrap_or(DEFAULT_MAX_OUTPUT_MB);
    if output_mb == 0 || output_mb > 4096 {
        return Err(("limits.max_output_mb".into(), "must be 1 to 4096".into()));
    }
    let concurrent = raw
        .max_concurrent_executions
        .unwrap_or(DEFAULT_MAX_CONCURRENT_EXECUTIONS);
    if !(1..=1000).contains(&concurrent) {
        return Err((
            "limits.max_concurrent_executions".into(),
            "must be 1 to 1000".into(),
        ));
    }
    let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err((
            "limits.retries".into(),
            format!("{retries} is above {MAX_RETRIES}"),
        ));
    }
    let retry_delay = raw
        .retry_delay_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_DELAY);
    if retry_delay.is_zero() || retry_delay > MAX_RETRY_DELAY {
        return Err((
            "limits.retry_delay_seconds".into(),
            format!("must be 1 to {}", MAX_RETRY_DELAY.as_secs()),
        ));
    }
    Ok(ProcessLimits {
        guest: GuestLimits {
            max_time: time,
            max_memory: memory_mb << 20,
            max_output: output_mb << 20,
        },
        max_concurrent_executions: concurrent,
        retries,
        retry_delay,
    })
}

/// A module path must name a regular file inside the bundle, reached
/// through no symbolic link. Checked with `lstat` before anything is
/// read, so a link to a file elsewhere is never opened (and its content
/// cannot appear in an error).
fn inside_bundle(bundle_dir: &Path, file: &str) -> Result<PathBuf, String> {
    let relative = Path::new(file);
    if file.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{file:?} must be a relative path inside the bundle (no '..', not absolute)"
        ));
    }
    let lower = file.to_ascii_lowercase();
    if !(lower.ends_with(".wasm") || lower.ends_with(".wat")) {
        return Err(format!("{file:?} is not a .wasm or .wat module"));
    }
    let mut path = bundle_dir.to_path_buf();
    for component in relative.components() {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("{file:?}: {}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{file:?}: {} is a symbolic link; modules must be regular files inside the bundle (the link was not followed)",
                path.display()
            ));
        }
    }
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(format!("{file:?} is not a regular file"));
    }
    Ok(path)
}

/// The runtime's own entries in the data directory: a disk step may not
/// write among them (it could overwrite the store, keys or the token).
const RUNTIME_ENTRIES: [&str; 7] = [
    "keys",
    "messages",
    "executions",
    "cache",
    "spool",
    "atom.db",
    "admin.token",
];

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Where a disk step writes: `(root, directory)`. Relative directories are
/// resolved against `data_dir`; the result must lie inside `data_dir` (not
/// among the runtime's own entries) or inside one of `allowed`. No
/// directory below its root may be a symbolic link (checked now, and again
/// by the step before every write).
fn disk_directory(
    raw: &Path,
    data_dir: &Path,
    allowed: &[PathBuf],
) -> Result<(PathBuf, PathBuf), String> {
    if raw.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    let absolute =
        |p: &Path| normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let data_root = absolute(data_dir);
    let resolved = absolute(&data_root.join(raw));
    let roots = || {
        let others: Vec<String> = allowed.iter().map(|r| r.display().to_string()).collect();
        format!(
            "allowed: inside data_dir {}{}",
            data_root.display(),
            if others.is_empty() {
                " (delivery.allowed_directories in atom.yaml lists none)".to_string()
            } else {
                format!(" or delivery.allowed_directories [{}]", others.join(", "))
            }
        )
    };
    let root = if resolved.starts_with(&data_root) && resolved != data_root {
        let first = resolved
            .strip_prefix(&data_root)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        if RUNTIME_ENTRIES
            .iter()
            .any(|entry| first == *entry || first.starts_with(&format!("{entry}-")))
        {
            return Err(format!(
                "{} resolves to {}, among the runtime's own files in data_dir ({}); use a folder such as out/",
                raw.display(),
                resolved.display(),
                RUNTIME_ENTRIES.join(", ")
            ));
        }
        data_root.clone()
    } else if let Some(root) = allowed
        .iter()
        .filter(|root| resolved.starts_with(root))
        .max_by_key(|root| root.components().count())
    {
        root.clone()
    } else {
        return Err(format!(
            "{} resolves to {}, outside the directories disk steps may write to ({})",
            raw.display(),
            resolved.display(),
            roots()
        ));
    };
    // `..` could pass through a link that the lexical result no longer shows.
    if raw.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "{} must not contain '..' (it resolves to {})",
            raw.display(),
            resolved.display()
        ));
    }
    let mut walked = root.clone();
    if let Ok(below) = resolved.strip_prefix(&root) {
        for component in below.components() {
            walked.push(component);
            match std::fs::symlink_metadata(&walked) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!(
                        "{} resolves to {}, but {} is a symbolic link; disk steps never write through symbolic links",
                        raw.display(),
                        resolved.display(),
                        walked.display()
                    ))
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(format!("{} exists and is not a directory", walked.display()))
                }
                Ok(_) => {}
                // Missing: the step creates it (and checks again) at its first write.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(format!("{}: {e}", walked.display())),
            }
        }
    }
    Ok((root, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits_of(raw: RawLimits) -> Result<ProcessLimits, (String, String)> {
        let engine = crate::engine::wasmtime_engine::WasmtimeEngine::new(
            crate::engine::wasmtime_engine::EngineSettings {
                max_instances: 1,
                max_memory: 64 << 20,
                cache_dir: None,
            },
        )
        .expect("engine");
        limits(raw, engine.as_ref())
    }

    #[test]
    fn disk_directories_stay_inside_data_dir_or_allowed_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(data.join("out")).expect("mkdir");
        std::fs::create_dir_all(&srv).expect("mkdir");
        let allowed = [srv.clone()];
        let (root, resolved) =
            disk_directory(Path::new("out/orders"), &data, &allowed).expect("inside");
        assert_eq!((root, resolved), (data.clone(), data.join("out/orders")));
        let (root, resolved) =
            disk_directory(&srv.join("edi"), &data, &allowed).expect("allowed root");
        assert_eq!((root, resolved), (srv.clone(), srv.join("edi")));
        for (bad, says) in [
            (PathBuf::from("/etc/cron.d"), "outside the directories"),
            (PathBuf::from("../.."), "outside the directories"),
            (PathBuf::from("out/../../x"), "outside the directories"),
            (PathBuf::from("out/../in"), "must not contain '..'"),
            (PathBuf::from("."), "outside the directories"),
            (PathBuf::from("keys"), "runtime's own files"),
            (PathBuf::from("atom.db-wal"), "runtime's own files"),
        ] {
            let err = disk_directory(&bad, &data, &allowed).expect_err("refused");
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let err = disk_directory(Path::new("/etc"), &data, &allowed).expect_err("refused");
        assert!(
            err.contains("/etc resolves to /etc")
                && err.contains(&format!("delivery.allowed_directories [{}]", srv.display())),
            "{err}"
        );
        std::os::unix::fs::symlink(&srv, data.join("out/linked")).expect("symlink");
        let err = disk_directory(Path::new("out/linked/x"), &data, &allowed).expect_err("refused");
        assert!(err.contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn modules_are_regular_files_inside_the_bundle_never_read_through_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        std::fs::write(dir.path().join("secret.wat"), "TOP SECRET").expect("write");
        std::fs::write(bundle.join("guest.wat"), "(module)").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.wat"), bundle.join("link.wat"))
            .expect("symlink");
        assert_eq!(
            inside_bundle(&bundle, "guest.wat").expect("file"),
            bundle.join("guest.wat")
        );
        let err = inside_bundle(&bundle, "link.wat").expect_err("link");
        assert!(
            err.contains("is a symbolic link") && !err.contains("SECRET"),
            "{err}"
        );
        for bad in ["../secret.wat", "/etc/x.wat", "sub/../guest.wat"] {
            let err = inside_bundle(&bundle, bad).expect_err("refused");
            assert!(err.contains("inside the bundle"), "{bad}: {err}");
        }
    }

    #[test]
    fn retry_limits_default_validate_and_double_up_to_the_cap() {
        let defaults = limits_of(RawLimits::default()).expect("defaults");
        assert_eq!(defaults.retries, 3);
        assert_eq!(defaults.retry_delay, Duration::from_secs(5));
        let delays: Vec<u64> = (0..9)
            .map(|n| defaults.retry_delay_after(n).as_secs())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(defaults.retry_delay_after(u32::MAX), MAX_RETRY_DELAY);

        let too_many = limits_of(RawLimits {
            retries: Some(101),
            ..RawLimits::default()
        })
        .expect_err("refused");
        assert_eq!(too_many.0, "limits.retries");
        assert!(too_many.1.contains("101 is above 100"), "{}", too_many.1);
        for bad in [0, 301] {
            let refused = limits_of(RawLimits {
                retry_delay_seconds: Some(bad),
                ..RawLimits::default()
            })
            .expect_err("refused");
            assert_eq!(refused.0, "limits.retry_delay_seconds");
            assert_eq!(refused.1, "must be 1 to 300");
        }
        let none = limits_of(RawLimits {
            retries: Some(0),
            retry_delay_seconds: Some(1),
            ..RawLimits::default()
        })
        .expect("no retries is allowed");
        assert_eq!((none.retries, none.retry_delay.as_secs()), (0, 1));
    }
}
