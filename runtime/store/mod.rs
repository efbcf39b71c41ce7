//! The store: the message log, the duplicate index, listener states.
//! Behind a trait so that a shared PostgreSQL store for a multi-node
//! Molecule can be added without touching callers. Documents are behind
//! their own trait ([`documents`]); rows hold references to them.

pub mod documents;
pub mod execution_query;
pub mod files;
pub mod group_commit;
pub mod health;
pub mod outbox;
pub mod postgres;
pub mod private;
pub mod retention;
pub mod search;
pub mod sqlite;
pub mod sqlite_documents;
mod sqlite_outbox;

use serde::Serialize;

/// A store failure: what kind (so that callers can answer it well), what
/// we were doing, and the underlying message.
#[derive(Debug, thiserror::Error)]
#[error("store: {context}: {message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub context: String,
    pub message: String,
}

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorKind {
    /// No space left (disk or quota): clears when space is freed.
    Full,
    /// The filesystem or database is read-only.
    ReadOnly,
    /// Locked, busy or too slow right now: worth retrying soon.
    Busy,
    /// Everything else (I/O errors, corruption, bugs).
    Other,
}

impl StoreErrorKind {
    /// Seconds a sender should wait before resending.
    pub fn retry_after_seconds(self) -> &'static str {
        match self {
            StoreErrorKind::Busy => "5",
            StoreErrorKind::Full | StoreErrorKind::ReadOnly => "60",
            StoreErrorKind::Other => "30",
        }
    }

    fn of_io(error: &std::io::Error) -> StoreErrorKind {
        match error.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreErrorKind::Full,
            Some(libc::EROFS) => StoreErrorKind::ReadOnly,
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => StoreErrorKind::Busy,
            _ => StoreErrorKind::Other,
        }
    }

    fn of_sqlite(error: &rusqlite::Error) -> StoreErrorKind {
        use rusqlite::ffi::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
            Some(ErrorCode::ReadOnly) => StoreErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
            _ => StoreErrorKind::Other,
        }
    }
}

impl StoreError {
    pub fn new(context: &str, message: impl std::fmt::Display) -> Self {
        StoreError::of_kind(StoreErrorKind::Other, context, message)
    }

