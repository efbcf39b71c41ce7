//! BER (X.690) read from a stream rather than a slice: element headers one
//! at a time, small elements whole (to hand to [`crate::as2::ber`]), and
//! the value of an OCTET STRING, primitive or chunked to any depth, as a
//! stream of its own. This is what lets a 1 GiB EnvelopedData or
//! CompressedData be opened with a few buffers of memory.

use std::io::{self, Read};

use crate::as2::ber::CLASS_UNIVERSAL;
use crate::as2::error::{As2Error, Result};

/// CMS needs about ten levels; chunked OCTET STRINGs nest one or two.
const MAX_DEPTH: usize = 16;

/// One element's identifier and length octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub class: u8,
    pub constructed: bool,
    pub tag: u32,
    /// `None` for the indefinite form.
    pub length: Option<u64>,
    /// The identifier and length octets as read.
    pub raw: Vec<u8>,
    /// Where a definite-length element ends in the input.
    pub end: Option<u64>,
}

impl Header {
    pub fn is(&self, class: u8, tag: u32) -> bool {
        self.class == class && self.tag == tag
    }

    /// The end-of-contents octets that close an indefinite length.
    pub fn is_end_of_contents(&self) -> bool {
        self.raw == [0, 0]
    }
}

/// Reads BER elements from `R`.
///
/// Every definite length is checked against the input's length and the
/// definite lengths enclosing it, as the slice parser does, so that a
/// message cut short or with a damaged length is refused here too.
pub struct BerReader<R> {
    inner: R,
    /// Bytes consumed so far.
    position: u64,
    /// Where each open definite-length element ends, innermost last.
    ends: Vec<u64>,
    /// The input's length, when known.
    input_len: Option<u64>,
}

fn truncated() -> As2Error {
    As2Error::malformed("truncated ASN.1 element")
}

fn io_error(e: io::Error) -> As2Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return truncated();
    }
    As2Error::malformed(format!("reading ASN.1: {e}"))
}

impl<R: Read> BerReader<R> {
    pub fn new(inner: R) -> Self {
        BerReader {
            inner,
            position: 0,
            ends: Vec::new(),
            input_len: None,
        }
    }

