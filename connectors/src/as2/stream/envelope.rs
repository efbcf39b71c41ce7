//! Decrypting an EnvelopedData (RFC 5652 section 6) as a stream: the
//! recipient infos are small and read whole, the encrypted content is
//! decrypted piece by piece into a writer. OpenSSL's CMS cannot do this (it
//! parses the whole structure into memory), so the content key is
//! unwrapped here with our RSA key (PKCS#1 v1.5 or OAEP, as OpenSSL's CMS
//! does) and the content decrypted with an OpenSSL cipher context.
//!
//! Only what large AS2 messages use is streamed: RSA key transport and the
//! AES-CBC and 3DES-CBC content ciphers. Anything else (AES-GCM's
//! AuthEnvelopedData, RC2, key agreement) answers [`Streamed::NotStreamed`]
//! and the caller opens it in memory with OpenSSL's CMS as before.

use std::io::Read;

use openssl::md::{Md, MdRef};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};

use super::ber_stream::BerReader;
use crate::as2::ber::{
    self, oid, Tlv, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_OCTET_STRING, TAG_SEQUENCE, TAG_SET,
};
use crate::as2::cms::{subject_of, KeyPair};
use crate::as2::error::{As2Error, ErrorKind, Result};

/// Recipient infos, originator info and algorithm identifiers are small;
/// anything larger where they belong is hostile.
const SMALL_ELEMENT: usize = 1 << 20;

/// Decryption hands out this much at a time.
const PIECE: usize = 256 << 10;

