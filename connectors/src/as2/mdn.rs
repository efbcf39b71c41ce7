//! Message Disposition Notifications: the AS2 receipt (RFC 3798, RFC 4130
//! section 7.4). Built by the receiver, optionally signed; parsed and
//! verified by the sender.
//!
//! ```text
//! multipart/signed                      (only for a signed receipt)
//! ├── multipart/report; report-type=disposition-notification
//! │   ├── text/plain                    human-readable explanation
//! │   └── message/disposition-notification
//! │         Reporting-UA, Original-Recipient, Final-Recipient,
//! │         Original-Message-ID, Received-Content-MIC, Disposition
//! └── application/pkcs7-signature
//! ```

use openssl::x509::X509;

use super::cms::{KeyPair, SignatureScheme, Verified};
use super::error::{As2Error, ErrorKind, ErrorModifier, Result};
use super::headers::{quote_as2_id, Headers, MicAlg};
use super::mic::Mic;
use super::mime;
use super::signed;

/// The outcome an MDN reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// `processed`: the message was received and will be processed.
    Processed,
    /// `processed/warning: text`.
    ProcessedWithWarning(String),
    /// `processed/error: modifier`: received but refused.
    Error(ErrorModifier),
    /// `processed/error: text` with a modifier we do not know.
    OtherError(String),
    /// `failed/Failure: text`: the MDN request itself could not be honoured.
    Failed(String),
}

impl Disposition {
    /// The disposition-type and modifier part of a Disposition field.
    pub fn render(&self) -> String {
        match self {
            Disposition::Processed => "processed".into(),
            Disposition::ProcessedWithWarning(w) => format!("processed/warning: {w}"),
            Disposition::Error(m) => format!("processed/error: {m}"),
            Disposition::OtherError(t) => format!("processed/error: {t}"),
            Disposition::Failed(t) => format!("failed/Failure: {t}"),
        }
    }

    /// True only for `processed` and `processed/warning`.
    pub fn is_positive(&self) -> bool {
        matches!(
            self,
            Disposition::Processed | Disposition::ProcessedWithWarning(_)
        )
    }

    /// Parses the value of a Disposition field
    /// (`automatic-action/MDN-sent-automatically; processed/error: decryption-failed`).
    pub fn parse(field: &str) -> Result<Disposition> {
        let outcome = field
            .rsplit_once(';')
            .map(|(_, o)| o)
            .unwrap_or(field)
            .trim();
        let (kind, modifier) = match outcome.split_once('/') {
            Some((kind, modifier)) => (kind.trim(), Some(modifier.trim())),
            None => (outcome, None),
        };
        let detail = |m: &str| {
            m.split_once(':')
                .map(|(_, t)| t.trim().to_string())
                .unwrap_or_default()
        };
        match (kind.to_ascii_lowercase().as_str(), modifier) {
            ("processed", None) => Ok(Disposition::Processed),
            ("processed", Some(m)) if m.to_ascii_lowercase().starts_with("warning") => {
                Ok(Disposition::ProcessedWithWarning(detail(m)))
            }
            ("processed", Some(m)) if m.to_ascii_lowercase().starts_with("error") => {
                let text = detail(m);
                Ok(ErrorModifier::parse(&text)
                    .map(Disposition::Error)
                    .unwrap_or(Disposition::OtherError(text)))
            }
            ("failed", Some(m)) => Ok(Disposition::Failed(detail(m))),
            ("failed", None) => Ok(Disposition::Failed(String::new())),
            _ => Err(As2Error::malformed(format!(
                "unrecognised Disposition {field:?}"
            ))),
        }
    }
}

