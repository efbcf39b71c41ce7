//! [`Store`] on PostgreSQL: the same rows and rules as `sqlite.rs`.
//!
//! The duplicate rule, decided inside the batch transaction: a receipt
//! that claims its (AS2-From, Message-ID) inserts its row with `holds_id`
//! set, `ON CONFLICT DO NOTHING` on the unique partial index
//! `messages_receipt_key`. When the key is taken, the holder is read
//! `FOR UPDATE`: inside the partner's window it is a duplicate (the
//! holder's receipt is returned); outside, the holder lets the key go and
//! the insert is tried again. Concurrency, under READ COMMITTED:
//!
//! * a copy earlier in the same batch holds the key in this transaction,
//!   and is found like a committed one;
//! * a copy inserted by another node's open transaction makes the
//!   `INSERT .. ON CONFLICT` wait for that transaction: committed, it is
//!   the holder (this copy is a duplicate); rolled back, this copy is
//!   stored. Exactly one of them is stored;
//! * two copies both finding an expired holder queue on its row lock; the
//!   second sees the key released, tries again, and meets the first's row.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::super::outbox::{NewOutbound, OutboxFilter, OutboxRow, OutboxUpdate};
use super::super::retention::Purged;
use super::super::search::{self, ordered_counts, Dialect, Value, MINUTE_CHARS};
use super::super::{
    Activity, BundleHead, Claim, Committed, DuplicateWindow, ExecutionFilter, ExecutionRecord,
    KeptDocument, ListenerShared, MessageRecord, MessageRow, MessageSearch, NodeBeat, PendingMdn,
    Receipt, Result, Store, StoreError, StoreErrorKind, StoredReceipt,
};
use super::{err, to_i64, PgStore};

/// Tries of a claim whose key keeps changing hands before it gives up
/// (`Busy`); each round needs another transaction to move the key.
const CLAIM_ROUNDS: usize = 8;

const RECEIPT_COLUMNS: &str = "id, mdn_mode, mdn_url, mdn_headers, mdn_body, raw_path, listener";

/// Named, never `*`: a prepared `SELECT *` fails ("cached plan must not
/// change result type") once a newer node has added a column.
const MESSAGE_COLUMNS: &str = "id, listener, as2_from, as2_to, message_id, subject, file_name,
    mime_type, request_size, payload_size, encryption, signature, compression, mic, disposition,
    mdn_mode, mdn_status, mdn_url, mdn_error, mdn_headers, mdn_body, raw_path, payload_path, error,
    received_at, mdn_owner, mdn_lease_until_us";

const EXECUTION_COLUMNS: &str = "id, message_row, process, version, mode, status, attempts,
    properties, payload_path, queued_at, queued_at_us, started_at, finished_at, finished_at_us,
    engine_us, instantiate_us, input_documents, input_bytes, output_documents, output_bytes, error,
    log, documents, owner, lease_until_us, lease_epoch";

const INSERT_MESSAGE: &str =
    "INSERT INTO messages (listener, as2_from, as2_to, message_id, subject,
        file_name, mime_type, request_size, payload_size, encryption, signature, compression, mic,
        disposition, mdn_mode, mdn_status, mdn_url, mdn_headers, mdn_body, raw_path, payload_path,
        error, received_at, holds_id, mdn_error, mdn_owner, mdn_lease_until_us, mdn_lease_epoch)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23, $24, $25, $26, $27, $28)
    ON CONFLICT (as2_from, message_id) WHERE holds_id DO NOTHING
    RETURNING id";

const QUEUE_EXECUTION: &str = "INSERT INTO executions (id, message_row, process, version, mode,
        status, attempts, properties, payload_path, queued_at, queued_at_us, input_documents,
        input_bytes, output_documents, output_bytes, log, documents, owner, lease_until_us,
        lease_epoch)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0, '', '[]', $14, $15, $16)";

/// Columns: [`RECEIPT_COLUMNS`].
fn row_to_receipt(row: &Row) -> StoredReceipt {
    let headers: String = row.get(3);
    StoredReceipt {
        record_id: row.get(0),
        mdn_mode: row.get(1),
        mdn_url: row.get(2),
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        body: row.get(4),
        raw_path: row.get(5),
        listener: row.get(6),
    }
}

