//! Keys and certificates: PEM, DER and PKCS#12 (including the RC2-40 files
//! older tools write), key-pair and self-signed certificate generation.

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509NameBuilder, X509};

use crate::as2::cms::{key_matches_cert, KeyPair};
use crate::as2::error::{As2Error, ErrorKind, Result};

fn key_error(path_or_what: &str, what: &str, e: openssl::error::ErrorStack) -> As2Error {
    As2Error::openssl(ErrorKind::Key, &format!("{path_or_what}: {what}"), e)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        As2Error::new(
            ErrorKind::Key,
            format!("{}: cannot read: {e}", path.display()),
        )
    })
}

fn looks_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Every certificate in PEM (one or many) or DER bytes.
pub fn certificates_from_bytes(data: &[u8], origin: &str) -> Result<Vec<X509>> {
    if looks_pem(data) {
        let certs = X509::stack_from_pem(data)
            .map_err(|e| key_error(origin, "invalid PEM certificate", e))?;
        if certs.is_empty() {
            return Err(As2Error::new(
                ErrorKind::Key,
                format!("{origin}: no certificate in PEM file"),
            ));
        }
        Ok(certs)
    } else {
        X509::from_der(data)
            .map(|c| vec![c])
            .map_err(|e| key_error(origin, "neither PEM nor DER certificate", e))
    }
}

/// Loads the certificates of a PEM or DER file.
pub fn load_certificates(path: &Path) -> Result<Vec<X509>> {
    certificates_from_bytes(&read(path)?, &path.display().to_string())
}

/// A private key from PEM (PKCS#8, PKCS#1, SEC1; optionally encrypted) or DER.
pub fn private_key_from_bytes(
    data: &[u8],
    password: Option<&str>,
    origin: &str,
) -> Result<PKey<Private>> {
    let result = if looks_pem(data) {
        match password {
            Some(pw) => PKey::private_key_from_pem_passphrase(data, pw.as_bytes()),
            None => PKey::private_key_from_pem(data),
        }
    } else {
        match password {
            Some(pw) => PKey::private_key_from_pkcs8_passphrase(data, pw.as_bytes()),
            None => PKey::private_key_from_der(data),
        }
    };
    result.map_err(|e| {
        key_error(
            origin,
            "cannot read private key (wrong password or not a key)",
            e,
        )
    })
}

/// Reads a PKCS#12 (.p12/.pfx) file: key, certificate and chain.
pub fn pkcs12_from_bytes(data: &[u8], password: &str, origin: &str) -> Result<KeyPair> {
    // RC2-40 bags need OpenSSL's legacy provider.
    if let Err(e) = crate::crypto_init::init() {
        tracing::warn!(error = %e, "legacy algorithms unavailable");
    }
    let parsed = Pkcs12::from_der(data)
        .and_then(|p| p.parse2(password))
        .map_err(|e| {
            key_error(
                origin,
                "cannot open PKCS#12 (wrong password, or legacy provider missing)",
                e,
            )
        })?;
    let key = parsed.pkey.ok_or_else(|| {
        As2Error::new(
            ErrorKind::Key,
            format!("{origin}: PKCS#12 holds no private key"),
        )
    })?;
    let cert = parsed.cert.ok_or_else(|| {
        As2Error::new(
            ErrorKind::Key,
            format!("{origin}: PKCS#12 holds no certificate"),
        )
    })?;
    let chain = parsed
        .ca
        .map(|stack| stack.into_iter().collect())
        .unwrap_or_default();
    key_pair(key, cert, chain, origin)
}

/// Checks that the key belongs to the certificate.
pub fn key_pair(key: PKey<Private>, cert: X509, chain: Vec<X509>, origin: &str) -> Result<KeyPair> {
    if !key_matches_cert(&key, &cert) {
        return Err(As2Error::new(
            ErrorKind::Key,
            format!("{origin}: the private key does not match the certificate"),
        ));
    }
    Ok(KeyPair { key, cert, chain })
}

