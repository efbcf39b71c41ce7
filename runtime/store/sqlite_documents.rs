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
//! small document into [`PendingDocuments`] under the next id and return
//! the reference `db:<id>`; `SqliteStore::commit_batch` takes the pending
//! documents its stored receipts and execution states reference and
//! inserts them into the `documents` table inside its transaction. A
//! receipt that is a duplicate, or a batch that fails, leaves nothing
//! behind (a failed batch's execution states keep theirs for the retry).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::documents::{Documents, Part, Staged};
use super::files::FileDocuments;
use super::{Result, StoreError};

/// Documents up to this size (a message's parts together) go into the
/// database; larger ones are files. Small enough that a batch of them is a
/// modest transaction, large enough for nearly all EDI messages.
pub const INLINE_LIMIT: usize = 256 * 1024;

/// The prefix of a reference to a document in the database.
const PREFIX: &str = "db:";

/// The id in a reference to a document in the database.
fn id_of(reference: &str) -> Option<i64> {
    reference.strip_prefix(PREFIX)?.parse().ok()
}

/// Documents staged or kept, not yet committed: id -> bytes.
pub struct PendingDocuments {
    documents: Mutex<HashMap<i64, Vec<u8>>>,
    /// The last id handed out. Ids grow (one writer: this process), so
    /// committed documents append to the table's B-tree instead of landing
    /// on random pages; ids of documents never committed are skipped.
    last_id: AtomicI64,
}

impl PendingDocuments {
    /// Hands out ids after `last_id`, the highest one stored.
    pub(super) fn after(last_id: i64) -> PendingDocuments {
        PendingDocuments {
            documents: Mutex::default(),
            last_id: AtomicI64::new(last_id),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Vec<u8>>> {
        self.documents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn put(&self, bytes: Vec<u8>) -> String {
        let id = self.last_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.lock().insert(id, bytes);
        format!("{PREFIX}{id}")
    }

    /// Takes the pending documents among `references` (others, such as
    /// files or documents already committed, are skipped).
    pub(super) fn take<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(i64, Vec<u8>)> {
        let mut pending = self.lock();
        references
            .into_iter()
            .filter_map(|reference| pending.remove_entry(&id_of(reference)?))
            .collect()
    }

    /// Puts back documents taken for a commit that failed.
    pub(super) fn restore(&self, documents: Vec<(i64, Vec<u8>)>) {
        self.lock().extend(documents);
    }

    fn get(&self, id: i64) -> Option<Vec<u8>> {
        self.lock().get(&id).cloned()
    }

    fn forget(&self, id: i64) -> bool {
        self.lock().remove(&id).is_some()
    }
}

/// Inserts committed documents inside the caller's transaction.
pub(super) fn insert_in(
    tx: &rusqlite::Transaction<'_>,
    documents: &[(i64, Vec<u8>)],
) -> Result<()> {
    let mut insert = tx
        .prepare_cached("INSERT INTO documents (id, data) VALUES (?1, ?2)")
        .map_err(|e| StoreError::sqlite("storing documents", &e))?;
    for (id, bytes) in documents {
        insert
            .execute(params![id, bytes])
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
    fn committed(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.lock()
            .query_row(
                "SELECT data FROM documents WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| StoreError::sqlite("reading document", &e))
    }

    fn inline(&self, id: i64) -> Result<Option<Vec<u8>>> {
        match self.pending.get(id) {
            Some(bytes) => Ok(Some(bytes)),
            None => self.committed(id),
        }
    }
}

impl Documents for SqliteDocuments {
    fn stage(&self, parts: &[Part<'_>]) -> Result<Staged> {
        let reading =
            |e: std::io::Error| StoreError::io("reading a document to store", &e, e.to_string());
        let mut size = 0u64;
        for part in parts {
            size += part.size().map_err(reading)?;
        }
        if size > INLINE_LIMIT as u64 {
            let staged = self.files.stage(parts)?;
            self.files_unsynced.store(true, Ordering::SeqCst);
            return Ok(staged);
        }
        let mut references = Vec::with_capacity(parts.len());
        for part in parts {
            references.push(self.pending.put(part.to_vec().map_err(reading)?));
        }
        Ok(Staged {
            group: references.join(" "),
            references,
        })
    }

    fn discard(&self, staged: &Staged) {
        if staged.references.iter().all(|r| r.starts_with(PREFIX)) {
            // Not committed, so still pending (or never stored at all).
            for id in staged.references.iter().filter_map(|r| id_of(r)) {
                self.pending.forget(id);
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

    fn length(&self, reference: &str) -> Result<u64> {
        match id_of(reference) {
            Some(_) => Ok(self.read(reference)?.len() as u64),
            None => self.files.length(reference),
        }
    }

    fn keep_stored(&self, execution_id: &str, index: usize, reference: &str) -> Result<String> {
        if id_of(reference).is_some() {
            // Inline, so at most 256 KiB.
            return self.keep(execution_id, index, &self.read(reference)?);
        }
        let kept = self.files.keep_stored(execution_id, index, reference)?;
        self.files_unsynced.store(true, Ordering::SeqCst);
        Ok(kept)
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
        if !reference.starts_with(PREFIX) {
            return self.files.read(reference);
        }
        match id_of(reference) {
            Some(id) => self.inline(id)?.ok_or_else(|| {
                StoreError::new(
                    "reading document",
                    format!("{reference}: no such document (purged by retention?)"),
                )
            }),
            None => Err(StoreError::new(
                "reading document",
                format!("{reference}: not a document reference"),
            )),
        }
    }

    /// A document in the database is small (at most [`INLINE_LIMIT`]):
    /// read whole; files are streamed.
    fn reader(&self, reference: &str) -> Result<Box<dyn std::io::Read + Send>> {
        if reference.starts_with(PREFIX) {
            return Ok(Box::new(std::io::Cursor::new(self.read(reference)?)));
        }
        self.files.reader(reference)
    }

    fn exists(&self, reference: &str) -> bool {
        match (reference.starts_with(PREFIX), id_of(reference)) {
            (true, Some(id)) => matches!(self.inline(id), Ok(Some(_))),
            (true, None) => false,
            (false, _) => self.files.exists(reference),
        }
    }

    fn ends_with(&self, reference: &str, tail: &[u8]) -> Option<bool> {
        match (reference.starts_with(PREFIX), id_of(reference)) {
            (true, Some(id)) => self.inline(id).ok()?.map(|bytes| bytes.ends_with(tail)),
            (true, None) => None,
            (false, _) => self.files.ends_with(reference, tail),
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
                let pending = id_of(reference).is_some_and(|id| self.pending.forget(id));
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
                let mut delete = tx.prepare_cached("DELETE FROM documents WHERE id = ?1")?;
                for id in inline.iter().filter_map(|r| id_of(r)) {
                    deleted += delete.execute(params![id])?;
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
