//! multipart/signed (RFC 1847, RFC 5751 section 3.5) in both directions.
//!
//! Verification must find the bytes the sender actually signed. RFC 1847
//! requires the canonical form (CRLF line ends), but what arrives is often
//! not canonical: captures and some gateways turn CRLF into LF. So we try,
//! in order, the part exactly as received, then the part with its header
//! lines ended by CRLF and its body untouched (Mendelson and IBM Sterling
//! sign binary bodies this way), then, for text bodies only, everything
//! converted to CRLF. A binary body is never altered.

use std::path::Path;

use openssl::x509::X509;

use super::cms::{self, KeyPair, SignatureScheme, Verified};
use super::error::{As2Error, ErrorKind, Result};
use super::headers::MicAlg;
use super::mime::{self, ContentType};
use super::payload::{Bytes, SpillWriter};

/// Which form of the signed part the signature covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    /// The bytes exactly as received.
    AsReceived,
    /// Header lines re-ended with CRLF, body untouched.
    CrlfHeaders,
    /// Every bare LF converted to CRLF (text parts only).
    CrlfAll,
}

impl Canonicalization {
    pub fn name(self) -> &'static str {
        match self {
            Canonicalization::AsReceived => "as-received",
            Canonicalization::CrlfHeaders => "crlf-headers",
            Canonicalization::CrlfAll => "crlf-all",
        }
    }
}

/// A verified multipart/signed body. The signed entity as received is
/// `SignedParts::content`; nothing of it is copied here.
pub struct VerifiedPart<'a> {
    /// The signed entity in the form that verified; the MIC covers it.
    /// Borrowed when it verified as received; a canonicalised copy (in
    /// memory, or spilled to a mapped file when large) otherwise.
    pub signed_bytes: Bytes<'a>,
    pub canonicalization: Canonicalization,
    pub verified: Verified,
}

/// The two parts of a multipart/signed body, not yet verified.
pub struct SignedParts<'a> {
    pub content: &'a [u8],
    pub signature_der: Vec<u8>,
}

/// Splits a multipart/signed body and decodes its signature part.
pub fn split<'a>(content_type: &ContentType, body: &'a [u8]) -> Result<SignedParts<'a>> {
    let boundary = content_type
        .param("boundary")
        .ok_or_else(|| As2Error::malformed("multipart/signed has no boundary parameter"))?;
    let parts = mime::split_multipart(body, boundary)?;
    if parts.len() != 2 {
        return Err(As2Error::malformed(format!(
            "multipart/signed must have 2 parts, found {}",
            parts.len()
        )));
    }
    Ok(SignedParts {
        content: parts[0],
        signature_der: signature_der_of(parts[1])?,
    })
}

/// The DER of a multipart/signed body's second part, which must be
/// application/pkcs7-signature.
pub(crate) fn signature_der_of(part: &[u8]) -> Result<Vec<u8>> {
    let signature =
        mime::parse_entity(part).map_err(|e| e.context("reading the signature part"))?;
    let signature_type = signature.content_type()?;
    if !signature_type.is_pkcs7_signature() {
        return Err(As2Error::new(
            ErrorKind::Unsupported,
            format!(
                "signature part is {}, expected application/pkcs7-signature",
                signature_type.mime_type
            ),
        ));
    }
    let mut signature_der = signature.decoded_body()?.into_owned();
    // Some senders base64 the signature without saying so.
    if signature_der.first() != Some(&0x30) {
        if let Ok(decoded) = mime::decode_base64(&signature_der) {
            signature_der = decoded;
        }
    }
    Ok(signature_der)
}

/// Verifies the signed part against the pinned certificates, trying the
/// canonical forms described in the module documentation.
pub fn verify<'a>(parts: &SignedParts<'a>, trusted: &[X509]) -> Result<VerifiedPart<'a>> {
    verify_in(parts, trusted, None)
}

/// Like [`verify`]; canonical forms of a large part are built in a
/// temporary file in `spool_dir` (system temp dir if `None`) rather than on
/// the heap, and only when the forms before them failed.
pub fn verify_in<'a>(
    parts: &SignedParts<'a>,
    trusted: &[X509],
    spool_dir: Option<&Path>,
) -> Result<VerifiedPart<'a>> {
    let content = parts.content;
    let entity = mime::parse_entity(content).ok();
    let mut first_error: Option<As2Error> = None;
    for canonicalization in [
        Canonicalization::AsReceived,
        Canonicalization::CrlfHeaders,
        Canonicalization::CrlfAll,
    ] {
        let bytes = match (canonicalization, &entity) {
            (Canonicalization::AsReceived, _) => Bytes::Borrowed(content),
            // Skipped when it would equal a form already tried.
            (Canonicalization::CrlfHeaders, Some(e))
                if has_bare_lf(&content[..e.raw.len() - e.body.len()]) =>
            {
                let mut out = SpillWriter::new(spool_dir);
                out.write(&e.with_crlf_headers_only())?;
                out.write(e.body)?;
                Bytes::Owned(out.finish()?)
            }
            (Canonicalization::CrlfAll, Some(e))
                if e.transfer_encoding() != "binary" && has_bare_lf(e.body) =>
            {
                let mut out = SpillWriter::new(spool_dir);
                let mut prev = 0u8;
                for chunk in content.chunks(64 << 10) {
                    let converted = mime::to_crlf_after(chunk, prev);
                    prev = chunk.last().copied().unwrap_or(prev);
                    out.write(&converted)?;
                }
                Bytes::Owned(out.finish()?)
            }
            _ => continue,
        };
        match cms::verify_detached(&parts.signature_der, &bytes, trusted) {
            Ok(verified) => {
                return Ok(VerifiedPart {
                    signed_bytes: bytes,
                    canonicalization,
                    verified,
                })
            }
            Err(e) => {
                // A structural problem fails the same way for every form.
                if e.kind() != ErrorKind::Integrity || first_error.is_none() {
                    first_error.get_or_insert(e);
                }
                if trusted.is_empty() {
                    break;
                }
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| As2Error::new(ErrorKind::Integrity, "signature does not verify")))
}

/// A line feed not preceded by a carriage return.
fn has_bare_lf(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', data).any(|i| i == 0 || data[i - 1] != b'\r')
}

/// A multipart/signed entity built by us.
pub struct SignedEntity {
    /// The Content-Type header value, with boundary and micalg.
    pub content_type: String,
    /// The multipart body.
    pub body: Vec<u8>,
}

/// Signs a canonical MIME entity and wraps it in multipart/signed.
/// `micalg` is the name written in the micalg parameter.
pub fn build(
    entity: &[u8],
    signer: &KeyPair,
    digest: MicAlg,
    scheme: SignatureScheme,
    micalg: &str,
) -> Result<SignedEntity> {
    let signature = cms::sign_detached(entity, signer, digest, scheme)?;
    let boundary = format!("----=_Part_{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(entity.len() + signature.len() * 2 + 512);
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(entity);
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Type: application/pkcs7-signature; name=smime.p7s; smime-type=signed-data\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
    );
    body.extend_from_slice(&mime::encode_base64_lines(&signature));
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; boundary=\"{boundary}\"");
    Ok(SignedEntity { content_type, body })
}
