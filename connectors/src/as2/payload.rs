//! Bytes produced while opening a message (inflated, decoded or
//! canonicalised content) that may be far larger than the request: kept in
//! memory while small, spilled to an anonymous temporary file and
//! memory-mapped beyond [`MEMORY_THRESHOLD`], so that a request costs a few
//! MiB of heap whatever its expansion (issue 11, zip bombs).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{As2Error, ErrorKind, Result};

/// Content up to this size stays on the heap; beyond it, it goes to a file.
pub const MEMORY_THRESHOLD: usize = 4 << 20;

/// An opened payload (or an intermediate layer): on the heap, or a range of
/// a memory-mapped spill file. Derefs to `[u8]`.
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    Memory(Vec<u8>),
    /// The file is anonymous (unlinked): it disappears with the last map.
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    },
}

impl Payload {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Memory(v) => v,
            Repr::Mapped { map, range } => &map[range.clone()],
        }
    }

    /// True when the bytes live in a mapped spill file rather than the heap.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    /// The bytes as a vector (copies a mapped payload).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Memory(v) => v,
            Repr::Mapped { map, range } => map[range].to_vec(),
        }
    }

    /// Narrows to `range` (relative to the current bytes) without copying:
    /// a vector is cut in place, a mapping only moves its bounds.
    pub(crate) fn narrow(self, range: Range<usize>) -> Payload {
        match self.0 {
            Repr::Memory(mut v) => {
                v.truncate(range.end);
                v.drain(..range.start.min(v.len()));
                Payload(Repr::Memory(v))
            }
            Repr::Mapped { map, range: old } => {
                let end = (old.start + range.end).min(old.end);
                let start = (old.start + range.start).min(end);
                Payload(Repr::Mapped {
                    map,
                    range: start..end,
                })
            }
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload(Repr::Memory(Vec::new()))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Repr::Memory(v))
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.is_mapped() { "mapped" } else { "memory" };
        write!(f, "Payload({} bytes, {place})", self.len())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for Payload {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Payload {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Payload {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

/// Bytes a layer is looking at: borrowed from the request, or produced.
pub enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Payload),
}

impl Bytes<'_> {
    /// Narrows to a sub-range without copying.
    pub(crate) fn narrow(self, range: Range<usize>) -> Self {
        match self {
            Bytes::Borrowed(b) => Bytes::Borrowed(&b[range]),
            Bytes::Owned(p) => Bytes::Owned(p.narrow(range)),
        }
    }

    /// Takes the bytes as a payload (copies only borrowed ones).
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            Bytes::Borrowed(b) => Payload::from(b.to_vec()),
            Bytes::Owned(p) => p,
        }
    }
}

impl Deref for Bytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(p) => p,
        }
    }
}

/// Where `inner` sits inside `outer`, if it is a sub-slice of it.
pub(crate) fn range_within(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// Collects produced bytes: in memory up to [`MEMORY_THRESHOLD`], then in
/// an anonymous temporary file in `dir` (the system temp dir if `None`).
pub struct SpillWriter {
    dir: Option<PathBuf>,
    threshold: usize,
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
}

impl SpillWriter {
    pub fn new(dir: Option<&Path>) -> SpillWriter {
        SpillWriter::with_threshold(dir, MEMORY_THRESHOLD)
    }

    /// Like [`SpillWriter::new`] with another memory threshold (tests).
    pub fn with_threshold(dir: Option<&Path>, threshold: usize) -> SpillWriter {
        SpillWriter {
            dir: dir.map(Path::to_path_buf),
            threshold,
            memory: Vec::new(),
            file: None,
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the content went to a file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        if let Some(file) = self.file.as_mut() {
            return file.write_all(data).map_err(|e| self.io_error(e));
        }
        let needed = self.memory.len() + data.len();
        if needed <= self.threshold {
            // Doubling, but never past the threshold (plain doubling of
            // odd-sized pieces overshot 4 MiB to 6 MiB).
            if needed > self.memory.capacity() {
                let target = (self.memory.capacity() * 2).max(needed).min(self.threshold);
                self.memory.reserve_exact(target - self.memory.len());
            }
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&dir).map_err(|e| self.io_error(e))?;
        // Anonymous (O_TMPFILE or unlinked at once): nothing to clean up,
        // even if we are killed.
        let mut file = tempfile::tempfile_in(&dir).map_err(|e| self.io_error(e))?;
        file.write_all(&self.memory)
            .and_then(|_| file.write_all(data))
            .map_err(|e| self.io_error(e))?;
        tracing::debug!(dir = %dir.display(), bytes = self.len, "content spilled to a temporary file");
        self.memory = Vec::new();
        self.file = Some(file);
        Ok(())
    }

    /// The collected bytes: the vector, or the file mapped.
    pub fn finish(self) -> Result<Payload> {
        let Some(file) = self.file.as_ref() else {
            return Ok(Payload::from(self.memory));
        };
        // SAFETY: the file is anonymous and private to this writer, so no
        // one else can truncate or modify it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| self.io_error(e))?;
        let len = map.len();
        Ok(Payload(Repr::Mapped {
            map: Arc::new(map),
            range: 0..len,
        }))
    }

    fn io_error(&self, e: std::io::Error) -> As2Error {
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        tracing::error!(dir = %dir.display(), error = %e, "spilling content to a temporary file failed");
        As2Error::new(
            ErrorKind::Internal,
            format!(
                "temporary storage for {} bytes of content failed in {}: {e}",
                self.len,
                dir.display()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_spills() {
        let mut w = SpillWriter::with_threshold(None, 10);
        w.write(b"hello").expect("writes");
        assert!(!w.spilled());
        let p = w.finish().expect("finishes");
        assert!(!p.is_mapped());
        assert_eq!(p, b"hello");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = SpillWriter::with_threshold(Some(dir.path()), 10);
        w.write(b"hello ").expect("writes");
        w.write(b"world, again").expect("writes");
        assert!(w.spilled());
        assert_eq!(w.len(), 18);
        let p = w.finish().expect("finishes");
        assert!(p.is_mapped());
        assert_eq!(p, b"hello world, again");
        let narrowed = p.clone().narrow(6..11);
        assert_eq!(narrowed, b"world");
        assert_eq!(narrowed.narrow(1..3), b"or");
        assert_eq!(Payload::from(b"abcdef".to_vec()).narrow(2..4), b"cd");
    }

    #[test]
    fn spill_dir_is_created_and_one_that_cannot_be_is_an_internal_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("spool");
        let mut w = SpillWriter::with_threshold(Some(&missing), 1);
        w.write(b"abc").expect("created when needed");
        assert!(missing.is_dir());
        let blocked = dir.path().join("a-file");
        std::fs::write(&blocked, b"x").expect("file");
        let under_a_file = blocked.join("spool");
        let mut w = SpillWriter::with_threshold(Some(&under_a_file), 1);
        let err = w.write(b"abc").expect_err("cannot create under a file");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.message().contains("a-file"), "{err}");
    }
}
