//! multipart/signed read from a file range: the parts are found by
//! scanning for the boundary, the signed part is digested as it is read
//! (in each canonical form [`crate::as2::signed`] tries), and OpenSSL
//! verifies the signature over the signed attributes, whose messageDigest
//! must equal our digest. Nothing of the signed part is held in memory.

use memchr::memmem::Finder;
use openssl::hash::Hasher;
use openssl::x509::X509;

use super::source::Source;
use crate::as2::ber::{
    self, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_OCTET_STRING, TAG_SEQUENCE, TAG_SET,
};
use crate::as2::cms::{self, Verified};
use crate::as2::error::{As2Error, ErrorKind, Result};
use crate::as2::headers::MicAlg;
use crate::as2::mic::Mic;
use crate::as2::mime::{self, MAX_HEADER_BLOCK};
use crate::as2::signed::{signature_der_of, Canonicalization};

/// A signature part is a few KiB; more is not a signature.
const MAX_SIGNATURE_PART: u64 = 1 << 20;

/// The window the boundary is searched in.
const WINDOW: usize = 1 << 20;

/// Pieces digested at a time.
const PIECE: usize = 256 << 10;

/// The attribute that carries the content's digest (RFC 5652 section 11.2).
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

/// The two parts of a multipart/signed body.
pub struct SignedSplit {
    /// The signed entity, headers and body, as received.
    pub content: Source,
    pub signature_der: Vec<u8>,
}

/// One delimiter line.
struct Delimiter {
    at: u64,
    closing: bool,
    /// Just after the line's LF; `None` when the line ends the input.
    next_line: Option<u64>,
}

fn io_failure(e: std::io::Error) -> As2Error {
    As2Error::new(ErrorKind::Internal, format!("reading a spooled layer: {e}"))
}

/// Splits like [`mime::split_multipart`], which this must agree with.
pub fn split(body: &Source, boundary: &str) -> Result<SignedSplit> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(As2Error::malformed(format!(
            "invalid multipart boundary of {} bytes",
            boundary.len()
        )));
    }
    let delimiter = format!("--{boundary}");
    let finder = Finder::new(delimiter.as_bytes());
    let truncated = |parts: usize| {
        As2Error::malformed(format!(
            "truncated multipart body: closing delimiter --{boundary}-- not found ({parts} parts read)"
        ))
    };
    let first = next_delimiter(body, 0, &finder, delimiter.len())?.ok_or_else(|| truncated(0))?;
    if first.closing {
        return Err(As2Error::malformed(
            "multipart body closes before its first part",
        ));
    }
    let content_start = first.next_line.ok_or_else(|| truncated(0))?;
    let second = next_delimiter(
        body,
        first.at + delimiter.len() as u64,
        &finder,
        delimiter.len(),
    )?
    .ok_or_else(|| truncated(0))?;
    let content_end = part_end(body, content_start, second.at)?;
    if second.closing {
        return Err(As2Error::malformed(
            "multipart/signed must have 2 parts, found 1",
        ));
    }
    let signature_start = second.next_line.ok_or_else(|| truncated(1))?;
    let third = next_delimiter(
        body,
        second.at + delimiter.len() as u64,
        &finder,
        delimiter.len(),
    )?
    .ok_or_else(|| truncated(1))?;
    if !third.closing {
        return Err(As2Error::malformed(
            "multipart/signed must have 2 parts, found more",
        ));
    }
    let signature_end = part_end(body, signature_start, third.at)?;
    if signature_end - signature_start > MAX_SIGNATURE_PART {
        return Err(As2Error::malformed(format!(
            "signature part of multipart/signed is larger than {MAX_SIGNATURE_PART} bytes"
        )));
    }
    let signature_part = body
        .narrow(signature_start, signature_end)
        .prefix(MAX_SIGNATURE_PART as usize)
        .map_err(io_failure)?;
    Ok(SignedSplit {
        content: body.narrow(content_start, content_end),
        signature_der: signature_der_of(&signature_part)?,
    })
}

/// The end of a part whose next delimiter is at `delimiter_at`: the line
/// end before a delimiter belongs to the delimiter.
fn part_end(body: &Source, start: u64, delimiter_at: u64) -> Result<u64> {
    let mut end = delimiter_at;
    if end > start && body.byte(end - 1).map_err(io_failure)? == Some(b'\n') {
        end -= 1;
        if end > start && body.byte(end - 1).map_err(io_failure)? == Some(b'\r') {
            end -= 1;
        }
    }
    Ok(end.max(start))
}

