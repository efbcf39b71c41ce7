//! The steps a process runs after its start step, one module each,
//! behind one trait ([`ProcessStep`]):
//!
//! - [`wasm`]: a guest module, one document in, any number out.
//! - [`disk`]: writes each document to a file.
//! - [`http`]: POSTs each document to an endpoint.
//! - [`as2`]: sends each document to a trading partner through the outbox.
//!
//! Every step reads its own key of a `steps:` item ([`LoadContext`]) and
//! runs on one document at a time ([`StepContext`]); the execution loop
//! (`execution.rs`) knows none of them by name.
//!
//! Adding a step: a file here with its raw YAML struct, a `load` and a
//! [`ProcessStep`] impl; then its key in `definition::RawStep` and one line
//! in `definition::load_step`'s list.

pub mod as2;
pub mod disk;
pub mod http;
pub mod wasm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use atom_connectors::delivery::disk::DiskError;
use atom_connectors::delivery::http::HttpError;
use atom_connectors::delivery::Content as Delivered;

use crate::admin::metrics::Metrics;
use crate::engine::{GuestFailure, GuestLimits, ProcessEngine, Properties};
use crate::process::definition::Partners;
use crate::process::execution::{Job, Log, TestFaults, TrackedProperties};
use crate::store::documents::Documents;
use crate::store::{ExecutionRecord, Store, StoreError, StoreErrorKind};

/// One step after the start step.
pub trait ProcessStep: Send + Sync {
    /// How `atom processes` and logs name it: `wasm transform.wat`.
    fn describe(&self) -> String;

    /// What the bundle's version hashes for it besides process.yaml (a
    /// module's SHA-256, a partner profile's), if anything.
    fn version(&self) -> Option<&[u8]> {
        None
    }

    /// Whether it acts outside Atom (writes a file, sends): the runner
    /// makes the attempt durable before the first such step.
    fn has_effects(&self) -> bool;

    /// Runs on one document; the documents it hands to the next step. A
    /// failure ends the attempt; its reason starts with `cx.where_`.
    fn run(
        &self,
        document: Document,
        cx: &mut StepContext<'_>,
    ) -> Result<Vec<Document>, StepFailure>;
}

impl std::fmt::Debug for dyn ProcessStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What loading a step may need from the bundle and atom.yaml.
pub struct LoadContext<'a> {
    /// The step's place in `steps:`, from 0.
    pub index: usize,
    pub bundle_dir: &'a Path,
    /// `data_dir` of atom.yaml.
    pub data_dir: &'a Path,
    /// `delivery.allowed_directories` of atom.yaml.
    pub allowed_directories: &'a [PathBuf],
    pub engine: &'a dyn ProcessEngine,
    pub partners: &'a Partners<'a>,
}

impl LoadContext<'_> {
    /// The key an error names: `steps[0].disk.file_name`.
    pub fn key(&self, field: &str) -> String {
        format!("steps[{}].{field}", self.index)
    }
}

/// What a step sees of the execution while it runs on one document.
pub struct StepContext<'a> {
    /// Where received and kept documents are.
    pub documents: &'a dyn Documents,
    pub store: &'a dyn Store,
    pub metrics: &'a Metrics,
    /// The client all `http` steps share.
    pub http: &'a http::SharedClient,
    pub faults: &'a TestFaults,
    pub job: &'a Job,
    pub record: &'a ExecutionRecord,
    pub tracked: &'a TrackedProperties,
    /// `{date}` of templates: today, `YYYYMMDD`.
    pub date: &'a str,
    /// The process log of this execution.
    pub log: &'a mut Log,
    /// Low_Latency_Debug: log timings.
    pub debug: bool,
    /// The guests' limits, the time capped by the worker's quota.
    pub limits: GuestLimits,
    /// Time spent in guests, and instantiating them.
    pub engine: &'a mut Duration,
    pub instantiate: &'a mut Duration,
    /// Set to end the execution COMPLETE_WARN.
    pub warned: &'a mut bool,
    /// Which step (from 0) and which of the documents it receives (from 0).
    pub step: usize,
    pub document: usize,
    /// `{document_index}` of templates: `document + 1`.
    pub document_number: String,
    /// `step 2 (disk out/{as2_from}), document 1`, for errors and the log.
    pub where_: &'a str,
}

impl StepContext<'_> {
    /// What `{name}` in a template stands for: the runtime's names, the
    /// tracked properties, then the document's dynamic properties.
    pub fn lookup<'s>(
        &'s self,
        properties: &'s Properties,
    ) -> impl Fn(&str) -> Option<&'s str> + Copy + 's {
        let process: &'s str = &self.job.spec.id;
        let execution_id: &'s str = &self.record.id;
        let date: &'s str = self.date;
        let document_index: &'s str = &self.document_number;
        let tracked: &'s TrackedProperties = self.tracked;
        move |key: &str| -> Option<&'s str> {
            match key {
                "process" => Some(process),
                "execution_id" => Some(execution_id),
                "date" => Some(date),
                "document_index" => Some(document_index),
                _ => tracked
                    .get(key)
                    .or_else(|| properties.get(key))
                    .map(String::as_str),
            }
        }
    }
}

