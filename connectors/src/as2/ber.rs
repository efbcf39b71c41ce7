//! Just enough ASN.1 (X.690) to read the outer structure of CMS messages and
//! to write CompressedData.
//!
//! AS2 products emit BER with indefinite lengths and chunked OCTET STRINGs
//! (Mendelson, Sterling), which strict DER parsers refuse. OpenSSL parses
//! those for the cryptographic types; this reader exists for what OpenSSL
//! cannot do here: CompressedData (Debian's OpenSSL has no zlib) and naming
//! the algorithms a message used, for the message log.

use super::error::{As2Error, Result};

/// Nesting deeper than this is hostile: CMS needs about ten levels.
const MAX_DEPTH: usize = 48;

/// Universal tag numbers we look at.
pub const TAG_INTEGER: u32 = 2;
pub const TAG_OCTET_STRING: u32 = 4;
pub const TAG_OID: u32 = 6;
pub const TAG_SEQUENCE: u32 = 16;
pub const TAG_SET: u32 = 17;

/// Tag classes (X.690 section 8.1.2.2).
pub const CLASS_UNIVERSAL: u8 = 0;
pub const CLASS_CONTEXT: u8 = 2;

/// One BER element. For an indefinite length, `content` excludes the
/// end-of-contents octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub class: u8,
    pub constructed: bool,
    pub tag: u32,
    pub content: &'a [u8],
}

impl<'a> Tlv<'a> {
    pub fn is(&self, class: u8, tag: u32) -> bool {
        self.class == class && self.tag == tag
    }

    /// The child elements of a constructed element.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>> {
        children_at_depth(self.content, 1)
    }

    /// The value of an OCTET STRING, joining the chunks of a constructed one.
    pub fn octets(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        collect_octets(self, &mut out, 0)?;
        Ok(out)
    }

    /// The dotted form of an OBJECT IDENTIFIER.
    pub fn oid(&self) -> Result<String> {
        if !self.is(CLASS_UNIVERSAL, TAG_OID) || self.constructed {
            return Err(As2Error::malformed("expected an OBJECT IDENTIFIER"));
        }
        decode_oid(self.content)
    }
}

fn collect_octets(tlv: &Tlv<'_>, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(As2Error::malformed("OCTET STRING nested too deeply"));
    }
    if !tlv.constructed {
        out.extend_from_slice(tlv.content);
        return Ok(());
    }
    for child in children_at_depth(tlv.content, depth + 1)? {
        if !child.is(CLASS_UNIVERSAL, TAG_OCTET_STRING) {
            return Err(As2Error::malformed(
                "constructed OCTET STRING holds a non-OCTET STRING chunk",
            ));
        }
        collect_octets(&child, out, depth + 1)?;
    }
    Ok(())
}

fn children_at_depth(mut data: &[u8], depth: usize) -> Result<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (tlv, rest) = read_at_depth(data, depth)?;
        out.push(tlv);
        data = rest;
    }
    Ok(out)
}

/// Reads one element from the front of `data`; returns it and what follows.
pub fn read(data: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    read_at_depth(data, 0)
}

