//! The process engine: runs a process's guest modules on one document.
//!
//! A small trait ([`ProcessEngine`], [`PreparedModule`]) so that another
//! engine can plug in; [`wasmtime_engine`] is the one we ship. The guest
//! ABI is documented in the README ("Writing a process"):
//!
//! - WASI preview 1 command: stdin is the document, stdout the output
//!   document, stderr the process log, environment variables carry the
//!   tracked properties and settings, a non-zero exit is an error;
//! - the optional import module `atom` ([`host_abi`]) sets dynamic document
//!   properties and emits several documents.

pub mod host_abi;
mod stdin;
pub mod wasmtime_engine;

pub use wasmtime_engine::finish_thread_work;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Dynamic document properties a guest set, by name.
pub type Properties = BTreeMap<String, String>;

/// One document a guest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDocument {
    pub bytes: Vec<u8>,
    /// The dynamic properties in force when it was emitted.
    pub properties: Properties,
}

/// Limits of one guest run.
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    pub max_time: Duration,
    /// Linear memory, in bytes.
    pub max_memory: usize,
    /// All output documents together, in bytes.
    pub max_output: usize,
}

/// The document a guest reads on its stdin.
pub enum GuestDocument<'a> {
    Bytes(&'a [u8]),
    /// Read from where it is stored as the guest reads (a large payload is
    /// never whole in the host's memory).
    Stream(Box<dyn std::io::Read + Send>),
}

/// What a guest is given.
pub struct GuestInput<'a> {
    pub document: GuestDocument<'a>,
    /// Environment variables (tracked properties, settings, dynamic ones).
    pub env: &'a [(String, String)],
    /// The dynamic properties the document carries in.
    pub properties: &'a Properties,
    pub limits: GuestLimits,
}

/// Why a guest run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("time limit of {0:?} exceeded; the guest was stopped")]
    TimeLimit(Duration),
    #[error("memory limit of {limit} bytes exceeded (the guest asked for {requested} bytes)")]
    MemoryLimit { limit: usize, requested: usize },
    /// More output (stdout and emitted documents together) than
    /// `limits.max_output_mb`, whether or not the guest noticed.
    #[error(
        "output limit exceeded: more than limits.max_output_mb = {mib} MiB ({bytes} bytes) of output",
        mib = .0 >> 20,
        bytes = .0
    )]
    OutputLimit(usize),
    #[error("the guest exited with code {0}")]
    Exit(i32),
    #[error("the guest trapped: {0}")]
    Trap(String),
    #[error("could not instantiate the guest: {0}")]
    Instantiate(String),
}

/// The result of one guest run, failed or not.
#[derive(Debug)]
pub struct GuestRun {
    pub outcome: Result<Vec<OutputDocument>, GuestFailure>,
    /// What the guest wrote to stderr (its log), possibly cut at the cap.
    pub stderr: Vec<u8>,
    /// Instantiation, from prepared module to ready instance.
    pub instantiate: Duration,
    /// Instantiation, run and collecting the output.
    pub total: Duration,
}

/// A module compiled and linked, ready to instantiate many times.
pub trait PreparedModule: Send + Sync {
    fn run(&self, input: GuestInput<'_>) -> GuestRun;
}

/// Compiles guest modules.
pub trait ProcessEngine: Send + Sync {
    /// Compiles (or loads from the cache) and links a `.wasm` binary or
    /// `.wat` text; fails with a reason a user can act on when it does not
    /// compile or imports something we do not provide.
    fn prepare(&self, bytes: &[u8]) -> Result<Arc<dyn PreparedModule>, String>;
    /// The most memory one guest may be given, in bytes.
    fn max_memory(&self) -> usize;
}
