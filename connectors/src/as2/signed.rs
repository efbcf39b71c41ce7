//! multipart/signed (RFC 1847, RFC 5751 section 3.5) in both directions.
//!
//! Verification must find the bytes the sender actually signed. RFC 1847
//! requires the canonical form (CRLF line ends), but what arrives is often
//! not canonical: captures and some gateways turn CRLF into LF. So we try,
//! in order, the part exactly as received, then the part with its header
//! lines ended by CRLF and its body untouched (Mendelson and IBM Sterling
//! sign binary bodies this way), then, for text bodies only, everything
//! converted to CRLF. A binary body is never altered.

use openssl::x509::X509;

use super::cms::{self, KeyPair, SignatureScheme, Verified};
use super::error::{As2Error, ErrorKind, Result};
use super::headers::MicAlg;
use super::mime::{self, ContentType};

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

/// A verified multipart/signed body.
#[derive(Debug, Clone)]
pub struct VerifiedPart {
    /// The signed entity in the form that verified; the MIC covers it.
    pub signed_bytes: Vec<u8>,
    /// The signed entity exactly as received (to read the payload from).
    pub received: Vec<u8>,
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
    let signature =
        mime::parse_entity(parts[1]).map_err(|e| e.context("reading the signature part"))?;
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
    Ok(SignedParts {
        content: parts[0],
        signature_der,
    })
}

/// Verifies the signed part against the pinned certificates, trying the
/// canonical forms described in the module documentation.
pub fn verify(parts: &SignedParts<'_>, trusted: &[X509]) -> Result<VerifiedPart> {
    let mut candidates: Vec<(Canonicalization, Vec<u8>)> =
        vec![(Canonicalization::AsReceived, parts.content.to_vec())];
    if let Ok(entity) = mime::parse_entity(parts.content) {
        let crlf_headers = entity.with_crlf_headers();
        if crlf_headers != parts.content {
            candidates.push((Canonicalization::CrlfHeaders, crlf_headers));
        }
        if entity.transfer_encoding() != "binary" {
            let crlf_all = mime::to_crlf(parts.content);
            if candidates.iter().all(|(_, c)| *c != crlf_all) {
                candidates.push((Canonicalization::CrlfAll, crlf_all));
            }
        }
    }
    let mut first_error: Option<As2Error> = None;
    for (canonicalization, bytes) in candidates {
        match cms::verify_detached(&parts.signature_der, &bytes, trusted) {
            Ok(verified) => {
                return Ok(VerifiedPart {
                    signed_bytes: bytes,
                    received: parts.content.to_vec(),
                    canonicalization,
                    verified,
                })
            }
            Err(e) => {
                // A structural problem fails the same way for every form.
                if e.kind() != ErrorKind::Integrity || first_error.is_none() {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| As2Error::new(ErrorKind::Integrity, "signature does not verify")))
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