fn read_at_depth(data: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8])> {
    if depth > MAX_DEPTH {
        return Err(As2Error::malformed("ASN.1 nested too deeply"));
    }
    let truncated = || As2Error::malformed("truncated ASN.1 element");
    let first = *data.first().ok_or_else(truncated)?;
    let class = first >> 6;
    let constructed = first & 0x20 != 0;
    let mut pos = 1usize;
    let mut tag = u32::from(first & 0x1f);
    if tag == 0x1f {
        tag = 0;
        loop {
            let b = *data.get(pos).ok_or_else(truncated)?;
            pos += 1;
            if tag > (u32::MAX >> 7) {
                return Err(As2Error::malformed("ASN.1 tag number too large"));
            }
            tag = (tag << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let len_byte = *data.get(pos).ok_or_else(truncated)?;
    pos += 1;
    if len_byte == 0x80 {
        if !constructed {
            return Err(As2Error::malformed(
                "indefinite length on a primitive ASN.1 element",
            ));
        }
        // Walk the children until the end-of-contents octets.
        let start = pos;
        let mut cursor = &data[pos..];
        loop {
            if cursor.len() >= 2 && cursor[0] == 0 && cursor[1] == 0 {
                let end = data.len() - cursor.len();
                return Ok((
                    Tlv {
                        class,
                        constructed,
                        tag,
                        content: &data[start..end],
                    },
                    &cursor[2..],
                ));
            }
            if cursor.is_empty() {
                return Err(As2Error::malformed(
                    "indefinite-length ASN.1 element has no end-of-contents",
                ));
            }
            let (_, rest) = read_at_depth(cursor, depth + 1)?;
            cursor = rest;
        }
    }
    let length = if len_byte & 0x80 == 0 {
        usize::from(len_byte)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count > 8 {
            return Err(As2Error::malformed("ASN.1 length field too long"));
        }
        let mut length = 0usize;
        for _ in 0..count {
            let b = *data.get(pos).ok_or_else(truncated)?;
            pos += 1;
            length = length
                .checked_mul(256)
                .ok_or_else(|| As2Error::malformed("ASN.1 length overflows"))?
                | usize::from(b);
        }
        length
    };
    let end = pos
        .checked_add(length)
        .ok_or_else(|| As2Error::malformed("ASN.1 length overflows"))?;
    if end > data.len() {
        return Err(As2Error::malformed(format!(
            "truncated ASN.1 element: {length} bytes declared, {} present",
            data.len() - pos
        )));
    }
    Ok((
        Tlv {
            class,
            constructed,
            tag,
            content: &data[pos..end],
        },
        &data[end..],
    ))
}

fn decode_oid(content: &[u8]) -> Result<String> {
    if content.is_empty() || content.len() > 64 {
        return Err(As2Error::malformed("invalid OBJECT IDENTIFIER length"));
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in content.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(As2Error::malformed("OBJECT IDENTIFIER arc too large"));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == content.len() {
            return Err(As2Error::malformed("truncated OBJECT IDENTIFIER"));
        }
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// Encodes one DER element with a definite length.
pub fn der(identifier: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(identifier);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// DER identifier octets used when writing.
pub const ID_INTEGER: u8 = 0x02;
pub const ID_OCTET_STRING: u8 = 0x04;
pub const ID_OID: u8 = 0x06;
pub const ID_SEQUENCE: u8 = 0x30;
pub const ID_CONTEXT_0: u8 = 0xa0;

/// Encodes a dotted OBJECT IDENTIFIER as a DER element.
pub fn der_oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut content = Vec::new();
    let mut push_arc = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(((v & 0x7f) as u8) | 0x80);
            v >>= 7;
        }
        tmp.reverse();
        content.extend_from_slice(&tmp);
    };
    if arcs.len() >= 2 {
        push_arc(arcs[0] * 40 + arcs[1]);
        for &arc in &arcs[2..] {
            push_arc(arc);
        }
    }
    der(ID_OID, &content)
}

/// Re-encodes one element with a definite length (its content as it was,
/// BER inside included); `None` for high tag numbers, which CMS does not use
/// where this is called.
fn reencode(tlv: &Tlv<'_>) -> Option<Vec<u8>> {
    if tlv.tag >= 0x1f {
        return None;
    }
    let identifier = (tlv.class << 6) | (u8::from(tlv.constructed) << 5) | tlv.tag as u8;
    Some(der(identifier, tlv.content))
}

/// A SignedData ContentInfo without its `certificates` and `crls` fields
/// (RFC 5652 section 5.1), or `None` when it has neither or is not
/// SignedData. We verify against pinned certificates only and ignore the
/// ones a message carries; OpenSSL would still decode every carried
/// certificate and its public key while parsing, which is most of the cost
/// of verifying a small message. Neither field is covered by the signature.
pub fn signed_data_without_certificates(data: &[u8]) -> Option<Vec<u8>> {
    let (content_type, signed) = content_info(data).ok()?;
    if content_type != oid::SIGNED_DATA || !signed.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
        return None;
    }
    let fields = signed.children().ok()?;
    let carried = |f: &Tlv<'_>| f.class == CLASS_CONTEXT && (f.tag == 0 || f.tag == 1);
    if !fields.iter().any(carried) {
        return None;
    }
    let mut content = Vec::with_capacity(signed.content.len());
    for field in fields.iter().filter(|f| !carried(f)) {
        content.extend_from_slice(&reencode(field)?);
    }
    let mut info = der_oid(oid::SIGNED_DATA);
    info.extend_from_slice(&der(ID_CONTEXT_0, &der(ID_SEQUENCE, &content)));
    Some(der(ID_SEQUENCE, &info))
}

/// Object identifiers AS2 messages use.
pub mod oid {
    pub const DATA: &str = "1.2.840.113549.1.7.1";
    pub const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
    pub const ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
    pub const AUTH_ENVELOPED_DATA: &str = "1.2.840.113549.1.9.16.1.23";
    pub const COMPRESSED_DATA: &str = "1.2.840.113549.1.9.16.1.9";
    pub const ZLIB_COMPRESS: &str = "1.2.840.113549.1.9.16.3.8";
    pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
    pub const RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
}

/// The short name we log for an algorithm OID, or the OID itself.
pub fn algorithm_name(dotted: &str) -> String {
    let name = match dotted {
        "1.2.840.113549.3.7" => "3des",
        "1.2.840.113549.3.2" => "rc2",
        "1.3.14.3.2.7" => "des",
        "2.16.840.1.101.3.4.1.2" => "aes128-cbc",
        "2.16.840.1.101.3.4.1.22" => "aes192-cbc",
        "2.16.840.1.101.3.4.1.42" => "aes256-cbc",
        "2.16.840.1.101.3.4.1.6" => "aes128-gcm",
        "2.16.840.1.101.3.4.1.26" => "aes192-gcm",
        "2.16.840.1.101.3.4.1.46" => "aes256-gcm",
        oid::RSA_ENCRYPTION => "rsa-pkcs1v15",
        oid::RSAES_OAEP => "rsa-oaep",
        oid::ZLIB_COMPRESS => "zlib",
        _ => return dotted.to_string(),
    };
    name.to_string()
}

/// The content type OID of a CMS ContentInfo and its `[0]` content.
pub fn content_info(data: &[u8]) -> Result<(String, Tlv<'_>)> {
    let (outer, _) = read(data)?;
    if !outer.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
        return Err(As2Error::malformed("CMS ContentInfo is not a SEQUENCE"));
    }
    let fields = outer.children()?;
    let content_type = fields
        .first()
        .ok_or_else(|| As2Error::malformed("empty CMS ContentInfo"))?
        .oid()?;
    let explicit = fields
        .get(1)
        .filter(|f| f.is(CLASS_CONTEXT, 0))
        .ok_or_else(|| As2Error::malformed("CMS ContentInfo has no [0] content"))?;
    let inner = explicit
        .children()?
        .into_iter()
        .next()
        .ok_or_else(|| As2Error::malformed("CMS ContentInfo content is empty"))?;
    Ok((content_type, inner))
}

/// The content type OID of a CMS ContentInfo, read from its first bytes
/// only (the outer length is not checked): enough to tell an envelope from
/// compressed data before any of the body is decoded or walked.
pub fn peek_content_type(prefix: &[u8]) -> Option<String> {
    if prefix.first() != Some(&0x30) {
        return None;
    }
    let len_byte = *prefix.get(1)?;
    let skip = match len_byte {
        0x80 => 2,
        b if b & 0x80 == 0 => 2,
        b => 2 + usize::from(b & 0x7f),
    };
    let (tlv, _) = read(prefix.get(skip..)?).ok()?;
    tlv.oid().ok()
}

/// The algorithms an EnvelopedData or AuthEnvelopedData names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvelopeAlgorithms {
    pub content_encryption: Option<String>,
    pub key_transport: Option<String>,
}