/// What the receiver puts in a receipt.
#[derive(Debug, Clone)]
pub struct MdnInput<'a> {
    /// Who writes the receipt (Reporting-UA), e.g. `Atom AS2 (atom-1)`.
    pub reporting_ua: &'a str,
    /// Our AS2 ID (the original AS2-To).
    pub our_id: &'a str,
    /// The partner's AS2 ID (the original AS2-From).
    pub partner_id: &'a str,
    /// The original Message-ID, as received (angle brackets kept).
    pub original_message_id: &'a str,
    pub disposition: Disposition,
    pub mic: Option<&'a Mic>,
    /// Human-readable explanation for the text/plain part.
    pub text: &'a str,
    /// Sign the receipt with this key and digest.
    pub sign: Option<(&'a KeyPair, MicAlg)>,
    /// Name for the micalg parameter (the partner's spelling when it gave one).
    pub micalg_spelling: Option<&'a str>,
}

/// A receipt ready to send: HTTP headers and body.
#[derive(Debug, Clone)]
pub struct BuiltMdn {
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Our Message-ID of the MDN, with angle brackets.
    pub message_id: String,
}

/// Builds (and signs, if asked) an MDN.
pub fn build(input: &MdnInput<'_>) -> Result<BuiltMdn> {
    let boundary = format!("----=_Report_{}", uuid::Uuid::new_v4().simple());
    let mut report_body = Vec::with_capacity(1024);
    report_body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    report_body.extend_from_slice(
        b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
    );
    report_body.extend_from_slice(ascii_only(input.text).as_bytes());
    report_body.extend_from_slice(b"\r\n");
    report_body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    report_body.extend_from_slice(b"Content-Type: message/disposition-notification\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    let mut fields = format!(
        "Reporting-UA: {}\r\nOriginal-Recipient: rfc822; {}\r\nFinal-Recipient: rfc822; {}\r\nOriginal-Message-ID: {}\r\n",
        ascii_only(input.reporting_ua),
        quote_as2_id(input.our_id),
        quote_as2_id(input.our_id),
        ascii_only(input.original_message_id),
    );
    if let Some(mic) = input.mic {
        fields.push_str(&format!("Received-Content-MIC: {}\r\n", mic.render()));
    }
    fields.push_str(&format!(
        "Disposition: automatic-action/MDN-sent-automatically; {}\r\n",
        ascii_only(&input.disposition.render())
    ));
    report_body.extend_from_slice(fields.as_bytes());
    report_body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let report_type =
        format!("multipart/report; report-type=disposition-notification; boundary=\"{boundary}\"");

    let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), id_domain(input.our_id));
    let mut headers = Headers::new();
    headers.push("AS2-Version", "1.2");
    headers.push("AS2-From", quote_as2_id(input.our_id));
    headers.push("AS2-To", quote_as2_id(input.partner_id));
    headers.push("Message-ID", message_id.clone());
    headers.push("Subject", "Message Disposition Notification");
    headers.push("MIME-Version", "1.0");
    let body = match input.sign {
        Some((key, digest)) => {
            let mut entity = format!("Content-Type: {report_type}\r\n\r\n").into_bytes();
            entity.extend_from_slice(&report_body);
            let micalg = input.micalg_spelling.unwrap_or(digest.compact_name());
            let built = signed::build(&entity, key, digest, SignatureScheme::Pkcs1v15, micalg)?;
            headers.push("Content-Type", built.content_type);
            built.body
        }
        None => {
            headers.push("Content-Type", report_type);
            report_body
        }
    };
    Ok(BuiltMdn {
        headers,
        body,
        message_id,
    })
}

