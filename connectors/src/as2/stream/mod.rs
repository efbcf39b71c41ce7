//! Opening a large AS2 message as a stream (issue 13, item 3): the request
//! body is a spooled file, each layer is read from a file range with a few
//! buffers, and the payload is written to a file the caller gives. Memory is
//! bounded by buffers and by the small parts (headers, recipient infos,
//! the signature), whatever the size of the message.
//!
//! The layers and the policy are those of [`super::unwrap`], which opens
//! small messages in memory and which this must agree with (the tests run
//! both on the same messages):
//!
//! ```text
//!   enveloped-data ── key unwrapped, content decrypted piece by piece ──┐
//!   multipart/signed ─ boundary scanned, signed part digested in place ─┤─▶ next layer ─▶ payload file
//!   compressed-data ── OCTET STRING streamed through zlib ──────────────┘
//! ```
//!
//! A decrypted or inflated layer goes to an anonymous temporary file, or,
//! when its headers show it is the payload, straight into the payload file.
//! What this does not stream (AES-GCM, RC2, a signature without signed
//! attributes) is opened in memory with OpenSSL's CMS as before.

pub mod ber_stream;
pub mod envelope;
pub mod signed_stream;
pub mod source;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use openssl::hash::Hasher;

pub use self::source::Source;
use super::ber;
use super::cms;
use super::compress;
use super::error::{As2Error, ErrorKind, Result};
use super::headers::{ChosenMicAlg, Headers, MicAlg};
use super::mic::{Mic, UnsignedCompressedMic};
use super::mime::{self, Base64Stream, ContentType, MAX_HEADER_BLOCK};
use super::signed::{self, SignedParts};
use super::unwrap::{
    check_policy, cms_layer, describe, mic_algorithm, peek_cms_type, refuse_unless_enveloped,
    top_headers, twice, CmsLayer, Described, EncryptionInfo, LayersSoFar, Opened, ReceiveSettings,
    SignatureInfo,
};

/// At most this many layers (encrypt, sign, compress, and slack).
const MAX_LAYERS: usize = 6;

/// Pieces read and written at a time.
const PIECE: usize = 256 << 10;

fn io_failure(context: &str) -> impl Fn(std::io::Error) -> As2Error + '_ {
    move |e| As2Error::new(ErrorKind::Internal, format!("{context}: {e}"))
}

/// A layer's body: still to be opened, or already the payload.
enum Body {
    Range(Source),
    /// The payload file holds the decoded body, this long.
    Written(u64),
}

struct Layer {
    headers: Headers,
    body: Body,
}