/// Reads the content-encryption and key-transport algorithms of an
/// (Auth)EnvelopedData (RFC 5652 section 6.1, RFC 5083 section 2.1).
pub fn envelope_algorithms(data: &[u8]) -> Result<EnvelopeAlgorithms> {
    let (_, enveloped) = content_info(data)?;
    let fields = enveloped.children()?;
    let mut result = EnvelopeAlgorithms::default();
    // version, [0] originatorInfo OPTIONAL, recipientInfos SET, encryptedContentInfo SEQUENCE
    let mut rest = fields.iter().skip(1).skip_while(|f| f.is(CLASS_CONTEXT, 0));
    if let Some(recipients) = rest.next().filter(|f| f.is(CLASS_UNIVERSAL, TAG_SET)) {
        let first = recipients.children()?.into_iter().next();
        if let Some(ktri) = first.filter(|r| r.is(CLASS_UNIVERSAL, TAG_SEQUENCE)) {
            // KeyTransRecipientInfo: version, rid, keyEncryptionAlgorithm, encryptedKey
            if let Some(alg) = ktri
                .children()?
                .get(2)
                .filter(|a| a.is(CLASS_UNIVERSAL, TAG_SEQUENCE))
            {
                if let Some(oid) = alg.children()?.first() {
                    result.key_transport = Some(algorithm_name(&oid.oid()?));
                }
            }
        }
    }
    if let Some(info) = rest.next().filter(|f| f.is(CLASS_UNIVERSAL, TAG_SEQUENCE)) {
        if let Some(alg) = info.children()?.get(1) {
            if let Some(oid) = alg.children()?.first() {
                result.content_encryption = Some(algorithm_name(&oid.oid()?));
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_round_trip() {
        for dotted in [
            oid::DATA,
            oid::COMPRESSED_DATA,
            "2.16.840.1.101.3.4.1.42",
            "1.2.3",
        ] {
            let encoded = der_oid(dotted);
            let (tlv, rest) = read(&encoded).expect("reads");
            assert!(rest.is_empty());
            assert_eq!(tlv.oid().expect("oid"), dotted);
        }
    }

    #[test]
    fn indefinite_and_chunked() {
        // [0] indefinite { OCTET STRING constructed indefinite { "ab", "c" } }
        let data = [
            0xa0, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0, 0xff,
        ];
        let (tlv, rest) = read(&data).expect("reads");
        assert_eq!(rest, &[0xff]);
        let inner = tlv.children().expect("children");
        assert_eq!(inner[0].octets().expect("octets"), b"abc");
    }

    #[test]
    fn hostile_inputs() {
        assert!(
            read(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "length past end"
        );
        assert!(
            read(&[0x30, 0x80, 0x04, 0x01]).is_err(),
            "no end-of-contents"
        );
        assert!(read(&[0x04, 0x80, 0, 0]).is_err(), "indefinite primitive");
        assert!(
            read(&[0x30, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]).is_err(),
            "length of length"
        );
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 200).flatten().collect();
        assert!(read(&deep).is_err(), "deep nesting");
        assert!(read(&[]).is_err());
    }

    #[test]
    fn content_type_from_a_prefix() {
        let info = der(
            ID_SEQUENCE,
            &[
                der_oid(oid::COMPRESSED_DATA),
                der(ID_CONTEXT_0, &[0u8; 300]),
            ]
            .concat(),
        );
        assert_eq!(
            peek_content_type(&info[..20]).as_deref(),
            Some(oid::COMPRESSED_DATA)
        );
        let indefinite = [&[0x30, 0x80][..], &der_oid(oid::ENVELOPED_DATA)].concat();
        assert_eq!(
            peek_content_type(&indefinite).as_deref(),
            Some(oid::ENVELOPED_DATA)
        );
        assert_eq!(peek_content_type(b"hello"), None);
        assert_eq!(peek_content_type(&[0x30, 0x84, 1]), None);
        assert_eq!(peek_content_type(&[]), None);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[0u8; 3])[..2], [0x04, 3]);
        assert_eq!(der(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der(0x04, &[0u8; 300])[..4], [0x04, 0x82, 1, 44]);
    }
}
