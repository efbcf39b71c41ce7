//! Where documents live: each message's raw request and payload, and the
//! documents an execution kept. Rows hold opaque references to them (for
//! files, the path), so that a Molecule can keep documents in PostgreSQL
//! and need no shared file system.
//!
//! The contract the receive path relies on: documents are staged, not yet
//! durable; [`Documents::make_durable`] makes everything staged so far
//! durable, and the group committer calls it before it commits the rows
//! that reference them. A reference whose row is committed therefore names
//! a whole document after a crash; documents of rows never committed may
//! be partial or missing and are never read.

use super::Result;

/// One message's documents, staged.
#[derive(Debug, Clone)]
pub struct Staged {
    /// A reference per part, in the order given.
    pub references: Vec<String>,
    /// What [`Documents::discard`] removes.
    pub(crate) group: String,
}

/// The document store.
pub trait Documents: Send + Sync {
    /// Writes one message's documents, each given as chunks (`(name,
    /// chunks)`); not durable until [`Documents::make_durable`].
    fn stage(&self, parts: &[(&str, &[&[u8]])]) -> Result<Staged>;
    /// Drops the documents of a message that was not stored (a duplicate
    /// or a failed commit); they were never acknowledged.
    fn discard(&self, staged: &Staged);
    /// Writes the `index`th document an execution kept; durable with the
    /// next [`Documents::make_durable`].
    fn keep(&self, execution_id: &str, index: usize, bytes: &[u8]) -> Result<String>;
    /// Makes every document staged or kept so far durable.
    fn make_durable(&self) -> Result<()>;
    /// A whole document.
    fn read(&self, reference: &str) -> Result<Vec<u8>>;
    /// A document as a stream, never whole in memory (a file, or a
    /// PostgreSQL document chunk by chunk); for downloads.
    fn reader(&self, reference: &str) -> Result<Box<dyn std::io::Read + Send>>;
    /// Whether the document is (still) there.
    fn exists(&self, reference: &str) -> bool;
    /// Whether the document ends with `tail` (a stored raw request is its
    /// headers, then its body); `None` when it cannot be read.
    fn ends_with(&self, reference: &str, tail: &[u8]) -> Option<bool>;
    /// Removes documents whose rows were purged; returns how many went.
    fn remove(&self, references: &[String]) -> usize;
    /// Removes documents that no committed row references and that were
    /// staged or kept at least `older_than` ago: left by a node that died
    /// between staging and its commit, or between retention's row delete
    /// and its document removal. Returns how many went.
    fn sweep_unreferenced(&self, older_than: std::time::Duration) -> Result<usize>;
}