/// Opens the AS2 message whose HTTP headers are `http_headers` and whose
/// body is `body`; writes the payload to `payload` (from its current
/// position) and returns the rest. On an error the payload file holds
/// garbage and must be dropped.
pub fn unwrap_file(
    http_headers: &Headers,
    body: &Source,
    settings: &ReceiveSettings,
    mic_alg: Option<&ChosenMicAlg>,
    payload: &File,
) -> Result<Opened> {
    let spool_dir = settings.spool_dir.as_deref();
    let mut layer = Layer {
        headers: top_headers(http_headers)?,
        body: Body::Range(body.clone()),
    };
    let mut encryption: Option<EncryptionInfo> = None;
    let mut signature: Option<SignatureInfo> = None;
    let mut compressed_at: Option<bool> = None;
    let mut warnings = Vec::new();
    let mut signed_mic: Option<Mic> = None;
    let mut decrypted_mic: Option<Mic> = None;
    let mut uncompressed_mic: Option<Mic> = None;
    let http_disposition = http_headers.get("content-disposition").map(str::to_string);

    for _ in 0..MAX_LAYERS {
        let Body::Range(range) = &layer.body else {
            let found = Found {
                http_disposition: http_disposition.as_deref(),
                body,
                mic_alg,
                encryption,
                signature,
                compressed_at,
                signed_mic,
                decrypted_mic,
                uncompressed_mic,
                payload,
                warnings,
            };
            return finish(layer, settings, found);
        };
        let range = range.clone();
        let content_type = mime::entity_from_parts(layer.headers.clone(), &[]).content_type()?;
        let smime_type = content_type
            .param("smime-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let peeked = if content_type.is_pkcs7_mime() {
            let prefix = range
                .prefix(512)
                .map_err(io_failure("reading the request"))?;
            peek_cms_type(&mime::entity_from_parts(layer.headers.clone(), &prefix))
        } else {
            None
        };
        if settings.require_encrypted && encryption.is_none() {
            refuse_unless_enveloped(&content_type, peeked.as_deref(), &smime_type)?;
        }
        if content_type.is_pkcs7_mime() {
            let compressed_by_peek = peeked.as_deref() == Some(ber::oid::COMPRESSED_DATA)
                || smime_type == "compressed-data";
            if compressed_by_peek && compressed_at.is_some() {
                return Err(twice("compressed"));
            }
            let der = cms_body(&range, &layer.headers, spool_dir)?;
            let kind = ber::peek_content_type(&der.prefix(64).map_err(io_failure("reading"))?)
                .unwrap_or_default();
            let found = LayersSoFar {
                encrypted: encryption.is_some(),
                compressed: compressed_at.is_some(),
            };
            match cms_layer(&kind, &smime_type, found, settings.require_encrypted)? {
                CmsLayer::Compressed => {
                    compressed_at = Some(signature.is_some());
                    // Unsigned so far: the MIC covers the entity before
                    // compression (RFC 5402), unless a signature follows
                    // inside (the sink then drops the digest).
                    let hash_for_mic = (signature.is_none()
                        && settings.unsigned_compressed_mic
                            == UnsignedCompressedMic::UncompressedEntity)
                        .then(|| mic_algorithm(mic_alg, None));
                    let mut sink = EntitySink::new(payload, spool_dir, hash_for_mic)?;
                    compress::decompress_stream(
                        der.reader(),
                        der.len(),
                        settings.max_decompressed_size,
                        |c| sink.write(c),
                    )?;
                    let (next, mic) = sink.finish("decompressed", &mut warnings)?;
                    uncompressed_mic = mic;
                    layer = next;
                }
                CmsLayer::Enveloped => {
                    // Used only if no signature follows: then the digest is the
                    // requested one or SHA-256.
                    let hash_for_mic = signature.is_none().then(|| mic_algorithm(mic_alg, None));
                    let mut sink = EntitySink::new(payload, spool_dir, hash_for_mic)?;
                    let algorithms = decrypt(&der, &settings.decryption_keys, &mut sink)?;
                    encryption = Some(EncryptionInfo {
                        algorithm: algorithms
                            .content_encryption
                            .unwrap_or_else(|| "unknown".into()),
                        key_transport: algorithms.key_transport,
                    });
                    let (next, mic) = sink.finish("decrypted", &mut warnings)?;
                    decrypted_mic = mic;
                    layer = next;
                }
            }
        } else if content_type.is("multipart/signed") {
            if signature.is_some() {
                return Err(twice("signed"));
            }
            let (info, mic, content) =
                verify(&content_type, &range, settings, mic_alg, &mut warnings)?;
            signature = Some(info);
            signed_mic = Some(mic);
            layer = part_layer(&content)?;
        } else {
            let written = decode_payload(&range, &layer.headers, payload)?;
            layer.body = Body::Written(written);
        }
    }
    Err(As2Error::new(
        ErrorKind::Unsupported,
        format!("message nests more than {MAX_LAYERS} security layers"),
    ))
}

/// Decrypts into `sink`: streamed when the envelope allows, otherwise in
/// memory with OpenSSL's CMS (what this module does not stream).
fn decrypt(
    der: &Source,
    keys: &[cms::KeyPair],
    sink: &mut EntitySink<'_>,
) -> Result<ber::EnvelopeAlgorithms> {
    match envelope::decrypt_to(der.reader(), der.len(), keys, |c| sink.write(c))? {
        envelope::Streamed::Done(algorithms) => Ok(algorithms),
        envelope::Streamed::NotStreamed(what) => {
            tracing::debug!(
                what,
                bytes = der.len(),
                "envelope opened in memory: not streamed"
            );
            let mut whole = Vec::new();
            der.reader()
                .read_to_end(&mut whole)
                .map_err(io_failure("reading the envelope"))?;
            let decrypted = cms::decrypt(&whole, keys)?;
            drop(whole);
            sink.write(&decrypted.content)?;
            Ok(decrypted.algorithms)
        }
    }
}

