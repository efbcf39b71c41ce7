//! CMS (RFC 5652) EnvelopedData, AuthEnvelopedData (RFC 5083) and detached
//! SignedData, through OpenSSL.
//!
//! The `openssl` crate wraps only part of OpenSSL's CMS API: it cannot pick
//! the signer's digest, request RSA-OAEP or RSASSA-PSS, or report which
//! digest a signer used. Those few calls are declared here, each wrapped in a
//! safe function; all `unsafe` code of the crate lives in this module.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr;

use foreign_types_shared::{ForeignType, ForeignTypeRef};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Ref, X509};
use openssl_sys as ffi;

use super::ber;
use super::error::{As2Error, ErrorKind, Result};
use super::headers::MicAlg;

#[allow(non_camel_case_types)]
#[repr(C)]
struct CMS_SignerInfo {
    _private: [u8; 0],
}

#[allow(non_camel_case_types)]
#[repr(C)]
struct CMS_RecipientInfo {
    _private: [u8; 0],
}

extern "C" {
    fn CMS_add1_signer(
        cms: *mut ffi::CMS_ContentInfo,
        signer: *mut ffi::X509,
        pk: *mut ffi::EVP_PKEY,
        md: *const ffi::EVP_MD,
        flags: c_uint,
    ) -> *mut CMS_SignerInfo;
    fn CMS_final(
        cms: *mut ffi::CMS_ContentInfo,
        data: *mut ffi::BIO,
        dcont: *mut ffi::BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_SignerInfo_get0_pkey_ctx(si: *mut CMS_SignerInfo) -> *mut ffi::EVP_PKEY_CTX;
    fn CMS_get0_SignerInfos(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::OPENSSL_STACK;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CMS_SignerInfo,
        pk: *mut *mut ffi::EVP_PKEY,
        signer: *mut *mut ffi::X509,
        pdig: *mut *mut ffi::X509_ALGOR,
        psig: *mut *mut ffi::X509_ALGOR,
    );
    fn CMS_add1_recipient_cert(
        cms: *mut ffi::CMS_ContentInfo,
        recip: *mut ffi::X509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut ffi::EVP_PKEY_CTX;
    fn CMS_get0_signers(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::stack_st_X509;
    fn EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx: *mut ffi::EVP_PKEY_CTX, len: c_int) -> c_int;
}

/// Salt length equal to the digest length (RFC 4056 recommends it).
const RSA_PSS_SALTLEN_DIGEST: c_int = -1;

/// A content-encryption algorithm for the sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    Des3,
    Rc2_40,
    Rc2_128,
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl ContentCipher {
    /// Parses the names operators and other products use
    /// (`3des`, `des_ede3_cbc`, `aes128`, `aes_256_cbc`, `aes128-gcm`, `rc2-40`).
    pub fn from_name(name: &str) -> Option<Self> {
        let folded: String = name
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match folded.as_str() {
            "3des" | "des3" | "tripledes" | "desede3cbc" | "desede3" => ContentCipher::Des3,
            "rc240" | "rc240cbc" => ContentCipher::Rc2_40,
            "rc2" | "rc2128" | "rc2cbc" | "rc2128cbc" => ContentCipher::Rc2_128,
            "aes128" | "aes128cbc" => ContentCipher::Aes128Cbc,
            "aes192" | "aes192cbc" => ContentCipher::Aes192Cbc,
            "aes256" | "aes256cbc" => ContentCipher::Aes256Cbc,
            "aes128gcm" => ContentCipher::Aes128Gcm,
            "aes256gcm" => ContentCipher::Aes256Gcm,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ContentCipher::Des3 => "3des",
            ContentCipher::Rc2_40 => "rc2-40",
            ContentCipher::Rc2_128 => "rc2-128",
            ContentCipher::Aes128Cbc => "aes128-cbc",
            ContentCipher::Aes192Cbc => "aes192-cbc",
            ContentCipher::Aes256Cbc => "aes256-cbc",
            ContentCipher::Aes128Gcm => "aes128-gcm",
            ContentCipher::Aes256Gcm => "aes256-gcm",
        }
    }

    /// The `smime-type` of a message encrypted with this cipher: AES-GCM
    /// goes in CMS AuthEnvelopedData, which RFC 8551 (section 3.2.2) labels
    /// `authEnveloped-data`; every other cipher in EnvelopedData.
    pub fn smime_type(self) -> &'static str {
        match self {
            ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => "authEnveloped-data",
            _ => "enveloped-data",
        }
    }

    fn cipher(self) -> Cipher {
        match self {
            ContentCipher::Des3 => Cipher::des_ede3_cbc(),
            ContentCipher::Rc2_40 => Cipher::rc2_40_cbc(),
            ContentCipher::Rc2_128 => Cipher::rc2_cbc(),
            ContentCipher::Aes128Cbc => Cipher::aes_128_cbc(),
            ContentCipher::Aes192Cbc => Cipher::aes_192_cbc(),
            ContentCipher::Aes256Cbc => Cipher::aes_256_cbc(),
            ContentCipher::Aes128Gcm => Cipher::aes_128_gcm(),
            ContentCipher::Aes256Gcm => Cipher::aes_256_gcm(),
        }
    }
}

/// How the content-encryption key is wrapped for the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyTransport {
    #[default]
    RsaPkcs1v15,
    RsaOaep,
}

