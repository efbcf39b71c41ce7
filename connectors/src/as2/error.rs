//! Errors of the AS2 layer. Every kind maps onto one RFC 4130 section 7.4.3
//! disposition modifier, so a receive failure always knows which negative
//! MDN to send back.

use std::fmt;

/// What went wrong, in the terms an MDN reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are not the MIME/ASN.1 structure they claim to be.
    Malformed,
    /// Unknown partner, wrong credentials, or a signer we do not trust.
    Authentication,
    /// No key of ours opens the envelope, or the cipher failed.
    Decryption,
    /// The CompressedData did not inflate, or inflated past the limit.
    Decompression,
    /// The partner sent less protection than its agreement requires.
    InsufficientSecurity,
    /// The signature does not match the content.
    Integrity,
    /// A construct or algorithm we do not implement.
    Unsupported,
    /// A key or certificate could not be loaded or used.
    Key,
    /// Our side failed (OpenSSL refused to build something, I/O).
    Internal,
}

/// The RFC 4130 / RFC 3798 error disposition modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorModifier {
    AuthenticationFailed,
    DecryptionFailed,
    DecompressionFailed,
    InsufficientMessageSecurity,
    IntegrityCheckFailed,
    UnexpectedProcessingError,
}

impl ErrorModifier {
    /// The modifier as it is written in a Disposition field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorModifier::AuthenticationFailed => "authentication-failed",
            ErrorModifier::DecryptionFailed => "decryption-failed",
            ErrorModifier::DecompressionFailed => "decompression-failed",
            ErrorModifier::InsufficientMessageSecurity => "insufficient-message-security",
            ErrorModifier::IntegrityCheckFailed => "integrity-check-failed",
            ErrorModifier::UnexpectedProcessingError => "unexpected-processing-error",
        }
    }

    /// Parses a modifier as written by any peer (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        let all = [
            ErrorModifier::AuthenticationFailed,
            ErrorModifier::DecryptionFailed,
            ErrorModifier::DecompressionFailed,
            ErrorModifier::InsufficientMessageSecurity,
            ErrorModifier::IntegrityCheckFailed,
            ErrorModifier::UnexpectedProcessingError,
        ];
        let text = text.trim();
        all.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for ErrorModifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorKind {
    /// The disposition modifier a negative MDN carries for this error.
    pub fn modifier(self) -> ErrorModifier {
        match self {
            ErrorKind::Authentication => ErrorModifier::AuthenticationFailed,
            ErrorKind::Decryption => ErrorModifier::DecryptionFailed,
            ErrorKind::Decompression => ErrorModifier::DecompressionFailed,
            ErrorKind::InsufficientSecurity => ErrorModifier::InsufficientMessageSecurity,
            ErrorKind::Integrity => ErrorModifier::IntegrityCheckFailed,
            ErrorKind::Malformed
            | ErrorKind::Unsupported
            | ErrorKind::Key
            | ErrorKind::Internal => ErrorModifier::UnexpectedProcessingError,
        }
    }
}

/// An AS2 error: a kind for the MDN and a message for the operator.
///
/// Messages are lowercase, name the bad value, and carry their context
/// chain ("decrypting enveloped-data: no key matches recipient ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct As2Error {
    kind: ErrorKind,
    message: String,
}

impl As2Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        As2Error {
            kind,
            message: message.into(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, message)
    }

    /// Wraps an OpenSSL error stack, keeping its reason text.
    pub fn openssl(kind: ErrorKind, context: &str, err: openssl::error::ErrorStack) -> Self {
        let reasons: Vec<String> = err
            .errors()
            .iter()
            .map(|e| e.reason().unwrap_or("unknown reason").to_string())
            .collect();
        let detail = if reasons.is_empty() {
            "no detail from OpenSSL".to_string()
        } else {
            reasons.join("; ")
        };
        Self::new(kind, format!("{context}: {detail}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn modifier(&self) -> ErrorModifier {
        self.kind.modifier()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what we were doing.
    pub fn context(self, context: &str) -> Self {
        As2Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for As2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for As2Error {}

pub type Result<T, E = As2Error> = std::result::Result<T, E>;
