//! The sending side: wrap a payload in the layers the partner agreement asks
//! for (compress, sign, encrypt, in RFC 5402 order) and the AS2 headers.
//! Used by `atom send` and as the template for anything that sends.

use openssl::x509::X509;

use super::cms::{self, ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use super::compress;
use super::error::{As2Error, Result};
use super::headers::{quote_as2_id, DispositionNotificationOptions, Headers, MicAlg};
use super::mdn::id_domain;
use super::mic::{Mic, UnsignedCompressedMic};
use super::mime;
use super::signed;

/// Where compression goes relative to the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionOrder {
    #[default]
    None,
    /// Compress, then sign: the signature covers the compressed entity.
    BeforeSigning,
    /// Sign, then compress.
    AfterSigning,
}

/// What receipt to ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MdnRequest {
    #[default]
    None,
    /// In the HTTP response.
    Sync { signed: Option<MicAlg> },
    /// POSTed later to `url`.
    Async { url: String, signed: Option<MicAlg> },
}

/// Signing parameters.
#[derive(Debug, Clone)]
pub struct SignWith<'a> {
    pub key: &'a KeyPair,
    pub digest: MicAlg,
    pub scheme: SignatureScheme,
}

/// Encryption parameters.
#[derive(Debug, Clone)]
pub struct EncryptFor<'a> {
    pub cert: &'a X509,
    pub cipher: ContentCipher,
    pub transport: KeyTransport,
}

/// A message to build.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub payload: &'a [u8],
    pub content_type: &'a str,
    pub file_name: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    /// Left side of the Message-ID, or the whole one in angle brackets
    /// (a resend keeps its Message-ID); random when absent.
    pub message_id: Option<String>,
    pub compression: CompressionOrder,
    pub sign: Option<SignWith<'a>>,
    pub encrypt: Option<EncryptFor<'a>>,
    pub mdn: MdnRequest,
    /// Disposition-Notification-To (any address; AS2 only checks presence).
    pub notification_to: &'a str,
    /// What the partner's MIC covers when the message is compressed but
    /// not signed.
    pub unsigned_compressed_mic: UnsignedCompressedMic,
}

/// A built message: HTTP headers and body, and the MIC to expect back.
#[derive(Debug, Clone)]
pub struct Built {
    pub headers: Headers,
    pub body: Vec<u8>,
    /// With angle brackets, as in the header.
    pub message_id: String,
    /// The MIC the receiver should return (RFC 4130 section 7.3.1).
    pub expected_mic: Mic,
}