/// How an RSA key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureScheme {
    #[default]
    Pkcs1v15,
    Pss,
}

/// A private key with its certificate: ours, for decrypting or signing.
#[derive(Clone)]
pub struct KeyPair {
    pub key: PKey<Private>,
    pub cert: X509,
    /// Intermediate certificates to include in signatures.
    pub chain: Vec<X509>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("cert", &subject_of(&self.cert))
            .finish_non_exhaustive()
    }
}

/// The subject of a certificate as one line, for messages.
pub fn subject_of(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a decryption produced.
#[derive(Debug, Clone)]
pub struct Decrypted {
    pub content: Vec<u8>,
    pub algorithms: ber::EnvelopeAlgorithms,
    /// True for AuthEnvelopedData (AES-GCM).
    pub authenticated: bool,
}

/// Opens an (Auth)EnvelopedData with the first of our keys that fits.
pub fn decrypt(der: &[u8], keys: &[KeyPair]) -> Result<Decrypted> {
    if keys.is_empty() {
        return Err(As2Error::new(
            ErrorKind::Decryption,
            "message is encrypted but no decryption key is configured",
        ));
    }
    let (content_type, _) =
        ber::content_info(der).map_err(|e| As2Error::new(ErrorKind::Decryption, e.message()))?;
    let authenticated = match content_type.as_str() {
        ber::oid::ENVELOPED_DATA => false,
        ber::oid::AUTH_ENVELOPED_DATA => true,
        other => {
            return Err(As2Error::new(
                ErrorKind::Decryption,
                format!("expected enveloped-data, found CMS content type {other}"),
            ))
        }
    };
    let algorithms = ber::envelope_algorithms(der).unwrap_or_default();
    let cms = CmsContentInfo::from_der(der)
        .map_err(|e| As2Error::openssl(ErrorKind::Decryption, "reading enveloped-data", e))?;
    let mut last_error = None;
    for pair in keys {
        match cms.decrypt(&pair.key, &pair.cert) {
            Ok(content) => {
                return Ok(Decrypted {
                    content,
                    algorithms,
                    authenticated,
                })
            }
            Err(e) => last_error = Some(e),
        }
    }
    let tried: Vec<String> = keys.iter().map(|k| subject_of(&k.cert)).collect();
    let err = As2Error::openssl(
        ErrorKind::Decryption,
        &format!(
            "no configured key opens this message ({} cipher; tried certificate {})",
            algorithms
                .content_encryption
                .as_deref()
                .unwrap_or("unknown"),
            tried.join(" | ")
        ),
        last_error.unwrap_or_else(openssl::error::ErrorStack::get),
    );
    Err(err)
}

/// Encrypts `content` for `recipient`, giving DER (Auth)EnvelopedData.
pub fn encrypt(
    content: &[u8],
    recipient: &X509Ref,
    cipher: ContentCipher,
    transport: KeyTransport,
) -> Result<Vec<u8>> {
    let flags = CMSOptions::BINARY | CMSOptions::PARTIAL;
    let empty: Stack<X509> =
        Stack::new().map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
    let cms = CmsContentInfo::encrypt(&empty, &[], cipher.cipher(), flags).map_err(|e| {
        As2Error::openssl(
            ErrorKind::Internal,
            &format!("creating {} envelope", cipher.name()),
            e,
        )
    })?;
    let key_flags = match transport {
        KeyTransport::RsaOaep => ffi::CMS_KEY_PARAM,
        KeyTransport::RsaPkcs1v15 => 0,
    };
    // SAFETY: `cms` and `recipient` are valid for the duration of the calls;
    // CMS_add1_recipient_cert takes its own reference to the certificate, and
    // the returned RecipientInfo is owned by `cms`.
    unsafe {
        let ri = CMS_add1_recipient_cert(cms.as_ptr(), recipient.as_ptr(), key_flags);
        if ri.is_null() {
            return Err(As2Error::openssl(
                ErrorKind::Key,
                "adding the partner certificate as recipient",
                openssl::error::ErrorStack::get(),
            ));
        }
        if transport == KeyTransport::RsaOaep {
            let ctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
            if ctx.is_null()
                || ffi::EVP_PKEY_CTX_set_rsa_padding(ctx, ffi::RSA_PKCS1_OAEP_PADDING) <= 0
            {
                return Err(As2Error::openssl(
                    ErrorKind::Key,
                    "selecting RSA-OAEP key transport",
                    openssl::error::ErrorStack::get(),
                ));
            }
        }
    }
    finalize(cms, content, flags, "encrypting")
}

/// Signs `content` exactly as given (no canonicalisation), returning a
/// detached DER SignedData.
pub fn sign_detached(
    content: &[u8],
    signer: &KeyPair,
    digest: MicAlg,
    scheme: SignatureScheme,
) -> Result<Vec<u8>> {
    let flags = CMSOptions::BINARY | CMSOptions::DETACHED | CMSOptions::PARTIAL;
    let mut chain: Stack<X509> =
        Stack::new().map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
    for cert in &signer.chain {
        chain
            .push(cert.clone())
            .map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
    }
    let cms = CmsContentInfo::sign::<Private>(None, None, Some(&chain), None, flags)
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, "creating signed-data", e))?;
    let key_flags = if scheme == SignatureScheme::Pss {
        ffi::CMS_KEY_PARAM
    } else {
        0
    };
    // SAFETY: all pointers are valid for the call; CMS_add1_signer takes its
    // own references to the certificate and key; the SignerInfo is owned by `cms`.
    unsafe {
        let si = CMS_add1_signer(
            cms.as_ptr(),
            signer.cert.as_ptr(),
            signer.key.as_ptr(),
            digest.message_digest().as_ptr(),
            flags.bits() | key_flags,
        );
        if si.is_null() {
            return Err(As2Error::openssl(
                ErrorKind::Key,
                &format!("adding signer {} with {digest}", subject_of(&signer.cert)),
                openssl::error::ErrorStack::get(),
            ));
        }
        if scheme == SignatureScheme::Pss {
            let ctx = CMS_SignerInfo_get0_pkey_ctx(si);
            if ctx.is_null()
                || ffi::EVP_PKEY_CTX_set_rsa_padding(ctx, ffi::RSA_PKCS1_PSS_PADDING) <= 0
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) <= 0
            {
                return Err(As2Error::openssl(
                    ErrorKind::Key,
                    "selecting RSASSA-PSS",
                    openssl::error::ErrorStack::get(),
                ));
            }
        }
    }
    finalize(cms, content, flags, "signing")
}

