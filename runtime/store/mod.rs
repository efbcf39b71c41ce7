//! The store: the message log, the duplicate index, listener states.
//! Behind a trait so that a shared PostgreSQL store for a multi-node
//! Molecule can be added without touching callers. Payloads are files
//! ([`files`]); the store holds their paths.

pub mod files;
pub mod group_commit;
pub mod retention;
pub mod sqlite;

use serde::Serialize;

/// A store failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("store: {context}: {message}")]
pub struct StoreError {
    pub context: String,
    pub message: String,
}

impl StoreError {
    pub fn new(context: &str, message: impl std::fmt::Display) -> Self {
        StoreError {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One received AS2 message, as logged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageRecord {
    pub listener: Option<String>,
    pub as2_from: String,
    pub as2_to: String,
    /// As received, angle brackets included.
    pub message_id: String,
    pub subject: Option<String>,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    pub request_size: u64,
    pub payload_size: Option<u64>,
    /// e.g. `aes256-cbc`, when encrypted.
    pub encryption: Option<String>,
    /// The signer's digest, when signed.
    pub signature: Option<String>,
    /// `before-signing`, `after-signing` or `unsigned`, when compressed.
    pub compression: Option<String>,
    /// `value, alg` as returned in the MDN.
    pub mic: Option<String>,
    /// The Disposition outcome sent (`processed`, `processed/error: ...`).
    pub disposition: String,
    /// `none`, `sync` or `async`.
    pub mdn_mode: String,
    /// `none`, `sent`, `pending`, `delivered`, `failed`.
    pub mdn_status: String,
    pub mdn_url: Option<String>,
    #[serde(skip)]
    pub mdn_headers: Vec<(String, String)>,
    #[serde(skip)]
    pub mdn_body: Vec<u8>,
    pub raw_path: Option<String>,
    pub payload_path: Option<String>,
    /// The error text, for a message that was refused.
    pub error: Option<String>,
    /// RFC 3339.
    pub received_at: String,
}

/// A receipt given before, returned byte for byte to a duplicate.
#[derive(Debug, Clone)]
pub struct StoredReceipt {
    pub record_id: i64,
    pub mdn_mode: String,
    pub mdn_url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A message log row with its id.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub id: i64,
    #[serde(flatten)]
    pub record: MessageRecord,
}

/// What the runtime needs from a store.
pub trait Store: Send + Sync {
    /// The receipt of a positively acknowledged earlier message with the
    /// same (AS2-From, Message-ID), among the last `window` messages.
    fn find_receipt(
        &self,
        as2_from: &str,
        message_id: &str,
        window: u64,
    ) -> Result<Option<StoredReceipt>>;
    /// Logs a message; returns its id. Committed durably when it returns.
    fn insert_message(&self, record: &MessageRecord) -> Result<i64> {
        self.insert_messages(std::slice::from_ref(record))?
            .pop()
            .ok_or_else(|| StoreError::new("logging message", "no id returned"))
    }
    /// Logs several messages in one durable transaction; ids in order.
    fn insert_messages(&self, records: &[MessageRecord]) -> Result<Vec<i64>>;
    /// Updates the delivery status of an asynchronous MDN.
    fn set_mdn_status(&self, id: i64, status: &str) -> Result<()>;
    /// The newest messages first.
    fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRow>>;
    /// Asynchronous receipts not yet delivered (to queue again at start).
    fn pending_async_mdns(&self) -> Result<Vec<(i64, StoredReceipt)>>;
    /// Deletes up to `limit` messages received before `cutoff` (RFC 3339),
    /// except receipts still waiting for asynchronous delivery; returns the
    /// file paths they referenced, for the caller to remove.
    fn purge_before(&self, cutoff: &str, limit: u32) -> Result<Vec<String>>;
    /// Listener IDs an operator paused.
    fn paused_listeners(&self) -> Result<Vec<String>>;
    fn set_paused(&self, listener: &str, paused: bool) -> Result<()>;
}
