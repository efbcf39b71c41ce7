//! The process part of `process.yaml`: what runs after the start step.
//! The keys of each step are read by its module in [`crate::process::steps`].
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::WorkerMode;
use crate::engine::{GuestLimits, ProcessEngine};
use crate::process::steps::{as2, disk, http, wasm, LoadContext, ProcessStep};

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
    disk: Option<disk::RawDisk>,
    http: Option<http::RawHttp>,
    as2: Option<as2::RawAs2>,
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

/// One step after the start step (see [`crate::process::steps`]).
pub type Step = Arc<dyn ProcessStep>;

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

/// Validates the process keys; errors are `(key, reason)`. Each step is
/// loaded by its own module ([`crate::process::steps`]); disk steps write
/// inside `data_dir` or one of `allowed_directories`
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
        let cx = LoadContext {
            index,
            bundle_dir,
            data_dir,
            allowed_directories,
            engine,
            partners,
        };
        steps.push(load_step(raw_step, &cx)?);
    }
    Ok(ProcessDefinition {
        mode,
        limits,
        settings,
        steps,
    })
}

/// Loads a step item with the module of its one key (`steps/<key>.rs`).
fn load_step(raw: RawStep, cx: &LoadContext<'_>) -> Result<Step, (String, String)> {
    // One line a step: its key, and its module's `load` of what the key holds.
    let kinds = [
        ("wasm", loader(raw.wasm, wasm::load)),
        ("disk", loader(raw.disk, disk::load)),
        ("http", loader(raw.http, http::load)),
        ("as2", loader(raw.as2, as2::load)),
    ];
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let mut set = kinds.into_iter().filter_map(|(_, load)| load);
    match (set.next(), set.next()) {
        (Some(load), None) => load(cx),
        _ => Err((
            format!("steps[{}]", cx.index),
            format!("give exactly one of {}", names.join(", ")),
        )),
    }
}

/// A refused value: its key and why.
type Refusal = (String, String);

/// Loads a step from what its key holds.
type Loader = Box<dyn FnOnce(&LoadContext<'_>) -> Result<Step, Refusal>>;

/// How to load a step, if its key is set (nothing is read until then).
fn loader<R: 'static, S: ProcessStep + 'static>(
    raw: Option<R>,
    load: fn(R, &LoadContext<'_>) -> Result<S, Refusal>,
) -> Option<Loader> {
    raw.map(|raw| {
        Box::new(move |cx: &LoadContext<'_>| load(raw, cx).map(|step| Arc::new(step) as Step))
            as Loader
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