/// Verifies a multipart/signed layer; returns the signature, the MIC and
/// the signed part.
fn verify(
    content_type: &ContentType,
    range: &Source,
    settings: &ReceiveSettings,
    mic_alg: Option<&ChosenMicAlg>,
    warnings: &mut Vec<String>,
) -> Result<(SignatureInfo, Mic, Source)> {
    let boundary = content_type
        .param("boundary")
        .ok_or_else(|| As2Error::malformed("multipart/signed has no boundary parameter"))?;
    let split = signed_stream::split(range, boundary)?;
    let streamed = signed_stream::verify(
        &split.content,
        &split.signature_der,
        &settings.partner_certs,
        |alg| match mic_alg {
            Some(chosen) => (chosen.alg, chosen.spelling.clone()),
            None => (alg, alg.compact_name().to_string()),
        },
    )?;
    let (verified, canonicalization, mic) = match streamed {
        Some(s) => (s.verified, s.canonicalization, s.mic),
        None => {
            tracing::debug!(
                bytes = split.content.len(),
                "signature checked in memory: not streamed"
            );
            let mut whole = Vec::new();
            split
                .content
                .reader()
                .read_to_end(&mut whole)
                .map_err(io_failure("reading the signed part"))?;
            let parts = SignedParts {
                content: &whole,
                signature_der: split.signature_der.clone(),
            };
            let part = signed::verify_in(
                &parts,
                &settings.partner_certs,
                settings.spool_dir.as_deref(),
            )?;
            let info = SignatureInfo {
                digest: part.verified.digest,
                signer: part.verified.signer_subject.clone(),
                canonicalization: part.canonicalization,
            };
            let (alg, spelling) = mic_algorithm(mic_alg, Some(&info));
            let mic = Mic::compute(alg, &spelling, &part.signed_bytes)?;
            (part.verified, part.canonicalization, mic)
        }
    };
    if verified.signer_expired {
        let text = format!(
            "signing certificate {} is outside its validity period",
            verified.signer_subject
        );
        if settings.enforce_cert_validity {
            return Err(As2Error::new(ErrorKind::Authentication, text));
        }
        tracing::warn!(signer = %verified.signer_subject, "accepted signature by an expired pinned certificate");
        warnings.push(text);
    }
    let info = SignatureInfo {
        digest: verified.digest,
        signer: verified.signer_subject,
        canonicalization,
    };
    Ok((info, mic, split.content))
}

/// The signed part as the next layer: its headers, and its body as a range.
fn part_layer(part: &Source) -> Result<Layer> {
    let head = part
        .prefix(MAX_HEADER_BLOCK + 4096)
        .map_err(io_failure("reading the signed part"))?;
    let entity = mime::parse_entity(&head)?;
    let body_start = (entity.raw.len() - entity.body.len()) as u64;
    Ok(Layer {
        headers: entity.headers,
        body: Body::Range(part.narrow(body_start, part.len())),
    })
}

/// The DER of an application/pkcs7-mime layer: the range itself when it is
/// binary DER, else decoded from base64 (declared or not) or
/// quoted-printable into a temporary file.
fn cms_body(range: &Source, headers: &Headers, spool_dir: Option<&Path>) -> Result<Source> {
    let encoding = transfer_encoding(headers);
    let first = range.byte(0).map_err(io_failure("reading"))?;
    if encoding != "base64" && encoding != "quoted-printable" && first == Some(0x30) {
        return Ok(range.clone());
    }
    let file = temp_file(spool_dir)?;
    let mut out = BufWriter::with_capacity(PIECE, &file);
    let mut write = |piece: &[u8]| {
        out.write_all(piece)
            .map_err(io_failure("writing a decoded layer"))
    };
    if encoding == "quoted-printable" {
        decode_lines(range, "quoted-printable", &mut write)?;
    } else {
        let mut decoder = Base64Stream::default();
        range
            .for_each_piece(PIECE, |piece| {
                decoder.push(piece, &mut write).map_err(to_io)
            })
            .map_err(from_io(
                "application/pkcs7-mime body is neither DER nor base64",
            ))?;
        decoder.finish(&mut write).map_err(|_| {
            As2Error::malformed("application/pkcs7-mime body is neither DER nor base64")
        })?;
    }
    out.flush().map_err(io_failure("writing a decoded layer"))?;
    drop(out);
    Source::whole(Arc::new(file)).map_err(io_failure("reading a decoded layer"))
}