/// What [`decrypt_to`] did.
#[derive(Debug)]
pub enum Streamed {
    /// Decrypted into the writer, with these algorithms.
    Done(ber::EnvelopeAlgorithms),
    /// A structure or algorithm this module does not stream; nothing was
    /// written.
    NotStreamed(&'static str),
}

fn decryption(message: impl Into<String>) -> As2Error {
    As2Error::new(ErrorKind::Decryption, message)
}

/// Decrypts the EnvelopedData ContentInfo read from `input` into `out`.
pub fn decrypt_to(
    input: impl Read,
    input_len: u64,
    keys: &[KeyPair],
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Streamed> {
    // A damaged envelope is a decryption failure, as OpenSSL reports it.
    decrypt_inner(input, input_len, keys, sink).map_err(|e| match e.kind() {
        ErrorKind::Malformed => decryption(format!("reading enveloped-data: {}", e.message())),
        _ => e,
    })
}

fn decrypt_inner(
    input: impl Read,
    input_len: u64,
    keys: &[KeyPair],
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Streamed> {
    if keys.is_empty() {
        return Err(decryption(
            "message is encrypted but no decryption key is configured",
        ));
    }
    let mut reader = BerReader::with_len(input, input_len);
    let structural = |e: As2Error| decryption(format!("reading enveloped-data: {}", e.message()));
    let outer = reader.header().map_err(structural)?;
    if !outer.is(CLASS_UNIVERSAL, TAG_SEQUENCE) || !outer.constructed {
        return Err(decryption("enveloped-data: ContentInfo is not a SEQUENCE"));
    }
    let content_type = one_oid(&reader.element(256).map_err(structural)?)?;
    match content_type.as_str() {
        oid::ENVELOPED_DATA => {}
        oid::AUTH_ENVELOPED_DATA => return Ok(Streamed::NotStreamed("AuthEnvelopedData")),
        other => {
            return Err(decryption(format!(
                "expected enveloped-data, found CMS content type {other}"
            )))
        }
    }
    let explicit = reader.header().map_err(structural)?;
    let enveloped = reader.header().map_err(structural)?;
    if !explicit.is(CLASS_CONTEXT, 0) || !enveloped.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
        return Err(decryption("enveloped-data: malformed ContentInfo content"));
    }
    let version = reader.element(16).map_err(structural)?;
    let mut next = reader.header().map_err(structural)?;
    let mut originator = Vec::new();
    if next.is(CLASS_CONTEXT, 0) {
        // originatorInfo: certificates for key agreement, not used by RSA.
        originator = reader
            .element_after(next, SMALL_ELEMENT)
            .map_err(structural)?;
        next = reader.header().map_err(structural)?;
    }
    if !next.is(CLASS_UNIVERSAL, TAG_SET) {
        return Err(decryption("enveloped-data: no recipientInfos"));
    }
    let recipients_der = reader
        .element_after(next, SMALL_ELEMENT)
        .map_err(structural)?;
    let info = reader.header().map_err(structural)?;
    if !info.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
        return Err(decryption("enveloped-data: no encryptedContentInfo"));
    }
    let inner_type = reader.element(256).map_err(structural)?;
    let algorithm_der = reader.element(4096).map_err(structural)?;
    check_with_openssl(
        &[&version, &originator, &recipients_der],
        &inner_type,
        &algorithm_der,
    )?;
    let (algorithm_oid, params) = algorithm_identifier(&algorithm_der)?;
    let Some((cipher, iv)) = content_cipher(&algorithm_oid, params)? else {
        return Ok(Streamed::NotStreamed("content cipher"));
    };
    let recipients = recipient_infos(&recipients_der)?;
    if recipients.is_empty() {
        return Ok(Streamed::NotStreamed("recipient type"));
    }
    let algorithms = ber::EnvelopeAlgorithms {
        content_encryption: Some(ber::algorithm_name(&algorithm_oid)),
        key_transport: Some(ber::algorithm_name(recipients[0].transport.oid())),
    };
    let content = reader.header().map_err(structural)?;
    if !content.is(CLASS_CONTEXT, 0) {
        return Err(decryption(
            "enveloped-data has no encrypted content (detached content is not AS2)",
        ));
    }
    let key = content_key(
        &recipients,
        keys,
        cipher.key_len(),
        algorithms.content_encryption.as_deref(),
    )?;
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, &key, Some(&iv)).map_err(|e| {
        As2Error::openssl(ErrorKind::Decryption, "setting up the content cipher", e)
    })?;
    crypter.pad(true);
    let mut octets = reader.octets(&content).map_err(structural)?;
    let mut input = vec![0u8; PIECE];
    let mut output = vec![0u8; PIECE + cipher.block_size()];
    loop {
        let n = match octets.read(&mut input) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(decryption(format!("reading the encrypted content: {e}"))),
        };
        let produced = crypter
            .update(&input[..n], &mut output)
            .map_err(|e| As2Error::openssl(ErrorKind::Decryption, "decrypting", e))?;
        sink(&output[..produced])?;
    }
    let produced = crypter.finalize(&mut output).map_err(|e| {
        As2Error::openssl(
            ErrorKind::Decryption,
            "content decryption failed (wrong key, or the content is corrupt or truncated)",
            e,
        )
    })?;
    sink(&output[..produced])?;
    drop(octets);
    // The envelope must be whole after its content, as OpenSSL requires
    // when it parses it in memory.
    reader
        .close(&[outer, explicit, enveloped, info], SMALL_ELEMENT)
        .map_err(structural)?;
    Ok(Streamed::Done(algorithms))
}

/// Has OpenSSL parse everything but the encrypted content (an
/// EnvelopedData without it), so that a damaged envelope is refused here
/// exactly when the in-memory path, which OpenSSL parses whole, refuses it.
fn check_with_openssl(head: &[&[u8]], inner_type: &[u8], algorithm: &[u8]) -> Result<()> {
    let info = ber::der(ber::ID_SEQUENCE, &[inner_type, algorithm].concat());
    let mut enveloped = head.concat();
    enveloped.extend_from_slice(&info);
    let skeleton = ber::der(
        ber::ID_SEQUENCE,
        &[
            ber::der_oid(oid::ENVELOPED_DATA),
            ber::der(ber::ID_CONTEXT_0, &ber::der(ber::ID_SEQUENCE, &enveloped)),
        ]
        .concat(),
    );
    openssl::cms::CmsContentInfo::from_der(&skeleton)
        .map(drop)
        .map_err(|e| As2Error::openssl(ErrorKind::Decryption, "reading enveloped-data", e))
}

fn one_oid(der: &[u8]) -> Result<String> {
    let (tlv, _) = ber::read(der)?;
    tlv.oid()
}

/// An AlgorithmIdentifier's OID and its parameters, if any.
fn algorithm_identifier(der: &[u8]) -> Result<(String, Option<Tlv<'_>>)> {
    let (tlv, _) = ber::read(der)?;
    algorithm_of(&tlv)
}

