//! The receiving side: decrypt, verify, decompress (RFC 4130 section 7,
//! RFC 5402), in whatever order the sender layered them, and compute the
//! MIC the receipt must carry.
//!
//! Layers are peeled one at a time from the outside in:
//!
//! ```text
//!   application/pkcs7-mime enveloped-data ──decrypt──┐
//!   multipart/signed ─────────────verify─────────────┤──▶ next layer ... ──▶ payload
//!   application/pkcs7-mime compressed-data ─inflate──┘
//! ```
//!
//! Each kind may appear once; anything else is the payload.

use std::borrow::Cow;

use openssl::x509::X509;

use super::ber;
use super::cms::{self, KeyPair};
use super::compress;
use super::error::{As2Error, ErrorKind, Result};
use super::headers::{ChosenMicAlg, Headers, MicAlg};
use super::mic::Mic;
use super::mime::{self, Entity};
use super::signed::{self, Canonicalization};

/// At most this many layers (encrypt, sign, compress, and slack).
const MAX_LAYERS: usize = 6;

/// The trading-partner agreement the receive side applies.
#[derive(Debug, Clone)]
pub struct ReceiveSettings {
    /// Our keys; the first that fits opens the message (rollover-friendly).
    pub decryption_keys: Vec<KeyPair>,
    /// The partner's pinned signing certificates.
    pub partner_certs: Vec<X509>,
    /// Refuse a signature by a certificate outside its validity period.
    pub enforce_cert_validity: bool,
    pub require_signed: bool,
    pub require_encrypted: bool,
    /// Decompression stops with an error past this many bytes.
    pub max_decompressed_size: u64,
}

impl Default for ReceiveSettings {
    fn default() -> Self {
        ReceiveSettings {
            decryption_keys: Vec::new(),
            partner_certs: Vec::new(),
            enforce_cert_validity: false,
            require_signed: false,
            require_encrypted: false,
            // A bomb costs a few times this in buffers; 512 MiB covers large EDI files.
            max_decompressed_size: 512 << 20,
        }
    }
}

/// Encryption found on the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionInfo {
    pub algorithm: String,
    pub key_transport: Option<String>,
}

/// The signature found on the message.
#[derive(Debug, Clone)]
pub struct SignatureInfo {
    pub digest: Option<MicAlg>,
    pub signer: String,
    pub canonicalization: Canonicalization,
}

/// Where compression sat relative to the signature (RFC 5402 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Inside the signature: the sender compressed, then signed.
    BeforeSigning,
    /// Outside the signature: the sender signed, then compressed.
    AfterSigning,
    /// The message was not signed.
    Unsigned,
}

/// An opened message.
#[derive(Debug, Clone)]
pub struct Unwrapped {
    pub payload: Vec<u8>,
    /// The payload's Content-Type as sent.
    pub content_type: String,
    /// The sanitised file name from Content-Disposition, if any.
    pub file_name: Option<String>,
    pub encryption: Option<EncryptionInfo>,
    pub signature: Option<SignatureInfo>,
    pub compression: Option<Compression>,
    pub mic: Mic,
    /// Things an operator should know that did not stop the message.
    pub warnings: Vec<String>,
}

/// One layer being looked at: its headers and body.
struct Layer<'a> {
    headers: Headers,
    body: Cow<'a, [u8]>,
}

impl Layer<'_> {
    /// Takes over a decrypted or decompressed entity. The body is kept in
    /// the same buffer (headers cut off in place) rather than copied: for a
    /// large payload that copy was a whole extra message in memory.
    fn from_owned_entity(mut bytes: Vec<u8>) -> Result<Layer<'static>> {
        let entity = mime::parse_entity(&bytes)?;
        let headers = entity.headers.clone();
        let start = bytes.as_ptr() as usize;
        let body_at = entity.body.as_ptr() as usize;
        let body_len = entity.body.len();
        let inside = body_at >= start && body_at + body_len <= start + bytes.len();
        if !inside {
            // A decoded (not borrowed) body: nothing to reuse.
            let body = entity.body.to_vec();
            return Ok(Layer {
                headers,
                body: Cow::Owned(body),
            });
        }
        let offset = body_at - start;
        bytes.truncate(offset + body_len);
        bytes.drain(..offset);
        Ok(Layer {
            headers,
            body: Cow::Owned(bytes),
        })
    }
}