    /// A reader that knows the input is `len` bytes long.
    pub fn with_len(inner: R, len: u64) -> Self {
        BerReader {
            input_len: Some(len),
            ..BerReader::new(inner)
        }
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b).map_err(io_error)?;
        self.position += 1;
        Ok(b[0])
    }

    /// The next element's identifier and length.
    pub fn header(&mut self) -> Result<Header> {
        while self.ends.last().is_some_and(|&end| end <= self.position) {
            self.ends.pop();
        }
        let header = self.read_header()?;
        if let Some(length) = header.length {
            let end = self
                .position
                .checked_add(length)
                .ok_or_else(|| As2Error::malformed("ASN.1 length overflows"))?;
            let limit = match (self.ends.last(), self.input_len) {
                (Some(&a), Some(b)) => Some(a.min(b)),
                (a, b) => a.copied().or(b),
            };
            if let Some(limit) = limit.filter(|&limit| end > limit) {
                return Err(As2Error::malformed(format!(
                    "truncated ASN.1 element: {length} bytes declared, {} present",
                    limit.saturating_sub(self.position)
                )));
            }
            if header.constructed {
                self.ends.push(end);
            }
            return Ok(Header {
                end: Some(end),
                ..header
            });
        }
        Ok(header)
    }

    /// Reads to the end of each of `open` (the constructed elements the
    /// caller entered, outermost first), innermost first: what follows the
    /// part the caller read must be whole elements, closed by the
    /// end-of-contents octets of an indefinite length or ending exactly at
    /// a definite one. So a message cut short after its content is refused
    /// as the slice parser refuses it.
    pub fn close(&mut self, open: &[Header], limit: usize) -> Result<()> {
        for header in open.iter().rev() {
            match header.end {
                Some(end) => {
                    while self.position < end {
                        self.element(limit)?;
                    }
                    if self.position != end {
                        return Err(As2Error::malformed(
                            "ASN.1 element runs past the end of its enclosing element",
                        ));
                    }
                }
                None => loop {
                    let next = self.header()?;
                    if next.is_end_of_contents() {
                        break;
                    }
                    self.element_after(next, limit)?;
                },
            }
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<Header> {
        let first = self.byte()?;
        let mut raw = vec![first];
        let class = first >> 6;
        let constructed = first & 0x20 != 0;
        let mut tag = u32::from(first & 0x1f);
        if tag == 0x1f {
            tag = 0;
            loop {
                let b = self.byte()?;
                raw.push(b);
                if tag > (u32::MAX >> 7) {
                    return Err(As2Error::malformed("ASN.1 tag number too large"));
                }
                tag = (tag << 7) | u32::from(b & 0x7f);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let len_byte = self.byte()?;
        raw.push(len_byte);
        let length = if len_byte == 0x80 {
            if !constructed {
                return Err(As2Error::malformed(
                    "indefinite length on a primitive ASN.1 element",
                ));
            }
            None
        } else if len_byte & 0x80 == 0 {
            Some(u64::from(len_byte))
        } else {
            let count = usize::from(len_byte & 0x7f);
            if count > 8 {
                return Err(As2Error::malformed("ASN.1 length field too long"));
            }
            let mut length: u64 = 0;
            for _ in 0..count {
                let b = self.byte()?;
                raw.push(b);
                length = length
                    .checked_mul(256)
                    .ok_or_else(|| As2Error::malformed("ASN.1 length overflows"))?
                    | u64::from(b);
            }
            Some(length)
        };
        Ok(Header {
            class,
            constructed,
            tag,
            length,
            raw,
            end: None,
        })
    }

    /// The next element whole (identifier, length and content octets, an
    /// indefinite length followed to its end), refused past `limit` bytes.
    pub fn element(&mut self, limit: usize) -> Result<Vec<u8>> {
        let header = self.header()?;
        self.element_after(header, limit)
    }

    /// Like [`BerReader::element`] for an element whose header was read.
    pub fn element_after(&mut self, header: Header, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.collect(header, limit, 0, &mut out)?;
        Ok(out)
    }

    fn collect(
        &mut self,
        header: Header,
        limit: usize,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(As2Error::malformed("ASN.1 nested too deeply"));
        }
        let too_large = || {
            As2Error::malformed(format!(
                "ASN.1 element larger than {limit} bytes where a small one belongs"
            ))
        };
        out.extend_from_slice(&header.raw);
        match header.length {
            Some(length) => {
                let length = usize::try_from(length).map_err(|_| too_large())?;
                if out.len().saturating_add(length) > limit {
                    return Err(too_large());
                }
                let start = out.len();
                out.resize(start + length, 0);
                self.inner.read_exact(&mut out[start..]).map_err(io_error)?;
                self.position += length as u64;
            }
            None => loop {
                if out.len() > limit {
                    return Err(too_large());
                }
                let child = self.header()?;
                if child.is_end_of_contents() {
                    out.extend_from_slice(&child.raw);
                    break;
                }
                self.collect(child, limit, depth + 1, out)?;
            },
        }
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(())
    }

    /// The value of the OCTET STRING (or implicitly tagged one) whose
    /// header was just read, as a stream; chunks of a constructed string
    /// are joined. The reader is left after the element once the stream
    /// has been read to its end.
    pub fn octets(&mut self, header: &Header) -> Result<Octets<'_, R>> {
        let mut octets = Octets {
            reader: self,
            primitive_left: 0,
            frames: Vec::new(),
        };
        if header.constructed {
            octets.frames.push(header.length);
        } else {
            octets.primitive_left = header
                .length
                .ok_or_else(|| As2Error::malformed("indefinite primitive OCTET STRING"))?;
        }
        Ok(octets)
    }
}

/// The value of an OCTET STRING, read piece by piece ([`BerReader::octets`]).
pub struct Octets<'r, R> {
    reader: &'r mut BerReader<R>,
    /// Bytes left in the primitive chunk being read.
    primitive_left: u64,
    /// Open constructed levels: bytes left in each (`None`: indefinite).
    frames: Vec<Option<u64>>,
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl<R: Read> Octets<'_, R> {
    /// Counts `n` bytes read against every enclosing definite length.
    fn consume(&mut self, n: u64) -> io::Result<()> {
        for left in self.frames.iter_mut().flatten() {
            *left = left
                .checked_sub(n)
                .ok_or_else(|| invalid("OCTET STRING chunk runs past its enclosing element"))?;
        }
        Ok(())
    }

    /// Moves to the next primitive chunk; false at the end of the string.
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            match self.frames.last() {
                None => return Ok(false),
                Some(Some(0)) => {
                    self.frames.pop();
                    continue;
                }
                Some(_) => {}
            }
            let header = self.reader.header().map_err(|e| invalid(e.message()))?;
            self.consume(header.raw.len() as u64)?;
            if header.is_end_of_contents() {
                match self.frames.pop() {
                    Some(None) => continue,
                    _ => {
                        return Err(invalid(
                            "end-of-contents inside a definite-length OCTET STRING",
                        ))
                    }
                }
            }
            if !header.is(CLASS_UNIVERSAL, crate::as2::ber::TAG_OCTET_STRING) {
                return Err(invalid(
                    "constructed OCTET STRING holds a non-OCTET STRING chunk",
                ));
            }
            if header.constructed {
                if self.frames.len() >= MAX_DEPTH {
                    return Err(invalid("OCTET STRING nested too deeply"));
                }
                self.frames.push(header.length);
                continue;
            }
            self.primitive_left = header.length.unwrap_or(0);
            if self.primitive_left > 0 {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Read for Octets<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.primitive_left == 0 && !self.next_chunk()? {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.primitive_left).unwrap_or(usize::MAX));
        let n = self.reader.inner.read(&mut buf[..want])?;
        self.reader.position += n as u64;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated OCTET STRING",
            ));
        }
        self.primitive_left -= n as u64;
        self.consume(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as2::ber;

    fn octets_of(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut reader = BerReader::new(data);
        let header = reader.header().map_err(|e| invalid(e.message()))?;
        let mut out = Vec::new();
        reader
            .octets(&header)
            .map_err(|e| invalid(e.message()))?
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn primitive_and_chunked_octet_strings_read_the_same_as_the_slice_parser() {
        let cases: Vec<Vec<u8>> = vec![
            ber::der(0x04, b"hello"),
            ber::der(0x80, &[7u8; 300]),
            // [0] indefinite { OCTET STRING "ab", constructed definite { "c", "" } } EOC
            [
                &[0xa0, 0x80][..],
                &ber::der(0x04, b"ab"),
                &ber::der(0x24, &[ber::der(0x04, b"c"), ber::der(0x04, b"")].concat()),
                &[0, 0],
            ]
            .concat(),
            ber::der(
                0x24,
                &[ber::der(0x04, &[1u8; 1000]), ber::der(0x04, &[2u8; 5])].concat(),
            ),
        ];
        for case in cases {
            let (tlv, _) = ber::read(&case).expect("slice parser reads it");
            assert_eq!(
                octets_of(&case).expect("stream reads it"),
                tlv.octets().expect("octets")
            );
        }
    }

    #[test]
    fn hostile_octet_strings_fail_cleanly() {
        // A chunk longer than its enclosing definite length.
        let overrun = [0x24, 0x03, 0x04, 0x05, 1, 2, 3, 4, 5];
        assert!(octets_of(&overrun).is_err());
        // Truncated primitive.
        assert!(octets_of(&[0x04, 0x10, 1, 2]).is_err());
        // A non-OCTET STRING chunk.
        assert!(octets_of(&[0x24, 0x80, 0x02, 0x01, 0x00, 0, 0]).is_err());
        // No end-of-contents.
        assert!(octets_of(&[0x24, 0x80, 0x04, 0x01, 9]).is_err());
        // Deep nesting.
        let deep: Vec<u8> = std::iter::repeat_n([0x24u8, 0x80], 100).flatten().collect();
        assert!(octets_of(&deep).is_err());
    }

    #[test]
    fn whole_elements_respect_their_limit() {
        let big = ber::der(0x30, &[0u8; 5000]);
        assert!(BerReader::new(&big[..]).element(1000).is_err());
        assert_eq!(BerReader::new(&big[..]).element(10_000).expect("fits"), big);
        let indefinite = [&[0x30, 0x80][..], &ber::der(0x02, &[1]), &[0, 0]].concat();
        assert_eq!(
            BerReader::new(&indefinite[..]).element(100).expect("reads"),
            indefinite
        );
        let huge_length = [0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(BerReader::new(&huge_length[..]).element(100).is_err());
    }
}
