//! CMS CompressedData (RFC 3274) as AS2 uses it (RFC 5402): zlib, applied
//! before or after signing. Inflation is bounded so that a zip bomb fails
//! with `decompression-failed` instead of exhausting memory.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::ber::{self, oid, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_OCTET_STRING, TAG_SEQUENCE};
use super::error::{As2Error, ErrorKind, Result};
use super::payload::{Payload, SpillWriter};
use super::stream::ber_stream::BerReader;

/// Wraps `content` (a MIME entity) in a DER CompressedData ContentInfo.
pub fn compress(content: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(content.len() / 3 + 64),
        Compression::default(),
    );
    encoder
        .write_all(content)
        .and_then(|_| encoder.finish())
        .map_err(|e| As2Error::new(ErrorKind::Internal, format!("zlib compression failed: {e}")))
        .map(|deflated| compressed_data(&deflated))
}

/// A DER CompressedData ContentInfo (RFC 3274) around zlib data that is
/// already deflated.
pub fn compressed_data(zlib: &[u8]) -> Vec<u8> {
    let algorithm = ber::der(ber::ID_SEQUENCE, &ber::der_oid(oid::ZLIB_COMPRESS));
    let econtent = ber::der(ber::ID_CONTEXT_0, &ber::der(ber::ID_OCTET_STRING, zlib));
    let encap = ber::der(
        ber::ID_SEQUENCE,
        &[ber::der_oid(oid::DATA), econtent].concat(),
    );
    let version = ber::der(ber::ID_INTEGER, &[0]);
    let compressed = ber::der(ber::ID_SEQUENCE, &[version, algorithm, encap].concat());
    ber::der(
        ber::ID_SEQUENCE,
        &[
            ber::der_oid(oid::COMPRESSED_DATA),
            ber::der(ber::ID_CONTEXT_0, &compressed),
        ]
        .concat(),
    )
}

/// Unwraps a BER or DER CompressedData ContentInfo, inflating at most
/// `limit` bytes onto the heap. For small limits (fuzzing, tests, tools);
/// the receive path uses [`decompress_spilling`].
pub fn decompress(data: &[u8], limit: u64) -> Result<Vec<u8>> {
    let octets = compressed_octets(data)?;
    inflate_limited(&octets, limit)
}

/// Unwraps a CompressedData ContentInfo like [`decompress`], with bounded
/// memory: the inflated content stays on the heap up to
/// [`MEMORY_THRESHOLD`](super::payload::MEMORY_THRESHOLD) and beyond it streams into an anonymous
/// temporary file in `spool_dir` (system temp dir if `None`), returned
/// memory-mapped. Inflation stops at `limit + 1` bytes.
pub fn decompress_spilling(data: &[u8], limit: u64, spool_dir: Option<&Path>) -> Result<Payload> {
    let octets = compressed_octets(data)?;
    let mut out = SpillWriter::new(spool_dir);
    inflate_to(&octets, limit, |chunk| out.write(chunk))?;
    if out.spilled() {
        tracing::debug!(bytes = out.len(), "inflated content spilled to disk");
    }
    out.finish()
}

