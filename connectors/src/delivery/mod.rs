//! Delivery connectors: where a process sends its documents.
//!
//! - [`template`]: `{property}` templates over document properties.
//! - [`disk`]: atomic writes into a directory, never outside it.
//! - [`http`]: POST with headers from properties, retried with back-off.

pub mod disk;
pub mod http;
pub mod template;

use std::io::Read;

/// Opens a stored document for reading, once per attempt.
pub type Open<'a> = &'a (dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Sync);

/// The bytes of a document to deliver: in memory, or streamed from where
/// they are stored (a 1 GiB payload is never held whole).
#[derive(Clone, Copy)]
pub enum Content<'a> {
    Bytes(&'a [u8]),
    Stream { open: Open<'a>, len: u64 },
}

impl Content<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Stream { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