/// Serialises a MIME entity with CRLF headers.
fn entity(headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn compressed_entity(inner: &[u8]) -> Result<Vec<u8>> {
    let der = compress::compress(inner)?;
    Ok(entity(
        &[
            (
                "Content-Type",
                "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z".into(),
            ),
            ("Content-Transfer-Encoding", "binary".into()),
            (
                "Content-Disposition",
                "attachment; filename=\"smime.p7z\"".into(),
            ),
        ],
        &der,
    ))
}

/// Builds the message. The payload is sent with binary transfer encoding
/// and never canonicalised, so EDI and binary files arrive byte for byte.
pub fn build(out: &Outbound<'_>) -> Result<Built> {
    let mut payload_headers = vec![
        ("Content-Type", out.content_type.to_string()),
        ("Content-Transfer-Encoding", "binary".to_string()),
    ];
    if let Some(name) = out.file_name {
        let safe = mime::sanitize_file_name(name)
            .ok_or_else(|| As2Error::malformed(format!("file name {name:?} is not usable")))?;
        payload_headers.push((
            "Content-Disposition",
            format!("attachment; filename=\"{}\"", safe.replace('"', "")),
        ));
    }
    let mut current = entity(&payload_headers, out.payload);
    let requested = match &out.mdn {
        MdnRequest::Sync { signed } | MdnRequest::Async { signed, .. } => *signed,
        MdnRequest::None => None,
    };
    // Unsigned and compressed: the MIC covers what was compressed (RFC
    // 5402 4.2, 4.3), or what the partner's product covers instead.
    let mut expected_mic = None;
    if out.sign.is_none() && out.compression != CompressionOrder::None {
        let alg = requested.unwrap_or(MicAlg::Sha256);
        expected_mic = match out.unsigned_compressed_mic {
            UnsignedCompressedMic::UncompressedEntity => {
                Some(Mic::compute(alg, alg.compact_name(), &current)?)
            }
            UnsignedCompressedMic::Payload => {
                Some(Mic::compute(alg, alg.compact_name(), out.payload)?)
            }
            UnsignedCompressedMic::CompressedEntity => None,
        };
    }
    if out.compression == CompressionOrder::BeforeSigning {
        current = compressed_entity(&current)?;
    }
    let requested_mic = requested;
    if let Some(sign) = &out.sign {
        let mic_alg = requested_mic.unwrap_or(sign.digest);
        expected_mic = Some(Mic::compute(mic_alg, mic_alg.compact_name(), &current)?);
        let built = signed::build(
            &current,
            sign.key,
            sign.digest,
            sign.scheme,
            sign.digest.compact_name(),
        )?;
        current = entity(&[("Content-Type", built.content_type)], &built.body);
    }
    if out.compression == CompressionOrder::AfterSigning {
        current = compressed_entity(&current)?;
    }
    let mic_alg = requested_mic.unwrap_or(MicAlg::Sha256);
    let (content_type, body) = match &out.encrypt {
        Some(enc) => {
            if expected_mic.is_none() {
                expected_mic = Some(Mic::compute(mic_alg, mic_alg.compact_name(), &current)?);
            }
            let der = cms::encrypt(&current, enc.cert, enc.cipher, enc.transport)?;
            (
                format!(
                    "application/pkcs7-mime; smime-type={}; name=smime.p7m",
                    enc.cipher.smime_type()
                ),
                der,
            )
        }
        None => {
            let parsed = mime::parse_entity(&current)?;
            let content_type = parsed
                .headers
                .get("content-type")
                .unwrap_or(out.content_type)
                .to_string();
            let body = parsed.body.to_vec();
            if expected_mic.is_none() {
                expected_mic = Some(Mic::compute(mic_alg, mic_alg.compact_name(), &body)?);
            }
            (content_type, body)
        }
    };
    let expected_mic = match expected_mic {
        Some(mic) => mic,
        None => Mic::compute(mic_alg, mic_alg.compact_name(), &body)?,
    };
    let message_id = match &out.message_id {
        Some(whole) if whole.starts_with('<') && whole.ends_with('>') => whole.clone(),
        left => format!(
            "<{}@{}>",
            left.clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            id_domain(out.from)
        ),
    };
    let mut headers = Headers::new();
    headers.push("AS2-Version", "1.2");
    headers.push("AS2-From", quote_as2_id(out.from));
    headers.push("AS2-To", quote_as2_id(out.to));
    headers.push("Message-ID", message_id.clone());
    headers.push("Subject", out.subject);
    headers.push("Date", httpdate_now());
    headers.push("MIME-Version", "1.0");
    headers.push("Content-Type", content_type);
    if out.encrypt.is_none() && out.sign.is_none() && out.compression == CompressionOrder::None {
        headers.push("Content-Transfer-Encoding", "binary");
        if let Some(name) = out.file_name.and_then(mime::sanitize_file_name) {
            headers.push(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", name.replace('"', "")),
            );
        }
    }
    match &out.mdn {
        MdnRequest::None => {}
        MdnRequest::Sync { signed } | MdnRequest::Async { signed, .. } => {
            headers.push("Disposition-Notification-To", out.notification_to);
            if let Some(alg) = signed {
                headers.push(
                    "Disposition-Notification-Options",
                    DispositionNotificationOptions::render_signed_request(*alg),
                );
            }
            if let MdnRequest::Async { url, .. } = &out.mdn {
                headers.push("Receipt-Delivery-Option", url.clone());
            }
        }
    }
    Ok(Built {
        headers,
        body,
        message_id,
        expected_mic,
    })
}

/// An RFC 7231 date for the Date header.
pub fn httpdate_now() -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}
