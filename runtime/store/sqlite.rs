//! The embedded store: SQLite (bundled) in WAL mode with `synchronous=FULL`,
//! so a committed row survives power loss. One connection behind a mutex:
//! writes are short, and the callers run on blocking threads.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::outbox::{NewOutbound, OutboxFilter, OutboxRow, OutboxUpdate};
use super::search::{self, ordered_counts, Dialect, Value, MINUTE_CHARS};
use super::sqlite_documents::{PendingDocuments, SqliteDocuments};
use super::{
    Activity, Committed, DuplicateWindow, ExecutionFilter, ExecutionRecord, MessageRecord,
    MessageRow, MessageSearch, PendingMdn, Receipt, Result, Store, StoreError, StoredReceipt,
};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Small documents staged for the next commits (see `sqlite_documents.rs`).
    pending: Arc<PendingDocuments>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    listener TEXT,
    as2_from TEXT NOT NULL,
    as2_to TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    file_name TEXT,
    mime_type TEXT,
    request_size INTEGER NOT NULL,
    payload_size INTEGER,
    encryption TEXT,
    signature TEXT,
    compression TEXT,
    mic TEXT,
    disposition TEXT NOT NULL,
    mdn_mode TEXT NOT NULL,
    mdn_status TEXT NOT NULL,
    mdn_url TEXT,
    mdn_headers TEXT NOT NULL,
    mdn_body BLOB NOT NULL,
    raw_path TEXT,
    payload_path TEXT,
    error TEXT,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    message_row INTEGER NOT NULL,
    process TEXT NOT NULL,
    version TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    properties TEXT NOT NULL,
    payload_path TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    queued_at_us INTEGER NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    finished_at_us INTEGER,
    engine_us INTEGER,
    instantiate_us INTEGER,
    input_documents INTEGER NOT NULL,
    input_bytes INTEGER NOT NULL,
    output_documents INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,
    error TEXT,
    log TEXT NOT NULL,
    documents TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status);
CREATE INDEX IF NOT EXISTS executions_process ON executions (process, queued_at_us);
CREATE TABLE IF NOT EXISTS listener_state (
    listener TEXT PRIMARY KEY,
    paused INTEGER NOT NULL
);
";

/// Schema changes after the first release, in order; `PRAGMA user_version`
/// counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the duplicate index. `holds_id` = 1 marks the accepted message that
    // owns its (AS2-From, Message-ID); a unique index makes a second owner
    // impossible, whatever the concurrency. The newest accepted copy of each
    // pair logged before this version becomes its owner.
    "ALTER TABLE messages ADD COLUMN holds_id INTEGER;
     UPDATE messages SET holds_id = 1 WHERE id IN
        (SELECT MAX(id) FROM messages WHERE error IS NULL GROUP BY as2_from, message_id);
     CREATE UNIQUE INDEX messages_receipt_key ON messages (as2_from, message_id) WHERE holds_id = 1;
     CREATE INDEX messages_partner_window ON messages (listener, as2_from, id) WHERE holds_id = 1;
     CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL);",
    // 2: why an asynchronous MDN target was refused.
    "ALTER TABLE messages ADD COLUMN mdn_error TEXT;",
    // 3: leases on executions: who holds one, until when, and an epoch
    // that fences the states of a holder whose work was taken over.
    // Unfinished rows from before have no owner: claimable at once.
    "ALTER TABLE executions ADD COLUMN owner TEXT;
     ALTER TABLE executions ADD COLUMN lease_until_us INTEGER;
     ALTER TABLE executions ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX executions_unfinished ON executions (lease_until_us)
        WHERE status IN ('STARTED', 'INPROCESS');
     ALTER TABLE messages ADD COLUMN mdn_owner TEXT;
     ALTER TABLE messages ADD COLUMN mdn_lease_until_us INTEGER;
     ALTER TABLE messages ADD COLUMN mdn_lease_epoch INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX messages_mdn_outbox ON messages (mdn_lease_until_us)
        WHERE mdn_mode = 'async' AND mdn_status = 'pending';",
    // 4: restarts asked per listener, followed by every node.
    "ALTER TABLE listener_state ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;",
    // 5: the nodes and their heartbeats.
    "CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        incarnation TEXT NOT NULL,
        address TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        heartbeat_at_us INTEGER NOT NULL,
        running INTEGER NOT NULL,
        held INTEGER NOT NULL,
        state TEXT NOT NULL
    );",
    // 6: deployed bundles, shared by the nodes of a Molecule.
    "CREATE TABLE bundle_files (
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        path TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (name, hash, path)
    );
    CREATE TABLE bundle_heads (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        withdrawn INTEGER NOT NULL,
        published_by TEXT NOT NULL,
        published_at TEXT NOT NULL
    );",
    // 7: small documents, committed with the rows that reference them.
    "CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );",
    // 8: the first schema's look-up index, unused since `messages_receipt_key`
    // (1) answers every duplicate check: one random B-tree page less to
    // write per message.
    "DROP INDEX IF EXISTS messages_dedupe;",
    // 9: the outbox of `as2` steps (see `outbox.rs`).
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        execution_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        document INTEGER NOT NULL,
        process TEXT NOT NULL,
        partner TEXT NOT NULL,
        as2_from TEXT NOT NULL,
        as2_to TEXT NOT NULL,
        message_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        file_name TEXT,
        payload BLOB,
        payload_ref TEXT,
        size INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        first_attempt_at_us INTEGER,
        last_attempt_at TEXT,
        next_attempt_at TEXT,
        last_error TEXT,
        mic TEXT,
        mdn_disposition TEXT,
        mdn BLOB,
        UNIQUE (execution_id, step, document)
    );
    CREATE INDEX outbox_message_id ON outbox (message_id);",
    // 10: the keeper claims asynchronous MDNs in id order every second; the
    // index by lease end did not serve that order, so SQLite scanned the
    // whole messages table each time (50 ms at 50,000 rows, growing).
    "DROP INDEX IF EXISTS messages_mdn_outbox;
     CREATE INDEX messages_mdn_pending ON messages (id)
        WHERE mdn_mode = 'async' AND mdn_status = 'pending';",
    // 11: searching the message log (`search.rs`), a page of the newest
    // matches from an index for every filter: SQLite ends each index with
    // the row id, so `col = ? AND id < ? ORDER BY id DESC` walks one index
    // backwards, and a prefix or date range reads ids from its index alone.
    // Errors are few: a partial index by id. One B-tree insert per index per
    // message on the receive path, hence no more than one per filter (a rare
    // MIME type, or one never received, would read the whole table).
    "CREATE INDEX messages_from ON messages (as2_from);
     CREATE INDEX messages_to ON messages (as2_to);
     CREATE INDEX messages_message_id ON messages (message_id);
     CREATE INDEX messages_subject ON messages (subject);
     CREATE INDEX messages_file_name ON messages (file_name);
     CREATE INDEX messages_mime_type ON messages (mime_type);
     CREATE INDEX messages_received_at ON messages (received_at);
     CREATE INDEX messages_errors ON messages (id) WHERE disposition <> 'processed';",
];

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(err("reading the schema version"))?
        .try_into()
        .unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::new(
            "opening",
            format!(
                "atom.db has schema version {applied}, newer than this Atom knows ({}); run a newer Atom",
                MIGRATIONS.len()
            ),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(err("starting a migration"))?;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::new("migrating the schema", format!("step {}: {e}", index + 1))
        })?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(err("recording the schema version"))?;
        tx.commit().map_err(err("committing a migration"))?;
    }
    Ok(())
}

