//! [`Documents`] in PostgreSQL: a `documents` row per document and its
//! bytes in `document_chunks` rows of [`CHUNK`] bytes (the last one
//! shorter), so that no document is ever one value in memory. References
//! are `pg:<document id>`.
//!
//! Writing: one transaction per message (or kept document) with
//! `SET LOCAL synchronous_commit = off`, the chunks sent with
//! `COPY .. FROM STDIN (FORMAT binary)`. The calling thread cuts the
//! caller's slices into chunks and hands them to the task one at a time,
//! waiting for each to be written: one chunk in flight, beside the
//! caller's own data.
//!
//! Reading: a query per chunk, by primary key, so a 64 MiB document
//! crosses in 64 pieces; `ends_with` reads only the chunks that hold the
//! tail.

use std::sync::mpsc;
use std::sync::Arc;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::super::documents::{Documents, Part, Piece, Staged};
use super::super::{Result, StoreError, StoreErrorKind};
use super::{err, to_i64, Connections, Shared, OPERATION_LIMIT};

/// Bytes per chunk row.
pub const CHUNK: usize = 1024 * 1024;

const PREFIX: &str = "pg:";

/// Documents in the store's database; see [`super::PgStore::documents`].
pub struct PgDocuments {
    shared: Arc<Shared>,
    /// The highest document id the sweep has looked at: documents are
    /// looked at once each, not at every sweep. A restart looks at all
    /// again, which also finds those whose rows retention deleted just
    /// before a crash.
    swept_to: std::sync::atomic::AtomicI64,
}

/// What the writing task tells the calling thread.
enum Written {
    /// The chunk handed over is written; send the next.
    Chunk,
    /// The transaction ended: the documents' ids, or why not.
    Done(Result<Vec<i64>>),
}

/// Parses a reference; `None` when it is not one of ours.
fn document_id(reference: &str) -> Option<i64> {
    reference.strip_prefix(PREFIX)?.parse().ok()
}

fn not_ours(context: &str, reference: &str) -> StoreError {
    StoreError::new(context, format!("{reference}: not a PostgreSQL document"))
}