/// A document between steps.
pub struct Document {
    pub content: Content,
    pub properties: Properties,
    /// Where the steps delivered it (file paths, URLs, outbox rows).
    pub delivered: Vec<String>,
}

/// A document's bytes: produced by a guest (in memory), or the stored
/// payload, streamed to a guest's stdin and to disk and HTTP steps.
pub enum Content {
    Memory(Vec<u8>),
    Stored { reference: String, size: u64 },
}

impl Document {
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::Memory(bytes) => bytes.len() as u64,
            Content::Stored { size, .. } => *size,
        }
    }
}

/// Hands `send` the document's bytes to deliver: in memory, or a way to
/// open the stored ones, once per attempt.
pub fn with_delivered<T>(
    content: &Content,
    documents: &dyn Documents,
    send: impl FnOnce(Delivered<'_>) -> T,
) -> T {
    match content {
        Content::Memory(bytes) => send(Delivered::Bytes(bytes)),
        Content::Stored { reference, size } => {
            let open = || {
                documents
                    .reader(reference)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            };
            send(Delivered::Stream {
                open: &open,
                len: *size,
            })
        }
    }
}

/// Why a step failed, and whether running the execution again later may
/// succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub reason: String,
    pub transient: bool,
    /// The step decides when to try again (an `as2` step's back-off and
    /// give-up time), whatever the process's `limits.retries`.
    pub retry_in: Option<Duration>,
    /// Not a failure: the step waits for something outside (an
    /// asynchronous receipt) and looks again after `retry_in`.
    pub waiting: bool,
}

impl StepFailure {
    pub fn permanent(reason: String) -> StepFailure {
        StepFailure {
            reason,
            transient: false,
            retry_in: None,
            waiting: false,
        }
    }

    /// A guest that trapped, exited non-zero or hit a limit does the same
    /// on the same document: permanent.
    pub fn guest(place: &str, failure: &GuestFailure) -> StepFailure {
        StepFailure::permanent(format!("{place}: {failure}"))
    }

    /// Full disk, quota, EIO, read-only file system: transient; a bad
    /// file name or an escape: permanent.
    pub fn disk(place: &str, error: &DiskError) -> StepFailure {
        StepFailure {
            reason: format!("{place}: {error}"),
            transient: error.is_transient(),
            retry_in: None,
            waiting: false,
        }
    }

    /// Unreachable, timed out, 408, 429, 5xx (after the step's own
    /// retries): transient; other statuses and templates: permanent.
    pub fn http(place: &str, error: &HttpError) -> StepFailure {
        StepFailure {
            reason: format!("{place}: {error}"),
            transient: error.is_transient(),
            retry_in: None,
            waiting: false,
        }
    }

    /// The received document could not be read: missing (purged) is
    /// permanent, an I/O error of the disk is transient.
    pub fn payload(error: &StoreError) -> StepFailure {
        StepFailure {
            reason: format!("reading the received document: {}", error.message),
            transient: error.kind != StoreErrorKind::Other,
            retry_in: None,
            waiting: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_failures_and_missing_documents_are_permanent_full_disks_transient() {
        for failure in [
            GuestFailure::Trap("unreachable".into()),
            GuestFailure::Exit(3),
            GuestFailure::TimeLimit(Duration::from_secs(1)),
            GuestFailure::MemoryLimit {
                limit: 1,
                requested: 2,
            },
            GuestFailure::OutputLimit(1),
        ] {
            let classified = StepFailure::guest("step 1 (wasm g.wat), document 1", &failure);
            assert!(!classified.transient, "{failure}");
            assert!(classified
                .reason
                .starts_with("step 1 (wasm g.wat), document 1: "));
        }
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        let gone = StoreError::io("reading document", &gone, "/data/messages/x/payload");
        assert!(!StepFailure::payload(&gone).transient);
        let busy = StoreError::of_kind(StoreErrorKind::Busy, "reading document", "locked");
        assert!(StepFailure::payload(&busy).transient);
        let full = DiskError::Io {
            path: std::path::PathBuf::from("/out"),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let disk = StepFailure::disk("step 2 (disk out/{x}), document 1", &full);
        assert!(disk.transient, "{}", disk.reason);
        assert!(!StepFailure::disk("s", &DiskError::Unsafe("..".into())).transient);
        let refused = HttpError::Status {
            url: "http://erp/".into(),
            status: 400,
            attempts: 1,
            body: String::new(),
        };
        assert!(!StepFailure::http("s", &refused).transient);
        let down = HttpError::Status {
            url: "http://erp/".into(),
            status: 503,
            attempts: 4,
            body: String::new(),
        };
        assert!(StepFailure::http("s", &down).transient);
    }
}
