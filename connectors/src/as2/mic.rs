//! The Message Integrity Check (RFC 4130 section 7.3.1): a digest the
//! receiver returns in the MDN so the sender knows the exact bytes arrived.
//!
//! What it covers depends on the message: for a signed message, the signed
//! MIME entity, headers included, in the form that verified; for an
//! unsigned compressed message, the uncompressed MIME entity, headers
//! included (RFC 5402 sections 4.2 and 4.3; see [`UnsignedCompressedMic`]);
//! for an encrypted unsigned message, the decrypted entity; otherwise the
//! content without headers. [`super::unwrap`] picks the bytes; this module
//! digests.

use base64::Engine;

use super::error::{As2Error, ErrorKind, Result};
use super::headers::MicAlg;

/// What the MIC of an unsigned, compressed message covers. AS2 products
/// disagree here, so it is set per partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsignedCompressedMic {
    /// The MIME entity before compression, headers included: RFC 5402
    /// 4.2 and 4.3, Mendelson, and OpenAS2 for compressed and encrypted
    /// messages.
    #[default]
    UncompressedEntity,
    /// The document itself, without MIME headers: OpenAS2 for messages
    /// that are compressed but neither signed nor encrypted.
    Payload,
    /// The compressed entity (after decryption, or as received): what
    /// Atom computed before, for partners that matched it.
    CompressedEntity,
}

impl UnsignedCompressedMic {
    pub const NAMES: [&'static str; 3] = ["uncompressed_entity", "payload", "compressed_entity"];

    pub fn parse(text: &str) -> Option<UnsignedCompressedMic> {
        match text {
            "uncompressed_entity" => Some(UnsignedCompressedMic::UncompressedEntity),
            "payload" => Some(UnsignedCompressedMic::Payload),
            "compressed_entity" => Some(UnsignedCompressedMic::CompressedEntity),
            _ => None,
        }
    }
}

/// A computed MIC and the algorithm name to write beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mic {
    pub alg: MicAlg,
    /// The algorithm name as the partner spelled it in its request.
    pub spelling: String,
    /// Base64 of the digest.
    pub value: String,
}

impl Mic {
    pub fn compute(alg: MicAlg, spelling: &str, data: &[u8]) -> Result<Mic> {
        let digest = openssl::hash::hash(alg.message_digest(), data).map_err(|e| {
            As2Error::openssl(ErrorKind::Internal, &format!("computing {alg} MIC"), e)
        })?;
        Ok(Mic::from_digest(alg, spelling.to_string(), &digest))
    }

    /// The MIC of a digest computed elsewhere (while streaming).
    pub fn from_digest(alg: MicAlg, spelling: String, digest: &[u8]) -> Mic {
        Mic {
            alg,
            spelling,
            value: base64::engine::general_purpose::STANDARD.encode(digest),
        }
    }

    /// The Received-Content-MIC field value: `base64, algorithm`.
    pub fn render(&self) -> String {
        format!("{}, {}", self.value, self.spelling)
    }

    /// Parses a Received-Content-MIC value; the algorithm may be any spelling.
    pub fn parse(field: &str) -> Option<Mic> {
        let (value, alg_name) = field.split_once(',')?;
        let alg_name = alg_name.trim();
        let alg = MicAlg::from_name(alg_name)?;
        Some(Mic {
            alg,
            spelling: alg_name.to_string(),
            value: value.trim().to_string(),
        })
    }

    /// Same digest, whatever the spelling of the algorithm.
    pub fn matches(&self, other: &Mic) -> bool {
        self.alg == other.alg && self.value == other.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_and_parse() {
        let mic = Mic::compute(MicAlg::Sha256, "SHA-256", b"abc").expect("digest");
        assert_eq!(mic.value, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        let parsed = Mic::parse(&mic.render()).expect("parses");
        assert!(parsed.matches(&mic));
        assert!(Mic::parse("nocomma").is_none());
        assert!(Mic::parse("abc, whirlpool").is_none());
    }
}
