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

/// Where part of a document's bytes come from: memory, or a whole file
/// (a spooled request or a streamed payload, never read whole).
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    Bytes(&'a [u8]),
    File(&'a std::fs::File),
}

impl Piece<'_> {
    pub fn size(&self) -> std::io::Result<u64> {
        match self {
            Piece::Bytes(b) => Ok(b.len() as u64),
            Piece::File(f) => Ok(f.metadata()?.len()),
        }
    }
}

/// One document to stage: its name and its bytes, piece after piece.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    pub name: &'a str,
    pub pieces: Vec<Piece<'a>>,
}

/// Files are read in pieces this large.
const READ_PIECE: usize = 256 << 10;

impl<'a> Part<'a> {
    pub fn new(name: &'a str, pieces: Vec<Piece<'a>>) -> Part<'a> {
        Part { name, pieces }
    }

    pub fn size(&self) -> std::io::Result<u64> {
        self.pieces.iter().map(Piece::size).sum()
    }

    /// Calls `each` with the document's bytes in order: memory pieces as
    /// they are, files in pieces of 256 KiB read from their start.
    pub fn for_each_chunk(
        &self,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buffer = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => each(b)?,
                Piece::File(file) => {
                    buffer.resize(READ_PIECE, 0);
                    let mut at = 0u64;
                    loop {
                        let n = file.read_at(&mut buffer, at)?;
                        if n == 0 {
                            break;
                        }
                        each(&buffer[..n])?;
                        at += n as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the document to `out`: file pieces are copied by the kernel
    /// (`copy_file_range`), never through our memory.
    pub fn write_to(&self, out: &mut std::fs::File) -> std::io::Result<u64> {
        use std::io::{Seek, Write};
        let mut written = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => {
                    out.write_all(b)?;
                    written += b.len() as u64;
                }
                Piece::File(file) => {
                    // The file's own cursor: only this copy uses it.
                    let mut reader: &std::fs::File = file;
                    reader.seek(std::io::SeekFrom::Start(0))?;
                    written += std::io::copy(&mut reader, out)?;
                }
            }
        }
        Ok(written)
    }

    /// The whole document in memory (for small ones).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.for_each_chunk(|c| {
            out.extend_from_slice(c);
            Ok(())
        })?;
        Ok(out)
    }
}

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
    /// Writes one message's documents; not durable until
    /// [`Documents::make_durable`].
    fn stage(&self, parts: &[Part<'_>]) -> Result<Staged>;
    /// Drops the documents of a message that was not stored (a duplicate
    /// or a failed commit); they were never acknowledged.
    fn discard(&self, staged: &Staged);
    /// Writes the `index`th document an execution kept; durable with the
    /// next [`Documents::make_durable`].
    fn keep(&self, execution_id: &str, index: usize, bytes: &[u8]) -> Result<String>;
    /// Keeps a copy of an already stored document (an execution's input
    /// passed through unchanged) as the `index`th document an execution
    /// kept, without reading it into memory.
    fn keep_stored(&self, execution_id: &str, index: usize, reference: &str) -> Result<String>;
    /// Makes every document staged or kept so far durable.
    fn make_durable(&self) -> Result<()>;
    /// A whole document.
    fn read(&self, reference: &str) -> Result<Vec<u8>>;
    /// A document as a stream, never whole in memory (a file, or a
    /// PostgreSQL document chunk by chunk); for downloads.
    fn reader(&self, reference: &str) -> Result<Box<dyn std::io::Read + Send>>;
    /// A document's length in bytes.
    fn length(&self, reference: &str) -> Result<u64>;
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