fn transfer_encoding(headers: &Headers) -> String {
    headers
        .get("content-transfer-encoding")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into())
}

fn temp_file(spool_dir: Option<&Path>) -> Result<File> {
    match spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(io_failure("creating a temporary file"))
}

/// Carries an [`As2Error`] through an `io::Result` callback.
fn to_io(e: As2Error) -> std::io::Error {
    std::io::Error::other(CarriedError(e))
}

#[derive(Debug)]
struct CarriedError(As2Error);

impl std::fmt::Display for CarriedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for CarriedError {}

/// Gets the carried error back; other I/O errors become `context`.
fn from_io(context: &str) -> impl Fn(std::io::Error) -> As2Error + '_ {
    move |e| {
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<CarriedError>()) {
            Some(Ok(carried)) => carried.0,
            Some(Err(other)) => As2Error::new(ErrorKind::Internal, format!("{context}: {other}")),
            None => As2Error::new(ErrorKind::Internal, format!("{context}: {kind}")),
        }
    }
}

/// Decodes quoted-printable (or another line-oriented encoding) in pieces
/// that end at a line end, where its state resets.
fn decode_lines(
    range: &Source,
    encoding: &str,
    write: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    range
        .for_each_piece(PIECE, |piece| {
            carry.extend_from_slice(piece);
            if let Some(last) = memchr::memrchr(b'\n', &carry) {
                let decoded =
                    mime::decode_transfer_encoding(encoding, &carry[..=last]).map_err(to_io)?;
                write(&decoded).map_err(to_io)?;
                carry.drain(..=last);
            }
            if carry.len() > MAX_HEADER_BLOCK * 16 {
                return Err(to_io(As2Error::malformed(
                    "quoted-printable line longer than 1 MiB",
                )));
            }
            Ok(())
        })
        .map_err(from_io("decoding the payload"))?;
    if !carry.is_empty() {
        write(&mime::decode_transfer_encoding(encoding, &carry)?)?;
    }
    Ok(())
}

/// Writes the payload: the body of the innermost layer without its
/// transfer encoding. Returns its length.
fn decode_payload(range: &Source, headers: &Headers, payload: &File) -> Result<u64> {
    let encoding = transfer_encoding(headers);
    let mut out = PayloadWriter::new(payload);
    match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => range
            .for_each_piece(PIECE, |piece| out.write(piece).map_err(to_io))
            .map_err(from_io("copying the payload"))?,
        "base64" => {
            let mut decoder = Base64Stream::default();
            let mut write = |piece: &[u8]| out.write(piece);
            range
                .for_each_piece(PIECE, |piece| {
                    decoder.push(piece, &mut write).map_err(to_io)
                })
                .map_err(from_io("decoding the payload"))?;
            decoder.finish(&mut write)?;
        }
        "quoted-printable" => {
            decode_lines(range, "quoted-printable", &mut |piece| out.write(piece))?
        }
        other => {
            return Err(As2Error::new(
                ErrorKind::Unsupported,
                format!("unsupported Content-Transfer-Encoding {other:?}"),
            ))
        }
    }
    out.finish()
}

/// Buffered writes to the payload file, counted.
struct PayloadWriter<'a> {
    out: BufWriter<&'a File>,
    len: u64,
}

impl<'a> PayloadWriter<'a> {
    fn new(file: &'a File) -> Self {
        PayloadWriter {
            out: BufWriter::with_capacity(PIECE, file),
            len: 0,
        }
    }

    fn write(&mut self, piece: &[u8]) -> Result<()> {
        self.len += piece.len() as u64;
        self.out
            .write_all(piece)
            .map_err(io_failure("writing the payload"))
    }

    fn finish(mut self) -> Result<u64> {
        self.out
            .flush()
            .map_err(io_failure("writing the payload"))?;
        Ok(self.len)
    }
}

/// Where a decrypted or inflated entity goes, decided by its headers: a
/// temporary file when it is another layer, the payload file when it is
/// the payload.
struct EntitySink<'a> {
    payload: &'a File,
    spool_dir: Option<&'a Path>,
    /// The MIC over the whole entity (an encrypted, unsigned message).
    mic: Option<(Hasher, MicAlg, String)>,
    state: SinkState<'a>,
}

