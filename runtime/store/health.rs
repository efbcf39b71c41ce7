//! Can the store commit right now? The answer behind `/health` and behind
//! refusing requests early: a positive MDN is a promise that the document
//! is stored, so while the store cannot commit (disk full, read-only
//! filesystem, database errors) senders get 503 and retry later.
//!
//! Real commits report their outcome; a probe thread (a small synced file
//! in the data directory and a one-row store write) checks every few
//! seconds, so a fault is noticed without traffic and a cleared fault is
//! noticed without a sender having to risk a message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Store;
use crate::shutdown::Shutdown;

/// Probe interval while the store is healthy.
const PROBE_HEALTHY: Duration = Duration::from_secs(5);
/// Probe interval while it is not: recovery is noticed within this.
const PROBE_FAULTED: Duration = Duration::from_millis(500);
/// Bytes the probe file needs: a store that cannot take this cannot take a message.
const PROBE_BYTES: usize = 64 * 1024;

/// The latest verdict on the store.
#[derive(Default)]
pub struct StoreHealth {
    fault: Mutex<Option<String>>,
}

impl StoreHealth {
    /// Why the store cannot commit, if it cannot.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a commit's outcome.
    pub fn report(&self, outcome: Result<(), String>) {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match (outcome, fault.is_some()) {
            (Ok(()), true) => {
                tracing::info!("store commits again; receiving resumes");
                *fault = None;
            }
            (Ok(()), false) => {}
            (Err(reason), was_faulted) => {
                if !was_faulted {
                    tracing::error!(%reason, "store cannot commit; answering 503 until it can");
                }
                *fault = Some(reason);
            }
        }
    }

    /// Starts the probe thread; it ends at shutdown.
    pub fn start_probe(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        data_dir: PathBuf,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let health = self.clone();
        std::thread::Builder::new()
            .name("atom-store-probe".into())
            .spawn(move || loop {
                let every = if health.fault().is_some() {
                    PROBE_FAULTED
                } else {
                    PROBE_HEALTHY
                };
                if shutdown.wait_timeout(every) {
                    return;
                }
                let outcome =
                    probe_files(&data_dir).and_then(|()| store.probe().map_err(|e| e.to_string()));
                health.report(outcome);
            })?;
        Ok(())
    }
}

/// Writes, syncs and removes a small file in the data directory.
fn probe_files(data_dir: &Path) -> Result<(), String> {
    let path = data_dir.join(".store-probe");
    let result = std::fs::File::create(&path)
        .and_then(|mut file| {
            file.write_all(&[0u8; PROBE_BYTES])?;
            file.sync_all()
        })
        .map_err(|e| format!("writing {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    result
}