    pub fn of_kind(kind: StoreErrorKind, context: &str, message: impl std::fmt::Display) -> Self {
        StoreError {
            kind,
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// A filesystem error, classified by its OS error code.
    pub fn io(context: &str, error: &std::io::Error, detail: impl std::fmt::Display) -> Self {
        StoreError::of_kind(StoreErrorKind::of_io(error), context, detail)
    }

    /// A SQLite error, classified by its result code.
    pub fn sqlite(context: &str, error: &rusqlite::Error) -> Self {
        StoreError::of_kind(StoreErrorKind::of_sqlite(error), context, error)
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
    /// `none`, `sent`, `pending`, `delivered`, `failed`, `refused` (the
    /// asynchronous target was not allowed; answered synchronously).
    pub mdn_status: String,
    pub mdn_url: Option<String>,
    /// Why an asynchronous MDN was not sent there (`mdn_status` `refused`).
    pub mdn_error: Option<String>,
    /// The node whose lease a pending asynchronous MDN is under.
    pub mdn_owner: Option<String>,
    /// Until when (µs since the epoch) that lease holds.
    #[serde(skip)]
    pub mdn_lease_until_us: Option<i64>,
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
    /// Set on an accepted message whose listener rejects duplicates: the
    /// message claims its (AS2-From, Message-ID), and the store refuses to
    /// log a second copy while the first is inside this window.
    #[serde(skip)]
    pub dedupe: Option<DuplicateWindow>,
}

/// How long a partner's Message-ID stays claimed: among that partner's
/// last `count` accepted receipts on the listener, and not older than
/// `days`. Only the partner's own accepted messages move it, so junk and
/// other partners' traffic cannot push a Message-ID out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateWindow {
    pub count: u64,
    pub days: u32,
}

/// What became of one receipt in a commit.
#[derive(Debug, Clone)]
pub enum Committed {
    /// Logged under this message row id.
    Stored(i64),
    /// Not logged: an earlier copy inside the window holds the
    /// (AS2-From, Message-ID); its receipt is returned to the sender.
    Duplicate(StoredReceipt),
}

/// A receipt given before, returned byte for byte to a duplicate.
#[derive(Debug, Clone)]
pub struct StoredReceipt {
    pub record_id: i64,
    /// The stored raw request of the original, to compare a copy with.
    pub raw_path: Option<String>,
    /// The listener that received it (for its asynchronous MDN targets).
    pub listener: Option<String>,
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

/// Execution statuses (Boomi's names).
pub mod status {
    /// Queued durably, not yet picked up by a worker.
    pub const STARTED: &str = "STARTED";
    pub const INPROCESS: &str = "INPROCESS";
    pub const COMPLETE: &str = "COMPLETE";
    /// Completed, with warnings in the log.
    pub const COMPLETE_WARN: &str = "COMPLETE_WARN";
    pub const ERROR: &str = "ERROR";
    /// Not run to the end: its process was undeployed before it could run.
    pub const ABORTED: &str = "ABORTED";
    pub const ALL: [&str; 6] = [STARTED, INPROCESS, COMPLETE, COMPLETE_WARN, ERROR, ABORTED];
    /// True when the execution will not run again.
    pub fn is_final(status: &str) -> bool {
        matches!(status, COMPLETE | COMPLETE_WARN | ERROR | ABORTED)
    }
}

/// One document an execution kept.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeptDocument {
    pub path: String,
    pub size: u64,
    pub properties: std::collections::BTreeMap<String, String>,
    /// Where the delivery steps put it (files written, URLs posted to).
    #[serde(default)]
    pub delivered: Vec<String>,
}

/// One execution of a process on one received document: its queue entry
/// and its history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecutionRecord {
    /// `execution-<uuid>-YYYY.MM.DD`.
    pub id: String,
    /// The message log row of the document it runs on.
    pub message_row: i64,
    pub process: String,
    /// The bundle version that runs (or ran) it.
    pub version: String,
    /// `general` or `low_latency_debug`.
    pub mode: String,
    pub status: String,
    /// Runs started (more than 1 after a crash interrupted it).
    pub attempts: u32,
    /// The tracked properties, as JSON.
    #[serde(skip)]
    pub properties_json: String,
    pub payload_path: String,
    /// RFC 3339 and microseconds since the epoch (for latency figures).
    pub queued_at: String,
    pub queued_at_us: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub finished_at_us: Option<i64>,
    /// Time inside the engine: instantiate, run, collect (all guests).
    pub engine_us: Option<i64>,
    pub instantiate_us: Option<i64>,
    pub input_documents: u32,
    pub input_bytes: u64,
    pub output_documents: u32,
    pub output_bytes: u64,
    pub error: Option<String>,
    pub log: String,
    pub documents: Vec<KeptDocument>,
    /// The node whose lease it is under (queued or running there).
    pub owner: Option<String>,
    /// Until when (µs since the epoch) the owner's lease holds.
    #[serde(skip)]
    pub lease_until_us: Option<i64>,
    /// Goes up with every claim; a state written under an older epoch is
    /// refused (the work was taken over meanwhile).
    #[serde(skip)]
    pub lease_epoch: i64,
}

/// The version of a bundle every node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHead {
    pub name: String,
    /// SHA-256 of its files (see `listeners::bundle_sync::content_hash`).
    pub hash: String,
    /// Undeployed: nodes remove their copy.
    pub withdrawn: bool,
    pub published_by: String,
    pub published_at: String,
}

/// A node's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeBeat {
    pub node_id: String,
    /// A random ID per start: tells a live namesake from a crashed self.
    pub incarnation: String,
    /// Where its shared web server listens.
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    pub heartbeat_at_us: i64,
    /// Executions running there.
    pub running: u32,
    /// Executions and asynchronous MDNs held there under a lease.
    pub held: u32,
    /// `serving`, `draining` or `stopped`.
    pub state: String,
}

