//! AS2 HTTP headers (RFC 4130 section 6): AS2 IDs, the
//! Disposition-Notification-Options of section 7.3, and MIC algorithm names.

use std::fmt;

/// An ordered, case-insensitive header list that keeps names as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every value of `name` by one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.entries.push((name.to_string(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.push(n, v);
        }
        headers
    }
}

/// Reads an AS2-From/AS2-To value. RFC 4130 section 6.2: IDs are
/// case-sensitive, 1 to 128 printable ASCII characters, and quoted when they
/// contain spaces or specials (`"my id"`, with `\"` and `\\` escapes).
pub fn parse_as2_id(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let id = if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
        let inner = &trimmed[1..trimmed.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(escaped) => out.push(escaped),
                    None => return Err(format!("AS2 ID {trimmed:?} ends inside an escape")),
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        trimmed.to_string()
    };
    if id.is_empty() {
        return Err("AS2 ID is empty".to_string());
    }
    if id.len() > 128 {
        return Err(format!(
            "AS2 ID is {} characters long, the limit is 128",
            id.len()
        ));
    }
    if let Some(bad) = id.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "AS2 ID {id:?} contains the non-printable character {bad:?}"
        ));
    }
    Ok(id)
}

/// Writes an AS2 ID for a header, quoting it when RFC 4130 requires it.
pub fn quote_as2_id(id: &str) -> String {
    let needs_quotes = id
        .chars()
        .any(|c| c == ' ' || "()<>@,;:\\\"/[]?={}\t".contains(c));
    if needs_quotes {
        let escaped = id.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        id.to_string()
    }
}

/// A digest algorithm usable for a MIC and a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MicAlg {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl MicAlg {
    pub const ALL: [MicAlg; 6] = [
        MicAlg::Md5,
        MicAlg::Sha1,
        MicAlg::Sha224,
        MicAlg::Sha256,
        MicAlg::Sha384,
        MicAlg::Sha512,
    ];

    /// Accepts every spelling seen in the wild: `sha1`, `SHA-1`, `sha_256`,
    /// `rsa-sha256`, `pgp-sha1` and the like.
    pub fn from_name(name: &str) -> Option<Self> {
        let folded: String = name
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let folded = folded.trim_start_matches("rsa").trim_start_matches("pgp");
        match folded {
            "md5" => Some(MicAlg::Md5),
            "sha1" | "sha" => Some(MicAlg::Sha1),
            "sha224" => Some(MicAlg::Sha224),
            "sha256" => Some(MicAlg::Sha256),
            "sha384" => Some(MicAlg::Sha384),
            "sha512" => Some(MicAlg::Sha512),
            _ => None,
        }
    }

    /// The RFC 5751 micalg name (`sha-256`), used when we choose the spelling.
    pub fn rfc5751_name(self) -> &'static str {
        match self {
            MicAlg::Md5 => "md5",
            MicAlg::Sha1 => "sha-1",
            MicAlg::Sha224 => "sha-224",
            MicAlg::Sha256 => "sha-256",
            MicAlg::Sha384 => "sha-384",
            MicAlg::Sha512 => "sha-512",
        }
    }

    /// The compact name (`sha256`) that most AS2 products write and expect.
    pub fn compact_name(self) -> &'static str {
        match self {
            MicAlg::Md5 => "md5",
            MicAlg::Sha1 => "sha1",
            MicAlg::Sha224 => "sha224",
            MicAlg::Sha256 => "sha256",
            MicAlg::Sha384 => "sha384",
            MicAlg::Sha512 => "sha512",
        }
    }

    pub fn message_digest(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest;
        match self {
            MicAlg::Md5 => MessageDigest::md5(),
            MicAlg::Sha1 => MessageDigest::sha1(),
            MicAlg::Sha224 => MessageDigest::sha224(),
            MicAlg::Sha256 => MessageDigest::sha256(),
            MicAlg::Sha384 => MessageDigest::sha384(),
            MicAlg::Sha512 => MessageDigest::sha512(),
        }
    }

    /// Maps an OpenSSL digest NID (from a SignerInfo) back to an algorithm.
    pub fn from_nid(nid: openssl::nid::Nid) -> Option<Self> {
        use openssl::nid::Nid;
        MicAlg::ALL.into_iter().find(|alg| {
            let want = match alg {
                MicAlg::Md5 => Nid::MD5,
                MicAlg::Sha1 => Nid::SHA1,
                MicAlg::Sha224 => Nid::SHA224,
                MicAlg::Sha256 => Nid::SHA256,
                MicAlg::Sha384 => Nid::SHA384,
                MicAlg::Sha512 => Nid::SHA512,
            };
            want == nid
        })
    }
}

impl fmt::Display for MicAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.compact_name())
    }
}

/// `required` or `optional`, as RFC 4130 section 7.3 spells importance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    Required,
    Optional,
}

/// One parameter of Disposition-Notification-Options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionParameter {
    pub importance: Importance,
    pub values: Vec<String>,
}

