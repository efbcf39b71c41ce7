//! Retention: payloads, MDNs and history older than `store.retention_days`
//! are purged by a background thread, in small batches so that it never
//! holds the store for long and never blocks receiving. Rows go first, then
//! their files: a crash in between leaves orphaned files, never a row
//! pointing at nothing. Receipts still waiting for asynchronous delivery,
//! and messages whose execution has not finished, are kept. Finished
//! executions go first, with the documents they kept.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Result, Store};

/// Rows deleted per batch.
const BATCH: u32 = 500;

/// What one purge batch deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Rows deleted.
    pub rows: usize,
    /// Files those rows referenced, for the caller to remove.
    pub paths: Vec<String>,
}

/// Purges everything received before `cutoff` (RFC 3339), to the end.
/// Returns how many files were removed.
pub fn purge(store: &dyn Store, cutoff: &str) -> Result<usize> {
    let executions = purge_batches(|| store.purge_executions_before(cutoff, BATCH))?;
    let messages = purge_batches(|| store.purge_before(cutoff, BATCH))?;
    Ok(executions + messages)
}

/// Runs `delete_batch` until it deletes no row, removing the files of each
/// batch and any folder left empty. Rows, not files, end the loop: failed
/// and aborted executions keep no documents, yet must go too.
fn purge_batches(mut delete_batch: impl FnMut() -> Result<Purged>) -> Result<usize> {
    let mut removed = 0;
    loop {
        let batch = delete_batch()?;
        if batch.rows == 0 {
            return Ok(removed);
        }
        for path in &batch.paths {
            let path = Path::new(path);
            match std::fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "retention: cannot remove file")
                }
            }
            // The message or execution folder goes once empty.
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
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
pub fn start(store: Arc<dyn Store>, days: u32, interval: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("atom-retention".into())
        .spawn(move || loop {
            let cutoff = cutoff(days);
            match purge(store.as_ref(), &cutoff) {
                Ok(0) => {}
                Ok(files) => tracing::info!(files, %cutoff, "retention: purged old messages"),
                Err(e) => tracing::error!(error = %e, "retention purge failed; will retry"),
            }
            std::thread::sleep(interval);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{files, status, ExecutionFilter, ExecutionRecord, MessageRecord, Receipt};

    #[test]
    fn old_messages_and_their_files_go_recent_and_pending_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let mut keep = Vec::new();
        let mut gone = Vec::new();
        for (i, (received_at, mode, status)) in [
            ("2020-01-01T00:00:00Z", "sync", "sent"),
            ("2020-01-02T00:00:00Z", "async", "pending"),
            ("2020-01-03T00:00:00Z", "async", "delivered"),
            ("2099-01-01T00:00:00Z", "sync", "sent"),
        ]
        .into_iter()
        .enumerate()
        {
            let msg_dir = files::message_dir(dir.path());
            let chunk: &[u8] = b"data";
            let written = files::write(&msg_dir, &[("request", &[chunk]), ("payload", &[chunk])])
                .expect("files");
            let record = MessageRecord {
                as2_from: "P".into(),
                as2_to: "U".into(),
                message_id: format!("<{i}@p>"),
                disposition: "processed".into(),
                mdn_mode: mode.into(),
                mdn_status: status.into(),
                raw_path: Some(written[0].display().to_string()),
                payload_path: Some(written[1].display().to_string()),
                received_at: received_at.into(),
                ..MessageRecord::default()
            };
            store.insert_message(&record).expect("insert");
            if i == 1 || i == 3 {
                keep.push(msg_dir)
            } else {
                gone.push(msg_dir)
            }
        }
        // An old finished execution and its kept document go; an old message
        // whose execution is still queued stays.
        let kept_doc = dir.path().join("executions/e1/document-1");
        std::fs::create_dir_all(kept_doc.parent().expect("dir")).expect("mkdir");
        std::fs::write(&kept_doc, b"out").expect("doc");
        let queued_dir = files::message_dir(dir.path());
        let payload = files::write(&queued_dir, &[("payload", &[b"x".as_slice()])]).expect("file");
        let old = |id: &str, status: &str| ExecutionRecord {
            id: id.into(),
            process: "p".into(),
            status: status.into(),
            payload_path: payload[0].display().to_string(),
            queued_at: "2020-01-01T00:00:00Z".into(),
            ..ExecutionRecord::default()
        };
        let queued_row = store
            .insert_receipts(&[
                Receipt {
                    message: MessageRecord {
                        as2_from: "P".into(),
                        as2_to: "U".into(),
                        message_id: "<q@p>".into(),
                        disposition: "processed".into(),
                        mdn_mode: "sync".into(),
                        mdn_status: "sent".into(),
                        payload_path: Some(payload[0].display().to_string()),
                        received_at: "2020-01-01T00:00:00Z".into(),
                        ..MessageRecord::default()
                    },
                    execution: Some(old("e2", status::STARTED)),
                },
                Receipt {
                    message: MessageRecord {
                        message_id: "<f@p>".into(),
                        received_at: "2099-01-01T00:00:00Z".into(),
                        disposition: "processed".into(),
                        ..MessageRecord::default()
                    },
                    execution: Some(old("e1", status::STARTED)),
                },
            ])
            .expect("insert");
        assert_eq!(queued_row.len(), 2);
        let mut finished = old("e1", status::COMPLETE);
        finished.documents = vec![crate::store::KeptDocument {
            path: kept_doc.display().to_string(),
            size: 3,
            ..Default::default()
        }];
        store.update_executions(&[finished]).expect("finish");

        let removed = purge(&store, "2026-01-01T00:00:00Z").expect("purge");
        assert_eq!(
            removed, 5,
            "two messages with two files each, one kept document"
        );
        assert!(!kept_doc.exists() && !kept_doc.parent().expect("dir").exists());
        assert!(
            store.execution("e1").expect("read").is_none(),
            "finished execution purged"
        );
        assert!(
            store.execution("e2").expect("read").is_some(),
            "queued execution kept"
        );
        assert!(payload[0].is_file(), "its message's payload kept");
        for d in &gone {
            assert!(!d.exists(), "{} purged", d.display());
        }
        for d in &keep {
            assert!(d.join("payload").is_file(), "{} kept", d.display());
        }
        let left: Vec<String> = store
            .recent_messages(10)
            .expect("list")
            .into_iter()
            .map(|m| m.record.message_id)
            .collect();
        assert_eq!(
            left,
            vec![
                "<f@p>".to_string(),
                "<q@p>".to_string(),
                "<3@p>".to_string(),
                "<1@p>".to_string()
            ]
        );
    }

    /// Failed executions keep no documents; their batches returned no paths,
    /// which used to end the purge after the first batch of each interval.
    #[test]
    fn retention_purges_2000_failed_executions_in_one_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let receipts: Vec<Receipt> = (0..2000)
            .map(|i| Receipt {
                message: MessageRecord {
                    as2_from: "P".into(),
                    as2_to: "U".into(),
                    message_id: format!("<{i}@p>"),
                    disposition: "processed".into(),
                    mdn_mode: "sync".into(),
                    mdn_status: "sent".into(),
                    received_at: "2020-01-01T00:00:00Z".into(),
                    ..MessageRecord::default()
                },
                execution: Some(ExecutionRecord {
                    id: format!("e{i}"),
                    process: "p".into(),
                    status: status::STARTED.into(),
                    queued_at: "2020-01-01T00:00:00Z".into(),
                    queued_at_us: i,
                    ..ExecutionRecord::default()
                }),
            })
            .collect();
        store.insert_receipts(&receipts).expect("insert");
        let failed: Vec<ExecutionRecord> = receipts
            .into_iter()
            .filter_map(|r| r.execution)
            .enumerate()
            .map(|(i, mut e)| {
                // Every status that is final, failed ones above all.
                e.status = if i % 10 == 0 {
                    status::ABORTED
                } else {
                    status::ERROR
                }
                .into();
                e
            })
            .collect();
        store.update_executions(&failed).expect("fail them");
        let all = ExecutionFilter {
            limit: 10_000,
            ..ExecutionFilter::default()
        };
        assert_eq!(store.list_executions(&all).expect("list").len(), 2000);

        let removed = purge(&store, "2026-01-01T00:00:00Z").expect("purge");
        assert_eq!(removed, 0, "no files were kept");
        assert!(
            store.list_executions(&all).expect("list").is_empty(),
            "every failed execution purged in one pass"
        );
        assert!(
            store.recent_messages(10).expect("list").is_empty(),
            "and their messages"
        );
    }
}