fn finalize(cms: CmsContentInfo, content: &[u8], flags: CMSOptions, what: &str) -> Result<Vec<u8>> {
    let len = c_int::try_from(content.len()).map_err(|_| {
        As2Error::new(
            ErrorKind::Internal,
            format!("{what}: content of {} bytes is too large", content.len()),
        )
    })?;
    // SAFETY: the BIO reads from `content`, which outlives it; it is freed
    // before returning. CMS_final reads the BIO to the end.
    unsafe {
        let bio = ffi::BIO_new_mem_buf(content.as_ptr() as *const c_void, len);
        if bio.is_null() {
            return Err(As2Error::openssl(
                ErrorKind::Internal,
                what,
                openssl::error::ErrorStack::get(),
            ));
        }
        let ok = CMS_final(cms.as_ptr(), bio, ptr::null_mut(), flags.bits());
        ffi::BIO_free_all(bio);
        if ok <= 0 {
            return Err(As2Error::openssl(
                ErrorKind::Internal,
                what,
                openssl::error::ErrorStack::get(),
            ));
        }
    }
    cms.to_der()
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, &format!("{what}: encoding"), e))
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The digest the signer used, when OpenSSL could name it.
    pub digest: Option<MicAlg>,
    /// Subject of the pinned certificate that matched.
    pub signer_subject: String,
    /// The matching certificate is outside its validity period.
    pub signer_expired: bool,
}

