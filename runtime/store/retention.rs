//! Retention: payloads, MDNs and history older than `store.retention_days`
//! are purged by a background thread, in small batches so that it never
//! holds the store for long and never blocks receiving. Rows go first, then
//! their files: a crash in between leaves orphaned files, never a row
//! pointing at nothing. Receipts still waiting for asynchronous delivery,
//! and messages whose execution has not finished, are kept. Finished
//! executions go first, with the documents they kept.

use std::sync::Arc;
use std::time::Duration;

use super::documents::Documents;
use super::{Result, Store};

/// How old a document no row references must be before the sweep
/// removes it: far longer than any commit takes, so that nothing staged
/// for a commit still under way can go.
const UNREFERENCED_AGE: Duration = Duration::from_secs(3600);

/// Rows deleted per batch.
const BATCH: u32 = 500;

/// What one purge batch deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Rows deleted.
    pub rows: usize,
    /// Documents those rows referenced, for the caller to remove.
    pub paths: Vec<String>,
}

/// Purges everything received before `cutoff` (RFC 3339), to the end.
/// Returns how many documents were removed.
pub fn purge(store: &dyn Store, documents: &dyn Documents, cutoff: &str) -> Result<usize> {
    let executions = purge_batches(documents, || store.purge_executions_before(cutoff, BATCH))?;
    let messages = purge_batches(documents, || store.purge_before(cutoff, BATCH))?;
    Ok(executions + messages)
}

/// Runs `delete_batch` until it deletes no row, removing the documents of
/// each batch. Rows, not documents, end the loop: failed and aborted
/// executions keep no documents, yet must go too.
fn purge_batches(
    documents: &dyn Documents,
    mut delete_batch: impl FnMut() -> Result<Purged>,
) -> Result<usize> {
    let mut removed = 0;
    loop {
        let batch = delete_batch()?;
        if batch.rows == 0 {
            return Ok(removed);
        }
        removed += documents.remove(&batch.paths);
        // Give receiving the store between batches.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The cutoff for `days` of retention, as RFC 3339.
pub fn cutoff(days: u32) -> String {
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
    then.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Starts the purge thread.
pub fn start(
    store: Arc<dyn Store>,
    documents: Arc<dyn Documents>,
    days: u32,
    interval: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("atom-retention".into())
        .spawn(move || loop {
            let cutoff = cutoff(days);
            match purge(store.as_ref(), documents.as_ref(), &cutoff) {
                Ok(0) => {}
                Ok(files) => tracing::info!(files, %cutoff, "retention: purged old messages"),
                Err(e) => tracing::error!(error = %e, "retention purge failed; will retry"),
            }
            match documents.sweep_unreferenced(UNREFERENCED_AGE) {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::warn!(removed, "removed documents no stored row references (left by a failed commit or a crash)")
                }
                Err(e) => tracing::error!(error = %e, "sweeping unreferenced documents failed; will retry"),
            }
            std::thread::sleep(interval);
        })?;
    Ok(())
}
