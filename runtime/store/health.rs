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

use super::{Store, StoreError, StoreErrorKind};
use crate::shutdown::Shutdown;

/// Probe interval while the store is healthy.
const PROBE_HEALTHY: Duration = Duration::from_secs(5);
/// Probe interval while it is not: recovery is noticed within this.
const PROBE_FAULTED: Duration = Duration::from_millis(500);
/// Bytes the probe file needs: a store that cannot take this cannot take a message.
const PROBE_BYTES: usize = 64 * 1024;

/// Why the store cannot commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: StoreErrorKind,
    pub reason: String,
}

/// The latest verdict on the store.
#[derive(Default)]
pub struct StoreHealth {
    fault: Mutex<Option<Fault>>,
}

impl StoreHealth {
    /// Why the store cannot commit, if it cannot.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a commit's outcome.
    pub fn report(&self, outcome: Result<(), &StoreError>) {
        let outcome = outcome.map_err(|e| Fault {
            kind: e.kind,
            reason: e.to_string(),
        });
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match (outcome, fault.is_some()) {
            (Ok(()), true) => {
                tracing::info!("store commits again; receiving resumes");
                *fault = None;
            }
            (Ok(()), false) => {}
            (Err(new), was_faulted) => {
                if !was_faulted {
                    tracing::error!(reason = %new.reason, kind = ?new.kind, "store cannot commit; answering 503 until it can");
                }
                *fault = Some(new);
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
                let outcome = probe_files(&data_dir).and_then(|()| store.probe());
                health.report(outcome.as_ref().map(|_| ()));
            })?;
        Ok(())
    }
}

/// Writes, syncs and removes a small file in the data directory.
fn probe_files(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(".store-probe");
    let result = std::fs::File::create(&path)
        .and_then(|mut file| {
            file.write_all(&[0u8; PROBE_BYTES])?;
            file.sync_all()
        })
        .map_err(|e| {
            StoreError::io(
                "probing the data directory",
                &e,
                format!("writing {}: {e}", path.display()),
            )
        });
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_keeps_its_kind_until_a_success_clears_it() {
        let health = StoreHealth::default();
        assert_eq!(health.fault(), None);
        let full = StoreError::io(
            "writing file",
            &std::io::Error::from_raw_os_error(libc::ENOSPC),
            "payload: No space left on device",
        );
        health.report(Err(&full));
        let fault = health.fault().expect("faulted");
        assert_eq!(fault.kind, StoreErrorKind::Full);
        assert_eq!(fault.kind.retry_after_seconds(), "60");
        assert!(fault.reason.contains("No space left"), "{}", fault.reason);
        health.report(Ok(()));
        assert_eq!(health.fault(), None);
    }

    #[test]
    fn errors_are_classified_by_their_codes() {
        let io = |code| StoreError::io("x", &std::io::Error::from_raw_os_error(code), "x").kind;
        assert_eq!(io(libc::ENOSPC), StoreErrorKind::Full);
        assert_eq!(io(libc::EDQUOT), StoreErrorKind::Full);
        assert_eq!(io(libc::EROFS), StoreErrorKind::ReadOnly);
        assert_eq!(io(libc::EIO), StoreErrorKind::Other);
        let sqlite = |code| {
            StoreError::sqlite(
                "x",
                &rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
            )
            .kind
        };
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_FULL), StoreErrorKind::Full);
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_READONLY),
            StoreErrorKind::ReadOnly
        );
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_BUSY), StoreErrorKind::Busy);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_CORRUPT), StoreErrorKind::Other);
    }
}