fn non_negative(value: i64) -> u64 {
    value.max(0) as u64
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn row_to_record(row: &Row) -> MessageRow {
    let headers: String = row.get("mdn_headers");
    MessageRow {
        id: row.get("id"),
        record: MessageRecord {
            listener: row.get("listener"),
            as2_from: row.get("as2_from"),
            as2_to: row.get("as2_to"),
            message_id: row.get("message_id"),
            subject: row.get("subject"),
            file_name: row.get("file_name"),
            mime_type: row.get("mime_type"),
            request_size: non_negative(row.get("request_size")),
            payload_size: row.get::<_, Option<i64>>("payload_size").map(non_negative),
            encryption: row.get("encryption"),
            signature: row.get("signature"),
            compression: row.get("compression"),
            mic: row.get("mic"),
            disposition: row.get("disposition"),
            mdn_mode: row.get("mdn_mode"),
            mdn_status: row.get("mdn_status"),
            mdn_url: row.get("mdn_url"),
            mdn_error: row.get("mdn_error"),
            mdn_headers: serde_json::from_str(&headers).unwrap_or_default(),
            mdn_body: row.get("mdn_body"),
            raw_path: row.get("raw_path"),
            payload_path: row.get("payload_path"),
            error: row.get("error"),
            received_at: row.get("received_at"),
            mdn_owner: row.get("mdn_owner"),
            mdn_lease_until_us: row.get("mdn_lease_until_us"),
            dedupe: None,
        },
    }
}

fn row_to_execution(row: &Row) -> ExecutionRecord {
    let documents: String = row.get("documents");
    ExecutionRecord {
        id: row.get("id"),
        message_row: row.get("message_row"),
        process: row.get("process"),
        version: row.get("version"),
        mode: row.get("mode"),
        status: row.get("status"),
        attempts: to_u32(row.get("attempts")),
        properties_json: row.get("properties"),
        payload_path: row.get("payload_path"),
        queued_at: row.get("queued_at"),
        queued_at_us: row.get("queued_at_us"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        finished_at_us: row.get("finished_at_us"),
        engine_us: row.get("engine_us"),
        instantiate_us: row.get("instantiate_us"),
        input_documents: to_u32(row.get("input_documents")),
        input_bytes: non_negative(row.get("input_bytes")),
        output_documents: to_u32(row.get("output_documents")),
        output_bytes: non_negative(row.get("output_bytes")),
        error: row.get("error"),
        log: row.get("log"),
        documents: serde_json::from_str(&documents).unwrap_or_default(),
        owner: row.get("owner"),
        lease_until_us: row.get("lease_until_us"),
        lease_epoch: row.get("lease_epoch"),
    }
}

/// The receipt holding (AS2-From, Message-ID) and whether it is inside
/// `window` for `listener` (as SQLite: not older than the window's days,
/// and fewer than its count of the partner's accepted receipts logged
/// since). `lock` reads the holder `FOR UPDATE`.
async fn receipt_in_window(
    db: &impl deadpool_postgres::GenericClient,
    listener: &str,
    as2_from: &str,
    message_id: &str,
    window: DuplicateWindow,
    lock: bool,
) -> Result<Option<(StoredReceipt, bool)>> {
    let lookup = db
        .prepare_cached(&format!(
            "SELECT {RECEIPT_COLUMNS}, received_at FROM messages
             WHERE as2_from = $1 AND message_id = $2 AND holds_id{}",
            if lock { " FOR UPDATE" } else { "" }
        ))
        .await
        .map_err(err("looking up duplicates"))?;
    let Some(row) = db
        .query_opt(&lookup, &[&as2_from, &message_id])
        .await
        .map_err(err("looking up duplicates"))?
    else {
        return Ok(None);
    };
    let receipt = row_to_receipt(&row);
    let received_at: String = row.get(7);
    let oldest = crate::store::retention::cutoff(window.days);
    let mut inside = received_at >= oldest;
    if inside {
        let limit = i64::try_from(window.count).unwrap_or(i64::MAX);
        // Counting stops at the window size: cheap even for a busy partner.
        let count = db
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM messages
                 WHERE listener = $1 AND as2_from = $2 AND holds_id AND id > $3 LIMIT $4) AS newer",
            )
            .await
            .map_err(err("counting the duplicate window"))?;
        let newer: i64 = db
            .query_one(&count, &[&listener, &as2_from, &receipt.record_id, &limit])
            .await
            .map_err(err("counting the duplicate window"))?
            .get(0);
        inside = newer < limit;
    }
    Ok(Some((receipt, inside)))
}

/// Logs messages with their queued executions inside `tx`; outcomes in
/// order.
async fn insert_receipts_in(
    tx: &deadpool_postgres::Transaction<'_>,
    receipts: &[Receipt],
) -> Result<Vec<Committed>> {
    let mut outcomes = Vec::with_capacity(receipts.len());
    if receipts.is_empty() {
        return Ok(outcomes);
    }
    let insert = tx
        .prepare_cached(INSERT_MESSAGE)
        .await
        .map_err(err("logging message"))?;
    let queue = tx
        .prepare_cached(QUEUE_EXECUTION)
        .await
        .map_err(err("queueing execution"))?;
    for receipt in receipts {
        let r = &receipt.message;
        let window = r.dedupe.filter(|_| r.error.is_none());
        let headers = serde_json::to_string(&r.mdn_headers)
            .map_err(|e| StoreError::new("encoding MDN headers", e))?;
        let request_size = to_i64(r.request_size);
        let payload_size = r.payload_size.map(to_i64);
        let holds = window.map(|_| true);
        let mdn_epoch = i64::from(r.mdn_owner.is_some());
        let params: [&(dyn ToSql + Sync); 28] = [
            &r.listener,
            &r.as2_from,
            &r.as2_to,
            &r.message_id,
            &r.subject,
            &r.file_name,
            &r.mime_type,
            &request_size,
            &payload_size,
            &r.encryption,
            &r.signature,
            &r.compression,
            &r.mic,
            &r.disposition,
            &r.mdn_mode,
            &r.mdn_status,
            &r.mdn_url,
            &headers,
            &r.mdn_body,
            &r.raw_path,
            &r.payload_path,
            &r.error,
            &r.received_at,
            &holds,
            &r.mdn_error,
            &r.mdn_owner,
            &r.mdn_lease_until_us,
            &mdn_epoch,
        ];
        let row = match window {
            None => tx
                .query_one(&insert, &params)
                .await
                .map_err(err("logging message"))?
                .get::<_, i64>(0),
            Some(window) => {
                let listener = r.listener.as_deref().unwrap_or_default();
                let mut claimed = None;
                for _ in 0..CLAIM_ROUNDS {
                    if let Some(row) = tx
                        .query_opt(&insert, &params)
                        .await
                        .map_err(err("logging message"))?
                    {
                        claimed = Some(Ok(row.get::<_, i64>(0)));
                        break;
                    }
                    match receipt_in_window(tx, listener, &r.as2_from, &r.message_id, window, true)
                        .await?
                    {
                        Some((original, true)) => {
                            claimed = Some(Err(original));
                            break;
                        }
                        Some((expired, false)) => {
                            // Outside the window: the new copy takes the key over.
                            tx.execute(
                                "UPDATE messages SET holds_id = NULL WHERE id = $1",
                                &[&expired.record_id],
                            )
                            .await
                            .map_err(err("releasing an expired duplicate key"))?;
                        }
                        // Released or purged meanwhile: try again.
                        None => {}
                    }
                }
                match claimed {
                    Some(Ok(row)) => row,
                    Some(Err(original)) => {
                        outcomes.push(Committed::Duplicate(original));
                        continue;
                    }
                    None => {
                        return Err(StoreError::of_kind(
                            StoreErrorKind::Busy,
                            "logging message",
                            format!(
                                "the duplicate key of {} from {} kept changing hands",
                                r.message_id, r.as2_from
                            ),
                        ))
                    }
                }
            }
        };
        outcomes.push(Committed::Stored(row));
        if let Some(e) = &receipt.execution {
            tx.execute(
                &queue,
                &[
                    &e.id,
                    &row,
                    &e.process,
                    &e.version,
                    &e.mode,
                    &e.status,
                    &i64::from(e.attempts),
                    &e.properties_json,
                    &e.payload_path,
                    &e.queued_at,
                    &e.queued_at_us,
                    &i64::from(e.input_documents),
                    &to_i64(e.input_bytes),
                    &e.owner,
                    &e.lease_until_us,
                    &e.lease_epoch,
                ],
            )
            .await
            .map_err(err("queueing execution"))?;
        }
    }
    Ok(outcomes)
}