fn err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::sqlite(context, &e)
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/atom.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::io(
                "creating data directory",
                &e,
                format!("{}: {e}", data_dir.display()),
            )
        })?;
        let path = data_dir.join("atom.db");
        let conn = Connection::open(&path).map_err(|e| StoreError {
            message: format!("{}: {e}", path.display()),
            ..StoreError::sqlite("opening", &e)
        })?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(err("configuring SQLite"))?;
        let mut conn = conn;
        conn.execute_batch(SCHEMA).map_err(err("creating schema"))?;
        migrate(&mut conn)?;
        let last_document: i64 = conn
            .query_row("SELECT coalesce(max(id), 0) FROM documents", [], |r| {
                r.get(0)
            })
            .map_err(err("reading the last document id"))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            pending: Arc::new(PendingDocuments::after(last_document)),
        })
    }

    /// The documents of this store: small ones in the database, larger
    /// ones as files under `data_dir`.
    pub fn documents(&self, data_dir: &Path) -> SqliteDocuments {
        SqliteDocuments::new(self.conn.clone(), self.pending.clone(), data_dir)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (it rolls back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Columns: id, mdn_mode, mdn_url, mdn_headers, mdn_body, raw_path, listener.
fn row_to_receipt(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceipt> {
    let headers: String = row.get(3)?;
    Ok(StoredReceipt {
        record_id: row.get(0)?,
        mdn_mode: row.get(1)?,
        mdn_url: row.get(2)?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        body: row.get(4)?,
        raw_path: row.get(5)?,
        listener: row.get(6)?,
    })
}

const RECEIPT_COLUMNS: &str = "id, mdn_mode, mdn_url, mdn_headers, mdn_body, raw_path, listener";

/// Asynchronous MDNs this node may claim (its own earlier ones at start,
/// or any whose lease expired), oldest first. Run every second by the lease
/// keeper: it must read the `messages_mdn_pending` index, not the table.
fn claim_mdns_sql() -> String {
    format!(
        "SELECT {RECEIPT_COLUMNS}, mdn_lease_epoch FROM messages
         WHERE mdn_mode = 'async' AND mdn_status = 'pending'
           AND ((?2 AND mdn_owner = ?3)
                OR ((mdn_owner IS NULL OR mdn_owner != ?3)
                    AND (mdn_lease_until_us IS NULL OR mdn_lease_until_us < ?1)))
         ORDER BY id"
    )
}

/// Executions this node may claim, as [`claim_mdns_sql`] for MDNs.
const CLAIM_EXECUTIONS_SQL: &str =
    "SELECT * FROM executions WHERE status IN ('STARTED', 'INPROCESS')
       AND ((?2 AND owner = ?3)
            OR ((owner IS NULL OR owner != ?3)
                AND (lease_until_us IS NULL OR lease_until_us < ?1)))
     ORDER BY queued_at_us";

/// The receipt holding (AS2-From, Message-ID), if it is inside `window`
/// for `listener`: not older than the window's days, and fewer than its
/// count of the partner's accepted receipts logged since.
fn receipt_in_window(
    conn: &Connection,
    listener: &str,
    as2_from: &str,
    message_id: &str,
    window: DuplicateWindow,
) -> Result<Option<(StoredReceipt, bool)>> {
    let held = conn
        .prepare_cached(&format!(
            "SELECT {RECEIPT_COLUMNS}, received_at FROM messages
             WHERE as2_from = ?1 AND message_id = ?2 AND holds_id = 1"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![as2_from, message_id], |row| {
                Ok((row_to_receipt(row)?, row.get::<_, String>(7)?))
            })
            .optional()
        })
        .map_err(err("looking up duplicates"))?;
    let Some((receipt, received_at)) = held else {
        return Ok(None);
    };
    let oldest = crate::store::retention::cutoff(window.days);
    let mut inside = received_at >= oldest;
    if inside {
        let limit = i64::try_from(window.count).unwrap_or(i64::MAX);
        // Counting stops at the window size: cheap even for a busy partner.
        let newer: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages
                 WHERE listener = ?1 AND as2_from = ?2 AND holds_id = 1 AND id > ?3 LIMIT ?4)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![listener, as2_from, receipt.record_id, limit], |r| {
                    r.get(0)
                })
            })
            .map_err(err("counting the duplicate window"))?;
        inside = newer < limit;
    }
    Ok(Some((receipt, inside)))
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let headers_json: String = row.get("mdn_headers")?;
    Ok(MessageRow {
        id: row.get("id")?,
        record: MessageRecord {
            listener: row.get("listener")?,
            as2_from: row.get("as2_from")?,
            as2_to: row.get("as2_to")?,
            message_id: row.get("message_id")?,
            subject: row.get("subject")?,
            file_name: row.get("file_name")?,
            mime_type: row.get("mime_type")?,
            request_size: row.get::<_, i64>("request_size")?.max(0) as u64,
            payload_size: row
                .get::<_, Option<i64>>("payload_size")?
                .map(|v| v.max(0) as u64),
            encryption: row.get("encryption")?,
            signature: row.get("signature")?,
            compression: row.get("compression")?,
            mic: row.get("mic")?,
            disposition: row.get("disposition")?,
            mdn_mode: row.get("mdn_mode")?,
            mdn_status: row.get("mdn_status")?,
            mdn_url: row.get("mdn_url")?,
            mdn_error: row.get("mdn_error")?,
            mdn_owner: row.get("mdn_owner")?,
            mdn_lease_until_us: row.get("mdn_lease_until_us")?,
            mdn_headers: serde_json::from_str(&headers_json).unwrap_or_default(),
            mdn_body: row.get("mdn_body")?,
            raw_path: row.get("raw_path")?,
            payload_path: row.get("payload_path")?,
            error: row.get("error")?,
            received_at: row.get("received_at")?,
            dedupe: None,
        },
    })
}