fn algorithm_of<'a>(tlv: &Tlv<'a>) -> Result<(String, Option<Tlv<'a>>)> {
    if !tlv.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
        return Err(decryption("AlgorithmIdentifier is not a SEQUENCE"));
    }
    let fields = tlv.children()?;
    let oid = fields
        .first()
        .ok_or_else(|| decryption("empty AlgorithmIdentifier"))?
        .oid()?;
    Ok((oid, fields.get(1).copied()))
}

/// The streamed content ciphers and their IV; `None` for the others.
fn content_cipher(algorithm: &str, params: Option<Tlv<'_>>) -> Result<Option<(Cipher, Vec<u8>)>> {
    let cipher = match algorithm {
        "2.16.840.1.101.3.4.1.2" => Cipher::aes_128_cbc(),
        "2.16.840.1.101.3.4.1.22" => Cipher::aes_192_cbc(),
        "2.16.840.1.101.3.4.1.42" => Cipher::aes_256_cbc(),
        "1.2.840.113549.3.7" => Cipher::des_ede3_cbc(),
        _ => return Ok(None),
    };
    let iv = params
        .filter(|p| p.is(CLASS_UNIVERSAL, TAG_OCTET_STRING))
        .map(|p| p.octets())
        .transpose()?
        .ok_or_else(|| decryption("content cipher has no IV"))?;
    if Some(iv.len()) != cipher.iv_len() {
        return Err(decryption(format!(
            "content cipher IV is {} bytes, expected {}",
            iv.len(),
            cipher.iv_len().unwrap_or(0)
        )));
    }
    Ok(Some((cipher, iv)))
}

/// How the content key was wrapped for one recipient.
enum Transport {
    Pkcs1,
    Oaep {
        hash: &'static MdRef,
        mgf1: &'static MdRef,
    },
}

impl Transport {
    fn oid(&self) -> &'static str {
        match self {
            Transport::Pkcs1 => oid::RSA_ENCRYPTION,
            Transport::Oaep { .. } => oid::RSAES_OAEP,
        }
    }
}

/// Which certificate a recipient info names.
enum RecipientId {
    IssuerSerial { issuer: Vec<u8>, serial: Vec<u8> },
    SubjectKeyId(Vec<u8>),
}

struct Recipient {
    id: RecipientId,
    transport: Transport,
    encrypted_key: Vec<u8>,
}

/// The KeyTransRecipientInfos with RSA key transport; others are skipped
/// (an empty list makes the caller fall back to OpenSSL's CMS).
fn recipient_infos(der: &[u8]) -> Result<Vec<Recipient>> {
    let (set, _) = ber::read(der)?;
    let mut out = Vec::new();
    for info in set.children()? {
        if !info.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
            continue; // kari, kekri, pwri, ori
        }
        let fields = info.children()?;
        let [_version, rid, algorithm, encrypted_key] = fields.as_slice() else {
            continue;
        };
        let id = if rid.is(CLASS_UNIVERSAL, TAG_SEQUENCE) {
            let parts = rid.children()?;
            let [issuer, serial] = parts.as_slice() else {
                continue;
            };
            RecipientId::IssuerSerial {
                issuer: reencode(issuer),
                serial: strip_leading_zeros(serial.content).to_vec(),
            }
        } else if rid.is(CLASS_CONTEXT, 0) {
            RecipientId::SubjectKeyId(rid.content.to_vec())
        } else {
            continue;
        };
        let (transport_oid, params) = algorithm_of(algorithm)?;
        let transport = match transport_oid.as_str() {
            oid::RSA_ENCRYPTION => Transport::Pkcs1,
            oid::RSAES_OAEP => match oaep_params(params)? {
                Some(t) => t,
                None => continue,
            },
            _ => continue,
        };
        out.push(Recipient {
            id,
            transport,
            encrypted_key: encrypted_key.octets()?,
        });
    }
    Ok(out)
}