/// Opens an AS2 message given its HTTP headers and body.
///
/// `mic_alg` is the algorithm the partner asked for in
/// Disposition-Notification-Options, if any.
pub fn unwrap(
    http_headers: &Headers,
    body: &[u8],
    settings: &ReceiveSettings,
    mic_alg: Option<&ChosenMicAlg>,
) -> Result<Unwrapped> {
    let mut top = Headers::new();
    for name in [
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    ] {
        if let Some(v) = http_headers.get(name) {
            top.push(name, v);
        }
    }
    if top.get("content-type").is_none() {
        return Err(As2Error::malformed("request has no Content-Type"));
    }
    let mut layer = Layer {
        headers: top,
        body: Cow::Borrowed(body),
    };
    let mut encryption = None;
    let mut signature: Option<SignatureInfo> = None;
    let mut compressed_at: Option<bool> = None; // Some(signed_already)
    let mut warnings = Vec::new();
    // The MIC, computed as soon as a layer fixes the bytes it covers, so
    // that those bytes need not be kept (or copied) until the end.
    let mut signed_mic: Option<Mic> = None;
    let mut decrypted_mic: Option<Mic> = None;
    let http_disposition = http_headers.get("content-disposition").map(str::to_string);

    for _ in 0..MAX_LAYERS {
        let entity = mime::entity_from_parts(layer.headers.clone(), &layer.body);
        let content_type = entity.content_type()?;
        if content_type.is_pkcs7_mime() {
            let der = cms_body(&entity)?;
            let kind = ber::content_info(&der)
                .map(|(oid, _)| oid)
                .unwrap_or_default();
            let smime_type = content_type
                .param("smime-type")
                .unwrap_or("")
                .to_ascii_lowercase();
            // The layer's bytes live on in `der`: free them before the
            // next layer is built (for a large message, one copy less).
            layer.body = Cow::Borrowed(&[]);
            if kind == ber::oid::COMPRESSED_DATA || smime_type == "compressed-data" {
                if compressed_at.is_some() {
                    return Err(As2Error::new(
                        ErrorKind::Unsupported,
                        "message is compressed twice",
                    ));
                }
                compressed_at = Some(signature.is_some());
                let inflated = compress::decompress(&der, settings.max_decompressed_size)?;
                layer = inner_layer(inflated, "decompressed", &mut warnings)?;
            } else if kind == ber::oid::ENVELOPED_DATA
                || kind == ber::oid::AUTH_ENVELOPED_DATA
                || smime_type.contains("enveloped")
            {
                if encryption.is_some() {
                    return Err(As2Error::new(
                        ErrorKind::Unsupported,
                        "message is encrypted twice",
                    ));
                }
                let decrypted = cms::decrypt(&der, &settings.decryption_keys)?;
                encryption = Some(EncryptionInfo {
                    algorithm: decrypted
                        .algorithms
                        .content_encryption
                        .unwrap_or_else(|| "unknown".into()),
                    key_transport: decrypted.algorithms.key_transport,
                });
                if signature.is_none() {
                    // Used only if no signature follows: then the digest is
                    // the requested one or SHA-256.
                    let (alg, spelling) = mic_algorithm(mic_alg, None);
                    decrypted_mic = Some(Mic::compute(alg, &spelling, &decrypted.content)?);
                }
                layer = inner_layer(decrypted.content, "decrypted", &mut warnings)?;
            } else if kind == ber::oid::SIGNED_DATA {
                return Err(As2Error::new(
                    ErrorKind::Unsupported,
                    "opaque signed-data is not used by AS2; RFC 4130 requires multipart/signed",
                ));
            } else {
                return Err(As2Error::new(
                    if encryption.is_none() && smime_type.is_empty() { ErrorKind::Malformed } else { ErrorKind::Decryption },
                    format!("application/pkcs7-mime body is not a CMS structure we know (content type {kind:?})"),
                ));
            }
        } else if content_type.is("multipart/signed") {
            if signature.is_some() {
                return Err(As2Error::new(
                    ErrorKind::Unsupported,
                    "message is signed twice",
                ));
            }
            let parts = signed::split(&content_type, &layer.body)?;
            let verified = signed::verify(&parts, &settings.partner_certs)?;
            if verified.verified.signer_expired {
                let text = format!(
                    "signing certificate {} is outside its validity period",
                    verified.verified.signer_subject
                );
                if settings.enforce_cert_validity {
                    return Err(As2Error::new(ErrorKind::Authentication, text));
                }
                tracing::warn!(signer = %verified.verified.signer_subject, "accepted signature by an expired pinned certificate");
                warnings.push(text);
            }
            signature = Some(SignatureInfo {
                digest: verified.verified.digest,
                signer: verified.verified.signer_subject.clone(),
                canonicalization: verified.canonicalization,
            });
            let (alg, spelling) = mic_algorithm(mic_alg, signature.as_ref());
            signed_mic = Some(Mic::compute(alg, &spelling, &verified.signed_bytes)?);
            drop(verified.signed_bytes);
            layer = Layer::from_owned_entity(verified.received)?;
        } else {
            return finish(FinishInput {
                layer,
                http_disposition,
                body,
                settings,
                mic_alg,
                encryption,
                signature,
                compressed_at,
                signed_mic,
                decrypted_mic,
                warnings,
            });
        }
    }
    Err(As2Error::new(
        ErrorKind::Unsupported,
        format!("message nests more than {MAX_LAYERS} security layers"),
    ))
}