fn row_to_execution(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let documents: String = row.get("documents")?;
    let non_negative = |v: i64| v.max(0) as u64;
    Ok(ExecutionRecord {
        id: row.get("id")?,
        message_row: row.get("message_row")?,
        process: row.get("process")?,
        version: row.get("version")?,
        mode: row.get("mode")?,
        status: row.get("status")?,
        attempts: row.get("attempts")?,
        properties_json: row.get("properties")?,
        payload_path: row.get("payload_path")?,
        queued_at: row.get("queued_at")?,
        queued_at_us: row.get("queued_at_us")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        finished_at_us: row.get("finished_at_us")?,
        engine_us: row.get("engine_us")?,
        instantiate_us: row.get("instantiate_us")?,
        input_documents: row.get("input_documents")?,
        input_bytes: non_negative(row.get("input_bytes")?),
        output_documents: row.get("output_documents")?,
        output_bytes: non_negative(row.get("output_bytes")?),
        error: row.get("error")?,
        log: row.get("log")?,
        documents: serde_json::from_str(&documents).unwrap_or_default(),
        owner: row.get("owner")?,
        lease_until_us: row.get("lease_until_us")?,
        lease_epoch: row.get("lease_epoch")?,
    })
}

/// Logs messages with their queued executions inside `tx`; outcomes in
/// order. An accepted message with a duplicate window claims its
/// (AS2-From, Message-ID) here, in the transaction, so that of two copies
/// only one can ever be logged.
fn insert_receipts_in(
    tx: &rusqlite::Transaction<'_>,
    receipts: &[Receipt],
) -> Result<Vec<Committed>> {
    let mut outcomes = Vec::with_capacity(receipts.len());
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO messages (listener, as2_from, as2_to, message_id, subject, file_name, mime_type,
                request_size, payload_size, encryption, signature, compression, mic, disposition, mdn_mode,
                mdn_status, mdn_url, mdn_headers, mdn_body, raw_path, payload_path, error, received_at, holds_id, mdn_error,
                mdn_owner, mdn_lease_until_us, mdn_lease_epoch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25,
                ?26, ?27, ?28)",
        )
        .map_err(err("logging message"))?;
    let mut queue = tx
        .prepare_cached(
            "INSERT INTO executions (id, message_row, process, version, mode, status, attempts, properties,
                payload_path, queued_at, queued_at_us, input_documents, input_bytes, output_documents,
                output_bytes, log, documents, owner, lease_until_us, lease_epoch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0, 0, '', '[]', ?14, ?15, ?16)",
        )
        .map_err(err("queueing execution"))?;
    for receipt in receipts {
        let r = &receipt.message;
        let claims = match r.dedupe {
            Some(window) if r.error.is_none() => {
                let listener = r.listener.as_deref().unwrap_or_default();
                match receipt_in_window(tx, listener, &r.as2_from, &r.message_id, window)? {
                    Some((original, true)) => {
                        outcomes.push(Committed::Duplicate(original));
                        continue;
                    }
                    Some((expired, false)) => {
                        // Outside the window: the new copy takes the key over.
                        tx.execute(
                            "UPDATE messages SET holds_id = NULL WHERE id = ?1",
                            params![expired.record_id],
                        )
                        .map_err(err("releasing an expired duplicate key"))?;
                        true
                    }
                    None => true,
                }
            }
            _ => false,
        };
        let headers = serde_json::to_string(&r.mdn_headers)
            .map_err(|e| StoreError::new("encoding MDN headers", e))?;
        stmt.execute(params![
            r.listener,
            r.as2_from,
            r.as2_to,
            r.message_id,
            r.subject,
            r.file_name,
            r.mime_type,
            i64::try_from(r.request_size).unwrap_or(i64::MAX),
            r.payload_size.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            r.encryption,
            r.signature,
            r.compression,
            r.mic,
            r.disposition,
            r.mdn_mode,
            r.mdn_status,
            r.mdn_url,
            headers,
            r.mdn_body,
            r.raw_path,
            r.payload_path,
            r.error,
            r.received_at,
            claims.then_some(1i64),
            r.mdn_error,
            r.mdn_owner,
            r.mdn_lease_until_us,
            i64::from(r.mdn_owner.is_some()),
        ])
        .map_err(err("logging message"))?;
        let row = tx.last_insert_rowid();
        outcomes.push(Committed::Stored(row));
        if let Some(e) = &receipt.execution {
            queue
                .execute(params![
                    e.id,
                    row,
                    e.process,
                    e.version,
                    e.mode,
                    e.status,
                    e.attempts,
                    e.properties_json,
                    e.payload_path,
                    e.queued_at,
                    e.queued_at_us,
                    e.input_documents,
                    i64::try_from(e.input_bytes).unwrap_or(i64::MAX),
                    e.owner,
                    e.lease_until_us,
                    e.lease_epoch,
                ])
                .map_err(err("queueing execution"))?;
        }
    }
    Ok(outcomes)
}

/// Writes execution states inside `tx`, each only under its own lease
/// epoch: a state from a holder whose work was taken over is dropped.
fn update_executions_in(
    tx: &rusqlite::Transaction<'_>,
    executions: &[ExecutionRecord],
) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "UPDATE executions SET version = ?2, mode = ?3, status = ?4, attempts = ?5, started_at = ?6,
                finished_at = ?7, finished_at_us = ?8, engine_us = ?9, instantiate_us = ?10,
                output_documents = ?11, output_bytes = ?12, error = ?13, log = ?14, documents = ?15
             WHERE id = ?1 AND lease_epoch = ?16",
        )
        .map_err(err("recording execution"))?;
    for e in executions {
        let documents = serde_json::to_string(&e.documents)
            .map_err(|x| StoreError::new("encoding documents", x))?;
        stmt.execute(params![
            e.id,
            e.version,
            e.mode,
            e.status,
            e.attempts,
            e.started_at,
            e.finished_at,
            e.finished_at_us,
            e.engine_us,
            e.instantiate_us,
            e.output_documents,
            i64::try_from(e.output_bytes).unwrap_or(i64::MAX),
            e.error,
            e.log,
            documents,
            e.lease_epoch,
        ])
        .map_err(err("recording execution"))
        .map(|changed| {
            if changed == 0 {
                tracing::warn!(execution = %e.id, epoch = e.lease_epoch, status = %e.status,
                    "execution state dropped: its lease was taken over (or it is gone)");
            }
        })?;
    }
    Ok(())
}