/// Writes execution states inside `tx`, in one statement; of several
/// states of one execution the last wins (as row-by-row updates would).
async fn update_executions_in(
    tx: &deadpool_postgres::Transaction<'_>,
    executions: &[ExecutionRecord],
) -> Result<()> {
    if executions.is_empty() {
        return Ok(());
    }
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(executions.len());
    for (i, e) in executions.iter().enumerate() {
        last.insert(e.id.as_str(), i);
    }
    let mut latest: Vec<&ExecutionRecord> = last.into_values().map(|i| &executions[i]).collect();
    latest.sort_by(|a, b| a.id.cmp(&b.id));
    let mut documents = Vec::with_capacity(latest.len());
    for e in &latest {
        documents.push(
            serde_json::to_string(&e.documents)
                .map_err(|x| StoreError::new("encoding documents", x))?,
        );
    }
    let column = |f: fn(&ExecutionRecord) -> Option<String>| -> Vec<Option<String>> {
        latest.iter().map(|e| f(e)).collect()
    };
    let number = |f: fn(&ExecutionRecord) -> Option<i64>| -> Vec<Option<i64>> {
        latest.iter().map(|e| f(e)).collect()
    };
    let ids = column(|e| Some(e.id.clone()));
    let versions = column(|e| Some(e.version.clone()));
    let modes = column(|e| Some(e.mode.clone()));
    let statuses = column(|e| Some(e.status.clone()));
    let attempts = number(|e| Some(i64::from(e.attempts)));
    let started = column(|e| e.started_at.clone());
    let finished = column(|e| e.finished_at.clone());
    let finished_us = number(|e| e.finished_at_us);
    let engine_us = number(|e| e.engine_us);
    let instantiate_us = number(|e| e.instantiate_us);
    let output_documents = number(|e| Some(i64::from(e.output_documents)));
    let output_bytes = number(|e| Some(to_i64(e.output_bytes)));
    let errors = column(|e| e.error.clone());
    let logs = column(|e| Some(e.log.clone()));
    let epochs = number(|e| Some(e.lease_epoch));
    let update = tx
        .prepare_cached(
            "UPDATE executions AS e SET version = u.version, mode = u.mode, status = u.status,
                attempts = u.attempts, started_at = u.started_at, finished_at = u.finished_at,
                finished_at_us = u.finished_at_us, engine_us = u.engine_us,
                instantiate_us = u.instantiate_us, output_documents = u.output_documents,
                output_bytes = u.output_bytes, error = u.error, log = u.log, documents = u.documents
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                $13::text[], $14::text[], $15::text[], $16::bigint[])
                AS u(id, version, mode, status, attempts, started_at, finished_at, finished_at_us,
                     engine_us, instantiate_us, output_documents, output_bytes, error, log, documents,
                     lease_epoch)
             WHERE e.id = u.id AND e.lease_epoch = u.lease_epoch
             RETURNING e.id",
        )
        .await
        .map_err(err("recording execution"))?;
    let written = tx
        .query(
            &update,
            &[
                &ids,
                &versions,
                &modes,
                &statuses,
                &attempts,
                &started,
                &finished,
                &finished_us,
                &engine_us,
                &instantiate_us,
                &output_documents,
                &output_bytes,
                &errors,
                &logs,
                &documents,
                &epochs,
            ],
        )
        .await
        .map_err(err("recording execution"))?;
    if written.len() < latest.len() {
        let written: std::collections::HashSet<String> =
            written.iter().map(|row| row.get::<_, String>(0)).collect();
        for e in latest.iter().filter(|e| !written.contains(&e.id)) {
            tracing::warn!(execution = %e.id, epoch = e.lease_epoch, status = %e.status,
                "execution state dropped: its lease was taken over (or it is gone)");
        }
    }
    Ok(())
}

/// Runs one query and maps its rows.
async fn select<T>(
    db: &impl deadpool_postgres::GenericClient,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: fn(&Row) -> T,
) -> Result<Vec<T>> {
    let statement = db.prepare_cached(sql).await.map_err(err(context))?;
    let rows = db.query(&statement, params).await.map_err(err(context))?;
    Ok(rows.iter().map(map).collect())
}