/// Unwraps a CompressedData ContentInfo read from `input`, inflating into
/// `sink` piece by piece: neither the compressed nor the inflated content
/// is ever whole in memory. Inflation stops at `limit + 1` bytes.
pub fn decompress_stream(
    input: impl Read,
    input_len: u64,
    limit: u64,
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let bad = |e: As2Error| {
        As2Error::new(
            ErrorKind::Decompression,
            format!("invalid CompressedData: {}", e.message()),
        )
    };
    let mut reader = BerReader::with_len(input, input_len);
    let outer = reader.header().map_err(bad)?;
    let (type_tlv_der, explicit, compressed) = (
        reader.element(256).map_err(bad)?,
        reader.header().map_err(bad)?,
        reader.header().map_err(bad)?,
    );
    let content_type = ber::read(&type_tlv_der)
        .and_then(|(t, _)| t.oid())
        .map_err(bad)?;
    if !outer.is(CLASS_UNIVERSAL, TAG_SEQUENCE) || content_type != oid::COMPRESSED_DATA {
        return Err(bad(As2Error::malformed(format!(
            "content type is {content_type}, not id-ct-compressedData"
        ))));
    }
    // As lenient as the slice parser above: the content's own tag is not
    // checked.
    let _ = &compressed;
    if !explicit.is(CLASS_CONTEXT, 0) {
        return Err(bad(As2Error::malformed("malformed ContentInfo content")));
    }
    let _version = reader.element(1 << 20).map_err(bad)?;
    let algorithm_der = reader.element(1 << 20).map_err(bad)?;
    let algorithm = ber::read(&algorithm_der)
        .and_then(|(t, _)| {
            if t.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
                t.children()
            } else {
                Err(As2Error::malformed("no compressionAlgorithm"))
            }
        })
        .and_then(|c| {
            c.first()
                .map(|o| o.oid())
                .unwrap_or_else(|| Err(As2Error::malformed("no compressionAlgorithm")))
        })
        .map_err(bad)?;
    if algorithm != oid::ZLIB_COMPRESS {
        return Err(As2Error::new(
            ErrorKind::Decompression,
            format!(
                "unsupported compression algorithm {algorithm}; only zlib (RFC 3274) is defined"
            ),
        ));
    }
    let encap = reader.header().map_err(bad)?;
    let _inner_type = reader.element(1 << 20).map_err(bad)?;
    let econtent = reader.header().map_err(bad)?;
    if !encap.is(CLASS_UNIVERSAL, TAG_SEQUENCE) || !econtent.is(CLASS_CONTEXT, 0) {
        return Err(bad(As2Error::malformed(
            "no eContent (detached compressed content is not used by AS2)",
        )));
    }
    let string = reader.header().map_err(bad)?;
    if !string.is(CLASS_UNIVERSAL, TAG_OCTET_STRING) {
        return Err(bad(As2Error::malformed("eContent is not an OCTET STRING")));
    }
    let mut octets = reader.octets(&string).map_err(bad)?;
    inflate_from(&mut octets, None, limit, sink)?;
    // What follows the zlib stream in the OCTET STRING is ignored, as the
    // in-memory path ignores it; the structure around it must be whole.
    std::io::copy(&mut octets, &mut std::io::sink())
        .map_err(|e| bad(As2Error::malformed(e.to_string())))?;
    reader
        .close(&[outer, explicit, compressed, encap, econtent], 1 << 20)
        .map_err(bad)
}

/// The zlib stream of a CompressedData ContentInfo.
fn compressed_octets(data: &[u8]) -> Result<Vec<u8>> {
    let bad = |what: &str| {
        As2Error::new(
            ErrorKind::Decompression,
            format!("invalid CompressedData: {what}"),
        )
    };
    let (content_type, compressed) = ber::content_info(data).map_err(|e| bad(e.message()))?;
    if content_type != oid::COMPRESSED_DATA {
        return Err(bad(&format!(
            "content type is {content_type}, not id-ct-compressedData"
        )));
    }
    let fields = compressed.children().map_err(|e| bad(e.message()))?;
    // version, compressionAlgorithm, encapContentInfo
    let algorithm = fields
        .get(1)
        .filter(|f| f.is(CLASS_UNIVERSAL, TAG_SEQUENCE))
        .and_then(|f| f.children().ok())
        .and_then(|c| c.first().and_then(|o| o.oid().ok()))
        .ok_or_else(|| bad("no compressionAlgorithm"))?;
    if algorithm != oid::ZLIB_COMPRESS {
        return Err(As2Error::new(
            ErrorKind::Decompression,
            format!(
                "unsupported compression algorithm {algorithm}; only zlib (RFC 3274) is defined"
            ),
        ));
    }
    let encap = fields
        .get(2)
        .filter(|f| f.is(CLASS_UNIVERSAL, TAG_SEQUENCE))
        .ok_or_else(|| bad("no encapContentInfo"))?
        .children()
        .map_err(|e| bad(e.message()))?;
    let econtent = encap
        .get(1)
        .filter(|f| f.is(CLASS_CONTEXT, 0))
        .ok_or_else(|| bad("no eContent (detached compressed content is not used by AS2)"))?
        .children()
        .map_err(|e| bad(e.message()))?;
    econtent
        .first()
        .filter(|f| f.is(CLASS_UNIVERSAL, TAG_OCTET_STRING))
        .ok_or_else(|| bad("eContent is not an OCTET STRING"))?
        .octets()
        .map_err(|e| bad(e.message()))
}

