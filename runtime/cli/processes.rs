//! `atom processes`, `atom deploy DIR`, `atom undeploy NAME`.
//!
//! Deploy validates the bundle here first, with the runtime's own loader
//! (YAML, modules compile, imports resolve, keys load), then copies it into
//! the processes folder under a hidden name and swaps it in with one
//! atomic rename, so the runtime's watcher never sees half a bundle. It
//! then waits for the running Atom to report the new version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::admin_client::AdminClient;
use super::CliError;
use crate::config::Config;
use crate::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};
use crate::keystore::Keystore;
use crate::listeners::bundle::{self, BundleContext, PROCESS_FILE};

#[derive(Debug, Deserialize)]
struct ProcessRow {
    name: String,
    version: Option<String>,
    effective_mode: String,
    steps: Vec<String>,
    state: String,
    error: Option<String>,
    pending_error: Option<String>,
}

/// `atom processes`.
pub fn list(client: &AdminClient, json: bool) -> Result<(), CliError> {
    if json {
        let rows: serde_json::Value = client.get("/api/processes")?;
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<ProcessRow> = client.get("/api/processes")?;
    if rows.is_empty() {
        println!("no processes deployed");
        return Ok(());
    }
    println!(
        "{:<24} {:<13} {:<18} {:<10} STEPS",
        "NAME", "VERSION", "MODE", "STATE"
    );
    for r in rows {
        let steps = if r.steps.is_empty() {
            "none (receive only)".to_string()
        } else {
            r.steps.join(" -> ")
        };
        println!(
            "{:<24} {:<13} {:<18} {:<10} {steps}",
            r.name,
            r.version.unwrap_or_else(|| "-".into()),
            r.effective_mode,
            r.state,
        );
        if let Some(e) = r.error {
            println!("    error: {e}");
        }
        if let Some(e) = r.pending_error {
            println!("    new version refused: {e}");
        }
    }
    Ok(())
}

/// `atom deploy DIR`.
pub fn deploy(config: &Config, data_dir: &Path, dir: &Path, wait: u64) -> Result<(), CliError> {
    let dir = dir.canonicalize().map_err(|source| CliError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !dir.join(PROCESS_FILE).is_file() {
        return Err(CliError::Usage(format!(
            "{}: no {PROCESS_FILE}; a bundle is a folder with {PROCESS_FILE} and its modules",
            dir.display()
        )));
    }
    let engine = WasmtimeEngine::new(EngineSettings {
        max_instances: 1,
        max_memory: config.engine_max_memory,
        cache_dir: None,
    })
    .map_err(CliError::Failed)?;
    let keystore = Keystore::open(data_dir);
    let spec = bundle::load(
        &dir,
        BundleContext {
            keystore: &keystore,
            engine: engine.as_ref(),
            data_dir,
            allowed_directories: &config.delivery.allowed_directories,
            partners_dir: &config.partners_dir,
        },
    )
    .map_err(|e| CliError::Failed(format!("bundle refused: {e}")))?;
    let name = spec.id.clone();
    let processes = &config.processes_dir;
    std::fs::create_dir_all(processes).map_err(|source| CliError::Io {
        path: processes.clone(),
        source,
    })?;
    let staging = processes.join(format!(".deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    copy_tree(&dir, &staging)?;
    let target = processes.join(&name);
    swap_into_place(&staging, &target)?;
    println!(
        "deployed {name} version {} to {}",
        spec.version,
        target.display()
    );
    wait_for(config, data_dir, &name, Some(&spec.version), wait)
}

/// `atom undeploy NAME`.
pub fn undeploy(config: &Config, data_dir: &Path, name: &str, wait: u64) -> Result<(), CliError> {
    let valid = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
    let target = config.processes_dir.join(name);
    if !valid || !target.join(PROCESS_FILE).is_file() {
        return Err(CliError::Usage(format!(
            "no bundle named {name:?} in {}",
            config.processes_dir.display()
        )));
    }
    let parked = config
        .processes_dir
        .join(format!(".undeploy-{name}-{}", std::process::id()));
    std::fs::rename(&target, &parked).map_err(|source| CliError::Io {
        path: target.clone(),
        source,
    })?;
    std::fs::remove_dir_all(&parked).map_err(|source| CliError::Io {
        path: parked.clone(),
        source,
    })?;
    println!("undeployed {name}");
    wait_for(config, data_dir, name, None, wait)
}

/// Polls the running Atom until it shows `version` (or, with `None`, no
/// longer lists the process). Not running: says so and succeeds.
fn wait_for(
    config: &Config,
    data_dir: &Path,
    name: &str,
    version: Option<&str>,
    wait: u64,
) -> Result<(), CliError> {
    let Ok(client) = AdminClient::connect(config.admin_address, data_dir) else {
        println!("no running Atom found; it picks the change up when it starts");
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let rows: Vec<ProcessRow> = match client.get("/api/processes") {
            Ok(rows) => rows,
            Err(_) => {
                println!("no running Atom answered; it picks the change up when it starts");
                return Ok(());
            }
        };
        let row = rows.into_iter().find(|r| r.name == name);
        match (version, row) {
            (None, None) => {
                println!("the running Atom undeployed {name}");
                return Ok(());
            }
            (Some(v), Some(r)) if r.version.as_deref() == Some(v) && r.pending_error.is_none() => {
                println!("the running Atom serves {name} version {v} ({})", r.state);
                return Ok(());
            }
            (Some(_), Some(r)) if r.pending_error.is_some() || r.error.is_some() => {
                let reason = r.pending_error.or(r.error).unwrap_or_default();
                if Instant::now() >= deadline {
                    return Err(CliError::Failed(format!(
                        "the running Atom refused {name}: {reason}"
                    )));
                }
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "the running Atom did not pick up {name} within {wait} s; see `atom processes`"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies regular files and folders (symbolic links are refused: a bundle
/// must not point outside itself).
fn copy_tree(from: &Path, to: &Path) -> Result<(), CliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for item in std::fs::read_dir(from).map_err(io(from))? {
        let item = item.map_err(io(from))?;
        let source = item.path();
        let kind = item.file_type().map_err(io(&source))?;
        let dest: PathBuf = to.join(item.file_name());
        if kind.is_symlink() {
            return Err(CliError::Usage(format!(
                "{}: symbolic links are not allowed in a bundle",
                source.display()
            )));
        } else if kind.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            std::fs::copy(&source, &dest).map_err(io(&source))?;
        }
    }
    Ok(())
}

/// Puts `staging` at `target` in one step ([`crate::listeners::swap`]).
fn swap_into_place(staging: &Path, target: &Path) -> Result<(), CliError> {
    crate::listeners::swap::swap_into_place(staging, target).map_err(|source| CliError::Io {
        path: target.to_path_buf(),
        source,
    })
}