/// How many chunks a document of `size` bytes has.
fn chunks_of(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

impl PgDocuments {
    pub(super) fn new(shared: Arc<Shared>) -> PgDocuments {
        PgDocuments {
            shared,
            swept_to: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Writes `parts` as documents of `group` in one transaction; their
    /// ids in order.
    fn write(&self, group: &str, parts: &[Part<'_>]) -> Result<Vec<i64>> {
        const CONTEXT: &str = "writing documents";
        let reading = |e: std::io::Error| StoreError::io(CONTEXT, &e, e.to_string());
        let mut meta: Vec<(String, u64)> = Vec::with_capacity(parts.len());
        for part in parts {
            meta.push((part.name.to_string(), part.size().map_err(reading)?));
        }
        let (feed, chunks) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let (reply, answers) = mpsc::channel::<Written>();
        let task = write_task(
            self.shared.connections.clone(),
            group.to_string(),
            meta.clone(),
            chunks,
            reply,
        );
        self.shared.spawn(CONTEXT, task)?;
        let wait = |answers: &mpsc::Receiver<Written>| {
            answers.recv_timeout(OPERATION_LIMIT).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => StoreError::of_kind(
                    StoreErrorKind::Busy,
                    CONTEXT,
                    format!(
                        "no answer from PostgreSQL within {} s",
                        OPERATION_LIMIT.as_secs()
                    ),
                ),
                mpsc::RecvTimeoutError::Disconnected => super::stopped(CONTEXT),
            })
        };
        // Cut every part into chunks (the task counts them the same way).
        let mut buffer: Vec<u8> = Vec::new();
        let send = |buffer: &mut Vec<u8>| -> Option<Result<Vec<i64>>> {
            let chunk = std::mem::take(buffer);
            if feed.send(chunk).is_err() {
                // The task ended early: its answer says why.
                return Some(loop {
                    match wait(&answers) {
                        Ok(Written::Chunk) => continue,
                        Ok(Written::Done(outcome)) => break outcome,
                        Err(e) => break Err(e),
                    }
                });
            }
            match wait(&answers) {
                Ok(Written::Chunk) => None,
                Ok(Written::Done(outcome)) => Some(outcome.and_then(|_| {
                    Err(StoreError::new(CONTEXT, "the writer ended before the data"))
                })),
                Err(e) => Some(Err(e)),
            }
        };
        // Set when the task ended early; stops the reading of the parts.
        let mut ended: Option<Result<Vec<i64>>> = None;
        let stop = || std::io::Error::other("the document writer ended");
        for (part, (_, size)) in parts.iter().zip(&meta) {
            let mut sent = 0u64;
            let fed = part.for_each_chunk(|slice| {
                let mut rest: &[u8] = slice;
                while !rest.is_empty() {
                    if buffer.capacity() == 0 {
                        buffer.reserve_exact(CHUNK);
                    }
                    let take = rest.len().min(CHUNK - buffer.len());
                    buffer.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    sent += take as u64;
                    if buffer.len() == CHUNK {
                        if let Some(outcome) = send(&mut buffer) {
                            ended = Some(outcome);
                            return Err(stop());
                        }
                    }
                }
                Ok(())
            });
            if let Some(outcome) = ended.take() {
                return outcome;
            }
            fed.map_err(reading)?;
            if sent != *size {
                // A file changed under us: the chunk count would not match.
                return Err(StoreError::new(
                    CONTEXT,
                    format!("document {} changed while it was stored", part.name),
                ));
            }
            if !buffer.is_empty() {
                if let Some(ended) = send(&mut buffer) {
                    return ended;
                }
            }
        }
        match wait(&answers)? {
            Written::Done(outcome) => outcome,
            Written::Chunk => Err(StoreError::new(CONTEXT, "the writer wrote too much")),
        }
    }

    /// The size of a document; `None` when it is not there.
    fn size(&self, id: i64) -> Result<Option<u64>> {
        self.shared.run("reading document", move |c| async move {
            let client = c.get().await?;
            let row = client
                .query_opt("SELECT size FROM documents WHERE id = $1", &[&id])
                .await
                .map_err(err("reading document"))?;
            Ok(row.map(|row| row.get::<_, i64>(0).max(0) as u64))
        })
    }

    /// A document's reader, and its size.
    fn open(&self, reference: &str) -> Result<(ChunkReader, u64)> {
        let id = document_id(reference).ok_or_else(|| not_ours("reading document", reference))?;
        let size = self.size(id)?.ok_or_else(|| {
            StoreError::new("reading document", format!("{reference}: no such document"))
        })?;
        let reader = ChunkReader {
            documents: PgDocuments::new(self.shared.clone()),
            id,
            chunks: chunks_of(size),
            next: 0,
            chunk: std::io::Cursor::new(Vec::new()),
        };
        Ok((reader, size))
    }

    /// Chunk `seq` of a document.
    fn chunk(&self, id: i64, seq: u64) -> Result<Vec<u8>> {
        let seq = i32::try_from(seq)
            .map_err(|_| StoreError::new("reading document", "document too large"))?;
        self.shared.run("reading document", move |c| async move {
            let client = c.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT data FROM document_chunks WHERE document_id = $1 AND seq = $2",
                )
                .await
                .map_err(err("reading document"))?;
            match client
                .query_opt(&statement, &[&id, &seq])
                .await
                .map_err(err("reading document"))?
            {
                Some(row) => Ok(row.get(0)),
                None => Err(StoreError::new(
                    "reading document",
                    format!("{PREFIX}{id}: chunk {seq} is missing (removed while read?)"),
                )),
            }
        })
    }
}

/// A document read one chunk (1 MiB) at a time.
struct ChunkReader {
    documents: PgDocuments,
    id: i64,
    chunks: u64,
    next: u64,
    chunk: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.chunk.read(buf)?;
            if n > 0 || buf.is_empty() || self.next == self.chunks {
                return Ok(n);
            }
            let bytes = self
                .documents
                .chunk(self.id, self.next)
                .map_err(std::io::Error::other)?;
            self.next += 1;
            self.chunk = std::io::Cursor::new(bytes);
        }
    }
}