/// A listener's state shared by every node of a Molecule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerShared {
    pub listener: String,
    pub paused: bool,
    /// Restarts asked so far, on any node: a node that has seen fewer
    /// restarts the listener itself.
    pub restarts: i64,
}

/// An asynchronous MDN a node claimed for delivery.
#[derive(Debug, Clone)]
pub struct PendingMdn {
    pub receipt: StoredReceipt,
    /// The lease's epoch: the delivery's outcome is recorded under it.
    pub epoch: i64,
}

/// Which unfinished work (executions by ID, MDNs by message row) a node
/// claims.
#[derive(Debug, Clone)]
pub struct Claim<'a, K = String> {
    pub node: &'a str,
    /// The new lease's end, µs since the epoch.
    pub until_us: i64,
    /// Now, µs since the epoch: leases ending before it have expired.
    pub now_us: i64,
    /// Also those this node held before it restarted, whatever their lease
    /// (at start: the node that held them is this one, and it is gone).
    pub own_earlier: bool,
    /// What this node holds in memory right now: never claimed again.
    pub except: &'a [K],
    pub limit: u32,
}

/// A message row and, when its process runs steps, its queued execution.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub message: MessageRecord,
    pub execution: Option<ExecutionRecord>,
}

/// Which executions to list.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub process: Option<String>,
    pub status: Option<String>,
    /// `general` or `low_latency_debug`.
    pub mode: Option<String>,
    /// Queued at or after (µs since the epoch).
    pub queued_from_us: Option<i64>,
    /// Queued before (µs since the epoch).
    pub queued_to_us: Option<i64>,
    /// Keyset paging: only executions after this (queued_at_us, id) in
    /// newest-first order.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// Which messages a search wants, newest first, a page at a time.
/// Empty strings count as not given. Checked by [`MessageSearch::validate`]
/// (which every store runs first); see [`search`] for how each filter is
/// matched and which index answers it.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct MessageSearch {
    /// Exact AS2-From.
    pub as2_from: Option<String>,
    /// Exact AS2-To.
    pub as2_to: Option<String>,
    /// Exact Message-ID, with or without its angle brackets.
    pub message_id: Option<String>,
    /// Subject starting with this (case-sensitive).
    pub subject: Option<String>,
    /// File name starting with this (case-sensitive).
    pub file_name: Option<String>,
    /// Exact MIME type.
    pub mime_type: Option<String>,
    /// `processed` (disposition exactly "processed") or `error` (any other disposition).
    pub disposition: Option<DispositionFilter>,
    /// Received at or after (RFC 3339, or `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM`).
    pub received_from: Option<String>,
    /// Received before (same forms).
    pub received_to: Option<String>,
    /// Keyset paging: only rows with id < before_id.
    pub before_id: Option<i64>,
    /// Page size (the store caps it at 1,000; 0 means the default, 50).
    pub limit: u32,
}

/// Which outcome a [`MessageSearch`] wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispositionFilter {
    Processed,
    Error,
}

/// What the console's overview shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Activity {
    /// One entry per minute that had messages, oldest first: ("YYYY-MM-DDTHH:MM" UTC, messages, of which errors i.e. disposition != 'processed').
    pub per_minute: Vec<MinuteCount>,
    /// Executions per status (every status in status::ALL, zero included).
    pub executions_by_status: Vec<(String, u64)>,
    /// Asynchronous MDNs still pending delivery.
    pub pending_async_mdns: u64,
    /// Outbox rows per state (whatever states the outbox has).
    pub outbox_by_state: Vec<(String, u64)>,
}

/// Messages received in one minute.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MinuteCount {
    pub minute: String,
    pub messages: u64,
    pub errors: u64,
}