/// Disposition-Notification-Options (RFC 4130 section 7.3):
/// `signed-receipt-protocol=optional, pkcs7-signature;
///  signed-receipt-micalg=optional, sha1, md5`.
/// Parameters come in any order; any of them may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispositionNotificationOptions {
    pub signed_receipt_protocol: Option<OptionParameter>,
    pub signed_receipt_micalg: Option<OptionParameter>,
}

/// The MIC algorithm chosen for a receipt and the spelling to echo back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenMicAlg {
    pub alg: MicAlg,
    /// The name as the partner wrote it, so its product recognises it.
    pub spelling: String,
}

impl DispositionNotificationOptions {
    /// Lenient parse: unknown parameters are ignored, a parameter without
    /// importance is taken as optional, and case does not matter.
    pub fn parse(raw: &str) -> Self {
        let mut options = DispositionNotificationOptions::default();
        for param in raw.split(';') {
            let Some((name, rest)) = param.split_once('=') else {
                continue;
            };
            let mut items = rest
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty());
            let mut values: Vec<String> = Vec::new();
            let importance = match items.next() {
                Some(first) if first.eq_ignore_ascii_case("required") => Importance::Required,
                Some(first) if first.eq_ignore_ascii_case("optional") => Importance::Optional,
                Some(first) => {
                    values.push(first);
                    Importance::Optional
                }
                None => Importance::Optional,
            };
            values.extend(items);
            let parameter = OptionParameter { importance, values };
            match name.trim().to_ascii_lowercase().as_str() {
                "signed-receipt-protocol" => options.signed_receipt_protocol = Some(parameter),
                "signed-receipt-micalg" => options.signed_receipt_micalg = Some(parameter),
                _ => {}
            }
        }
        options
    }

    /// True when the partner asked for a pkcs7-signature receipt.
    pub fn wants_signed_receipt(&self) -> bool {
        self.signed_receipt_protocol.as_ref().is_some_and(|p| {
            p.values
                .iter()
                .any(|v| v.eq_ignore_ascii_case("pkcs7-signature"))
        })
    }

    /// The first requested algorithm we support, with the partner's spelling.
    pub fn choose_mic_alg(&self) -> Option<ChosenMicAlg> {
        let requested = self.signed_receipt_micalg.as_ref()?;
        requested.values.iter().find_map(|name| {
            MicAlg::from_name(name).map(|alg| ChosenMicAlg {
                alg,
                spelling: name.clone(),
            })
        })
    }

    /// Renders the header as we send it when we request a signed receipt.
    pub fn render_signed_request(alg: MicAlg) -> String {
        format!(
            "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, {}",
            alg.compact_name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mic_alg_spellings() {
        for (name, alg) in [
            ("sha1", MicAlg::Sha1),
            ("SHA-1", MicAlg::Sha1),
            ("sha_256", MicAlg::Sha256),
            ("SHA256", MicAlg::Sha256),
            ("sha-384", MicAlg::Sha384),
            ("rsa-sha512", MicAlg::Sha512),
            ("MD5", MicAlg::Md5),
            ("sha-224", MicAlg::Sha224),
        ] {
            assert_eq!(MicAlg::from_name(name), Some(alg), "{name}");
        }
        assert_eq!(MicAlg::from_name("sha3-256"), None);
        assert_eq!(MicAlg::from_name(""), None);
    }

    #[test]
    fn options_any_order_and_spelling_echoed() {
        let o = DispositionNotificationOptions::parse(
            "signed-receipt-micalg=required, SHA_256, md5; Signed-Receipt-Protocol=optional, pkcs7-signature",
        );
        assert!(o.wants_signed_receipt());
        let chosen = o.choose_mic_alg().expect("a supported alg");
        assert_eq!(chosen.alg, MicAlg::Sha256);
        assert_eq!(chosen.spelling, "SHA_256");
        assert_eq!(
            o.signed_receipt_micalg.as_ref().map(|p| p.importance),
            Some(Importance::Required)
        );
    }

    #[test]
    fn options_missing_parts() {
        let o = DispositionNotificationOptions::parse(
            "signed-receipt-protocol=optional, pkcs7-signature",
        );
        assert!(o.wants_signed_receipt());
        assert_eq!(o.choose_mic_alg(), None);
        let o = DispositionNotificationOptions::parse("signed-receipt-micalg=optional, sha3, sha1");
        assert!(!o.wants_signed_receipt());
        assert_eq!(o.choose_mic_alg().map(|c| c.alg), Some(MicAlg::Sha1));
        let o = DispositionNotificationOptions::parse("garbage;;=;x");
        assert_eq!(o, DispositionNotificationOptions::default());
    }

    #[test]
    fn as2_ids() {
        assert_eq!(parse_as2_id(" mecas2 ").as_deref(), Ok("mecas2"));
        assert_eq!(
            parse_as2_id("\"my \\\"id\\\"\"").as_deref(),
            Ok("my \"id\"")
        );
        assert!(parse_as2_id("\"\"").is_err());
        assert!(parse_as2_id(&"x".repeat(129)).is_err());
        assert_eq!(quote_as2_id("my id"), "\"my id\"");
        assert_eq!(quote_as2_id("plain"), "plain");
        assert_eq!(
            parse_as2_id(&quote_as2_id("a \"b\" c")).as_deref(),
            Ok("a \"b\" c")
        );
    }
}