/// Inflates zlib data, failing once the output would pass `limit` bytes.
pub fn inflate_limited(deflated: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        deflated
            .len()
            .saturating_mul(4)
            .min(limit as usize)
            .min(64 << 20),
    );
    inflate_to(deflated, limit, |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    // The vector grew by doubling: give back the unused tail (for a large
    // payload up to half of it again) before the buffer lives on.
    out.shrink_to_fit();
    Ok(out)
}

/// Inflates zlib data chunk by chunk into `sink`. At most `limit + 1`
/// bytes are ever inflated; the sink never receives more than `limit`.
pub fn inflate_to(
    deflated: &[u8],
    limit: u64,
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    inflate_from(deflated, Some(deflated.len() as u64), limit, sink)
}

/// [`inflate_to`] reading the zlib stream from `deflated`, whose size (for
/// the error message) may not be known.
pub fn inflate_from(
    deflated: impl Read,
    deflated_len: Option<u64>,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut decoder = ZlibDecoder::new(deflated).take(limit.saturating_add(1));
    let mut buf = vec![0u8; INFLATE_CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(As2Error::new(
                    ErrorKind::Decompression,
                    format!("zlib stream is corrupt: {e}"),
                ))
            }
        };
        total += n as u64;
        if total > limit {
            tracing::debug!(limit, compressed = ?deflated_len, "decompression stopped at the limit");
            return Err(As2Error::new(
                ErrorKind::Decompression,
                format!(
                    "decompressed content exceeds the limit of {limit} bytes \
                     (max_decompressed_size{}): the sender can split the \
                     document or send it uncompressed, or the receiver can raise \
                     security.max_decompressed_size for this partner",
                    deflated_len
                        .map(|n| format!("; compressed size {n}"))
                        .unwrap_or_default()
                ),
            ));
        }
        sink(&buf[..n])?;
    }
}

/// Inflation hands out this much at a time.
const INFLATE_CHUNK: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let content = b"Content-Type: application/edi-x12\r\n\r\nISA*00*...~".repeat(10);
        let der = compress(&content).expect("compresses");
        assert_eq!(decompress(&der, 1 << 20).expect("inflates"), content);
    }

    #[test]
    fn zip_bomb_is_refused() {
        let der = compress(&vec![0u8; 50 << 20]).expect("compresses");
        assert!(der.len() < 100_000, "a real bomb: {} bytes", der.len());
        let err = decompress(&der, 10 << 20).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Decompression);
        assert!(err.message().contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in [
            &b""[..],
            b"\x30\x03\x06\x01",
            b"hello world",
            &[0x30, 0x80, 0x06],
        ] {
            assert_eq!(
                decompress(garbage, 1000).map(|_| ()).map_err(|e| e.kind()),
                Err(ErrorKind::Decompression)
            );
        }
        let mut der = compress(b"abc").expect("compresses");
        let last = der.len() - 3;
        der[last] ^= 0xff;
        assert!(decompress(&der, 1000).is_err(), "corrupt zlib");
    }
}
