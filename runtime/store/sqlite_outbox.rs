//! The outbox in SQLite (see [`super::outbox`]). Every write is its own
//! transaction: with `synchronous=FULL` it is durable when it returns,
//! which is what a send needs before its first byte leaves.

use rusqlite::{params, OptionalExtension};

use super::outbox::{
    NewOutbound, OutboundBytes, OutboxFilter, OutboxRow, OutboxUpdate, OUTBOX_COLUMNS,
};
use super::sqlite::SqliteStore;
use super::{Result, StoreError};

fn err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::sqlite(context, &e)
}

pub(super) fn row_to_outbox(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let non_negative = |v: i64| v.max(0) as u64;
    Ok(OutboxRow {
        id: row.get(0)?,
        execution_id: row.get(1)?,
        step: non_negative(row.get(2)?) as u32,
        document: non_negative(row.get(3)?) as u32,
        process: row.get(4)?,
        partner: row.get(5)?,
        as2_from: row.get(6)?,
        as2_to: row.get(7)?,
        message_id: row.get(8)?,
        subject: row.get(9)?,
        file_name: row.get(10)?,
        payload_ref: row.get(11)?,
        size: non_negative(row.get(12)?),
        status: row.get(13)?,
        attempts: non_negative(row.get(14)?) as u32,
        created_at: row.get(15)?,
        first_attempt_at_us: row.get(16)?,
        last_attempt_at: row.get(17)?,
        next_attempt_at: row.get(18)?,
        last_error: row.get(19)?,
        mic: row.get(20)?,
        mdn_disposition: row.get(21)?,
        mdn: row.get(22)?,
    })
}

impl SqliteStore {
    pub(super) fn sqlite_outbox_enqueue(&self, new: &NewOutbound<'_>) -> Result<OutboxRow> {
        let context = "writing a document into the outbox";
        let (inline, reference) = match new.bytes {
            OutboundBytes::Inline(bytes) => (Some(bytes), None),
            OutboundBytes::Stored(reference) => (None, Some(reference)),
        };
        let (status, attempts, attempt_at, attempt_at_us) = match new.first_attempt {
            Some((at, at_us)) => (super::outbox::state::SENDING, 1, Some(at), Some(at_us)),
            None => (super::outbox::state::QUEUED, 0, None, None),
        };
        let conn = self.lock();
        // A row written before (a retry, a rerun, a recovery) is read, not
        // written again: no write transaction, no sync.
        let existing = conn
            .query_row(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox
                     WHERE execution_id = ?1 AND step = ?2 AND document = ?3"
                ),
                params![new.execution_id, new.step, new.document],
                row_to_outbox,
            )
            .optional()
            .map_err(err(context))?;
        if let Some(row) = existing {
            return Ok(row);
        }
        conn.execute(
            "INSERT INTO outbox (execution_id, step, document, process, partner, as2_from,
                as2_to, message_id, subject, file_name, payload, payload_ref, size, status,
                attempts, created_at, last_attempt_at, first_attempt_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?16, ?14,
                ?17, ?18)
             ON CONFLICT (execution_id, step, document) DO NOTHING",
            params![
                new.execution_id,
                new.step,
                new.document,
                new.process,
                new.partner,
                new.as2_from,
                new.as2_to,
                new.message_id,
                new.subject,
                new.file_name,
                inline,
                reference,
                new.size as i64,
                new.created_at,
                status,
                attempts,
                attempt_at,
                attempt_at_us,
            ],
        )
        .map_err(err(context))?;
        conn.query_row(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE execution_id = ?1 AND step = ?2 AND document = ?3"
            ),
            params![new.execution_id, new.step, new.document],
            row_to_outbox,
        )
        .map_err(err(context))
    }

    pub(super) fn sqlite_outbox_update(
        &self,
        u: &OutboxUpdate<'_>,
        expect: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<bool> {
        let conn = self.lock();
        if u.lazy {
            // WAL frames of this commit reach the disk with the next
            // synchronous=FULL commit's fsync.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err("recording an outbound document's state"))?;
        }
        let changed = conn
            .execute(
                "UPDATE outbox SET status = ?2, attempts = ?3, first_attempt_at_us = ?4,
                    last_attempt_at = ?5, next_attempt_at = ?6, last_error = ?7, mic = ?8,
                    mdn_disposition = ?9, mdn = ?10, message_id = coalesce(?12, message_id)
                 WHERE id = ?1 AND (?11 IS NULL OR status = ?11)",
                params![
                    u.id,
                    u.status,
                    u.attempts,
                    u.first_attempt_at_us,
                    u.last_attempt_at,
                    u.next_attempt_at,
                    u.last_error,
                    u.mic,
                    u.mdn_disposition,
                    u.mdn,
                    expect,
                    message_id,
                ],
            )
            .map_err(err("recording an outbound document's state"));
        if u.lazy {
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(err("restoring synchronous commits"))?;
        }
        Ok(changed? == 1)
    }

    pub(super) fn sqlite_outbox_list(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE (?1 IS NULL OR partner = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR execution_id = ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(err("listing the outbox"))?;
        let rows = stmt
            .query_map(
                params![
                    filter.partner,
                    filter.status,
                    filter.execution_id,
                    filter.limit
                ],
                row_to_outbox,
            )
            .map_err(err("listing the outbox"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err("listing the outbox"))
    }

    pub(super) fn sqlite_outbox_row(&self, id: i64) -> Result<Option<OutboxRow>> {
        self.lock()
            .query_row(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"),
                params![id],
                row_to_outbox,
            )
            .optional()
            .map_err(err("reading an outbox row"))
    }

    pub(super) fn sqlite_outbox_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<OutboxRow>> {
        self.lock()
            .query_row(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?1
                     ORDER BY id DESC LIMIT 1"
                ),
                params![message_id],
                row_to_outbox,
            )
            .optional()
            .map_err(err("finding an outbox row by Message-ID"))
    }

    pub(super) fn sqlite_outbox_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.lock()
            .query_row(
                "SELECT payload FROM outbox WHERE id = ?1",
                params![id],
                |row| row.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(err("reading an outbound document"))
    }
}
