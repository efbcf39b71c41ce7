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
use std::path::{Path, PathBuf};

use openssl::x509::X509;

use super::ber;
use super::cms::{self, KeyPair};
use super::compress;
use super::error::{As2Error, ErrorKind, Result};
use super::headers::{ChosenMicAlg, Headers, MicAlg};
use super::mic::{Mic, UnsignedCompressedMic};
use super::mime::{self, ContentType, Entity};
use super::payload::{self, Bytes, SpillWriter};
use super::signed::{self, Canonicalization};

pub use super::payload::Payload;

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
    /// What the MIC of an unsigned, compressed message covers.
    pub unsigned_compressed_mic: UnsignedCompressedMic,
    /// Where content too large for memory (inflated layers, canonical
    /// forms, decoded payloads over [`payload::MEMORY_THRESHOLD`]) is
    /// spilled, in anonymous files; the system temp dir if `None`. Give a
    /// disk-backed directory: spilling to a tmpfs `/tmp` is memory again.
    pub spool_dir: Option<PathBuf>,
}

impl Default for ReceiveSettings {
    fn default() -> Self {
        ReceiveSettings {
            decryption_keys: Vec::new(),
            partner_certs: Vec::new(),
            enforce_cert_validity: false,
            require_signed: false,
            require_encrypted: false,
            // Inflated content beyond 4 MiB streams to a spill file, so this
            // bounds disk, not heap; 512 MiB covers large EDI files.
            max_decompressed_size: 512 << 20,
            unsigned_compressed_mic: UnsignedCompressedMic::default(),
            spool_dir: None,
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
    /// The content: on the heap, or (large inflated content) a mapped
    /// temporary file. Derefs to `[u8]`; `as_slice()` and `len()` read it.
    pub payload: Payload,
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

/// An opened message without its payload: what the streaming path
/// ([`super::stream`]) returns beside the payload it wrote to a file, and
/// what [`Unwrapped::into_opened`] leaves beside the payload in memory.
#[derive(Debug, Clone)]
pub struct Opened {
    pub payload_len: u64,
    pub content_type: String,
    pub file_name: Option<String>,
    pub encryption: Option<EncryptionInfo>,
    pub signature: Option<SignatureInfo>,
    pub compression: Option<Compression>,
    pub mic: Mic,
    pub warnings: Vec<String>,
}

impl Unwrapped {
    /// The payload and the rest.
    pub fn into_opened(self) -> (Payload, Opened) {
        let opened = Opened {
            payload_len: self.payload.len() as u64,
            content_type: self.content_type,
            file_name: self.file_name,
            encryption: self.encryption,
            signature: self.signature,
            compression: self.compression,
            mic: self.mic,
            warnings: self.warnings,
        };
        (self.payload, opened)
    }
}

/// One layer being looked at: its headers and body.
struct Layer<'a> {
    headers: Headers,
    body: Bytes<'a>,
}

impl<'a> Layer<'a> {
    /// Takes over a decrypted, decompressed or verified entity. The body is
    /// kept in the same buffer (headers cut off in place, or the mapping
    /// narrowed) rather than copied: for a large payload that copy was a
    /// whole extra message in memory.
    fn from_entity(bytes: Bytes<'a>) -> Result<Layer<'a>> {
        let (headers, range) = {
            let entity = mime::parse_entity(&bytes)?;
            let range = payload::range_within(&bytes, entity.body).ok_or_else(|| {
                As2Error::new(ErrorKind::Internal, "MIME body outside its entity")
            })?;
            (entity.headers, range)
        };
        Ok(Layer {
            headers,
            body: bytes.narrow(range),
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
    let top = top_headers(http_headers)?;
    let mut layer = Layer {
        headers: top,
        body: Bytes::Borrowed(body),
    };
    let mut encryption = None;
    let mut signature: Option<SignatureInfo> = None;
    let mut compressed_at: Option<bool> = None; // Some(signed_already)
    let mut warnings = Vec::new();
    // The MIC, computed as soon as a layer fixes the bytes it covers, so
    // that those bytes need not be kept (or copied) until the end.
    let mut signed_mic: Option<Mic> = None;
    let mut decrypted_mic: Option<Mic> = None;
    let mut uncompressed_mic: Option<Mic> = None;
    let http_disposition = http_headers.get("content-disposition").map(str::to_string);
    let spool_dir = settings.spool_dir.as_deref();

    for _ in 0..MAX_LAYERS {
        let entity = mime::entity_from_parts(layer.headers.clone(), &layer.body);
        let content_type = entity.content_type()?;
        // Policy before work: what the agreement refuses for certain is
        // refused from the headers and the first bytes of the layer, before
        // anything is inflated, verified or parsed (issue 11).
        let peeked = if content_type.is_pkcs7_mime() {
            peek_cms_type(&entity)
        } else {
            None
        };
        let smime_type = content_type
            .param("smime-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        if settings.require_encrypted && encryption.is_none() {
            refuse_unless_enveloped(&content_type, peeked.as_deref(), &smime_type)?;
        }
        if content_type.is_pkcs7_mime() {
            let compressed_by_peek = peeked.as_deref() == Some(ber::oid::COMPRESSED_DATA)
                || smime_type == "compressed-data";
            if compressed_by_peek && compressed_at.is_some() {
                return Err(twice("compressed"));
            }
            let (bytes, what) = {
                let decoded_der;
                let der: &[u8] = match cms_body(&entity)? {
                    Bytes::Borrowed(der) => der,
                    Bytes::Owned(der) => {
                        // Decoded (base64): the encoded layer is not needed
                        // any more; free it before the heavy work.
                        decoded_der = der;
                        layer.body = Bytes::Borrowed(&[]);
                        &decoded_der
                    }
                };
                let kind = ber::content_info(der)
                    .map(|(oid, _)| oid)
                    .unwrap_or_default();
                let found = LayersSoFar {
                    encrypted: encryption.is_some(),
                    compressed: compressed_at.is_some(),
                };
                match cms_layer(&kind, &smime_type, found, settings.require_encrypted)? {
                    CmsLayer::Compressed => {
                        compressed_at = Some(signature.is_some());
                        let inflated = compress::decompress_spilling(
                            der,
                            settings.max_decompressed_size,
                            spool_dir,
                        )?;
                        // Unsigned so far and not signed inside: the MIC
                        // covers the entity before compression (RFC 5402).
                        if signature.is_none()
                            && settings.unsigned_compressed_mic
                                == UnsignedCompressedMic::UncompressedEntity
                            && !is_signed_entity(&inflated)
                        {
                            let (alg, spelling) = mic_algorithm(mic_alg, None);
                            uncompressed_mic =
                                Some(Mic::compute(alg, &spelling, inflated.as_slice())?);
                        }
                        (inflated, "decompressed")
                    }
                    CmsLayer::Enveloped => {
                        let decrypted = cms::decrypt(der, &settings.decryption_keys)?;
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
                        (Payload::from(decrypted.content), "decrypted")
                    }
                }
            };
            // The outer layer's bytes are released here, before the next
            // layer is parsed (for a large message, one copy less).
            layer = inner_layer(bytes, what, &mut warnings)?;
        } else if content_type.is("multipart/signed") {
            if signature.is_some() {
                return Err(twice("signed"));
            }
            let received = {
                let parts = signed::split(&content_type, &layer.body)?;
                let verified = signed::verify_in(&parts, &settings.partner_certs, spool_dir)?;
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
                payload::range_within(&layer.body, parts.content).ok_or_else(|| {
                    As2Error::new(
                        ErrorKind::Internal,
                        "signed part outside its multipart body",
                    )
                })?
            };
            // The signed entity as received is a range of this layer: no copy.
            let body = std::mem::replace(&mut layer.body, Bytes::Borrowed(&[]));
            layer = Layer::from_entity(body.narrow(received))?;
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
                uncompressed_mic,
                warnings,
            });
        }
    }
    Err(As2Error::new(
        ErrorKind::Unsupported,
        format!("message nests more than {MAX_LAYERS} security layers"),
    ))
}

/// The layers found so far, as far as [`cms_layer`] needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayersSoFar {
    pub encrypted: bool,
    pub compressed: bool,
}

/// What an application/pkcs7-mime layer holds.
pub(crate) enum CmsLayer {
    Compressed,
    Enveloped,
}

/// Decides what an application/pkcs7-mime layer is from its ContentInfo
/// OID (`kind`) and its smime-type, with the refusals that come before any
/// work on it; both pipelines (in memory, and [`super::stream`]) ask here.
pub(crate) fn cms_layer(
    kind: &str,
    smime_type: &str,
    found: LayersSoFar,
    require_encrypted: bool,
) -> Result<CmsLayer> {
    if kind == ber::oid::COMPRESSED_DATA || smime_type == "compressed-data" {
        if found.compressed {
            return Err(twice("compressed"));
        }
        if require_encrypted && !found.encrypted {
            return Err(encryption_required("compressed-data"));
        }
        return Ok(CmsLayer::Compressed);
    }
    if kind == ber::oid::ENVELOPED_DATA
        || kind == ber::oid::AUTH_ENVELOPED_DATA
        || smime_type.contains("enveloped")
    {
        if found.encrypted {
            return Err(twice("encrypted"));
        }
        return Ok(CmsLayer::Enveloped);
    }
    if kind == ber::oid::SIGNED_DATA {
        return Err(As2Error::new(
            ErrorKind::Unsupported,
            "opaque signed-data is not used by AS2; RFC 4130 requires multipart/signed",
        ));
    }
    Err(As2Error::new(
        if !found.encrypted && smime_type.is_empty() {
            ErrorKind::Malformed
        } else {
            ErrorKind::Decryption
        },
        format!(
            "application/pkcs7-mime body is not a CMS structure we know (content type {kind:?})"
        ),
    ))
}

/// The HTTP headers that describe the outermost layer.
pub(crate) fn top_headers(http_headers: &Headers) -> Result<Headers> {
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
    Ok(top)
}

pub(crate) fn twice(what: &str) -> As2Error {
    As2Error::new(ErrorKind::Unsupported, format!("message is {what} twice"))
}

pub(crate) fn encryption_required(found: &str) -> As2Error {
    tracing::debug!(found, "unencrypted message refused before any work");
    As2Error::new(
        ErrorKind::InsufficientSecurity,
        format!(
            "the partner agreement requires encryption; the message was not encrypted: its \
             outer layer is {found}, not enveloped-data (refused before decompression, \
             signature verification or parsing); the partner must encrypt it with our certificate"
        ),
    )
}

/// The envelope is always the outermost layer (AS2 signs, then encrypts;
/// RFC 5402 compresses before encrypting): a partner that must encrypt and
/// sent anything else is refused from the headers and the ContentInfo OID.
/// When neither tells (garbage), the layer is left to fail on its own.
pub(crate) fn refuse_unless_enveloped(
    content_type: &ContentType,
    peeked: Option<&str>,
    smime_type: &str,
) -> Result<()> {
    if !content_type.is_pkcs7_mime() {
        return Err(encryption_required(&content_type.mime_type));
    }
    let enveloped = match peeked {
        Some(oid) => oid == ber::oid::ENVELOPED_DATA || oid == ber::oid::AUTH_ENVELOPED_DATA,
        None => smime_type.is_empty() || smime_type.contains("enveloped"),
    };
    if enveloped {
        return Ok(());
    }
    let found = match peeked {
        Some(ber::oid::COMPRESSED_DATA) => "compressed-data".to_string(),
        Some(ber::oid::SIGNED_DATA) => "signed-data".to_string(),
        Some(oid) => format!("CMS content type {oid}"),
        None => smime_type.to_string(),
    };
    Err(encryption_required(&format!(
        "application/pkcs7-mime {found}"
    )))
}

/// The ContentInfo type of an application/pkcs7-mime body, read from its
/// first bytes only (base64-decoding at most 88 characters).
pub(crate) fn peek_cms_type(entity: &Entity<'_>) -> Option<String> {
    let body = entity.body;
    let encoding = entity.transfer_encoding();
    let prefix: Vec<u8> = if encoding != "base64" && body.first() == Some(&0x30) {
        body[..body.len().min(64)].to_vec()
    } else if encoding == "quoted-printable" {
        return None;
    } else {
        let mut chars: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .take(88)
            .collect();
        chars.truncate(chars.len() / 4 * 4);
        mime::decode_base64(&chars).ok()?
    };
    ber::peek_content_type(&prefix)
}

/// The DER inside an application/pkcs7-mime entity, whatever its transfer
/// encoding says (some senders base64 without declaring it). Binary DER is
/// borrowed, not copied.
fn cms_body<'e>(entity: &Entity<'e>) -> Result<Bytes<'e>> {
    let decoded = entity.decoded_body()?;
    if decoded.first() == Some(&0x30) {
        return Ok(match decoded {
            Cow::Borrowed(b) => Bytes::Borrowed(b),
            Cow::Owned(v) => Bytes::Owned(Payload::from(v)),
        });
    }
    mime::decode_base64(&decoded)
        .map(|v| Bytes::Owned(Payload::from(v)))
        .map_err(|_| As2Error::malformed("application/pkcs7-mime body is neither DER nor base64"))
}

/// Parses the MIME entity a decryption or decompression produced. Some
/// products encrypt the bare payload without MIME headers; we accept it as
/// an application/octet-stream payload and say so.
/// True when the entity is multipart/signed: its signature then gives the
/// MIC, and no digest of the whole entity is needed.
pub(crate) fn is_signed_entity(bytes: &[u8]) -> bool {
    mime::parse_entity(bytes)
        .ok()
        .and_then(|e| e.content_type().ok())
        .is_some_and(|t| t.is("multipart/signed"))
}

fn inner_layer(bytes: Payload, what: &str, warnings: &mut Vec<String>) -> Result<Layer<'static>> {
    let looks_like_mime = mime::parse_entity(&bytes)
        .map(|e| e.headers.get("content-type").is_some())
        .unwrap_or(false);
    if looks_like_mime {
        return Layer::from_entity(Bytes::Owned(bytes));
    }
    warnings.push(format!(
        "{what} content has no MIME headers; treated as application/octet-stream"
    ));
    let mut headers = Headers::new();
    headers.push("Content-Type", "application/octet-stream");
    Ok(Layer {
        headers,
        body: Bytes::Owned(bytes),
    })
}

