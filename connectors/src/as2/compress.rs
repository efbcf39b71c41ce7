//! CMS CompressedData (RFC 3274) as AS2 uses it (RFC 5402): zlib, applied
//! before or after signing. Inflation is bounded so that a zip bomb fails
//! with `decompression-failed` instead of exhausting memory.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::ber::{self, oid, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_OCTET_STRING, TAG_SEQUENCE};
use super::error::{As2Error, ErrorKind, Result};

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
        .map(|deflated| {
            let algorithm = ber::der(ber::ID_SEQUENCE, &ber::der_oid(oid::ZLIB_COMPRESS));
            let econtent = ber::der(
                ber::ID_CONTEXT_0,
                &ber::der(ber::ID_OCTET_STRING, &deflated),
            );
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
        })
}

/// Unwraps a BER or DER CompressedData ContentInfo, inflating at most
/// `limit` bytes.
pub fn decompress(data: &[u8], limit: u64) -> Result<Vec<u8>> {
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
    let octets = econtent
        .first()
        .filter(|f| f.is(CLASS_UNIVERSAL, TAG_OCTET_STRING))
        .ok_or_else(|| bad("eContent is not an OCTET STRING"))?
        .octets()
        .map_err(|e| bad(e.message()))?;
    inflate_limited(&octets, limit)
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
    let mut decoder = ZlibDecoder::new(deflated).take(limit.saturating_add(1));
    decoder.read_to_end(&mut out).map_err(|e| {
        As2Error::new(
            ErrorKind::Decompression,
            format!("zlib stream is corrupt: {e}"),
        )
    })?;
    if out.len() as u64 > limit {
        return Err(As2Error::new(
            ErrorKind::Decompression,
            format!(
                "decompressed content exceeds the limit of {limit} bytes (compressed size {})",
                deflated.len()
            ),
        ));
    }
    // read_to_end grows by doubling: give back the unused tail (for a
    // large payload up to half of it again) before the buffer lives on.
    out.shrink_to_fit();
    Ok(out)
}

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