/// The writing side of [`PgDocuments::write`], on the runtime.
async fn write_task(
    connections: Connections,
    group: String,
    meta: Vec<(String, u64)>,
    mut chunks: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    reply: mpsc::Sender<Written>,
) {
    let outcome = async {
        let mut client = connections.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(err("writing documents"))?;
        // Durable with the next synchronous commit: see the module of
        // `PgStore`, and `make_durable`.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(err("writing documents"))?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO documents (group_key, name, size) VALUES ($1, $2, $3) RETURNING id",
            )
            .await
            .map_err(err("writing documents"))?;
        let mut ids = Vec::with_capacity(meta.len());
        for (name, size) in &meta {
            let row = tx
                .query_one(&insert, &[&group, name, &to_i64(*size)])
                .await
                .map_err(err("writing documents"))?;
            ids.push(row.get::<_, i64>(0));
        }
        if meta.iter().any(|(_, size)| *size > 0) {
            let sink = tx
                .copy_in("COPY document_chunks (document_id, seq, data) FROM STDIN (FORMAT binary)")
                .await
                .map_err(err("writing documents"))?;
            let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT4, Type::BYTEA]);
            let mut writer = std::pin::pin!(writer);
            for (id, (_, size)) in ids.iter().zip(&meta) {
                for seq in 0..chunks_of(*size) {
                    let Some(chunk) = chunks.recv().await else {
                        return Err(StoreError::new(
                            "writing documents",
                            "the caller stopped sending",
                        ));
                    };
                    let seq = i32::try_from(seq)
                        .map_err(|_| StoreError::new("writing documents", "document too large"))?;
                    let row: [&(dyn ToSql + Sync); 3] = [id, &seq, &chunk];
                    writer
                        .as_mut()
                        .write(&row)
                        .await
                        .map_err(err("writing documents"))?;
                    drop(chunk);
                    let _ = reply.send(Written::Chunk);
                }
            }
            writer
                .as_mut()
                .finish()
                .await
                .map_err(err("writing documents"))?;
        }
        tx.commit().await.map_err(err("writing documents"))?;
        Ok(ids)
    }
    .await;
    let _ = reply.send(Written::Done(outcome));
}