/// Loads a key pair: a PKCS#12 file (by extension .p12/.pfx), or a PEM file
/// holding both key and certificate, or a key file plus a certificate file.
pub fn load_key_pair(
    key_path: &Path,
    cert_path: Option<&Path>,
    password: Option<&str>,
) -> Result<KeyPair> {
    let data = read(key_path)?;
    let origin = key_path.display().to_string();
    let is_p12 = key_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"));
    if is_p12 {
        return pkcs12_from_bytes(&data, password.unwrap_or(""), &origin);
    }
    let key = private_key_from_bytes(&data, password, &origin)?;
    let mut certs = match cert_path {
        Some(p) => load_certificates(p)?,
        None => certificates_from_bytes(&data, &origin)?,
    };
    let cert = certs.remove(0);
    key_pair(key, cert, certs, &origin)
}

/// Key algorithm for generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(u32),
    EcP256,
    EcP384,
}

/// Generates a key and a self-signed certificate for AS2 signing and encryption.
pub fn generate(common_name: &str, kind: KeyKind, days: u32) -> Result<KeyPair> {
    let internal =
        |what: &str, e: openssl::error::ErrorStack| As2Error::openssl(ErrorKind::Internal, what, e);
    let key = match kind {
        KeyKind::Rsa(bits) => Rsa::generate(bits)
            .and_then(PKey::from_rsa)
            .map_err(|e| internal("generating RSA key", e))?,
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let nid = if kind == KeyKind::EcP256 {
                Nid::X9_62_PRIME256V1
            } else {
                Nid::SECP384R1
            };
            EcGroup::from_curve_name(nid)
                .and_then(|g| EcKey::generate(&g))
                .and_then(PKey::from_ec_key)
                .map_err(|e| internal("generating EC key", e))?
        }
    };
    let build = || -> std::result::Result<X509, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let name = name.build();
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        let not_before = Asn1Time::days_from_now(0)?;
        let not_after = Asn1Time::days_from_now(days)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.append_extension(BasicConstraints::new().build()?)?;
        let mut usage = KeyUsage::new();
        usage.critical().digital_signature().non_repudiation();
        if matches!(kind, KeyKind::Rsa(_)) {
            usage.key_encipherment().data_encipherment();
        } else {
            usage.key_agreement();
        }
        builder.append_extension(usage.build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(builder.build())
    };
    let cert = build().map_err(|e| internal("building self-signed certificate", e))?;
    Ok(KeyPair {
        key,
        cert,
        chain: Vec::new(),
    })
}

/// Writes a key pair as PKCS#12 protected by `password` (modern AES algorithms).
pub fn to_pkcs12(pair: &KeyPair, friendly_name: &str, password: &str) -> Result<Vec<u8>> {
    let mut builder = Pkcs12::builder();
    builder.name(friendly_name).pkey(&pair.key).cert(&pair.cert);
    if !pair.chain.is_empty() {
        let mut stack = openssl::stack::Stack::new()
            .map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
        for c in &pair.chain {
            stack
                .push(c.clone())
                .map_err(|e| As2Error::openssl(ErrorKind::Internal, "allocating", e))?;
        }
        builder.ca(stack);
    }
    builder
        .build2(password)
        .and_then(|p| p.to_der())
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, "writing PKCS#12", e))
}

/// PEM of the private key (PKCS#8, unencrypted) followed by the certificate.
pub fn to_pem(pair: &KeyPair) -> Result<Vec<u8>> {
    let mut out = pair
        .key
        .private_key_to_pem_pkcs8()
        .map_err(|e| As2Error::openssl(ErrorKind::Internal, "writing key PEM", e))?;
    out.extend(
        pair.cert
            .to_pem()
            .map_err(|e| As2Error::openssl(ErrorKind::Internal, "writing certificate PEM", e))?,
    );
    Ok(out)
}

/// The SHA-256 fingerprint of a certificate, as colon-separated hex.
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| {
            d.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default()
}