enum SinkState<'a> {
    /// Collecting the header section.
    Head(Vec<u8>),
    /// Another layer: its body goes to a temporary file.
    Layer {
        headers: Headers,
        file: BufWriter<File>,
    },
    /// The payload, decoded on the way.
    Payload {
        headers: Headers,
        out: PayloadWriter<'a>,
        base64: Option<Base64Stream>,
    },
}

impl<'a> EntitySink<'a> {
    fn new(
        payload: &'a File,
        spool_dir: Option<&'a Path>,
        mic: Option<(MicAlg, String)>,
    ) -> Result<EntitySink<'a>> {
        let mic = match mic {
            Some((alg, spelling)) => Some((
                Hasher::new(alg.message_digest())
                    .map_err(|e| As2Error::openssl(ErrorKind::Internal, "starting the MIC", e))?,
                alg,
                spelling,
            )),
            None => None,
        };
        Ok(EntitySink {
            payload,
            spool_dir,
            mic,
            state: SinkState::Head(Vec::new()),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((hasher, _, _)) = &mut self.mic {
            hasher
                .update(bytes)
                .map_err(|e| As2Error::openssl(ErrorKind::Internal, "computing the MIC", e))?;
        }
        match &mut self.state {
            SinkState::Head(head) => {
                head.extend_from_slice(bytes);
                if let Some(end) = header_end(head) {
                    let head = std::mem::take(head);
                    self.route(&head, Some(end))?;
                } else if head.len() > MAX_HEADER_BLOCK + 2 {
                    let head = std::mem::take(head);
                    self.route(&head, None)?;
                }
                Ok(())
            }
            SinkState::Layer { file, .. } => {
                file.write_all(bytes).map_err(io_failure("writing a layer"))
            }
            SinkState::Payload { out, base64, .. } => match base64 {
                Some(decoder) => decoder.push(bytes, &mut |piece| out.write(piece)),
                None => out.write(bytes),
            },
        }
    }

    /// Decides where the entity goes; `end` is where its header section
    /// ends (`None`: it has none we can read).
    fn route(&mut self, head: &[u8], end: Option<usize>) -> Result<()> {
        let entity = end.and_then(|_| mime::parse_entity(head).ok());
        let (headers, body) = match entity {
            Some(e) if e.headers.get("content-type").is_some() => (e.headers.clone(), e.body),
            _ => (Headers::new(), head),
        };
        let is_layer = match headers.get("content-type") {
            None => false,
            // Unreadable: a layer, so that the error comes where the
            // in-memory path gives it, after this layer is complete.
            Some(value) => ContentType::parse(value)
                .map(|t| t.is_pkcs7_mime() || t.is("multipart/signed"))
                .unwrap_or(true),
        };
        // A signed entity's MIC comes from its signature: stop digesting.
        let signed = headers
            .get("content-type")
            .and_then(|v| ContentType::parse(v).ok())
            .is_some_and(|t| t.is("multipart/signed"));
        let encoding = transfer_encoding(&headers);
        let raw = headers.get("content-type").is_none();
        self.state = if !is_layer
            && (raw || matches!(encoding.as_str(), "7bit" | "8bit" | "binary" | "base64"))
        {
            SinkState::Payload {
                headers,
                out: PayloadWriter::new(self.payload),
                base64: (!raw && encoding == "base64").then(Base64Stream::default),
            }
        } else {
            SinkState::Layer {
                headers,
                file: BufWriter::with_capacity(PIECE, temp_file(self.spool_dir)?),
            }
        };
        // The body's first bytes, without hashing them twice.
        let mic = self.mic.take();
        let written = self.write(body);
        self.mic = if signed { None } else { mic };
        written
    }

    /// The next layer, and the MIC if one was computed.
    fn finish(mut self, what: &str, warnings: &mut Vec<String>) -> Result<(Layer, Option<Mic>)> {
        if let SinkState::Head(head) = &mut self.state {
            let head = std::mem::take(head);
            let end = header_end(&head).or(Some(head.len()));
            self.route(&head, end)?;
        }
        let mic = match self.mic.take() {
            Some((mut hasher, alg, spelling)) => {
                let digest = hasher
                    .finish()
                    .map_err(|e| As2Error::openssl(ErrorKind::Internal, "finishing the MIC", e))?;
                Some(Mic::from_digest(alg, spelling, &digest))
            }
            None => None,
        };
        let layer = match self.state {
            SinkState::Head(_) => unreachable!("routed above"),
            SinkState::Layer { headers, file } => {
                let file = file
                    .into_inner()
                    .map_err(|e| io_failure("writing a layer")(e.into_error()))?;
                Layer {
                    headers,
                    body: Body::Range(
                        Source::whole(Arc::new(file)).map_err(io_failure("reading a layer"))?,
                    ),
                }
            }
            SinkState::Payload {
                mut headers,
                mut out,
                base64,
            } => {
                if let Some(decoder) = base64 {
                    decoder.finish(&mut |piece| out.write(piece))?;
                }
                if headers.get("content-type").is_none() {
                    warnings.push(format!(
                        "{what} content has no MIME headers; treated as application/octet-stream"
                    ));
                    headers.push("Content-Type", "application/octet-stream");
                }
                Layer {
                    headers,
                    body: Body::Written(out.finish()?),
                }
            }
        };
        Ok((layer, mic))
    }
}

/// Where the header section of `head` ends: just after its blank line.
fn header_end(head: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &head[pos..]) {
        let line = &head[pos..pos + nl];
        if line.is_empty() || line == b"\r" {
            return Some(pos + nl + 1);
        }
        pos += nl + 1;
        if pos > MAX_HEADER_BLOCK {
            return None;
        }
    }
    None
}

