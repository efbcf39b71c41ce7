//! The outbox on PostgreSQL: the same rows and rules as `sqlite_outbox.rs`.
//! Connections commit with `synchronous_commit = on`, so a write is
//! durable when it returns.

use tokio_postgres::Row;

use super::super::outbox::{
    NewOutbound, OutboundBytes, OutboxFilter, OutboxRow, OutboxUpdate, OUTBOX_COLUMNS,
};
use super::super::Result;
use super::{err, PgStore};

fn row_to_outbox(row: &Row) -> OutboxRow {
    let non_negative = |v: i64| v.max(0) as u64;
    OutboxRow {
        id: row.get(0),
        execution_id: row.get(1),
        step: non_negative(row.get(2)) as u32,
        document: non_negative(row.get(3)) as u32,
        process: row.get(4),
        partner: row.get(5),
        as2_from: row.get(6),
        as2_to: row.get(7),
        message_id: row.get(8),
        subject: row.get(9),
        file_name: row.get(10),
        payload_ref: row.get(11),
        size: non_negative(row.get(12)),
        status: row.get(13),
        attempts: non_negative(row.get(14)) as u32,
        created_at: row.get(15),
        first_attempt_at_us: row.get(16),
        last_attempt_at: row.get(17),
        next_attempt_at: row.get(18),
        last_error: row.get(19),
        mic: row.get(20),
        mdn_disposition: row.get(21),
        mdn: row.get(22),
    }
}

impl PgStore {
    pub(in crate::store) fn pg_outbox_enqueue(&self, new: &NewOutbound<'_>) -> Result<OutboxRow> {
        let (inline, reference) = match new.bytes {
            OutboundBytes::Inline(bytes) => (Some(bytes.to_vec()), None),
            OutboundBytes::Stored(reference) => (None, Some(reference.to_string())),
        };
        let key = (
            new.execution_id.to_string(),
            i64::from(new.step),
            i64::from(new.document),
        );
        let texts = [
            new.process,
            new.partner,
            new.as2_from,
            new.as2_to,
            new.message_id,
            new.subject,
            new.created_at,
        ]
        .map(str::to_string);
        let file_name = new.file_name.map(str::to_string);
        let size = new.size as i64;
        let (status, attempts, attempt_at, attempt_at_us) = match new.first_attempt {
            Some((at, at_us)) => (
                super::super::outbox::state::SENDING,
                1i64,
                Some(at.to_string()),
                Some(at_us),
            ),
            None => (super::super::outbox::state::QUEUED, 0i64, None, None),
        };
        let context = "writing a document into the outbox";
        self.shared.run(context, |c| async move {
            let client = c.get().await?;
            let [process, partner, from, to, message_id, subject, created_at] = &texts;
            let select = format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE execution_id = $1 AND step = $2 AND document = $3"
            );
            // A row written before (a retry, a rerun, a recovery) is read,
            // not written again.
            if let Some(row) = client
                .query_opt(&select, &[&key.0, &key.1, &key.2])
                .await
                .map_err(err(context))?
            {
                return Ok(row_to_outbox(&row));
            }
            client
                .execute(
                    "INSERT INTO outbox (execution_id, step, document, process, partner,
                        as2_from, as2_to, message_id, subject, file_name, payload, payload_ref,
                        size, status, attempts, created_at, last_attempt_at, first_attempt_at_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $16,
                        $14, $17, $18)
                     ON CONFLICT (execution_id, step, document) DO NOTHING",
                    &[
                        &key.0,
                        &key.1,
                        &key.2,
                        process,
                        partner,
                        from,
                        to,
                        message_id,
                        subject,
                        &file_name,
                        &inline,
                        &reference,
                        &size,
                        created_at,
                        &status,
                        &attempts,
                        &attempt_at,
                        &attempt_at_us,
                    ],
                )
                .await
                .map_err(err(context))?;
            let row = client
                .query_one(&select, &[&key.0, &key.1, &key.2])
                .await
                .map_err(err(context))?;
            Ok(row_to_outbox(&row))
        })
    }

    pub(in crate::store) fn pg_outbox_update(
        &self,
        u: &OutboxUpdate<'_>,
        expect: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<bool> {
        let id = u.id;
        let status = u.status.to_string();
        let attempts = i64::from(u.attempts);
        let first = u.first_attempt_at_us;
        let owned = |v: Option<&str>| v.map(str::to_string);
        let texts = [
            owned(u.last_attempt_at),
            owned(u.next_attempt_at),
            owned(u.last_error),
            owned(u.mic),
            owned(u.mdn_disposition),
            owned(expect),
            owned(message_id),
        ];
        let mdn = u.mdn.map(<[u8]>::to_vec);
        let lazy = u.lazy;
        let context = "recording an outbound document's state";
        self.shared.run(context, |c| async move {
            let mut client = c.get().await?;
            let [last, next, error, mic, disposition, expect, message_id] = &texts;
            let tx = client.transaction().await.map_err(err(context))?;
            if lazy {
                // Flushed with the WAL of the next synchronous commit.
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await
                    .map_err(err(context))?;
            }
            let changed = tx
                .execute(
                    "UPDATE outbox SET status = $2, attempts = $3, first_attempt_at_us = $4,
                        last_attempt_at = $5, next_attempt_at = $6, last_error = $7, mic = $8,
                        mdn_disposition = $9, mdn = $10,
                        message_id = coalesce($12::text, message_id)
                     WHERE id = $1 AND ($11::text IS NULL OR status = $11)",
                    &[
                        &id,
                        &status,
                        &attempts,
                        &first,
                        last,
                        next,
                        error,
                        mic,
                        disposition,
                        &mdn,
                        expect,
                        message_id,
                    ],
                )
                .await
                .map_err(err(context))?;
            tx.commit().await.map_err(err(context))?;
            Ok(changed == 1)
        })
    }

    pub(in crate::store) fn pg_outbox_list(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>> {
        let filter = filter.clone();
        let context = "listing the outbox";
        self.shared.run(context, |c| async move {
            let client = c.get().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox
                         WHERE ($1::text IS NULL OR partner = $1)
                           AND ($2::text IS NULL OR status = $2)
                           AND ($3::text IS NULL OR execution_id = $3)
                         ORDER BY id DESC LIMIT $4"
                    ),
                    &[
                        &filter.partner,
                        &filter.status,
                        &filter.execution_id,
                        &i64::from(filter.limit),
                    ],
                )
                .await
                .map_err(err(context))?;
            Ok(rows.iter().map(row_to_outbox).collect())
        })
    }

    pub(in crate::store) fn pg_outbox_row(&self, id: i64) -> Result<Option<OutboxRow>> {
        let context = "reading an outbox row";
        self.shared.run(context, |c| async move {
            let client = c.get().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(err(context))?;
            Ok(row.as_ref().map(row_to_outbox))
        })
    }

    pub(in crate::store) fn pg_outbox_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<OutboxRow>> {
        let message_id = message_id.to_string();
        let context = "finding an outbox row by Message-ID";
        self.shared.run(context, |c| async move {
            let client = c.get().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_id = $1
                         ORDER BY id DESC LIMIT 1"
                    ),
                    &[&message_id],
                )
                .await
                .map_err(err(context))?;
            Ok(row.as_ref().map(row_to_outbox))
        })
    }

    pub(in crate::store) fn pg_outbox_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let context = "reading an outbound document";
        self.shared.run(context, |c| async move {
            let client = c.get().await?;
            let row = client
                .query_opt("SELECT payload FROM outbox WHERE id = $1", &[&id])
                .await
                .map_err(err(context))?;
            Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })
    }
}