/// The payload without its transfer encoding. A binary payload takes the
/// layer's buffer over instead of being copied (a whole message less in
/// memory); a large encoded one is decoded piece by piece into a spill
/// file, so an inflated base64 bomb does not land on the heap either.
fn decode_payload(body: Bytes<'_>, headers: &Headers, spool_dir: Option<&Path>) -> Result<Payload> {
    let encoding = mime::entity_from_parts(headers.clone(), &body).transfer_encoding();
    if matches!(encoding.as_str(), "" | "7bit" | "8bit" | "binary") {
        return Ok(body.into_payload());
    }
    if body.len() <= payload::MEMORY_THRESHOLD {
        let decoded = mime::decode_transfer_encoding(&encoding, &body)?.into_owned();
        return Ok(Payload::from(decoded));
    }
    let mut out = SpillWriter::new(spool_dir);
    mime::decode_transfer_encoding_to(&encoding, &body, |piece| out.write(piece))?;
    out.finish()
}

/// The MIC digest: the one the partner asked for, else the signature's,
/// else SHA-256; with the spelling to echo.
pub(crate) fn mic_algorithm(
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
    uncompressed_mic: Option<Mic>,
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
        uncompressed_mic,
        warnings,
    } = input;
    check_policy(settings, encryption.as_ref(), signature.as_ref())?;
    let payload = decode_payload(layer.body, &layer.headers, settings.spool_dir.as_deref())?;
    let unsigned_compressed = signed_mic.is_none() && compressed_at.is_some();
    let payload_mic = (unsigned_compressed
        && settings.unsigned_compressed_mic == UnsignedCompressedMic::Payload)
        .then(|| {
            let (alg, spelling) = mic_algorithm(mic_alg, None);
            Mic::compute(alg, &spelling, payload.as_slice())
        })
        .transpose()?;
    // Signed: over the signed entity; compressed: over the entity before
    // compression (or as the partner's setting says); encrypted only: over
    // the decrypted entity; plain: over the content as received (RFC 4130
    // 7.3.1, RFC 5402 4.2 and 4.3).
    let mic = match (signed_mic, uncompressed_mic.or(payload_mic), decrypted_mic) {
        (Some(signed), _, _) => signed,
        (None, Some(uncompressed), _) => uncompressed,
        (None, None, Some(decrypted)) => decrypted,
        (None, None, None) => {
            let (alg, spelling) = mic_algorithm(mic_alg, signature.as_ref());
            Mic::compute(alg, &spelling, body)?
        }
    };
    let described = describe(Described {
        headers: &layer.headers,
        http_disposition: http_disposition.as_deref(),
        payload_len: payload.len() as u64,
        encryption,
        signature,
        compressed_at,
        mic,
        warnings,
    });
    Ok(Unwrapped {
        payload,
        content_type: described.content_type,
        file_name: described.file_name,
        encryption: described.encryption,
        signature: described.signature,
        compression: described.compression,
        mic: described.mic,
        warnings: described.warnings,
    })
}

