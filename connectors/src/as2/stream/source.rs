//! A byte range of a file, read with positioned reads: the request body as
//! spooled, or a layer a decryption or decompression wrote. Ranges of the
//! same file share it, so narrowing to a MIME part copies nothing.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Buffer of the readers handed out.
const READ_BUFFER: usize = 256 << 10;

/// `len` bytes of `file` from `start`.
#[derive(Clone, Debug)]
pub struct Source {
    file: Arc<File>,
    start: u64,
    len: u64,
}

impl Source {
    /// The whole file, as long as it is now.
    pub fn whole(file: Arc<File>) -> io::Result<Source> {
        let len = file.metadata()?.len();
        Ok(Source {
            file,
            start: 0,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-range `from..to` (relative, clamped to this range).
    pub fn narrow(&self, from: u64, to: u64) -> Source {
        let to = to.min(self.len);
        let from = from.min(to);
        Source {
            file: self.file.clone(),
            start: self.start + from,
            len: to - from,
        }
    }

    /// Fills `buf` from relative offset `at`; fewer bytes at the end.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.len.saturating_sub(at);
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            match self
                .file
                .read_at(&mut buf[done..want], self.start + at + done as u64)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its range",
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The first `n` bytes (fewer if the range is shorter).
    pub fn prefix(&self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n.min(usize::try_from(self.len).unwrap_or(usize::MAX))];
        let got = self.read_at(0, &mut buf)?;
        buf.truncate(got);
        Ok(buf)
    }

    /// The byte at relative offset `at`.
    pub fn byte(&self, at: u64) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        Ok((self.read_at(at, &mut b)? == 1).then_some(b[0]))
    }

    /// A buffered sequential reader over the range.
    pub fn reader(&self) -> BufReader<RangeReader> {
        BufReader::with_capacity(READ_BUFFER, self.raw_reader())
    }

    /// An unbuffered sequential reader (for callers reading large pieces).
    pub fn raw_reader(&self) -> RangeReader {
        RangeReader {
            source: self.clone(),
            pos: 0,
        }
    }

    /// Calls `each` with the range's bytes in pieces of about `piece`.
    pub fn for_each_piece(
        &self,
        piece: usize,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; piece.max(1)];
        let mut at = 0u64;
        while at < self.len {
            let n = self.read_at(at, &mut buf)?;
            if n == 0 {
                break;
            }
            each(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Reads a [`Source`] front to back.
pub struct RangeReader {
    source: Source,
    pos: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ranges_read_their_own_bytes() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"0123456789").expect("write");
        let whole = Source::whole(Arc::new(file)).expect("source");
        let middle = whole.narrow(2, 8).narrow(1, 100);
        assert_eq!(middle.len(), 5);
        let mut out = Vec::new();
        middle.reader().read_to_end(&mut out).expect("read");
        assert_eq!(out, b"34567");
        assert_eq!(middle.prefix(2).expect("prefix"), b"34");
        assert_eq!(middle.byte(4).expect("byte"), Some(b'7'));
        assert_eq!(middle.byte(5).expect("byte"), None);
    }
}