/// The next delimiter line at or after `from`.
fn next_delimiter(
    body: &Source,
    from: u64,
    finder: &Finder<'_>,
    len: usize,
) -> Result<Option<Delimiter>> {
    let mut window = vec![0u8; WINDOW.max(len * 2)];
    let mut pos = from;
    while pos < body.len() {
        let n = body.read_at(pos, &mut window).map_err(io_failure)?;
        for found in finder.find_iter(&window[..n]) {
            let at = pos + found as u64;
            let line_start = at == 0
                || if found > 0 {
                    window[found - 1] == b'\n'
                } else {
                    body.byte(at - 1).map_err(io_failure)? == Some(b'\n')
                };
            if !line_start {
                continue;
            }
            // The rest of the delimiter line: "--" if closing, then only
            // transport padding up to the line end.
            let mut after = vec![0u8; 1024];
            let got = body
                .read_at(at + len as u64, &mut after)
                .map_err(io_failure)?;
            after.truncate(got);
            let closing = after.starts_with(b"--");
            let newline = memchr::memchr(b'\n', &after);
            let line_len = match newline {
                Some(i) => i,
                None if at + (len + got) as u64 >= body.len() => got,
                None => continue, // a "line" of over 1 KiB is no delimiter
            };
            let rest = &after[if closing { 2.min(line_len) } else { 0 }..line_len];
            if !rest.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                continue;
            }
            return Ok(Some(Delimiter {
                at,
                closing,
                next_line: newline.map(|i| at + (len + i + 1) as u64),
            }));
        }
        if pos + (n as u64) >= body.len() {
            break;
        }
        // Overlap so that a delimiter across two windows is found.
        pos += (n - (len - 1).min(n.saturating_sub(1))) as u64;
    }
    Ok(None)
}