/// RSAES-OAEP-params (RFC 4055 section 4.1): hash and MGF1 hash, SHA-1 by
/// default; `None` for a label (pSourceFunc), which AS2 never uses.
fn oaep_params(params: Option<Tlv<'_>>) -> Result<Option<Transport>> {
    let mut hash = Md::sha1();
    let mut mgf1 = Md::sha1();
    if let Some(params) = params.filter(|p| p.is(CLASS_UNIVERSAL, TAG_SEQUENCE)) {
        for field in params.children()? {
            let inner = field.children()?;
            let Some(algorithm) = inner.first() else {
                continue;
            };
            match (field.class, field.tag) {
                (CLASS_CONTEXT, 0) => {
                    let (oid, _) = algorithm_of(algorithm)?;
                    let Some(md) = digest_by_oid(&oid) else {
                        return Ok(None);
                    };
                    hash = md;
                }
                (CLASS_CONTEXT, 1) => {
                    let (_mgf, mgf_params) = algorithm_of(algorithm)?;
                    if let Some(p) = mgf_params {
                        let (oid, _) = algorithm_of(&p)?;
                        let Some(md) = digest_by_oid(&oid) else {
                            return Ok(None);
                        };
                        mgf1 = md;
                    }
                }
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(Transport::Oaep { hash, mgf1 }))
}

fn digest_by_oid(dotted: &str) -> Option<&'static MdRef> {
    Some(match dotted {
        "1.3.14.3.2.26" => Md::sha1(),
        "2.16.840.1.101.3.4.2.4" => Md::sha224(),
        "2.16.840.1.101.3.4.2.1" => Md::sha256(),
        "2.16.840.1.101.3.4.2.2" => Md::sha384(),
        "2.16.840.1.101.3.4.2.3" => Md::sha512(),
        _ => return None,
    })
}

fn reencode(tlv: &Tlv<'_>) -> Vec<u8> {
    let identifier =
        (tlv.class << 6) | if tlv.constructed { 0x20 } else { 0 } | (tlv.tag.min(30) as u8);
    ber::der(identifier, tlv.content)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn names(recipient: &Recipient, pair: &KeyPair) -> bool {
    match &recipient.id {
        RecipientId::IssuerSerial { issuer, serial } => {
            let our_serial = pair
                .cert
                .serial_number()
                .to_bn()
                .map(|bn| bn.to_vec())
                .unwrap_or_default();
            // Names compared as OpenSSL compares them (X509_NAME_cmp, on
            // their canonical form), not byte for byte.
            let same_issuer = openssl::x509::X509Name::from_der(issuer)
                .ok()
                .and_then(|name| name.try_cmp(pair.cert.issuer_name()).ok())
                == Some(std::cmp::Ordering::Equal);
            same_issuer && strip_leading_zeros(serial) == strip_leading_zeros(&our_serial)
        }
        RecipientId::SubjectKeyId(id) => pair
            .cert
            .subject_key_id()
            .is_some_and(|ours| ours.as_slice() == id.as_slice()),
    }
}

/// The content key, from the recipient info that names one of our
/// certificates (by issuer and serial number, or subject key identifier),
/// as OpenSSL's CMS does when given the certificate.
fn content_key(
    recipients: &[Recipient],
    keys: &[KeyPair],
    key_len: usize,
    cipher_name: Option<&str>,
) -> Result<Vec<u8>> {
    for pair in keys {
        for recipient in recipients.iter().filter(|r| names(r, pair)) {
            if let Ok(key) = unwrap_key(recipient, pair) {
                if key.len() == key_len {
                    return Ok(key);
                }
            }
        }
    }
    let tried: Vec<String> = keys.iter().map(|k| subject_of(&k.cert)).collect();
    Err(decryption(format!(
        "no configured key opens this message ({} cipher; tried certificate {})",
        cipher_name.unwrap_or("unknown"),
        tried.join(" | ")
    )))
}

fn unwrap_key(
    recipient: &Recipient,
    pair: &KeyPair,
) -> std::result::Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut ctx = PkeyCtx::new(&pair.key)?;
    ctx.decrypt_init()?;
    match &recipient.transport {
        Transport::Pkcs1 => ctx.set_rsa_padding(Padding::PKCS1)?,
        Transport::Oaep { hash, mgf1 } => {
            ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
            ctx.set_rsa_oaep_md(hash)?;
            ctx.set_rsa_mgf1_md(mgf1)?;
        }
    }
    let mut key = Vec::new();
    ctx.decrypt_to_vec(&recipient.encrypted_key, &mut key)?;
    Ok(key)
}