/// What a lease is held on: an execution's ID or a message row.
trait LeaseKey:
    ToSql
    + for<'a> tokio_postgres::types::FromSql<'a>
    + Clone
    + Eq
    + std::hash::Hash
    + Send
    + Sync
    + 'static
{
}
impl LeaseKey for String {}
impl LeaseKey for i64 {}

/// A value of a search, as PostgreSQL binds it.
type SearchValue = Box<dyn ToSql + Sync + Send>;

fn search_values(values: &[Value]) -> Vec<SearchValue> {
    values
        .iter()
        .map(|v| -> SearchValue {
            match v {
                Value::Text(t) => Box::new(t.clone()),
                Value::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

/// Runs the statements of a search (`search.rs`), each on a connection of
/// the pool.
struct PgRunner<'s>(&'s PgStore);

impl search::Runner for PgRunner<'_> {
    fn ids(&mut self, sql: &str, values: &[Value]) -> Result<Vec<i64>> {
        let (sql, values) = (sql.to_string(), search_values(values));
        let context = "searching messages";
        self.0.shared.run(context, move |c| async move {
            let client = c.get().await?;
            let params: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            select(&client, context, &sql, &params, |row| row.get::<_, i64>(0)).await
        })
    }

    fn number(&mut self, sql: &str, values: &[Value]) -> Result<i64> {
        self.ids(sql, values)
            .map(|rows| rows.first().copied().unwrap_or(0))
    }
}

impl PgStore {
    /// PostgreSQL's plans (`EXPLAIN`) for every statement a search may run,
    /// apart by a blank line, for tests and benchmarks. With
    /// `indexes_only`, sequential scans are priced out (`enable_seqscan =
    /// off`), to show on a small table that the SQL can use an index at all
    /// (its collation matches, for one).
    pub fn explain_search(&self, search: &MessageSearch, indexes_only: bool) -> Result<String> {
        let statements: Vec<(String, Vec<SearchValue>)> = search
            .query()?
            .statements(&Dialect::POSTGRES)
            .into_iter()
            .map(|(sql, values)| (sql, search_values(&values)))
            .collect();
        let context = "explaining a search";
        self.shared.run(context, move |c| async move {
            let mut client = c.get().await?;
            let tx = client.transaction().await.map_err(err(context))?;
            if indexes_only {
                tx.batch_execute("SET LOCAL enable_seqscan = off")
                    .await
                    .map_err(err(context))?;
            }
            let mut plans = Vec::new();
            for (sql, values) in &statements {
                let params: Vec<&(dyn ToSql + Sync)> = values
                    .iter()
                    .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let rows = tx
                    .query(&format!("EXPLAIN {sql}"), &params)
                    .await
                    .map_err(err(context))?;
                plans.push(
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
            tx.rollback().await.map_err(err(context))?;
            Ok(plans.join("\n\n"))
        })
    }

    /// Runs `sql` ($1 node, $2 new end, $3 ids, $4 epochs; returning the
    /// IDs renewed) for the leases `node` holds; the IDs it lost.
    fn renew_leases<K: LeaseKey>(
        &self,
        sql: &'static str,
        node: &str,
        held: &[(K, i64)],
        until_us: i64,
    ) -> Result<Vec<K>> {
        let node = node.to_string();
        let (ids, epochs): (Vec<K>, Vec<i64>) = held.iter().cloned().unzip();
        self.shared.run("renewing leases", |c| async move {
            let client = c.get().await?;
            let renewed: std::collections::HashSet<K> = select(
                &client,
                "renewing leases",
                sql,
                &[&node, &until_us, &ids, &epochs],
                |row| row.get(0),
            )
            .await?
            .into_iter()
            .collect();
            Ok(ids.into_iter().filter(|id| !renewed.contains(id)).collect())
        })
    }

    /// Runs a claim `sql` ($1 node, $2 new end, $3 now, $4 own earlier
    /// work too, $5 IDs held here, $6 limit; `FOR UPDATE SKIP LOCKED`, so
    /// nodes claiming at once take different rows) and maps what it returns.
    fn claim_rows<K: LeaseKey, T: Send + 'static>(
        &self,
        context: &'static str,
        sql: String,
        claim: &Claim<'_, K>,
        map: fn(&Row) -> T,
    ) -> Result<Vec<T>> {
        let (node, until, now, own) = (
            claim.node.to_string(),
            claim.until_us,
            claim.now_us,
            claim.own_earlier,
        );
        let except = claim.except.to_vec();
        let limit = i64::from(claim.limit);
        self.shared.run(context, move |c| async move {
            let client = c.get().await?;
            select(
                &client,
                context,
                &sql,
                &[&node, &until, &now, &own, &except, &limit],
                map,
            )
            .await
        })
    }

    /// Runs `sql` ($1 node, $2 ids, $3 epochs) for the leases `node` gives up.
    fn release_leases<K: LeaseKey>(
        &self,
        sql: &'static str,
        node: &str,
        held: &[(K, i64)],
    ) -> Result<()> {
        let node = node.to_string();
        let (ids, epochs): (Vec<K>, Vec<i64>) = held.iter().cloned().unzip();
        self.shared.run("releasing leases", |c| async move {
            let client = c.get().await?;
            client
                .execute(sql, &[&node, &ids, &epochs])
                .await
                .map(|_| ())
                .map_err(err("releasing leases"))
        })
    }
}

impl Store for PgStore {
    fn find_receipt(
        &self,
        listener: &str,
        as2_from: &str,
        message_id: &str,
        window: DuplicateWindow,
    ) -> Result<Option<StoredReceipt>> {
        let (listener, as2_from, message_id) = (
            listener.to_string(),
            as2_from.to_string(),
            message_id.to_string(),
        );
        self.shared.run("looking up duplicates", |c| async move {
            let client = c.get().await?;
            Ok(
                receipt_in_window(&client, &listener, &as2_from, &message_id, window, false)
                    .await?
                    .and_then(|(receipt, inside)| inside.then_some(receipt)),
            )
        })
    }

    fn commit_batch(
        &self,
        receipts: &[Receipt],
        executions: &[ExecutionRecord],
    ) -> Result<Vec<Committed>> {
        let receipts = receipts.to_vec();
        let executions = executions.to_vec();
        self.shared.run("committing", |c| async move {
            let mut client = c.get().await?;
            let tx = client
                .transaction()
                .await
                .map_err(err("starting transaction"))?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .await
                .map_err(err("starting transaction"))?;
            let outcomes = insert_receipts_in(&tx, &receipts).await?;
            update_executions_in(&tx, &executions).await?;
            tx.commit().await.map_err(err("committing"))?;
            Ok(outcomes)
        })
    }

    fn probe(&self) -> Result<()> {
        let now = crate::server::inbound::now_rfc3339();
        self.shared.run("probing the store", |c| async move {
            let client = c.get().await?;
            client
                .execute(
                    "INSERT INTO store_probe (id, at) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    &[&now],
                )
                .await
                .map(|_| ())
                .map_err(err("probing the store"))
        })
    }

    fn unfinished_executions(&self) -> Result<Vec<ExecutionRecord>> {
        self.shared
            .run("reading unfinished executions", |c| async move {
                let client = c.get().await?;
                select(
                    &client,
                    "reading unfinished executions",
                    &format!(
                        "SELECT {EXECUTION_COLUMNS} FROM executions
                         WHERE status IN ('STARTED', 'INPROCESS') ORDER BY queued_at_us, id"
                    ),
                    &[],
                    row_to_execution,
                )
                .await
            })
    }

    fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        let filter = filter.clone();
        self.shared.run("listing executions", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "listing executions",
                &format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions
                 WHERE ($1::text IS NULL OR process = $1) AND ($2::text IS NULL OR status = $2)
                   AND ($4::text IS NULL OR mode = $4)
                   AND ($5::bigint IS NULL OR queued_at_us >= $5) AND ($6::bigint IS NULL OR queued_at_us < $6)
                   AND ($7::bigint IS NULL OR queued_at_us < $7 OR (queued_at_us = $7 AND id < $8::text))
                 ORDER BY queued_at_us DESC, id DESC LIMIT $3"
                ),
                &[
                    &filter.process,
                    &filter.status,
                    &i64::from(filter.limit),
                    &filter.mode,
                    &filter.queued_from_us,
                    &filter.queued_to_us,
                    &filter.before.as_ref().map(|(us, _)| *us),
                    &filter.before.as_ref().map(|(_, id)| id.clone()),
                ],
                row_to_execution,
            )
            .await
        })
    }

    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        let id = id.to_string();
        self.shared.run("reading execution", |c| async move {
            let client = c.get().await?;
            Ok(select(
                &client,
                "reading execution",
                &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"),
                &[&id],
                row_to_execution,
            )
            .await?
            .pop())
        })
    }

    fn purge_executions_before(&self, cutoff: &str, limit: u32) -> Result<Purged> {
        let cutoff = cutoff.to_string();
        self.shared.run("purging executions", |c| async move {
            let client = c.get().await?;
            // Only finished ones: a queued or running execution never goes,
            // and must not fill the batch either (or the purge would stop).
            let documents = select(
                &client,
                "purging executions",
                "WITH gone AS (DELETE FROM executions WHERE id IN (
                    SELECT id FROM executions
                    WHERE queued_at < $1 AND status IN ('COMPLETE', 'COMPLETE_WARN', 'ERROR', 'ABORTED')
                    ORDER BY queued_at_us LIMIT $2)
                 RETURNING id, documents),
                 outbound AS (DELETE FROM outbox WHERE execution_id IN (SELECT id FROM gone))
                 SELECT documents FROM gone",
                &[&cutoff, &i64::from(limit)],
                |row| row.get::<_, String>(0),
            )
            .await?;
            let mut purged = Purged {
                rows: documents.len(),
                ..Purged::default()
            };
            for kept in documents {
                let kept: Vec<KeptDocument> = serde_json::from_str(&kept).unwrap_or_default();
                purged.paths.extend(kept.into_iter().map(|d| d.path));
            }
            Ok(purged)
        })
    }

    fn set_mdn_status(&self, id: i64, status: &str, epoch: Option<i64>) -> Result<bool> {
        let status = status.to_string();
        self.shared.run("updating MDN status", |c| async move {
            let client = c.get().await?;
            client
                .execute(
                    "UPDATE messages SET mdn_status = $1
                     WHERE id = $2 AND ($3::bigint IS NULL OR mdn_lease_epoch = $3)",
                    &[&status, &id, &epoch],
                )
                .await
                .map(|changed| changed > 0)
                .map_err(err("updating MDN status"))
        })
    }

    fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRow>> {
        self.shared.run("listing messages", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "listing messages",
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id DESC LIMIT $1"),
                &[&i64::from(limit)],
                row_to_record,
            )
            .await
        })
    }

    fn search_messages(&self, search: &MessageSearch) -> Result<Vec<MessageRow>> {
        let query = search.query()?;
        let ids = search::page(&query, &Dialect::POSTGRES, &mut PgRunner(self))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let context = "searching messages";
        self.shared.run(context, move |c| async move {
            let client = c.get().await?;
            select(
                &client,
                context,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1) ORDER BY id DESC"
                ),
                &[&ids],
                row_to_record,
            )
            .await
        })
    }

    fn activity(&self, since: &str) -> Result<Activity> {
        let since = search::time_bound("since", since)?;
        let context = "counting activity";
        self.shared.run(context, move |c| async move {
            let mut client = c.get().await?;
            // One snapshot for every count.
            let tx = client
                .build_transaction()
                .read_only(true)
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .start()
                .await
                .map_err(err(context))?;
            let by_key = |row: &Row| (row.get::<_, String>(0), non_negative(row.get(1)));
            // Totals from `messages_received_at` alone; errors through
            // `messages_errors` and the same range.
            let totals = select(
                &tx,
                context,
                &format!(
                    "SELECT left(received_at, {MINUTE_CHARS}), count(*) FROM messages
                     WHERE received_at >= $1 GROUP BY 1"
                ),
                &[&since],
                by_key,
            )
            .await?;
            let errors = select(
                &tx,
                context,
                &format!(
                    "SELECT left(received_at, {MINUTE_CHARS}), count(*) FROM messages
                     WHERE disposition <> 'processed' AND received_at >= $1 GROUP BY 1"
                ),
                &[&since],
                by_key,
            )
            .await?;
            let executions = select(
                &tx,
                context,
                "SELECT status, count(*) FROM executions GROUP BY status",
                &[],
                by_key,
            )
            .await?;
            let pending = select(
                &tx,
                context,
                "SELECT count(*) FROM messages WHERE mdn_mode = 'async' AND mdn_status = 'pending'",
                &[],
                |row| non_negative(row.get(0)),
            )
            .await?;
            let outbox = select(
                &tx,
                context,
                "SELECT status, count(*) FROM outbox GROUP BY status",
                &[],
                by_key,
            )
            .await?;
            tx.commit().await.map_err(err(context))?;
            Ok(Activity {
                per_minute: search::minutes(totals, &errors),
                executions_by_status: ordered_counts(executions, &super::super::status::ALL, true),
                pending_async_mdns: pending.first().copied().unwrap_or(0),
                outbox_by_state: ordered_counts(outbox, &super::super::outbox::state::ALL, false),
            })
        })
    }

    fn message(&self, id: i64) -> Result<Option<MessageRow>> {
        self.shared.run("reading a message", |c| async move {
            let client = c.get().await?;
            let mut rows = select(
                &client,
                "reading a message",
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"),
                &[&id],
                row_to_record,
            )
            .await?;
            Ok(rows.pop())
        })
    }

    fn claim_executions(&self, claim: &Claim<'_>) -> Result<Vec<ExecutionRecord>> {
        let mut claimed = self.claim_rows(
            "claiming executions",
            format!(
                "UPDATE executions SET owner = $1, lease_until_us = $2,
                    lease_epoch = lease_epoch + 1
                 WHERE id IN (SELECT id FROM executions
                    WHERE status IN ('STARTED', 'INPROCESS')
                      AND (($4 AND owner = $1)
                           OR ((owner IS NULL OR owner <> $1)
                               AND (lease_until_us IS NULL OR lease_until_us < $3)))
                      AND NOT (id = ANY($5))
                    ORDER BY queued_at_us LIMIT $6 FOR UPDATE SKIP LOCKED)
                 RETURNING {EXECUTION_COLUMNS}"
            ),
            claim,
            row_to_execution,
        )?;
        claimed.sort_by_key(|e| e.queued_at_us);
        Ok(claimed)
    }

    fn renew_execution_leases(
        &self,
        node: &str,
        held: &[(String, i64)],
        until_us: i64,
    ) -> Result<Vec<String>> {
        self.renew_leases(
            "UPDATE executions AS e SET lease_until_us = $2
             FROM unnest($3::text[], $4::bigint[]) AS h(id, epoch)
             WHERE e.id = h.id AND e.owner = $1 AND e.lease_epoch = h.epoch
             RETURNING e.id",
            node,
            held,
            until_us,
        )
    }

    fn release_execution_leases(&self, node: &str, held: &[(String, i64)]) -> Result<()> {
        self.release_leases(
            "UPDATE executions AS e SET lease_until_us = 0
             FROM unnest($2::text[], $3::bigint[]) AS h(id, epoch)
             WHERE e.id = h.id AND e.owner = $1 AND e.lease_epoch = h.epoch",
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
        let e = e.clone();
        let node = node.to_string();
        let documents = serde_json::to_string(&e.documents)
            .map_err(|x| StoreError::new("encoding documents", x))?;
        self.shared
            .run("queueing an execution again", |c| async move {
                let client = c.get().await?;
                Ok(select(
                    &client,
                    "queueing an execution again",
                    "UPDATE executions SET version = $2, mode = $3, status = $4, attempts = $5,
                    started_at = $6, finished_at = $7, finished_at_us = $8, engine_us = $9,
                    instantiate_us = $10, output_documents = $11, output_bytes = $12, error = $13,
                    log = $14, documents = $15, owner = $16, lease_until_us = $17,
                    lease_epoch = lease_epoch + 1
                 WHERE id = $1 AND status IN ('COMPLETE', 'COMPLETE_WARN', 'ERROR', 'ABORTED')
                 RETURNING lease_epoch",
                    &[
                        &e.id,
                        &e.version,
                        &e.mode,
                        &e.status,
                        &i64::from(e.attempts),
                        &e.started_at,
                        &e.finished_at,
                        &e.finished_at_us,
                        &e.engine_us,
                        &e.instantiate_us,
                        &i64::from(e.output_documents),
                        &to_i64(e.output_bytes),
                        &e.error,
                        &e.log,
                        &documents,
                        &node,
                        &until_us,
                    ],
                    |row| row.get::<_, i64>(0),
                )
                .await?
                .pop())
            })
    }

    fn claim_async_mdns(&self, claim: &Claim<'_, i64>) -> Result<Vec<PendingMdn>> {
        let mut claimed = self.claim_rows(
            "claiming MDNs",
            format!(
                "UPDATE messages SET mdn_owner = $1, mdn_lease_until_us = $2,
                    mdn_lease_epoch = mdn_lease_epoch + 1
                 WHERE id IN (SELECT id FROM messages
                    WHERE mdn_mode = 'async' AND mdn_status = 'pending'
                      AND (($4 AND mdn_owner = $1)
                           OR ((mdn_owner IS NULL OR mdn_owner <> $1)
                               AND (mdn_lease_until_us IS NULL OR mdn_lease_until_us < $3)))
                      AND NOT (id = ANY($5))
                    ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED)
                 RETURNING {RECEIPT_COLUMNS}, mdn_lease_epoch"
            ),
            claim,
            |row| PendingMdn {
                receipt: row_to_receipt(row),
                epoch: row.get(7),
            },
        )?;
        claimed.sort_by_key(|p| p.receipt.record_id);
        Ok(claimed)
    }

    fn renew_mdn_leases(&self, node: &str, held: &[(i64, i64)], until_us: i64) -> Result<Vec<i64>> {
        self.renew_leases(
            "UPDATE messages AS m SET mdn_lease_until_us = $2
             FROM unnest($3::bigint[], $4::bigint[]) AS h(id, epoch)
             WHERE m.id = h.id AND m.mdn_owner = $1 AND m.mdn_lease_epoch = h.epoch
             RETURNING m.id",
            node,
            held,
            until_us,
        )
    }

    fn release_mdn_leases(&self, node: &str, held: &[(i64, i64)]) -> Result<()> {
        self.release_leases(
            "UPDATE messages AS m SET mdn_lease_until_us = 0
             FROM unnest($2::bigint[], $3::bigint[]) AS h(id, epoch)
             WHERE m.id = h.id AND m.mdn_owner = $1 AND m.mdn_lease_epoch = h.epoch",
            node,
            held,
        )
    }

    fn heartbeat(&self, b: &NodeBeat) -> Result<()> {
        let b = b.clone();
        self.shared.run("recording a heartbeat", |c| async move {
            let client = c.get().await?;
            client
                .execute(
                    "INSERT INTO nodes (node_id, incarnation, address, version, started_at,
                        heartbeat_at, heartbeat_at_us, running, held, state)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (node_id) DO UPDATE SET incarnation = excluded.incarnation,
                        address = excluded.address, version = excluded.version,
                        started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                        heartbeat_at_us = excluded.heartbeat_at_us, running = excluded.running,
                        held = excluded.held, state = excluded.state",
                    &[
                        &b.node_id,
                        &b.incarnation,
                        &b.address,
                        &b.version,
                        &b.started_at,
                        &b.heartbeat_at,
                        &b.heartbeat_at_us,
                        &i64::from(b.running),
                        &i64::from(b.held),
                        &b.state,
                    ],
                )
                .await
                .map(|_| ())
                .map_err(err("recording a heartbeat"))
        })
    }

    fn nodes(&self) -> Result<Vec<NodeBeat>> {
        self.shared.run("reading nodes", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "reading nodes",
                "SELECT node_id, incarnation, address, version, started_at, heartbeat_at,
                    heartbeat_at_us, running, held, state FROM nodes ORDER BY node_id",
                &[],
                |r| NodeBeat {
                    node_id: r.get(0),
                    incarnation: r.get(1),
                    address: r.get(2),
                    version: r.get(3),
                    started_at: r.get(4),
                    heartbeat_at: r.get(5),
                    heartbeat_at_us: r.get(6),
                    running: to_u32(r.get(7)),
                    held: to_u32(r.get(8)),
                    state: r.get(9),
                },
            )
            .await
        })
    }

    fn publish_bundle(
        &self,
        name: &str,
        hash: &str,
        files: &[(String, Vec<u8>)],
        node: &str,
    ) -> Result<()> {
        let (name, hash, node) = (name.to_string(), hash.to_string(), node.to_string());
        let files = files.to_vec();
        let now = crate::server::inbound::now_rfc3339();
        self.shared.run("publishing a bundle", |c| async move {
            let mut client = c.get().await?;
            let tx = client
                .transaction()
                .await
                .map_err(err("publishing a bundle"))?;
            for (path, content) in &files {
                tx.execute(
                    "INSERT INTO bundle_files (name, hash, path, content) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&name, &hash, path, content],
                )
                .await
                .map_err(err("publishing a bundle"))?;
            }
            tx.execute(
                "INSERT INTO bundle_heads (name, hash, withdrawn, published_by, published_at)
                 VALUES ($1, $2, false, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, withdrawn = false,
                    published_by = excluded.published_by, published_at = excluded.published_at
                 WHERE bundle_heads.hash <> excluded.hash OR bundle_heads.withdrawn",
                &[&name, &hash, &node, &now],
            )
            .await
            .map_err(err("publishing a bundle"))?;
            tx.execute(
                "DELETE FROM bundle_files WHERE name = $1 AND hash <> $2",
                &[&name, &hash],
            )
            .await
            .map_err(err("publishing a bundle"))?;
            tx.commit()
                .await
                .map_err(err("committing a bundle publication"))
        })
    }

    fn withdraw_bundle(&self, name: &str, node: &str) -> Result<()> {
        let (name, node) = (name.to_string(), node.to_string());
        let now = crate::server::inbound::now_rfc3339();
        self.shared.run("withdrawing a bundle", |c| async move {
            let mut client = c.get().await?;
            let tx = client
                .transaction()
                .await
                .map_err(err("withdrawing a bundle"))?;
            tx.execute(
                "UPDATE bundle_heads SET withdrawn = true, published_by = $2, published_at = $3
                 WHERE name = $1 AND NOT withdrawn",
                &[&name, &node, &now],
            )
            .await
            .map_err(err("withdrawing a bundle"))?;
            tx.execute("DELETE FROM bundle_files WHERE name = $1", &[&name])
                .await
                .map_err(err("withdrawing a bundle"))?;
            tx.commit()
                .await
                .map_err(err("committing a bundle withdrawal"))
        })
    }

    fn bundle_heads(&self) -> Result<Vec<BundleHead>> {
        self.shared.run("reading bundle heads", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "reading bundle heads",
                "SELECT name, hash, withdrawn, published_by, published_at FROM bundle_heads
                 ORDER BY name",
                &[],
                |r| BundleHead {
                    name: r.get(0),
                    hash: r.get(1),
                    withdrawn: r.get(2),
                    published_by: r.get(3),
                    published_at: r.get(4),
                },
            )
            .await
        })
    }

    fn bundle_files(&self, name: &str, hash: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let (name, hash) = (name.to_string(), hash.to_string());
        self.shared.run("reading bundle files", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "reading bundle files",
                "SELECT path, content FROM bundle_files WHERE name = $1 AND hash = $2 ORDER BY path",
                &[&name, &hash],
                |r| (r.get(0), r.get(1)),
            )
            .await
        })
    }

    fn listener_states(&self) -> Result<Vec<ListenerShared>> {
        self.shared.run("reading listener states", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "reading listener states",
                "SELECT listener, paused, restarts FROM listener_state ORDER BY listener",
                &[],
                |r| ListenerShared {
                    listener: r.get(0),
                    paused: r.get(1),
                    restarts: r.get(2),
                },
            )
            .await
        })
    }

    fn count_restart(&self, listener: &str) -> Result<i64> {
        let listener = listener.to_string();
        self.shared
            .run("counting a listener restart", |c| async move {
                let client = c.get().await?;
                client
                .query_one(
                    "INSERT INTO listener_state (listener, paused, restarts) VALUES ($1, false, 1)
                     ON CONFLICT (listener) DO UPDATE SET restarts = listener_state.restarts + 1
                     RETURNING restarts",
                    &[&listener],
                )
                .await
                .map(|row| row.get(0))
                .map_err(err("counting a listener restart"))
            })
    }

    fn purge_before(&self, cutoff: &str, limit: u32) -> Result<Purged> {
        let cutoff = cutoff.to_string();
        self.shared.run("purging", |c| async move {
            let client = c.get().await?;
            let mut rows = select(
                &client,
                "purging",
                "DELETE FROM messages WHERE id IN (
                    SELECT m.id FROM messages m
                    WHERE m.received_at < $1
                      AND NOT (m.mdn_mode = 'async' AND m.mdn_status = 'pending')
                      AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.message_row = m.id
                                      AND e.status IN ('STARTED', 'INPROCESS'))
                    ORDER BY m.id LIMIT $2)
                 RETURNING id, raw_path, payload_path",
                &[&cutoff, &i64::from(limit)],
                |row| {
                    (
                        row.get::<_, i64>(0),
                        row.get::<_, Option<String>>(1),
                        row.get::<_, Option<String>>(2),
                    )
                },
            )
            .await?;
            rows.sort_by_key(|(id, _, _)| *id);
            let mut purged = Purged {
                rows: rows.len(),
                ..Purged::default()
            };
            for (_, raw, payload) in rows {
                purged.paths.extend(raw);
                purged.paths.extend(payload);
            }
            Ok(purged)
        })
    }

    fn paused_listeners(&self) -> Result<Vec<String>> {
        self.shared.run("reading listener states", |c| async move {
            let client = c.get().await?;
            select(
                &client,
                "reading listener states",
                "SELECT listener FROM listener_state WHERE paused ORDER BY listener",
                &[],
                |row| row.get(0),
            )
            .await
        })
    }

    fn outbox_enqueue(&self, new: &NewOutbound<'_>) -> Result<OutboxRow> {
        self.pg_outbox_enqueue(new)
    }

    fn outbox_update(
        &self,
        update: &OutboxUpdate<'_>,
        expect: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<bool> {
        self.pg_outbox_update(update, expect, message_id)
    }

    fn outbox_list(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>> {
        self.pg_outbox_list(filter)
    }

    fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>> {
        self.pg_outbox_row(id)
    }

    fn outbox_by_message_id(&self, message_id: &str) -> Result<Option<OutboxRow>> {
        self.pg_outbox_by_message_id(message_id)
    }

    fn outbox_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.pg_outbox_payload(id)
    }

    fn set_paused(&self, listener: &str, paused: bool) -> Result<()> {
        let listener = listener.to_string();
        self.shared.run("saving listener state", |c| async move {
            let client = c.get().await?;
            client
                .execute(
                    "INSERT INTO listener_state (listener, paused) VALUES ($1, $2)
                     ON CONFLICT (listener) DO UPDATE SET paused = excluded.paused",
                    &[&listener, &paused],
                )
                .await
                .map(|_| ())
                .map_err(err("saving listener state"))
        })
    }
}
