//! Hot reload: watches the processes folder and reloads the bundles that
//! changed. Deployers write temporary files and rename them; events are
//! debounced so one deployment is one reload, and names starting with a
//! dot (temporary folders) are ignored until they are renamed into place.
//!
//! Events only say *that* something changed; [`Registry::rescan`] finds
//! what by comparing folder fingerprints. A rescan also runs every few
//! seconds, because inotify can lose track of folders swapped by an atomic
//! exchange (`atom deploy`), and a missed deployment must not stay missed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use super::Registry;

/// Quiet time after the last change before a bundle is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// How often the processes folder is rescanned without any event.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps the watcher alive; dropping it stops hot reload.
pub struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts watching `processes_dir` (created if missing).
pub fn start(registry: Arc<Registry>, processes_dir: PathBuf) -> Result<Watcher, String> {
    std::fs::create_dir_all(&processes_dir)
        .map_err(|e| format!("{}: {e}", processes_dir.display()))?;
    // Events carry canonical paths on some platforms.
    let root = processes_dir
        .canonicalize()
        .unwrap_or_else(|_| processes_dir.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let periodic = (registry.clone(), stop.clone());
    std::thread::Builder::new()
        .name("atom-rescan".into())
        .spawn(move || {
            let (registry, stop) = periodic;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(RESCAN_INTERVAL);
                registry.rescan();
            }
        })
        .map_err(|e| format!("starting the rescan thread: {e}"))?;
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    // Reads (our own, while loading) are not changes. Any
                    // other event under the folder triggers a rescan, which
                    // finds what changed by itself.
                    if events.iter().any(|event| !event.kind.is_access()) {
                        registry.rescan();
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "watching the processes folder");
                    }
                }
            },
        )
        .map_err(|e| format!("starting the processes watcher: {e}"))?;
    debouncer
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| format!("watching {}: {e}", root.display()))?;
    tracing::info!(dir = %root.display(), "hot reload: watching the processes folder");
    Ok(Watcher {
        _debouncer: debouncer,
        stop,
    })
}