/// What was found on the way to the payload.
struct Found<'a> {
    http_disposition: Option<&'a str>,
    body: &'a Source,
    mic_alg: Option<&'a ChosenMicAlg>,
    encryption: Option<EncryptionInfo>,
    signature: Option<SignatureInfo>,
    compressed_at: Option<bool>,
    signed_mic: Option<Mic>,
    decrypted_mic: Option<Mic>,
    uncompressed_mic: Option<Mic>,
    /// The payload as written, for a MIC over the document itself.
    payload: &'a File,
    warnings: Vec<String>,
}

/// The digest of every piece of `source`.
fn digest_of(source: &Source, alg: MicAlg, spelling: String, what: &str) -> Result<Mic> {
    let mut hasher = Hasher::new(alg.message_digest())
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, "starting the MIC", e))?;
    source
        .for_each_piece(PIECE, |piece| Ok(hasher.update(piece)?))
        .map_err(io_failure(what))?;
    let digest = hasher
        .finish()
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, "finishing the MIC", e))?;
    Ok(Mic::from_digest(alg, spelling, &digest))
}

fn finish(layer: Layer, settings: &ReceiveSettings, found: Found<'_>) -> Result<Opened> {
    check_policy(
        settings,
        found.encryption.as_ref(),
        found.signature.as_ref(),
    )?;
    let Body::Written(payload_len) = layer.body else {
        return Err(As2Error::new(ErrorKind::Internal, "payload not written"));
    };
    let unsigned_compressed = found.signed_mic.is_none() && found.compressed_at.is_some();
    let payload_mic = if unsigned_compressed
        && settings.unsigned_compressed_mic == UnsignedCompressedMic::Payload
    {
        let (alg, spelling) = mic_algorithm(found.mic_alg, None);
        let file = found
            .payload
            .try_clone()
            .map_err(io_failure("reading the payload"))?;
        let written = Source::whole(Arc::new(file)).map_err(io_failure("reading the payload"))?;
        Some(digest_of(&written, alg, spelling, "reading the payload")?)
    } else {
        None
    };
    // Signed: over the signed entity; compressed: over the entity before
    // compression (or as the partner's setting says); encrypted only: over
    // the decrypted entity; plain: over the content as received (RFC 4130
    // 7.3.1, RFC 5402 4.2 and 4.3).
    let mic = match (
        found.signed_mic,
        found.uncompressed_mic.or(payload_mic),
        found.decrypted_mic,
    ) {
        (Some(signed), _, _) => signed,
        (None, Some(uncompressed), _) => uncompressed,
        (None, None, Some(decrypted)) => decrypted,
        (None, None, None) => {
            let (alg, spelling) = mic_algorithm(found.mic_alg, found.signature.as_ref());
            digest_of(found.body, alg, spelling, "reading the request")?
        }
    };
    Ok(describe(Described {
        headers: &layer.headers,
        http_disposition: found.http_disposition,
        payload_len,
        encryption: found.encryption,
        signature: found.signature,
        compressed_at: found.compressed_at,
        mic,
        warnings: found.warnings,
    }))
}
