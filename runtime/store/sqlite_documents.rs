//! Documents of one node: small ones inside the SQLite database, committed
//! in the same transaction as the rows that reference them; large ones as
//! files (`files.rs`), made durable by one `syncfs` before that commit.
//!
//! Why: a directory and two file creations per message, then a `syncfs`
//! per batch, were the largest cost of receiving small messages (ext4
//! inode allocation and metadata lookups led the kernel's share of a
//! profile). A small document now costs a row in the batch's transaction,
//! whose one WAL `fsync` makes rows and documents durable together: nothing
//! is acknowledged before it is synced, as before.
//!
//! How: [`SqliteDocuments::stage`] and [`SqliteDocuments::keep`] put a
//! small document into [`PendingDocuments`] under a fresh key and return
//! the reference `db:<key>`; `SqliteStore::commit_batch` takes the pending
//! documents its stored receipts and execution states reference and
//! inserts them into the `documents` table inside its transaction. A
//! receipt that is a duplicate, or a batch that fails, leaves nothing
//! behind (a failed batch's execution states keep theirs for the retry).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::documents::{Documents, Staged};
use super::files::FileDocuments;
use super::{Result, StoreError};

/// Documents up to this size (a message's parts together) go into the
/// database; larger ones are files. Small enough that a batch of them is a
/// modest transaction, large enough for nearly all EDI messages.
pub const INLINE_LIMIT: usize = 256 * 1024;

/// The prefix of a reference to a document in the database.
const PREFIX: &str = "db:";

/// Documents staged or kept, not yet committed: key -> bytes.
#[derive(Default)]
pub struct PendingDocuments {
    documents: Mutex<HashMap<String, Vec<u8>>>,
}

impl PendingDocuments {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.documents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn put(&self, bytes: Vec<u8>) -> String {
        let key = uuid::Uuid::new_v4().simple().to_string();
        self.lock().insert(key.clone(), bytes);
        format!("{PREFIX}{key}")
    }

    /// Takes the pending documents among `references` (others, such as
    /// files or documents already committed, are skipped).
    pub(super) fn take<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Vec<u8>)> {
        let mut pending = self.lock();
        references
            .into_iter()
            .filter_map(|reference| {
                let key = reference.strip_prefix(PREFIX)?;
                pending.remove_entry(key)
            })
            .collect()
    }

    /// Puts back documents taken for a commit that failed.
    pub(super) fn restore(&self, documents: Vec<(String, Vec<u8>)>) {
        self.lock().extend(documents);
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    fn forget(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }
}

/// Inserts committed documents inside the caller's transaction.
pub(super) fn insert_in(
    tx: &rusqlite::Transaction<'_>,
    documents: &[(String, Vec<u8>)],
) -> Result<()> {
    let mut insert = tx
        .prepare_cached("INSERT INTO documents (key, data) VALUES (?1, ?2)")
        .map_err(|e| StoreError::sqlite("storing documents", &e))?;
    for (key, bytes) in documents {
        insert
            .execute(params![key, bytes])
            .map_err(|e| StoreError::sqlite("storing documents", &e))?;
    }
    Ok(())
}

/// Small documents in the database, large ones as files.
pub struct SqliteDocuments {
    conn: Arc<Mutex<Connection>>,
    pending: Arc<PendingDocuments>,
    files: FileDocuments,
    /// Files were written since the last `syncfs`.
    files_unsynced: AtomicBool,
}