/// What the agreement demands of the layers found, checked before the
/// payload is decoded.
pub(crate) fn check_policy(
    settings: &ReceiveSettings,
    encryption: Option<&EncryptionInfo>,
    signature: Option<&SignatureInfo>,
) -> Result<()> {
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
    Ok(())
}

/// The innermost layer and what was found on the way to it.
pub(crate) struct Described<'a> {
    pub headers: &'a Headers,
    pub http_disposition: Option<&'a str>,
    pub payload_len: u64,
    pub encryption: Option<EncryptionInfo>,
    pub signature: Option<SignatureInfo>,
    /// Some(signed already) when a compressed layer was found.
    pub compressed_at: Option<bool>,
    pub mic: Mic,
    pub warnings: Vec<String>,
}

/// The description of an opened message, payload aside.
pub(crate) fn describe(found: Described<'_>) -> Opened {
    let content_type = found
        .headers
        .get("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let file_name = found
        .headers
        .get("content-disposition")
        .and_then(mime::disposition_file_name)
        // Some senders name the file only on the HTTP request; that header
        // may also just name the S/MIME envelope (smime.p7m), which is not
        // the document's name.
        .or_else(|| {
            found
                .http_disposition
                .and_then(mime::disposition_file_name)
                .filter(|n| !n.to_ascii_lowercase().starts_with("smime.p7"))
        });
    let compression =
        found
            .compressed_at
            .map(|signed_already| match (signed_already, &found.signature) {
                (true, _) => Compression::BeforeSigning,
                (false, Some(_)) => Compression::AfterSigning,
                (false, None) => Compression::Unsigned,
            });
    Opened {
        payload_len: found.payload_len,
        content_type,
        file_name,
        encryption: found.encryption,
        signature: found.signature,
        compression,
        mic: found.mic,
        warnings: found.warnings,
    }
}
