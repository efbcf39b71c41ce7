//! The outbox: documents `as2` steps send to partners. One row per
//! (execution, step, document), written durably before the first attempt,
//! so that every attempt (after a retry, a crash or a rerun) carries the
//! same Message-ID and the same bytes, and an acknowledged document is
//! never sent again by accident.

use serde::Serialize;

/// Where an outbound document is.
pub mod state {
    /// Written, not yet attempted.
    pub const QUEUED: &str = "queued";
    /// An attempt is under way (or was cut off by a crash: sent again).
    pub const SENDING: &str = "sending";
    /// A transient failure; the next attempt is at `next_attempt_at`.
    pub const RETRYING: &str = "retrying";
    /// Delivered (HTTP 2xx); the asynchronous MDN has not come yet
    /// (`next_attempt_at` is when it is given up).
    pub const AWAITING_MDN: &str = "awaiting_mdn";
    /// A positive MDN came back and passed every check.
    pub const ACKNOWLEDGED: &str = "acknowledged";
    /// Delivered (HTTP 2xx) to a partner that was asked for no MDN.
    pub const SENT: &str = "sent";
    /// A permanent failure, or retries given up.
    pub const FAILED: &str = "failed";
    /// Cancelled by an operator.
    pub const CANCELLED: &str = "cancelled";
    pub const ALL: [&str; 8] = [
        QUEUED,
        SENDING,
        RETRYING,
        AWAITING_MDN,
        ACKNOWLEDGED,
        SENT,
        FAILED,
        CANCELLED,
    ];

    /// True when no attempt will follow without an operator.
    pub fn is_final(state: &str) -> bool {
        matches!(state, ACKNOWLEDGED | SENT | FAILED | CANCELLED)
    }

    /// True when the partner has the document.
    pub fn is_delivered(state: &str) -> bool {
        matches!(state, ACKNOWLEDGED | SENT)
    }
}

/// The bytes of an outbound document: kept in the row (what a guest
/// produced), or a reference to a stored document (the received payload).
#[derive(Debug, Clone, Copy)]
pub enum OutboundBytes<'a> {
    Inline(&'a [u8]),
    Stored(&'a str),
}

/// A document for the outbox.
#[derive(Debug, Clone)]
pub struct NewOutbound<'a> {
    pub execution_id: &'a str,
    /// Index of the `as2` step in the process, from 0.
    pub step: u32,
    /// Index of the document among those the step received, from 0.
    pub document: u32,
    pub process: &'a str,
    /// The partner profile's name.
    pub partner: &'a str,
    pub as2_from: &'a str,
    pub as2_to: &'a str,
    /// With angle brackets.
    pub message_id: &'a str,
    pub subject: &'a str,
    pub file_name: Option<&'a str>,
    pub bytes: OutboundBytes<'a>,
    pub size: u64,
    /// RFC 3339.
    pub created_at: &'a str,
    /// The first attempt starts now (RFC 3339, µs since the epoch): the
    /// row is written `sending` with one attempt, in the same durable
    /// write. Ignored when the row exists already.
    pub first_attempt: Option<(&'a str, i64)>,
}

/// One outbound document and how its sending went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub execution_id: String,
    pub step: u32,
    pub document: u32,
    pub process: String,
    pub partner: String,
    pub as2_from: String,
    pub as2_to: String,
    pub message_id: String,
    pub subject: String,
    pub file_name: Option<String>,
    /// A stored document's reference; `None` when the bytes are in the row.
    pub payload_ref: Option<String>,
    pub size: u64,
    pub status: String,
    /// Attempts started so far.
    pub attempts: u32,
    pub created_at: String,
    /// When the first attempt of this round started (µs since the epoch):
    /// the give-up time counts from it. An operator's retry starts a new
    /// round.
    pub first_attempt_at_us: Option<i64>,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// The MIC we computed (what the receipt must return).
    pub mic: Option<String>,
    /// The receipt's disposition, as received.
    pub mdn_disposition: Option<String>,
    /// The receipt as received (headers and body), when one came.
    #[serde(skip)]
    pub mdn: Option<Vec<u8>>,
}

/// The new state of a row after an attempt (or an operator's action).
#[derive(Debug, Clone, Default)]
pub struct OutboxUpdate<'a> {
    pub id: i64,
    pub status: &'a str,
    pub attempts: u32,
    pub first_attempt_at_us: Option<i64>,
    pub last_attempt_at: Option<&'a str>,
    pub next_attempt_at: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub mic: Option<&'a str>,
    pub mdn_disposition: Option<&'a str>,
    pub mdn: Option<&'a [u8]>,
    /// Durable with the store's next durable commit rather than before
    /// this call returns (an outcome a crash may lose: the row then stays
    /// `sending` and is sent again, which the partner's duplicate check
    /// absorbs; the execution's final state, committed durably after it,
    /// carries it to disk).
    pub lazy: bool,
}

impl OutboxRow {
    /// The update that leaves the row as it is, to change a few fields.
    pub fn update(&self) -> OutboxUpdate<'_> {
        OutboxUpdate {
            id: self.id,
            status: &self.status,
            attempts: self.attempts,
            first_attempt_at_us: self.first_attempt_at_us,
            last_attempt_at: self.last_attempt_at.as_deref(),
            next_attempt_at: self.next_attempt_at.as_deref(),
            last_error: self.last_error.as_deref(),
            mic: self.mic.as_deref(),
            mdn_disposition: self.mdn_disposition.as_deref(),
            mdn: self.mdn.as_deref(),
            lazy: false,
        }
    }
}

/// Which outbox rows to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    pub partner: Option<String>,
    pub status: Option<String>,
    pub execution_id: Option<String>,
    pub limit: u32,
}

/// The columns every outbox query reads, in [`OutboxRow`]'s order
/// (the payload is read on its own).
pub const OUTBOX_COLUMNS: &str = "id, execution_id, step, document, process, partner, as2_from, \
     as2_to, message_id, subject, file_name, payload_ref, size, status, attempts, created_at, \
     first_attempt_at_us, last_attempt_at, next_attempt_at, last_error, mic, mdn_disposition, mdn";