/// Verifies a detached signature over `content` against pinned partner
/// certificates only: certificates inside the message are ignored (a sender
/// cannot bring its own trust), and chains are not built, because AS2
/// partners exchange certificates out of band.
pub fn verify_detached(signature_der: &[u8], content: &[u8], trusted: &[X509]) -> Result<Verified> {
    verify_with(signature_der, content, trusted, CMSOptions::empty())
}

/// Verifies the signature over the signed attributes only, not the
/// content's digest: for content streamed past a digest elsewhere, whose
/// caller compares that digest with the signed messageDigest attribute
/// ([`super::stream`]). Without signed attributes this checks nothing, so
/// the caller must have seen them.
pub fn verify_signed_attributes(signature_der: &[u8], trusted: &[X509]) -> Result<Verified> {
    verify_with(signature_der, &[], trusted, CMSOptions::NO_CONTENT_VERIFY)
}

fn verify_with(
    signature_der: &[u8],
    content: &[u8],
    trusted: &[X509],
    extra: CMSOptions,
) -> Result<Verified> {
    if trusted.is_empty() {
        return Err(As2Error::new(
            ErrorKind::Integrity,
            "message is signed but no partner signing certificate is configured",
        ));
    }
    let (content_type, _) = ber::content_info(signature_der).map_err(|e| {
        As2Error::new(
            ErrorKind::Integrity,
            format!("signature is not CMS: {}", e.message()),
        )
    })?;
    if content_type != ber::oid::SIGNED_DATA {
        return Err(As2Error::new(
            ErrorKind::Integrity,
            format!("signature has CMS content type {content_type}, not signed-data"),
        ));
    }
    // The certificates a message carries are never trusted; not parsing
    // them saves decoding their keys (most of a small message's cost).
    let stripped = ber::signed_data_without_certificates(signature_der);
    let mut cms = CmsContentInfo::from_der(stripped.as_deref().unwrap_or(signature_der))
        .map_err(|e| As2Error::openssl(ErrorKind::Integrity, "reading signed-data", e))?;
    let mut certs: Stack<X509> =
        Stack::new().map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
    for cert in trusted {
        certs
            .push(cert.clone())
            .map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
    }
    let flags =
        CMSOptions::BINARY | CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY | extra;
    cms.verify(Some(&certs), None, Some(content), None, flags)
        .map_err(|e| {
            As2Error::openssl(
                ErrorKind::Integrity,
                "signature does not verify with the partner certificate",
                e,
            )
        })?;
    let digest = signer_digest(&cms);
    let signer = signer_cert(&cms);
    let (signer_subject, signer_expired) = match &signer {
        Some(cert) => (subject_of(cert), is_expired(cert)),
        None => (String::from("unknown"), false),
    };
    Ok(Verified {
        digest,
        signer_subject,
        signer_expired,
    })
}