/// The DER inside an application/pkcs7-mime entity, whatever its transfer
/// encoding says (some senders base64 without declaring it).
fn cms_body(entity: &Entity<'_>) -> Result<Vec<u8>> {
    let decoded = entity.decoded_body()?.into_owned();
    if decoded.first() == Some(&0x30) {
        return Ok(decoded);
    }
    mime::decode_base64(&decoded)
        .map_err(|_| As2Error::malformed("application/pkcs7-mime body is neither DER nor base64"))
}

/// Parses the MIME entity a decryption or decompression produced. Some
/// products encrypt the bare payload without MIME headers; we accept it as
/// an application/octet-stream payload and say so.
fn inner_layer(bytes: Vec<u8>, what: &str, warnings: &mut Vec<String>) -> Result<Layer<'static>> {
    let looks_like_mime = mime::parse_entity(&bytes)
        .map(|e| e.headers.get("content-type").is_some())
        .unwrap_or(false);
    if looks_like_mime {
        return Layer::from_owned_entity(bytes);
    }
    warnings.push(format!(
        "{what} content has no MIME headers; treated as application/octet-stream"
    ));
    let mut headers = Headers::new();
    headers.push("Content-Type", "application/octet-stream");
    Ok(Layer {
        headers,
        body: Cow::Owned(bytes),
    })
}

/// The MIC digest: the one the partner asked for, else the signature's,
/// else SHA-256; with the spelling to echo.
fn mic_algorithm(
    requested: Option<&ChosenMicAlg>,
    signature: Option<&SignatureInfo>,
) -> (MicAlg, String) {
    match (requested, signature) {
        (Some(chosen), _) => (chosen.alg, chosen.spelling.clone()),
        (
            None,
            Some(SignatureInfo {
                digest: Some(d), ..
            }),
        ) => (*d, d.compact_name().to_string()),
        _ => (MicAlg::Sha256, MicAlg::Sha256.compact_name().to_string()),
    }
}

struct FinishInput<'a, 'b> {
    layer: Layer<'b>,
    http_disposition: Option<String>,
    body: &'a [u8],
    settings: &'a ReceiveSettings,
    mic_alg: Option<&'a ChosenMicAlg>,
    encryption: Option<EncryptionInfo>,
    signature: Option<SignatureInfo>,
    compressed_at: Option<bool>,
    signed_mic: Option<Mic>,
    decrypted_mic: Option<Mic>,
    warnings: Vec<String>,
}

fn finish(input: FinishInput<'_, '_>) -> Result<Unwrapped> {
    let FinishInput {
        layer,
        http_disposition,
        body,
        settings,
        mic_alg,
        encryption,
        signature,
        compressed_at,
        signed_mic,
        decrypted_mic,
        warnings,
    } = input;
    if settings.require_encrypted && encryption.is_none() {
        return Err(As2Error::new(
            ErrorKind::InsufficientSecurity,
            "the partner agreement requires encryption; message was not encrypted",
        ));
    }
    if settings.require_signed && signature.is_none() {
        return Err(As2Error::new(
            ErrorKind::InsufficientSecurity,
            "the partner agreement requires a signature; message was not signed",
        ));
    }
    // A binary payload that is the whole layer body takes the layer's
    // buffer over instead of being copied (a whole message less in memory).
    let decoded: Option<Vec<u8>> = {
        let entity = mime::entity_from_parts(layer.headers.clone(), &layer.body);
        match entity.decoded_body()? {
            Cow::Owned(decoded) => Some(decoded),
            Cow::Borrowed(slice) if slice.len() == layer.body.len() => None,
            Cow::Borrowed(slice) => Some(slice.to_vec()),
        }
    };
    let payload = match decoded {
        Some(decoded) => decoded,
        None => layer.body.into_owned(),
    };
    let content_type = layer
        .headers
        .get("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let file_name = layer
        .headers
        .get("content-disposition")
        .and_then(mime::disposition_file_name)
        // Some senders name the file only on the HTTP request; that header
        // may also just name the S/MIME envelope (smime.p7m), which is not
        // the document's name.
        .or_else(|| {
            http_disposition
                .as_deref()
                .and_then(mime::disposition_file_name)
                .filter(|n| !n.to_ascii_lowercase().starts_with("smime.p7"))
        });
    // Signed: over the signed entity; encrypted only: over the decrypted
    // entity; plain: over the content as received (RFC 4130 7.3.1).
    let mic = match (signed_mic, decrypted_mic) {
        (Some(signed), _) => signed,
        (None, Some(decrypted)) => decrypted,
        (None, None) => {
            let (alg, spelling) = mic_algorithm(mic_alg, signature.as_ref());
            Mic::compute(alg, &spelling, body)?
        }
    };
    let compression = compressed_at.map(|signed_already| match (signed_already, &signature) {
        (true, _) => Compression::BeforeSigning,
        (false, Some(_)) => Compression::AfterSigning,
        (false, None) => Compression::Unsigned,
    });
    Ok(Unwrapped {
        payload,
        content_type,
        file_name,
        encryption,
        signature,
        compression,
        mic,
        warnings,
    })
}