/// Runs `sql` (?1 id, ?2 node, ?3 epoch, ?4 new end) for each lease
/// `node` holds, in one transaction; returns the IDs it no longer holds.
fn renew_leases<K: rusqlite::ToSql + Clone>(
    conn: &mut Connection,
    sql: &str,
    node: &str,
    held: &[(K, i64)],
    until_us: i64,
) -> Result<Vec<K>> {
    let tx = conn.transaction().map_err(err("starting a renewal"))?;
    let mut lost = Vec::new();
    {
        let mut renew = tx.prepare_cached(sql).map_err(err("renewing leases"))?;
        for (id, epoch) in held {
            if renew
                .execute(params![id, node, epoch, until_us])
                .map_err(err("renewing leases"))?
                == 0
            {
                lost.push(id.clone());
            }
        }
    }
    tx.commit().map_err(err("committing a renewal"))?;
    Ok(lost)
}

/// Runs `sql` (?1 id, ?2 node, ?3 epoch) for each lease `node` gives up,
/// in one transaction.
fn release_leases<K: rusqlite::ToSql>(
    conn: &mut Connection,
    sql: &str,
    node: &str,
    held: &[(K, i64)],
) -> Result<()> {
    let tx = conn.transaction().map_err(err("starting a release"))?;
    {
        let mut release = tx.prepare_cached(sql).map_err(err("releasing leases"))?;
        for (id, epoch) in held {
            release
                .execute(params![id, node, epoch])
                .map_err(err("releasing leases"))?;
        }
    }
    tx.commit().map_err(err("committing a release"))
}

/// Runs the statements of a search on one connection (`search.rs`).
struct SqliteRunner<'c>(&'c Connection);

fn sql_values(values: &[Value]) -> Vec<rusqlite::types::Value> {
    values
        .iter()
        .map(|v| match v {
            Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
        })
        .collect()
}

impl search::Runner for SqliteRunner<'_> {
    fn ids(&mut self, sql: &str, values: &[Value]) -> Result<Vec<i64>> {
        let mut stmt = self
            .0
            .prepare_cached(sql)
            .map_err(err("searching messages"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(sql_values(values)), |r| r.get(0))
            .map_err(err("searching messages"))?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()
            .map_err(err("searching messages"))
    }

    fn number(&mut self, sql: &str, values: &[Value]) -> Result<i64> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_row(rusqlite::params_from_iter(sql_values(values)), |r| r.get(0))
            })
            .map_err(err("searching messages"))
    }

    /// Keeps the `n` highest ids as the index gives them: SQLite's sorter
    /// took twice as long as reading the index.
    fn newest_ids(&mut self, sql: &str, values: &[Value], n: usize) -> Result<Vec<i64>> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let context = "searching messages";
        let mut stmt = self.0.prepare_cached(sql).map_err(err(context))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(sql_values(values)))
            .map_err(err(context))?;
        let mut newest: BinaryHeap<Reverse<i64>> = BinaryHeap::with_capacity(n + 1);
        while let Some(row) = rows.next().map_err(err(context))? {
            let id: i64 = row.get(0).map_err(err(context))?;
            if newest.len() < n {
                newest.push(Reverse(id));
            } else if newest.peek().is_some_and(|Reverse(lowest)| id > *lowest) {
                newest.pop();
                newest.push(Reverse(id));
            }
        }
        let mut ids: Vec<i64> = newest.into_iter().map(|Reverse(id)| id).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }
}

impl SqliteStore {
    /// SQLite's plans for every statement a search may run, one line per
    /// step, statements apart by a blank line (for tests and benchmarks:
    /// `SCAN messages` is reading the table).
    pub fn explain_search(&self, search: &MessageSearch) -> Result<String> {
        let statements = search.query()?.statements(&Dialect::SQLITE);
        let conn = self.lock();
        let mut plans = Vec::new();
        for (sql, values) in statements {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(err("explaining a search"))?;
            let steps = stmt
                .query_map(rusqlite::params_from_iter(sql_values(&values)), |row| {
                    row.get::<_, String>(3)
                })
                .map_err(err("explaining a search"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err("explaining a search"))?;
            plans.push(steps.join("\n"));
        }
        Ok(plans.join("\n\n"))
    }
}

impl Store for SqliteStore {
    fn find_receipt(
        &self,
        listener: &str,
        as2_from: &str,
        message_id: &str,
        window: DuplicateWindow,
    ) -> Result<Option<StoredReceipt>> {
        let conn = self.lock();
        Ok(
            receipt_in_window(&conn, listener, as2_from, message_id, window)?
                .and_then(|(receipt, inside)| inside.then_some(receipt)),
        )
    }

    fn commit_batch(
        &self,
        receipts: &[Receipt],
        executions: &[ExecutionRecord],
    ) -> Result<Vec<Committed>> {
        // The batch's small documents, taken now so that nothing else can
        // commit them; stored with the rows that reference them.
        let receipt_documents: Vec<Vec<(i64, Vec<u8>)>> = receipts
            .iter()
            .map(|r| {
                self.pending.take(
                    [&r.message.raw_path, &r.message.payload_path]
                        .into_iter()
                        .flatten()
                        .map(String::as_str),
                )
            })
            .collect();
        let execution_documents = self.pending.take(
            executions
                .iter()
                .flat_map(|e| e.documents.iter().map(|d| d.path.as_str())),
        );
        let mut conn = self.lock();
        let outcome = (|| {
            let tx = conn.transaction().map_err(err("starting transaction"))?;
            let outcomes = insert_receipts_in(&tx, receipts)?;
            for (outcome, documents) in outcomes.iter().zip(&receipt_documents) {
                // A duplicate's documents are dropped with it.
                if matches!(outcome, Committed::Stored(_)) {
                    super::sqlite_documents::insert_in(&tx, documents)?;
                }
            }
            update_executions_in(&tx, executions)?;
            super::sqlite_documents::insert_in(&tx, &execution_documents)?;
            tx.commit().map_err(err("committing"))?;
            Ok(outcomes)
        })();
        if outcome.is_err() {
            // Execution states are retried with the next batch; receipts
            // are not (their senders get 503 and resend).
            self.pending.restore(execution_documents);
        }
        outcome
    }