/// Outside notBefore..notAfter right now.
pub fn is_expired(cert: &X509Ref) -> bool {
    let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
        return false;
    };
    cert.not_after() < now || cert.not_before() > now
}

fn signer_digest(cms: &CmsContentInfo) -> Option<MicAlg> {
    // SAFETY: the stack and SignerInfo are owned by `cms` and only read here.
    unsafe {
        let infos = CMS_get0_SignerInfos(cms.as_ptr());
        if infos.is_null() || ffi::OPENSSL_sk_num(infos) < 1 {
            return None;
        }
        let si = ffi::OPENSSL_sk_value(infos, 0) as *mut CMS_SignerInfo;
        let mut dig: *mut ffi::X509_ALGOR = ptr::null_mut();
        CMS_SignerInfo_get0_algs(
            si,
            ptr::null_mut(),
            ptr::null_mut(),
            &mut dig,
            ptr::null_mut(),
        );
        if dig.is_null() {
            return None;
        }
        let mut obj: *const ffi::ASN1_OBJECT = ptr::null();
        ffi::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), dig);
        if obj.is_null() {
            return None;
        }
        MicAlg::from_nid(Nid::from_raw(ffi::OBJ_obj2nid(obj)))
    }
}

fn signer_cert(cms: &CmsContentInfo) -> Option<X509> {
    // SAFETY: CMS_get0_signers returns a new stack (freed here) whose
    // certificates are owned by `cms`; we take our own reference with
    // X509_up_ref before wrapping it.
    unsafe {
        let signers = CMS_get0_signers(cms.as_ptr());
        if signers.is_null() {
            return None;
        }
        let stack = signers as *mut ffi::OPENSSL_STACK;
        let cert = if ffi::OPENSSL_sk_num(stack) > 0 {
            let raw = ffi::OPENSSL_sk_value(stack, 0) as *mut ffi::X509;
            if raw.is_null() || ffi::X509_up_ref(raw) != 1 {
                None
            } else {
                Some(X509::from_ptr(raw))
            }
        } else {
            None
        };
        ffi::OPENSSL_sk_free(stack);
        cert
    }
}

/// True if the key matches the certificate's public key.
pub fn key_matches_cert(key: &PKeyRef<Private>, cert: &X509Ref) -> bool {
    cert.public_key()
        .map(|public| public.public_eq(key))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, KeyKind};

    #[test]
    fn carried_certificates_are_stripped_and_the_signature_still_verifies() {
        let signer = keys::generate("strip-test", KeyKind::Rsa(2048), 30).expect("key");
        let other = keys::generate("someone else", KeyKind::Rsa(2048), 30).expect("key");
        let content = b"ISA*00*strip~";
        let signature = sign_detached(content, &signer, MicAlg::Sha256, SignatureScheme::Pkcs1v15)
            .expect("signs");
        let stripped = ber::signed_data_without_certificates(&signature)
            .expect("our signatures carry the signer's certificate");
        assert!(stripped.len() < signature.len());
        let (_, signed) = ber::content_info(&stripped).expect("still a ContentInfo");
        let fields = signed.children().expect("fields");
        assert!(
            !fields
                .iter()
                .any(|f| f.is(ber::CLASS_CONTEXT, 0) || f.is(ber::CLASS_CONTEXT, 1)),
            "no certificates or crls left"
        );
        assert_eq!(
            ber::signed_data_without_certificates(&stripped),
            None,
            "nothing left to strip"
        );
        let verified =
            verify_detached(&signature, content, std::slice::from_ref(&signer.cert)).expect("ok");
        assert_eq!(verified.digest, Some(MicAlg::Sha256));
        assert!(verified.signer_subject.contains("strip-test"));
        assert!(verify_detached(
            &signature,
            b"other content",
            std::slice::from_ref(&signer.cert)
        )
        .is_err());
        assert!(
            verify_detached(&signature, content, std::slice::from_ref(&other.cert)).is_err(),
            "the carried certificate brings no trust"
        );
        assert_eq!(
            ber::signed_data_without_certificates(b"\x30\x03\x02\x01\x00"),
            None
        );
    }
}