/// What the runtime needs from a store.
pub trait Store: Send + Sync {
    /// The receipt of the accepted earlier message that holds
    /// (AS2-From, Message-ID), if it is inside `window` for `listener`.
    fn find_receipt(
        &self,
        listener: &str,
        as2_from: &str,
        message_id: &str,
        window: DuplicateWindow,
    ) -> Result<Option<StoredReceipt>>;
    /// Logs a message; returns its id. Committed durably when it returns.
    fn insert_message(&self, record: &MessageRecord) -> Result<i64> {
        self.insert_receipts(&[Receipt {
            message: record.clone(),
            execution: None,
        }])?
        .pop()
        .ok_or_else(|| StoreError::new("logging message", "no id returned"))
    }
    /// Logs several messages, with their queued executions, in one durable
    /// transaction; message ids in order. A duplicate is an error here.
    fn insert_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>> {
        self.commit_batch(receipts, &[])?
            .into_iter()
            .map(|c| match c {
                Committed::Stored(id) => Ok(id),
                Committed::Duplicate(r) => Err(StoreError::new(
                    "logging message",
                    format!("a copy is already stored as message {}", r.record_id),
                )),
            })
            .collect()
    }
    /// Writes the state of executions (status, timings, log, documents),
    /// each only if its `lease_epoch` is still the row's (else it was taken
    /// over, and the state is dropped with a warning).
    fn update_executions(&self, executions: &[ExecutionRecord]) -> Result<()> {
        self.commit_batch(&[], executions).map(|_| ())
    }
    /// Receipts and execution states in one durable transaction (the group
    /// commit). A receipt whose (AS2-From, Message-ID) is held by an earlier
    /// copy inside its window is not logged (nor its execution queued):
    /// [`Committed::Duplicate`]. Outcomes in the order of `receipts`.
    fn commit_batch(
        &self,
        receipts: &[Receipt],
        executions: &[ExecutionRecord],
    ) -> Result<Vec<Committed>>;
    /// A cheap durable write, to tell whether the store can commit now.
    fn probe(&self) -> Result<()>;
    /// Executions queued or running, oldest first.
    fn unfinished_executions(&self) -> Result<Vec<ExecutionRecord>>;
    /// Claims unfinished executions (STARTED or INPROCESS) of other nodes
    /// whose lease has expired (or that have none), and with `own_earlier`
    /// those the node held before it restarted; oldest first. A live node
    /// never claims its own: it knows what it holds. Each claimed row gets the
    /// node as owner, the new lease, and its `lease_epoch` raised by one.
    fn claim_executions(&self, claim: &Claim<'_>) -> Result<Vec<ExecutionRecord>>;
    /// Extends `node`'s leases on executions it holds, as (id, epoch), to
    /// `until_us`; returns the IDs it no longer holds (taken over).
    fn renew_execution_leases(
        &self,
        node: &str,
        held: &[(String, i64)],
        until_us: i64,
    ) -> Result<Vec<String>>;
    /// Ends `node`'s leases on these executions now (a draining node), so
    /// that another node can claim them at once.
    fn release_execution_leases(&self, node: &str, held: &[(String, i64)]) -> Result<()>;
    /// Queues a finished execution again (a rerun) under `node`'s lease:
    /// writes `record`'s state, owner and lease, raises the epoch. Returns
    /// the new epoch, or `None` when the execution is not finished (so of
    /// two reruns at once, one wins).
    fn requeue_finished(
        &self,
        record: &ExecutionRecord,
        node: &str,
        until_us: i64,
    ) -> Result<Option<i64>>;
    /// Newest first.
    fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>>;
    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>>;
    /// Deletes up to `limit` finished executions (COMPLETE, COMPLETE_WARN,
    /// ERROR, ABORTED) queued before `cutoff`; returns how many rows went
    /// and the paths of the documents they kept (failed executions keep
    /// none, so an empty path list does not mean nothing was deleted).
    fn purge_executions_before(&self, cutoff: &str, limit: u32) -> Result<retention::Purged>;
    /// Updates the delivery status of an asynchronous MDN: under the
    /// lease `epoch` it was delivered with (false when the lease was taken
    /// over: the status is left to the new holder), or unconditionally for
    /// a receipt sent again to a resending partner (`None`).
    fn set_mdn_status(&self, id: i64, status: &str, epoch: Option<i64>) -> Result<bool>;
    /// The newest messages first.
    fn recent_messages(&self, limit: u32) -> Result<Vec<MessageRow>>;
    /// One message of the log by its row id.
    fn message(&self, id: i64) -> Result<Option<MessageRow>>;
    /// Received messages matching `search`, newest first (by id), at most
    /// `search.limit` (capped at 1,000). An invalid search (a bad date) is
    /// an error naming the field.
    fn search_messages(&self, search: &MessageSearch) -> Result<Vec<MessageRow>>;
    /// The overview: messages per minute received at or after `since`
    /// (RFC 3339), executions per status, pending asynchronous MDNs, the
    /// outbox per state.
    fn activity(&self, since: &str) -> Result<Activity>;
    /// Claims asynchronous receipts not yet delivered (`pending`), like
    /// [`Store::claim_executions`]: other nodes' whose lease expired, and
    /// with `own_earlier` the node's own from before it restarted.
    fn claim_async_mdns(&self, claim: &Claim<'_, i64>) -> Result<Vec<PendingMdn>>;
    /// Extends `node`'s leases on pending MDNs (message row, epoch);
    /// returns the rows it no longer holds.
    fn renew_mdn_leases(&self, node: &str, held: &[(i64, i64)], until_us: i64) -> Result<Vec<i64>>;
    /// Ends `node`'s leases on these pending MDNs now (a draining node).
    fn release_mdn_leases(&self, node: &str, held: &[(i64, i64)]) -> Result<()>;
    /// Deletes up to `limit` messages received before `cutoff` (RFC 3339),
    /// except receipts still waiting for asynchronous delivery and messages
    /// whose execution has not finished; returns how many rows went and the
    /// file paths they referenced, for the caller to remove.
    fn purge_before(&self, cutoff: &str, limit: u32) -> Result<retention::Purged>;
    /// Listener IDs an operator paused.
    fn paused_listeners(&self) -> Result<Vec<String>>;
    fn set_paused(&self, listener: &str, paused: bool) -> Result<()>;
    /// Records a node's heartbeat (one row per node ID).
    fn heartbeat(&self, beat: &NodeBeat) -> Result<()>;
    /// Every node that ever beat, by ID.
    fn nodes(&self) -> Result<Vec<NodeBeat>>;
    /// Records a bundle's content as the version every node serves (the
    /// head of `name`); files are (relative path, bytes). Publishing the
    /// head's own hash again changes nothing.
    fn publish_bundle(
        &self,
        name: &str,
        hash: &str,
        files: &[(String, Vec<u8>)],
        node: &str,
    ) -> Result<()>;
    /// Marks a bundle undeployed everywhere.
    fn withdraw_bundle(&self, name: &str, node: &str) -> Result<()>;
    /// The version every node should serve, per bundle.
    fn bundle_heads(&self) -> Result<Vec<BundleHead>>;
    /// The files of a published version.
    fn bundle_files(&self, name: &str, hash: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Every listener's shared state (what all nodes follow).
    fn listener_states(&self) -> Result<Vec<ListenerShared>>;
    /// Counts a restart of `listener` asked on any node; the new count.
    fn count_restart(&self, listener: &str) -> Result<i64>;
    /// Writes a document into the outbox, durably before it returns, or
    /// returns the row already there for its (execution, step, document).
    fn outbox_enqueue(&self, new: &outbox::NewOutbound<'_>) -> Result<outbox::OutboxRow>;
    /// Writes a row's new state durably; with `expect`, only while its
    /// status is that one (false: it was not). `message_id` replaces the
    /// Message-ID (an operator's resend as a new message).
    fn outbox_update(
        &self,
        update: &outbox::OutboxUpdate<'_>,
        expect: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<bool>;
    /// Newest first.
    fn outbox_list(&self, filter: &outbox::OutboxFilter) -> Result<Vec<outbox::OutboxRow>>;
    fn outbox_row(&self, id: i64) -> Result<Option<outbox::OutboxRow>>;
    /// The row that sent this Message-ID (with angle brackets), if any.
    fn outbox_by_message_id(&self, message_id: &str) -> Result<Option<outbox::OutboxRow>>;
    /// The bytes kept in a row (`None`: no such row, or stored by reference).
    fn outbox_payload(&self, id: i64) -> Result<Option<Vec<u8>>>;
}