impl SqliteDocuments {
    pub(super) fn new(
        conn: Arc<Mutex<Connection>>,
        pending: Arc<PendingDocuments>,
        data_dir: &Path,
    ) -> SqliteDocuments {
        SqliteDocuments {
            conn,
            pending,
            files: FileDocuments::new(data_dir),
            files_unsynced: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A committed document's bytes, `None` when there is none.
    fn committed(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.lock()
            .query_row(
                "SELECT data FROM documents WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| StoreError::sqlite("reading document", &e))
    }

    fn inline(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(bytes) => Ok(Some(bytes)),
            None => self.committed(key),
        }
    }
}

impl Documents for SqliteDocuments {
    fn stage(&self, parts: &[(&str, &[&[u8]])]) -> Result<Staged> {
        let size: usize = parts
            .iter()
            .flat_map(|(_, chunks)| chunks.iter().map(|c| c.len()))
            .sum();
        if size > INLINE_LIMIT {
            let staged = self.files.stage(parts)?;
            self.files_unsynced.store(true, Ordering::SeqCst);
            return Ok(staged);
        }
        let references: Vec<String> = parts
            .iter()
            .map(|(_, chunks)| self.pending.put(chunks.concat()))
            .collect();
        Ok(Staged {
            group: references.join(" "),
            references,
        })
    }

    fn discard(&self, staged: &Staged) {
        if staged.references.iter().all(|r| r.starts_with(PREFIX)) {
            // Not committed, so still pending (or never stored at all).
            for reference in &staged.references {
                if let Some(key) = reference.strip_prefix(PREFIX) {
                    self.pending.forget(key);
                }
            }
        } else {
            self.files.discard(staged);
        }
    }

    fn keep(&self, execution_id: &str, index: usize, bytes: &[u8]) -> Result<String> {
        if bytes.len() > INLINE_LIMIT {
            let reference = self.files.keep(execution_id, index, bytes)?;
            self.files_unsynced.store(true, Ordering::SeqCst);
            return Ok(reference);
        }
        Ok(self.pending.put(bytes.to_vec()))
    }

    /// Syncs files written since the last call; documents in the database
    /// become durable with the commit that references them.
    fn make_durable(&self) -> Result<()> {
        // Cleared before the sync: a file written meanwhile sets it again,
        // and one written before is covered by this sync.
        if self.files_unsynced.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.files.make_durable() {
                self.files_unsynced.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
    }

    fn read(&self, reference: &str) -> Result<Vec<u8>> {
        match reference.strip_prefix(PREFIX) {
            Some(key) => self.inline(key)?.ok_or_else(|| {
                StoreError::new(
                    "reading document",
                    format!("{reference}: no such document (purged by retention?)"),
                )
            }),
            None => self.files.read(reference),
        }
    }

    fn exists(&self, reference: &str) -> bool {
        match reference.strip_prefix(PREFIX) {
            Some(key) => matches!(self.inline(key), Ok(Some(_))),
            None => self.files.exists(reference),
        }
    }

    fn ends_with(&self, reference: &str, tail: &[u8]) -> Option<bool> {
        match reference.strip_prefix(PREFIX) {
            Some(key) => self.inline(key).ok()?.map(|bytes| bytes.ends_with(tail)),
            None => self.files.ends_with(reference, tail),
        }
    }

    fn remove(&self, references: &[String]) -> usize {
        let (inline, files): (Vec<&String>, Vec<&String>) =
            references.iter().partition(|r| r.starts_with(PREFIX));
        let files: Vec<String> = files.into_iter().cloned().collect();
        let mut removed = self.files.remove(&files);
        // Kept but never committed: only in memory.
        let inline: Vec<&String> = inline
            .into_iter()
            .filter(|reference| {
                let pending = reference
                    .strip_prefix(PREFIX)
                    .is_some_and(|key| self.pending.forget(key));
                removed += usize::from(pending);
                !pending
            })
            .collect();
        if inline.is_empty() {
            return removed;
        }
        let mut conn = self.lock();
        let outcome = (|| {
            let tx = conn.transaction()?;
            let mut deleted = 0;
            {
                let mut delete = tx.prepare_cached("DELETE FROM documents WHERE key = ?1")?;
                for reference in &inline {
                    if let Some(key) = reference.strip_prefix(PREFIX) {
                        deleted += delete.execute(params![key])?;
                    }
                }
            }
            tx.commit().map(|()| deleted)
        })();
        match outcome {
            Ok(deleted) => removed + deleted,
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot remove documents from the database");
                removed
            }
        }
    }

    /// Nothing to sweep in the database: its documents are inserted only
    /// with the rows that reference them. Files: see `FileDocuments`.
    fn sweep_unreferenced(&self, older_than: std::time::Duration) -> Result<usize> {
        self.files.sweep_unreferenced(older_than)
    }
}