impl Documents for PgDocuments {
    fn stage(&self, parts: &[Part<'_>]) -> Result<Staged> {
        let group = format!("message/{}", uuid::Uuid::new_v4().simple());
        let ids = self.write(&group, parts)?;
        Ok(Staged {
            references: ids.iter().map(|id| format!("{PREFIX}{id}")).collect(),
            group,
        })
    }

    fn discard(&self, staged: &Staged) {
        let group = staged.group.clone();
        let outcome = self.shared.run("discarding documents", |c| async move {
            let client = c.get().await?;
            client
                .execute("DELETE FROM documents WHERE group_key = $1", &[&group])
                .await
                .map_err(err("discarding documents"))
        });
        if let Err(e) = outcome {
            tracing::warn!(group = %staged.group, error = %e, "cannot remove the documents of an unstored message");
        }
    }

    fn keep(&self, execution_id: &str, index: usize, bytes: &[u8]) -> Result<String> {
        let group = format!("execution/{execution_id}");
        let name = format!("document-{}", index + 1);
        let ids = self.write(&group, &[Part::new(&name, vec![Piece::Bytes(bytes)])])?;
        Ok(ids
            .first()
            .map(|id| format!("{PREFIX}{id}"))
            .unwrap_or_default())
    }

    fn length(&self, reference: &str) -> Result<u64> {
        let id = document_id(reference).ok_or_else(|| not_ours("reading document", reference))?;
        self.size(id)?.ok_or_else(|| {
            StoreError::new("reading document", format!("{reference} is not stored"))
        })
    }

    /// Copied inside PostgreSQL, chunk rows and all: nothing passes
    /// through this process.
    fn keep_stored(&self, execution_id: &str, index: usize, reference: &str) -> Result<String> {
        const CONTEXT: &str = "keeping a document";
        let source = document_id(reference).ok_or_else(|| not_ours(CONTEXT, reference))?;
        let group = format!("execution/{execution_id}");
        let name = format!("document-{}", index + 1);
        let id = self.shared.run(CONTEXT, move |c| async move {
            let mut client = c.get().await?;
            let tx = client.transaction().await.map_err(err(CONTEXT))?;
            // Durable with the next synchronous commit, like `write`.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(err(CONTEXT))?;
            let row = tx
                .query_opt(
                    "INSERT INTO documents (group_key, name, size) \
                     SELECT $1, $2, size FROM documents WHERE id = $3 RETURNING id",
                    &[&group, &name, &source],
                )
                .await
                .map_err(err(CONTEXT))?
                .ok_or_else(|| {
                    StoreError::new(CONTEXT, format!("document {source} is not stored"))
                })?;
            let id: i64 = row.get(0);
            tx.execute(
                "INSERT INTO document_chunks (document_id, seq, data) \
                 SELECT $1, seq, data FROM document_chunks WHERE document_id = $2",
                &[&id, &source],
            )
            .await
            .map_err(err(CONTEXT))?;
            tx.commit().await.map_err(err(CONTEXT))?;
            Ok(id)
        })?;
        Ok(format!("{PREFIX}{id}"))
    }

    /// Nothing to do. Documents are committed (with `synchronous_commit =
    /// off`) before `stage` or `keep` returns, so their commit records are
    /// in the WAL before that of any row referencing them; the group
    /// committer then commits those rows with `synchronous_commit = on`,
    /// which flushes the WAL up to its own commit record, and so past the
    /// documents'. (With synchronous replication the standby receives the
    /// WAL in the same order.) If that commit fails, the documents may be
    /// lost in a crash, but no committed row references them.
    fn make_durable(&self) -> Result<()> {
        Ok(())
    }

    fn read(&self, reference: &str) -> Result<Vec<u8>> {
        let (mut reader, size) = self.open(reference)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        std::io::Read::read_to_end(&mut reader, &mut bytes)
            .map_err(|e| StoreError::new("reading document", e))?;
        if bytes.len() as u64 != size {
            return Err(StoreError::new(
                "reading document",
                format!("{reference}: {} bytes, expected {size}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    fn reader(&self, reference: &str) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(self.open(reference)?.0))
    }

    fn exists(&self, reference: &str) -> bool {
        let Some(id) = document_id(reference) else {
            return false;
        };
        match self.size(id) {
            Ok(size) => size.is_some(),
            Err(e) => {
                tracing::warn!(reference, error = %e, "cannot tell whether a document exists");
                false
            }
        }
    }

    fn ends_with(&self, reference: &str, tail: &[u8]) -> Option<bool> {
        let id = document_id(reference)?;
        let size = self.size(id).ok()??;
        let Some(start) = size.checked_sub(tail.len() as u64) else {
            return Some(false);
        };
        let mut rest = tail;
        let mut offset = start;
        for seq in start / CHUNK as u64..chunks_of(size) {
            if rest.is_empty() {
                break;
            }
            let chunk = self.chunk(id, seq).ok()?;
            let from = (offset - seq * CHUNK as u64) as usize;
            let part = chunk.get(from..)?;
            let take = part.len().min(rest.len());
            if part[..take] != rest[..take] {
                return Some(false);
            }
            rest = &rest[take..];
            offset += take as u64;
        }
        Some(rest.is_empty())
    }

    fn remove(&self, references: &[String]) -> usize {
        let ids: Vec<i64> = references
            .iter()
            .filter_map(|reference| {
                let id = document_id(reference);
                if id.is_none() {
                    tracing::warn!(reference, "retention: not a PostgreSQL document");
                }
                id
            })
            .collect();
        if ids.is_empty() {
            return 0;
        }
        let outcome = self.shared.run("removing documents", |c| async move {
            let client = c.get().await?;
            client
                .execute("DELETE FROM documents WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(err("removing documents"))
        });
        match outcome {
            Ok(removed) => removed as usize,
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot remove documents");
                0
            }
        }
    }

    fn sweep_unreferenced(&self, older_than: std::time::Duration) -> Result<usize> {
        use std::sync::atomic::Ordering;
        let seconds = older_than.as_secs_f64();
        let mut cursor = self.swept_to.load(Ordering::Relaxed);
        let mut removed = 0usize;
        loop {
            let (last, gone) =
                self.shared
                    .run("sweeping unreferenced documents", |c| async move {
                        let client = c.get().await?;
                        let row = client
                            .query_one(SWEEP, &[&cursor, &seconds, &SWEEP_BATCH])
                            .await
                            .map_err(err("sweeping unreferenced documents"))?;
                        Ok((row.get::<_, Option<i64>>(0), row.get::<_, i64>(1)))
                    })?;
            removed += usize::try_from(gone).unwrap_or(0);
            match last {
                Some(last) => {
                    cursor = last;
                    self.swept_to.store(last, Ordering::Relaxed);
                }
                None => return Ok(removed),
            }
        }
    }
}

/// Documents looked at per sweep statement.
const SWEEP_BATCH: i64 = 1000;

/// One sweep step over the next [`SWEEP_BATCH`] documents after `$1` old
/// enough (`$2` seconds): a message's documents are referenced when a
/// message row names the first of its group (the raw request; the index
/// `messages_raw_path` finds it), a kept document when its execution's
/// row lists it. Returns the last id looked at (NULL: done) and how many
/// were removed.
const SWEEP: &str = "WITH batch AS (
        SELECT id, group_key FROM documents
        WHERE id > $1 AND created < now() - make_interval(secs => $2)
        ORDER BY id LIMIT $3
    ), unreferenced AS (
        SELECT b.id FROM batch b
        WHERE (b.group_key LIKE 'message/%' AND NOT EXISTS (
                SELECT 1 FROM messages m WHERE m.raw_path = 'pg:' ||
                    (SELECT min(d.id) FROM documents d WHERE d.group_key = b.group_key)))
           OR (b.group_key LIKE 'execution/%' AND NOT EXISTS (
                SELECT 1 FROM executions e WHERE e.id = substr(b.group_key, 11)
                    AND strpos(e.documents, '\"path\":\"pg:' || b.id || '\"') > 0))
    ), gone AS (
        DELETE FROM documents WHERE id IN (SELECT id FROM unreferenced) RETURNING id
    )
    SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM gone)";