    fn probe(&self) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO store_probe (id, at) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                params![crate::server::inbound::now_rfc3339()],
            )
            .map(|_| ())
            .map_err(err("probing the store"))
    }

    fn set_mdn_status(&self, id: i64, status: &str, epoch: Option<i64>) -> Result<bool> {
        self.lock()
            .execute(
                "UPDATE messages SET mdn_status = ?1
                 WHERE id = ?2 AND (?3 IS NULL OR mdn_lease_epoch = ?3)",
                params![status, id, epoch],
            )
            .map(|changed| changed > 0)
            .map_err(err("updating MDN status"))
    }

    fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRow>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT * FROM messages ORDER BY id DESC LIMIT ?1")
            .map_err(err("listing messages"))?;
        let rows = stmt
            .query_map(params![limit], row_to_record)
            .map_err(err("listing messages"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("listing messages"))
    }

    fn search_messages(&self, search: &MessageSearch) -> Result<Vec<MessageRow>> {
        let query = search.query()?;
        let conn = self.lock();
        let ids = search::page(&query, &Dialect::SQLITE, &mut SqliteRunner(&conn))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT * FROM messages WHERE id IN ({marks}) ORDER BY id DESC"
            ))
            .map_err(err("searching messages"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(ids), row_to_record)
            .map_err(err("searching messages"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("searching messages"))
    }

    fn activity(&self, since: &str) -> Result<Activity> {
        let since = search::time_bound("since", since)?;
        let conn = self.lock();
        let context = "counting activity";
        let counts = |sql: &str, values: &[&dyn rusqlite::ToSql]| -> Result<Vec<(String, u64)>> {
            let mut stmt = conn.prepare_cached(sql).map_err(err(context))?;
            let rows = stmt
                .query_map(values, |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })
                .map_err(err(context))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err(context))
        };
        // Counted from `messages_received_at` alone (no row read; GROUP BY
        // would sort what the index gives in order already), with the
        // oldest id among them; then the errors, from `messages_errors`
        // from that id on.
        let (totals, oldest) = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT received_at, id FROM messages WHERE received_at >= ?1
                     ORDER BY received_at",
                )
                .map_err(err(context))?;
            let mut rows = stmt.query(params![since]).map_err(err(context))?;
            let (mut totals, mut oldest): (Vec<(String, u64)>, i64) = (Vec::new(), i64::MAX);
            while let Some(row) = rows.next().map_err(err(context))? {
                let at = row
                    .get_ref(0)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(err(context))?;
                let minute = at.get(..MINUTE_CHARS).unwrap_or(at);
                match totals.last_mut() {
                    Some((last, n)) if last == minute => *n += 1,
                    _ => totals.push((minute.to_string(), 1)),
                }
                oldest = oldest.min(row.get::<_, i64>(1).map_err(err(context))?);
            }
            (totals, oldest)
        };
        let errors = counts(
            &format!(
                "SELECT substr(received_at, 1, {MINUTE_CHARS}), count(*) FROM messages
                 WHERE disposition <> 'processed' AND id >= ?1 AND received_at >= ?2 GROUP BY 1"
            ),
            &[&oldest, &since],
        )?;
        // Per status through `executions_status`, but COMPLETE, the bulk of
        // the history, as what is left of the table's count (a walk of its
        // pages): counted entry by entry it took 35 ms at 500,000.
        let mut executions = Vec::with_capacity(super::status::ALL.len());
        let total: i64 = conn
            .prepare_cached("SELECT count(*) FROM executions")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(err(context))?;
        let mut others = 0;
        for status in super::status::ALL {
            if status == super::status::COMPLETE {
                continue;
            }
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM executions WHERE status = ?1")
                .and_then(|mut stmt| stmt.query_row([status], |r| r.get(0)))
                .map_err(err(context))?;
            others += n;
            executions.push((status.to_string(), n.max(0) as u64));
        }
        executions.push((
            super::status::COMPLETE.to_string(),
            (total - others).max(0) as u64,
        ));
        let pending: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM messages WHERE mdn_mode = 'async' AND mdn_status = 'pending'",
            )
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(err(context))?;
        let outbox = counts("SELECT status, count(*) FROM outbox GROUP BY status", &[])?;
        Ok(Activity {
            per_minute: search::minutes(totals, &errors),
            executions_by_status: ordered_counts(executions, &super::status::ALL, true),
            pending_async_mdns: pending.max(0) as u64,
            outbox_by_state: ordered_counts(outbox, &super::outbox::state::ALL, false),
        })
    }

    fn message(&self, id: i64) -> Result<Option<MessageRow>> {
        let conn = self.lock();
        conn.query_row(
            "SELECT * FROM messages WHERE id = ?1",
            params![id],
            row_to_record,
        )
        .optional()
        .map_err(err("reading a message"))
    }

    fn claim_async_mdns(&self, claim: &super::Claim<'_, i64>) -> Result<Vec<PendingMdn>> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err("starting a claim"))?;
        let mut claimed = Vec::new();
        {
            let mut select = tx
                .prepare_cached(&claim_mdns_sql())
                .map_err(err("selecting MDNs to claim"))?;
            let rows = select
                .query_map(
                    params![claim.now_us, claim.own_earlier, claim.node],
                    |row| Ok((row_to_receipt(row)?, row.get::<_, i64>(7)?)),
                )
                .map_err(err("selecting MDNs to claim"))?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE messages SET mdn_owner = ?2, mdn_lease_until_us = ?3,
                        mdn_lease_epoch = mdn_lease_epoch + 1
                     WHERE id = ?1",
                )
                .map_err(err("claiming MDNs"))?;
            for row in rows {
                let (receipt, epoch) = row.map_err(err("selecting MDNs to claim"))?;
                if claim.except.contains(&receipt.record_id) {
                    continue;
                }
                update
                    .execute(params![receipt.record_id, claim.node, claim.until_us])
                    .map_err(err("claiming MDNs"))?;
                claimed.push(PendingMdn {
                    receipt,
                    epoch: epoch + 1,
                });
                if claimed.len() >= claim.limit as usize {
                    break;
                }
            }
        }
        tx.commit().map_err(err("committing a claim"))?;
        Ok(claimed)
    }

    fn renew_mdn_leases(&self, node: &str, held: &[(i64, i64)], until_us: i64) -> Result<Vec<i64>> {
        renew_leases(
            &mut self.lock(),
            "UPDATE messages SET mdn_lease_until_us = ?4
             WHERE id = ?1 AND mdn_owner = ?2 AND mdn_lease_epoch = ?3",
            node,
            held,
            until_us,
        )
    }

    fn release_mdn_leases(&self, node: &str, held: &[(i64, i64)]) -> Result<()> {
        release_leases(
            &mut self.lock(),
            "UPDATE messages SET mdn_lease_until_us = 0
             WHERE id = ?1 AND mdn_owner = ?2 AND mdn_lease_epoch = ?3",
            node,
            held,
        )
    }

    fn purge_before(&self, cutoff: &str, limit: u32) -> Result<super::retention::Purged> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err("starting purge"))?;
        let mut paths = Vec::new();
        let mut ids = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, raw_path, payload_path FROM messages
                     WHERE received_at < ?1 AND NOT (mdn_mode = 'async' AND mdn_status = 'pending')
                       AND id NOT IN (SELECT message_row FROM executions WHERE status IN ('STARTED', 'INPROCESS'))
                     ORDER BY id LIMIT ?2",
                )
                .map_err(err("selecting old messages"))?;
            let rows = stmt
                .query_map(params![cutoff, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .map_err(err("selecting old messages"))?;
            for row in rows {
                let (id, raw, payload) = row.map_err(err("selecting old messages"))?;
                ids.push(id);
                paths.extend(raw);
                paths.extend(payload);
            }
            let mut delete = tx
                .prepare("DELETE FROM messages WHERE id = ?1")
                .map_err(err("purging"))?;
            for id in &ids {
                delete.execute(params![id]).map_err(err("purging"))?;
            }
        }
        tx.commit().map_err(err("committing purge"))?;
        Ok(super::retention::Purged {
            rows: ids.len(),
            paths,
        })
    }

    fn claim_executions(&self, claim: &super::Claim<'_>) -> Result<Vec<ExecutionRecord>> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err("starting a claim"))?;
        let mut claimed = Vec::new();
        {
            let mut select = tx
                .prepare_cached(CLAIM_EXECUTIONS_SQL)
                .map_err(err("selecting executions to claim"))?;
            let rows = select
                .query_map(
                    params![claim.now_us, claim.own_earlier, claim.node],
                    row_to_execution,
                )
                .map_err(err("selecting executions to claim"))?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE executions SET owner = ?2, lease_until_us = ?3, lease_epoch = lease_epoch + 1
                     WHERE id = ?1",
                )
                .map_err(err("claiming executions"))?;
            for row in rows {
                let mut record = row.map_err(err("selecting executions to claim"))?;
                if claim.except.contains(&record.id) {
                    continue;
                }
                update
                    .execute(params![record.id, claim.node, claim.until_us])
                    .map_err(err("claiming executions"))?;
                record.owner = Some(claim.node.to_string());
                record.lease_until_us = Some(claim.until_us);
                record.lease_epoch += 1;
                claimed.push(record);
                if claimed.len() >= claim.limit as usize {
                    break;
                }
            }
        }
        tx.commit().map_err(err("committing a claim"))?;
        Ok(claimed)
    }

    fn renew_execution_leases(
        &self,
        node: &str,
        held: &[(String, i64)],
        until_us: i64,
    ) -> Result<Vec<String>> {
        renew_leases(
            &mut self.lock(),
            "UPDATE executions SET lease_until_us = ?4
             WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3",
            node,
            held,
            until_us,
        )
    }

    fn release_execution_leases(&self, node: &str, held: &[(String, i64)]) -> Result<()> {
        release_leases(
            &mut self.lock(),
            "UPDATE executions SET lease_until_us = 0
             WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3",
            node,
            held,
        )
    }

    fn requeue_finished(
        &self,
        e: &ExecutionRecord,
        node: &str,
        until_us: i64,
    ) -> Result<Option<i64>> {
        let documents = serde_json::to_string(&e.documents)
            .map_err(|x| StoreError::new("encoding documents", x))?;
        self.lock()
            .query_row(
                "UPDATE executions SET version = ?2, mode = ?3, status = ?4, attempts = ?5, started_at = ?6,
                    finished_at = ?7, finished_at_us = ?8, engine_us = ?9, instantiate_us = ?10,
                    output_documents = ?11, output_bytes = ?12, error = ?13, log = ?14, documents = ?15,
                    owner = ?16, lease_until_us = ?17, lease_epoch = lease_epoch + 1
                 WHERE id = ?1 AND status IN ('COMPLETE', 'COMPLETE_WARN', 'ERROR', 'ABORTED')
                 RETURNING lease_epoch",
                params![
                    e.id,
                    e.version,
                    e.mode,
                    e.status,
                    e.attempts,
                    e.started_at,
                    e.finished_at,
                    e.finished_at_us,
                    e.engine_us,
                    e.instantiate_us,
                    e.output_documents,
                    i64::try_from(e.output_bytes).unwrap_or(i64::MAX),
                    e.error,
                    e.log,
                    documents,
                    node,
                    until_us,
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(err("queueing an execution again"))
    }

    fn unfinished_executions(&self) -> Result<Vec<ExecutionRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT * FROM executions WHERE status IN ('STARTED', 'INPROCESS') ORDER BY queued_at_us",
            )
            .map_err(err("reading unfinished executions"))?;
        let rows = stmt
            .query_map([], row_to_execution)
            .map_err(err("reading unfinished executions"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("reading unfinished executions"))
    }

    fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT * FROM executions WHERE (?1 IS NULL OR process = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?4 IS NULL OR mode = ?4)
                   AND (?5 IS NULL OR queued_at_us >= ?5) AND (?6 IS NULL OR queued_at_us < ?6)
                   AND (?7 IS NULL OR queued_at_us < ?7 OR (queued_at_us = ?7 AND id < ?8))
                 ORDER BY queued_at_us DESC, id DESC LIMIT ?3",
            )
            .map_err(err("listing executions"))?;
        let (before_us, before_id) = match &filter.before {
            Some((us, id)) => (Some(*us), Some(id.as_str())),
            None => (None, None),
        };
        let rows = stmt
            .query_map(
                params![
                    filter.process,
                    filter.status,
                    filter.limit,
                    filter.mode,
                    filter.queued_from_us,
                    filter.queued_to_us,
                    before_us,
                    before_id
                ],
                row_to_execution,
            )
            .map_err(err("listing executions"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("listing executions"))
    }

    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        self.lock()
            .query_row(
                "SELECT * FROM executions WHERE id = ?1",
                params![id],
                row_to_execution,
            )
            .optional()
            .map_err(err("reading execution"))
    }

    fn purge_executions_before(
        &self,
        cutoff: &str,
        limit: u32,
    ) -> Result<super::retention::Purged> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err("starting purge"))?;
        let mut purged = super::retention::Purged::default();
        {
            // Only finished ones: a queued or running execution never goes,
            // and must not fill the batch either (or the purge would stop).
            let mut stmt = tx
                .prepare(
                    "SELECT id, documents FROM executions
                     WHERE queued_at < ?1 AND status IN ('COMPLETE', 'COMPLETE_WARN', 'ERROR', 'ABORTED')
                     ORDER BY queued_at_us LIMIT ?2",
                )
                .map_err(err("selecting old executions"))?;
            let rows = stmt
                .query_map(params![cutoff, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(err("selecting old executions"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err("selecting old executions"))?;
            let mut delete = tx
                .prepare("DELETE FROM executions WHERE id = ?1")
                .map_err(err("purging executions"))?;
            for (id, documents) in rows {
                let kept: Vec<super::KeptDocument> =
                    serde_json::from_str(&documents).unwrap_or_default();
                purged.paths.extend(kept.into_iter().map(|d| d.path));
                purged.rows += delete
                    .execute(params![id])
                    .map_err(err("purging executions"))?;
                // Its outbound documents go with it (they are final too).
                tx.execute("DELETE FROM outbox WHERE execution_id = ?1", params![id])
                    .map_err(err("purging the outbox"))?;
            }
        }
        tx.commit().map_err(err("committing purge"))?;
        Ok(purged)
    }

    fn paused_listeners(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT listener FROM listener_state WHERE paused = 1 ORDER BY listener")
            .map_err(err("reading listener states"))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(err("reading listener states"))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(err("reading listener states"))
    }

    fn heartbeat(&self, b: &super::NodeBeat) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO nodes (node_id, incarnation, address, version, started_at, heartbeat_at,
                    heartbeat_at_us, running, held, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(node_id) DO UPDATE SET incarnation = excluded.incarnation,
                    address = excluded.address, version = excluded.version,
                    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                    heartbeat_at_us = excluded.heartbeat_at_us, running = excluded.running,
                    held = excluded.held, state = excluded.state",
                params![
                    b.node_id,
                    b.incarnation,
                    b.address,
                    b.version,
                    b.started_at,
                    b.heartbeat_at,
                    b.heartbeat_at_us,
                    b.running,
                    b.held,
                    b.state
                ],
            )
            .map(|_| ())
            .map_err(err("recording a heartbeat"))
    }

    fn nodes(&self) -> Result<Vec<super::NodeBeat>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node_id, incarnation, address, version, started_at, heartbeat_at,
                    heartbeat_at_us, running, held, state FROM nodes ORDER BY node_id",
            )
            .map_err(err("reading nodes"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::NodeBeat {
                    node_id: r.get(0)?,
                    incarnation: r.get(1)?,
                    address: r.get(2)?,
                    version: r.get(3)?,
                    started_at: r.get(4)?,
                    heartbeat_at: r.get(5)?,
                    heartbeat_at_us: r.get(6)?,
                    running: r.get(7)?,
                    held: r.get(8)?,
                    state: r.get(9)?,
                })
            })
            .map_err(err("reading nodes"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("reading nodes"))
    }

    fn publish_bundle(
        &self,
        name: &str,
        hash: &str,
        files: &[(String, Vec<u8>)],
        node: &str,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(err("starting a bundle publication"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO bundle_files (name, hash, path, content) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err("publishing a bundle"))?;
            for (path, content) in files {
                insert
                    .execute(params![name, hash, path, content])
                    .map_err(err("publishing a bundle"))?;
            }
            tx.execute(
                "INSERT INTO bundle_heads (name, hash, withdrawn, published_by, published_at)
                 VALUES (?1, ?2, 0, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET hash = excluded.hash, withdrawn = 0,
                    published_by = excluded.published_by, published_at = excluded.published_at
                 WHERE bundle_heads.hash != excluded.hash OR bundle_heads.withdrawn = 1",
                params![name, hash, node, crate::server::inbound::now_rfc3339()],
            )
            .map_err(err("publishing a bundle"))?;
            // Older versions' files go; executions hold what they run.
            tx.execute(
                "DELETE FROM bundle_files WHERE name = ?1 AND hash != ?2",
                params![name, hash],
            )
            .map_err(err("publishing a bundle"))?;
        }
        tx.commit().map_err(err("committing a bundle publication"))
    }

    fn withdraw_bundle(&self, name: &str, node: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(err("starting a bundle withdrawal"))?;
        tx.execute(
            "UPDATE bundle_heads SET withdrawn = 1, published_by = ?2, published_at = ?3
             WHERE name = ?1 AND withdrawn = 0",
            params![name, node, crate::server::inbound::now_rfc3339()],
        )
        .map_err(err("withdrawing a bundle"))?;
        tx.execute("DELETE FROM bundle_files WHERE name = ?1", params![name])
            .map_err(err("withdrawing a bundle"))?;
        tx.commit().map_err(err("committing a bundle withdrawal"))
    }

    fn bundle_heads(&self) -> Result<Vec<super::BundleHead>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, hash, withdrawn, published_by, published_at FROM bundle_heads ORDER BY name",
            )
            .map_err(err("reading bundle heads"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::BundleHead {
                    name: r.get(0)?,
                    hash: r.get(1)?,
                    withdrawn: r.get::<_, i64>(2)? != 0,
                    published_by: r.get(3)?,
                    published_at: r.get(4)?,
                })
            })
            .map_err(err("reading bundle heads"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("reading bundle heads"))
    }

    fn bundle_files(&self, name: &str, hash: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, content FROM bundle_files WHERE name = ?1 AND hash = ?2 ORDER BY path",
            )
            .map_err(err("reading bundle files"))?;
        let rows = stmt
            .query_map(params![name, hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err("reading bundle files"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("reading bundle files"))
    }

    fn listener_states(&self) -> Result<Vec<super::ListenerShared>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT listener, paused, restarts FROM listener_state ORDER BY listener",
            )
            .map_err(err("reading listener states"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::ListenerShared {
                    listener: r.get(0)?,
                    paused: r.get::<_, i64>(1)? != 0,
                    restarts: r.get(2)?,
                })
            })
            .map_err(err("reading listener states"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("reading listener states"))
    }

    fn count_restart(&self, listener: &str) -> Result<i64> {
        self.lock()
            .query_row(
                "INSERT INTO listener_state (listener, paused, restarts) VALUES (?1, 0, 1)
                 ON CONFLICT(listener) DO UPDATE SET restarts = restarts + 1
                 RETURNING restarts",
                params![listener],
                |r| r.get(0),
            )
            .map_err(err("counting a listener restart"))
    }

    fn outbox_enqueue(&self, new: &NewOutbound<'_>) -> Result<OutboxRow> {
        self.sqlite_outbox_enqueue(new)
    }

    fn outbox_update(
        &self,
        update: &OutboxUpdate<'_>,
        expect: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<bool> {
        self.sqlite_outbox_update(update, expect, message_id)
    }

    fn outbox_list(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>> {
        self.sqlite_outbox_list(filter)
    }

    fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>> {
        self.sqlite_outbox_row(id)
    }

    fn outbox_by_message_id(&self, message_id: &str) -> Result<Option<OutboxRow>> {
        self.sqlite_outbox_by_message_id(message_id)
    }

    fn outbox_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.sqlite_outbox_payload(id)
    }

    fn set_paused(&self, listener: &str, paused: bool) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO listener_state (listener, paused) VALUES (?1, ?2)
                 ON CONFLICT(listener) DO UPDATE SET paused = excluded.paused",
                params![listener, paused as i64],
            )
            .map(|_| ())
            .map_err(err("saving listener state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: DuplicateWindow = DuplicateWindow {
        count: 100,
        days: 30,
    };

    /// The query plan of a statement, one line per step.
    fn plan(store: &SqliteStore, sql: &str) -> String {
        let conn = store.lock();
        let mut explain = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explains");
        let steps = explain
            .query_map(params![0_i64, false, "node"], |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan rows");
        steps.join("\n")
    }

    /// The lease keeper's claims run every second on every node: found
    /// scanning every stored message (50 ms at 50,000 rows, more with each).
    #[test]
    fn mdn_claim_scanned_every_message_regression() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("opens");
        let mdns = plan(&store, &claim_mdns_sql());
        assert!(
            mdns.contains("USING INDEX messages_mdn_pending"),
            "claiming MDNs: {mdns}"
        );
        let executions = plan(&store, CLAIM_EXECUTIONS_SQL);
        assert!(
            executions.contains("USING INDEX executions_"),
            "claiming executions: {executions}"
        );
    }

    /// Every search filter is answered from its index: no statement a
    /// search runs reads the whole table (`SCAN messages`), and each reads
    /// the filter's index. Prefixes and dates also read rows by id, in a
    /// bounded range (`SEARCH messages USING INTEGER PRIMARY KEY`).
    #[test]
    fn each_search_filter_uses_its_index() {
        use crate::store::DispositionFilter;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("opens");
        let text = |v: &str| Some(v.to_string());
        let search = |set: &dyn Fn(&mut MessageSearch)| {
            let mut s = MessageSearch::default();
            set(&mut s);
            s
        };
        let cases: Vec<(&[&str], MessageSearch)> = vec![
            (&["messages_from"], search(&|s| s.as2_from = text("A"))),
            (&["messages_to"], search(&|s| s.as2_to = text("A"))),
            (
                &["messages_message_id"],
                search(&|s| s.message_id = text("<1@x>")),
            ),
            (
                &["messages_mime_type"],
                search(&|s| s.mime_type = text("text/plain")),
            ),
            (&["messages_subject"], search(&|s| s.subject = text("Inv"))),
            (
                &["messages_file_name"],
                search(&|s| s.file_name = text("INV")),
            ),
            (
                &["messages_errors"],
                search(&|s| s.disposition = Some(DispositionFilter::Error)),
            ),
            (
                &["messages_received_at"],
                search(&|s| s.received_from = text("2026-01-01")),
            ),
            (
                &["messages_received_at"],
                search(&|s| s.received_to = text("2026-01-01")),
            ),
            (
                &["messages_received_at"],
                search(&|s| {
                    s.received_from = text("2026-01-01");
                    s.received_to = text("2026-01-02");
                }),
            ),
            (
                &["messages_from"],
                search(&|s| {
                    s.as2_from = text("A");
                    s.before_id = Some(10);
                }),
            ),
            (
                &["messages_file_name", "messages_received_at"],
                search(&|s| {
                    s.file_name = text("INV");
                    s.received_to = text("2026-01-02");
                    s.before_id = Some(10);
                }),
            ),
            (
                &["messages_from"],
                search(&|s| {
                    s.as2_from = text("A");
                    s.disposition = Some(DispositionFilter::Error);
                    s.subject = text("Inv");
                }),
            ),
        ];
        for (indexes, search) in cases {
            let plans = store.explain_search(&search).expect("explains");
            for plan in plans.split("\n\n") {
                assert!(
                    !plan.lines().any(|step| step.trim() == "SCAN messages"),
                    "{search:?} reads the whole table:\n{plans}"
                );
            }
            for index in indexes {
                let reads = |step: &str| {
                    step.ends_with(&format!("INDEX {index}"))
                        || step.contains(&format!("INDEX {index} "))
                };
                assert!(
                    plans.lines().any(reads),
                    "{search:?} should read {index}:\n{plans}"
                );
            }
        }
        // Paging alone walks the table from the given id.
        let paged = store
            .explain_search(&search(&|s| s.before_id = Some(10)))
            .expect("explains");
        assert!(paged.contains("INTEGER PRIMARY KEY (rowid<?)"), "{paged}");
    }

    #[test]
    fn a_store_from_before_the_duplicate_index_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let conn = Connection::open(dir.path().join("atom.db")).expect("db");
            conn.execute_batch(SCHEMA).expect("old schema");
            for id in [1, 2] {
                conn.execute(
                    "INSERT INTO messages (as2_from, as2_to, message_id, request_size, disposition, mdn_mode,
                        mdn_status, mdn_headers, mdn_body, received_at)
                     VALUES ('ACME', 'US', '<1@acme>', ?1, 'processed', 'sync', 'sent', '[]', x'', ?2)",
                    params![id, crate::server::inbound::now_rfc3339()],
                )
                .expect("old row");
            }
        }
        let store = SqliteStore::open(dir.path()).expect("migrates");
        let found = store
            .find_receipt("", "ACME", "<1@acme>", WINDOW)
            .expect("query")
            .expect("the newest old copy holds the key");
        assert_eq!(found.record_id, 2);
        drop(store);
        SqliteStore::open(dir.path()).expect("opens again without migrating twice");
    }
}