fn ascii_only(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && (!c.is_control() || c == '\n' || c == '\r' || c == '\t') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A domain-ish right-hand side for Message-IDs built from an AS2 ID.
pub fn id_domain(as2_id: &str) -> String {
    let cleaned: String = as2_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if cleaned.is_empty() {
        "atom".into()
    } else {
        cleaned
    }
}

/// A partner's receipt, parsed.
#[derive(Debug, Clone)]
pub struct ParsedMdn {
    /// The receipt came as multipart/signed.
    pub signed: bool,
    /// Set when the signature was checked and holds.
    pub verified: Option<Verified>,
    pub reporting_ua: Option<String>,
    pub original_recipient: Option<String>,
    pub final_recipient: Option<String>,
    pub original_message_id: Option<String>,
    pub received_mic: Option<Mic>,
    pub disposition: Disposition,
    /// The Disposition field as written.
    pub disposition_raw: String,
    /// The human-readable part.
    pub text: String,
}

/// How to treat the signature of a receipt.
#[derive(Debug, Clone, Copy)]
pub enum MdnTrust<'a> {
    /// Verify against these pinned certificates; an unverifiable signed MDN is an error.
    Verify(&'a [X509]),
    /// Do not verify (the caller has no certificate for this partner).
    Skip,
}

/// Parses a receipt from its HTTP headers (only Content-Type is needed) and body.
pub fn parse(content_type: &str, body: &[u8], trust: MdnTrust<'_>) -> Result<ParsedMdn> {
    let outer = mime::ContentType::parse(content_type)?;
    let (report_entity_bytes, signed, verified): (Vec<u8>, bool, Option<Verified>) =
        if outer.is("multipart/signed") {
            let parts = signed::split(&outer, body)?;
            match trust {
                MdnTrust::Verify(certs) => {
                    let v = signed::verify(&parts, certs)
                        .map_err(|e| e.context("verifying the MDN signature"))?;
                    (parts.content.to_vec(), true, Some(v.verified))
                }
                MdnTrust::Skip => (parts.content.to_vec(), true, None),
            }
        } else {
            let mut synthetic = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
            synthetic.extend_from_slice(body);
            (synthetic, false, None)
        };
    let report = mime::parse_entity(&report_entity_bytes)?;
    let report_type = report.content_type()?;
    if !report_type.is("multipart/report") {
        return Err(As2Error::new(
            ErrorKind::Malformed,
            format!("MDN is {}, not multipart/report", report_type.mime_type),
        ));
    }
    let boundary = report_type
        .param("boundary")
        .ok_or_else(|| As2Error::malformed("multipart/report has no boundary"))?;
    let mut text = String::new();
    let mut fields = None;
    for part in mime::split_multipart(report.body, boundary)? {
        let entity = mime::parse_entity(part)?;
        let part_type = entity.content_type()?;
        if part_type.is("message/disposition-notification") {
            fields = Some(mime::parse_field_block(&entity.decoded_body()?)?);
        } else if part_type.is("text/plain") && text.is_empty() {
            text = String::from_utf8_lossy(&entity.decoded_body()?)
                .trim()
                .to_string();
        }
    }
    let fields = fields
        .ok_or_else(|| As2Error::malformed("MDN has no message/disposition-notification part"))?;
    let disposition_raw = fields
        .get("disposition")
        .ok_or_else(|| As2Error::malformed("MDN has no Disposition field"))?
        .to_string();
    let recipient = |name: &str| {
        fields.get(name).map(|v| {
            v.split_once(';')
                .map(|(_, id)| id)
                .unwrap_or(v)
                .trim()
                .to_string()
        })
    };
    Ok(ParsedMdn {
        signed,
        verified,
        reporting_ua: fields.get("reporting-ua").map(str::to_string),
        original_recipient: recipient("original-recipient"),
        final_recipient: recipient("final-recipient"),
        original_message_id: fields.get("original-message-id").map(str::to_string),
        received_mic: fields.get("received-content-mic").and_then(Mic::parse),
        disposition: Disposition::parse(&disposition_raw)?,
        disposition_raw,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_round_trip() {
        for d in [
            Disposition::Processed,
            Disposition::ProcessedWithWarning("duplicate-document".into()),
            Disposition::Error(ErrorModifier::DecryptionFailed),
            Disposition::Error(ErrorModifier::AuthenticationFailed),
            Disposition::Failed("unsupported format".into()),
        ] {
            let field = format!("automatic-action/MDN-sent-automatically; {}", d.render());
            assert_eq!(Disposition::parse(&field).expect("parses"), d);
        }
        assert_eq!(
            Disposition::parse(
                "automatic-action/MDN-sent-automatically; processed/Error: Integrity-Check-Failed"
            )
            .expect("parses"),
            Disposition::Error(ErrorModifier::IntegrityCheckFailed)
        );
        assert!(Disposition::parse("nonsense").is_err());
    }
}