/// The signer's digest algorithm and signed messageDigest, when the
/// signature has exactly one signer with signed attributes (what AS2
/// products send); `None` otherwise, and the caller verifies in memory.
pub fn signed_digest(signature_der: &[u8]) -> Result<Option<(MicAlg, Vec<u8>)>> {
    let (content_type, signed) = ber::content_info(signature_der)?;
    if content_type != ber::oid::SIGNED_DATA {
        return Ok(None);
    }
    let fields = signed.children()?;
    let Some(signer_infos) = fields.last().filter(|f| f.is(CLASS_UNIVERSAL, TAG_SET)) else {
        return Ok(None);
    };
    let signers = signer_infos.children()?;
    let [signer] = signers.as_slice() else {
        return Ok(None);
    };
    let parts = signer.children()?;
    // version, sid, digestAlgorithm, [0] signedAttrs, ...
    let (Some(algorithm), Some(attributes)) = (parts.get(2), parts.get(3)) else {
        return Ok(None);
    };
    if !algorithm.is(CLASS_UNIVERSAL, TAG_SEQUENCE) || !attributes.is(CLASS_CONTEXT, 0) {
        return Ok(None);
    }
    let Some(alg) = algorithm
        .children()?
        .first()
        .map(|o| o.oid())
        .transpose()?
        .and_then(|oid| mic_alg_of(&oid))
    else {
        return Ok(None);
    };
    let mut digest = None;
    for attribute in attributes.children()? {
        let pair = attribute.children()?;
        let (Some(oid), Some(values)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        if oid.oid()? != MESSAGE_DIGEST {
            continue;
        }
        let values = values.children()?;
        let [value] = values.as_slice() else {
            return Ok(None);
        };
        if digest.is_some() || !value.is(CLASS_UNIVERSAL, TAG_OCTET_STRING) {
            return Ok(None);
        }
        digest = Some(value.octets()?);
    }
    Ok(digest.map(|d| (alg, d)))
}

fn mic_alg_of(oid: &str) -> Option<MicAlg> {
    Some(match oid {
        "1.2.840.113549.2.5" => MicAlg::Md5,
        "1.3.14.3.2.26" => MicAlg::Sha1,
        "2.16.840.1.101.3.4.2.4" => MicAlg::Sha224,
        "2.16.840.1.101.3.4.2.1" => MicAlg::Sha256,
        "2.16.840.1.101.3.4.2.2" => MicAlg::Sha384,
        "2.16.840.1.101.3.4.2.3" => MicAlg::Sha512,
        _ => return None,
    })
}

/// A verified signed part.
pub struct StreamVerified {
    pub verified: Verified,
    pub canonicalization: Canonicalization,
    pub mic: Mic,
}

/// Two digests computed in one pass: the signature's and the MIC's.
struct Digests {
    signature: Hasher,
    mic: Option<Hasher>,
}

impl Digests {
    fn new(signature: MicAlg, mic: MicAlg) -> Result<Digests> {
        let hasher = |alg: MicAlg| {
            Hasher::new(alg.message_digest())
                .map_err(|e| As2Error::openssl(ErrorKind::Internal, "starting a digest", e))
        };
        Ok(Digests {
            signature: hasher(signature)?,
            mic: if mic == signature {
                None
            } else {
                Some(hasher(mic)?)
            },
        })
    }

    fn update(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.signature.update(bytes)?;
        if let Some(mic) = &mut self.mic {
            mic.update(bytes)?;
        }
        Ok(())
    }

    /// (signature digest, MIC digest)
    fn finish(mut self) -> Result<(Vec<u8>, Vec<u8>)> {
        let failed = |e| As2Error::openssl(ErrorKind::Internal, "finishing a digest", e);
        let signature = self.signature.finish().map_err(failed)?.to_vec();
        let mic = match &mut self.mic {
            Some(mic) => mic.finish().map_err(failed)?.to_vec(),
            None => signature.clone(),
        };
        Ok((signature, mic))
    }
}

/// Verifies `content` (the signed part, as received) against the
/// signature, trying the canonical forms in the order of
/// [`crate::as2::signed::verify_in`]. `mic_for` picks the MIC algorithm
/// given the signer's. `None` when the signature is not one this can check
/// without the content in memory ([`signed_digest`]).
pub fn verify(
    content: &Source,
    signature_der: &[u8],
    trusted: &[X509],
    mic_for: impl Fn(MicAlg) -> (MicAlg, String),
) -> Result<Option<StreamVerified>> {
    if trusted.is_empty() {
        return Err(As2Error::new(
            ErrorKind::Integrity,
            "message is signed but no partner signing certificate is configured",
        ));
    }
    let Some((alg, expected)) = signed_digest(signature_der)? else {
        return Ok(None);
    };
    let (mic_alg, spelling) = mic_for(alg);
    let head = content
        .prefix(MAX_HEADER_BLOCK + 4096)
        .map_err(io_failure)?;
    let entity = mime::parse_entity(&head).ok();
    let body_start = entity
        .as_ref()
        .map(|e| (e.raw.len() - e.body.len()) as u64)
        .unwrap_or(0);

    // As received; the pass also notes whether the body has bare LFs.
    let mut digests = Digests::new(alg, mic_alg)?;
    let mut body_bare_lf = false;
    let mut prev = 0u8;
    let mut offset = 0u64;
    content
        .for_each_piece(PIECE, |piece| {
            digests.update(piece)?;
            if !body_bare_lf && offset + piece.len() as u64 > body_start {
                let skip = body_start.saturating_sub(offset) as usize;
                let mut last = if skip == 0 { prev } else { piece[skip - 1] };
                for &b in &piece[skip..] {
                    if b == b'\n' && last != b'\r' {
                        body_bare_lf = true;
                        break;
                    }
                    last = b;
                }
            }
            prev = piece.last().copied().unwrap_or(prev);
            offset += piece.len() as u64;
            Ok(())
        })
        .map_err(io_failure)?;
    let mut candidates = vec![(Canonicalization::AsReceived, digests.finish()?)];

    if let Some(entity) = &entity {
        let header_bytes = &head[..body_start as usize];
        if has_bare_lf(header_bytes) {
            let mut digests = Digests::new(alg, mic_alg)?;
            digests
                .update(&entity.with_crlf_headers_only())
                .map_err(io_failure)?;
            content
                .narrow(body_start, content.len())
                .for_each_piece(PIECE, |piece| digests.update(piece))
                .map_err(io_failure)?;
            candidates.push((Canonicalization::CrlfHeaders, digests.finish()?));
        }
        if entity.transfer_encoding() != "binary" && body_bare_lf {
            let mut digests = Digests::new(alg, mic_alg)?;
            let mut prev = 0u8;
            content
                .for_each_piece(PIECE, |piece| {
                    digests.update(&mime::to_crlf_after(piece, prev))?;
                    prev = piece.last().copied().unwrap_or(prev);
                    Ok(())
                })
                .map_err(io_failure)?;
            candidates.push((Canonicalization::CrlfAll, digests.finish()?));
        }
    }

    // The certificate and the signature over the attributes decide first:
    // their errors are the ones worth reporting.
    let verified = cms::verify_signed_attributes(signature_der, trusted)?;
    let Some((canonicalization, (_, mic_digest))) = candidates
        .into_iter()
        .find(|(_, (signature_digest, _))| *signature_digest == expected)
    else {
        return Err(As2Error::new(
            ErrorKind::Integrity,
            "signature does not verify: the signed part's digest differs from the one the \
             signature covers (the content was altered, or is in a form we do not know)",
        ));
    };
    Ok(Some(StreamVerified {
        verified,
        canonicalization,
        mic: Mic::from_digest(mic_alg, spelling, &mic_digest),
    }))
}

fn has_bare_lf(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', data).any(|i| i == 0 || data[i - 1] != b'\r')
}
