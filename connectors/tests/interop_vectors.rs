//! The captured messages and receipts of other AS2 products
//! (`shared/interop`, see its README): every "must pass" vector opens with
//! the payload and MIC that README gives, byte for byte as stored.

mod common;

use atom_connectors::as2::error::ErrorModifier;
use atom_connectors::as2::headers::{DispositionNotificationOptions, MicAlg};
use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use atom_connectors::as2::signed::Canonicalization;
use atom_connectors::as2::unwrap::{self, Compression, ReceiveSettings};
use common::*;

fn mendelson_settings() -> ReceiveSettings {
    ReceiveSettings {
        decryption_keys: vec![receiver_key()],
        partner_certs: vec![cert("cert_mecas2_public.pem")],
        ..ReceiveSettings::default()
    }
}

struct Case {
    file: &'static str,
    encrypted: bool,
    signed: bool,
    compression: Option<Compression>,
    mic_sha256: Option<&'static str>,
}

const SIGNED_MIC: &str = "G6PhshLOERWJEIfypIh6Q3sno6cBUWJBDky1igJvDMo=";
const COMPRESSED_MIC: &str = "14SZThwSYUH4aPdkglDwdRFnKUFmgjKsJFZWcSXBTww=";

#[test]
fn mendelson_must_pass_vectors_open() {
    let cases = [
        Case {
            file: "mecas2_signed.as2",
            encrypted: false,
            signed: true,
            compression: None,
            mic_sha256: Some(SIGNED_MIC),
        },
        Case {
            file: "mecas2_encrypted.as2",
            encrypted: true,
            signed: false,
            compression: None,
            mic_sha256: None,
        },
        Case {
            file: "mecas2_compressed.as2",
            encrypted: false,
            signed: true,
            compression: Some(Compression::BeforeSigning),
            mic_sha256: Some(COMPRESSED_MIC),
        },
        Case {
            file: "mecas2_signed_encrypted.as2",
            encrypted: true,
            signed: true,
            compression: None,
            mic_sha256: Some(SIGNED_MIC),
        },
        Case {
            file: "mecas2_compressed_signed_encrypted.as2",
            encrypted: true,
            signed: true,
            compression: Some(Compression::BeforeSigning),
            mic_sha256: Some(COMPRESSED_MIC),
        },
    ];
    let payload = read_vector("payload.txt");
    let settings = mendelson_settings();
    let mut ran = 0;
    for case in &cases {
        let (headers, body) = split_capture(&read_vector(case.file));
        let requested = headers
            .get("disposition-notification-options")
            .map(DispositionNotificationOptions::parse);
        let chosen = requested.as_ref().and_then(|o| o.choose_mic_alg());
        let opened = unwrap::unwrap(&headers, &body, &settings, chosen.as_ref())
            .unwrap_or_else(|e| panic!("{} must open: {e}", case.file));
        assert_eq!(opened.payload, payload, "{}: payload", case.file);
        assert_eq!(
            opened.encryption.is_some(),
            case.encrypted,
            "{}: encryption",
            case.file
        );
        assert_eq!(
            opened.signature.is_some(),
            case.signed,
            "{}: signature",
            case.file
        );
        assert_eq!(
            opened.compression, case.compression,
            "{}: compression",
            case.file
        );
        if case.encrypted {
            assert_eq!(
                opened.encryption.as_ref().map(|e| e.algorithm.as_str()),
                Some("3des"),
                "{}",
                case.file
            );
        }
        if let Some(expected) = case.mic_sha256 {
            assert_eq!(opened.mic.alg, MicAlg::Sha256, "{}", case.file);
            assert_eq!(opened.mic.value, expected, "{}: MIC", case.file);
            let sig = opened.signature.as_ref().expect("signed");
            assert_eq!(sig.digest, Some(MicAlg::Sha256));
            // mecas2_signed.as2 is stored with LF line ends, but Mendelson
            // signed CRLF headers; the other captures kept their CRLFs.
            let expected = if case.file == "mecas2_signed.as2" {
                Canonicalization::CrlfHeaders
            } else {
                Canonicalization::AsReceived
            };
            assert_eq!(sig.canonicalization, expected, "{}", case.file);
            // A pinned certificate past its validity is accepted with a warning.
            let expired = atom_connectors::as2::cms::is_expired(&cert("cert_mecas2_public.pem"));
            assert_eq!(
                opened.warnings.iter().any(|w| w.contains("validity")),
                expired,
                "{}: {:?}",
                case.file,
                opened.warnings
            );
        }
        assert_eq!(
            opened.file_name.as_deref(),
            Some("payload.txt"),
            "{}",
            case.file
        );
        ran += 1;
    }
    assert_eq!(ran, 5);
}

/// The Sterling signing certificate expired in 2020: pinned, it verifies
/// with a warning; with validity enforced, it is refused.
#[test]
fn expired_partner_certificate_warns_or_is_refused() {
    let (headers, body) = split_capture(&read_vector("sb2bi_signed_cmp.msg"));
    let lenient = ReceiveSettings {
        partner_certs: vec![cert("cert_sb2bi_public.pem")],
        ..ReceiveSettings::default()
    };
    let opened = unwrap::unwrap(&headers, &body, &lenient, None).expect("accepted with a warning");
    assert!(
        opened.warnings.iter().any(|w| w.contains("validity")),
        "{:?}",
        opened.warnings
    );
    let strict = ReceiveSettings {
        enforce_cert_validity: true,
        ..lenient
    };
    let err = unwrap::unwrap(&headers, &body, &strict, None).expect_err("expired cert refused");
    assert_eq!(err.modifier(), ErrorModifier::AuthenticationFailed, "{err}");
}

#[test]
fn wrong_partner_certificate_fails_integrity() {
    let settings = ReceiveSettings {
        partner_certs: vec![cert("cert_sb2bi_public.pem")],
        ..mendelson_settings()
    };
    let (headers, body) = split_capture(&read_vector("mecas2_signed.as2"));
    let err = unwrap::unwrap(&headers, &body, &settings, None).expect_err("wrong signer refused");
    assert_eq!(err.modifier(), ErrorModifier::IntegrityCheckFailed, "{err}");
}

#[test]
fn wrong_decryption_key_fails_decryption() {
    let other = atom_connectors::keys::generate(
        "not-the-receiver",
        atom_connectors::keys::KeyKind::Rsa(2048),
        30,
    )
    .expect("key");
    let settings = ReceiveSettings {
        decryption_keys: vec![other],
        ..mendelson_settings()
    };
    let (headers, body) = split_capture(&read_vector("mecas2_encrypted.as2"));
    let err = unwrap::unwrap(&headers, &body, &settings, None).expect_err("wrong key refused");
    assert_eq!(err.modifier(), ErrorModifier::DecryptionFailed, "{err}");
    assert!(err.message().contains("3des"), "{err}");
}

#[test]
fn policy_requires_signature_and_encryption() {
    let (headers, body) = split_capture(&read_vector("mecas2_encrypted.as2"));
    let settings = ReceiveSettings {
        require_signed: true,
        ..mendelson_settings()
    };
    let err = unwrap::unwrap(&headers, &body, &settings, None).expect_err("unsigned refused");
    assert_eq!(err.modifier(), ErrorModifier::InsufficientMessageSecurity);
    let (headers, body) = split_capture(&read_vector("mecas2_signed.as2"));
    let settings = ReceiveSettings {
        require_encrypted: true,
        ..mendelson_settings()
    };
    let err = unwrap::unwrap(&headers, &body, &settings, None).expect_err("unencrypted refused");
    assert_eq!(err.modifier(), ErrorModifier::InsufficientMessageSecurity);
}

/// IBM Sterling B2Bi: compressed inside multipart/signed (sha1). pyas2-lib
/// skips it. It verifies once the signed part's header lines are ended with
/// CRLF and its binary body is left alone: the capture turned CRLF into LF.
#[test]
fn sterling_compressed_signed_verifies_with_crlf_headers() {
    let settings = ReceiveSettings {
        partner_certs: vec![cert("cert_sb2bi_public.pem")],
        ..ReceiveSettings::default()
    };
    let (headers, body) = split_capture(&read_vector("sb2bi_signed_cmp.msg"));
    let opened = unwrap::unwrap(&headers, &body, &settings, None).expect("Sterling vector opens");
    let sig = opened.signature.as_ref().expect("signed");
    assert_eq!(sig.digest, Some(MicAlg::Sha1));
    assert_eq!(sig.canonicalization, Canonicalization::CrlfHeaders);
    assert_eq!(opened.compression, Some(Compression::BeforeSigning));
    assert_eq!(opened.mic.value, "nZlzT7DuLh1J6ijDrDTkByY6WSM=");
    assert_eq!(opened.payload.len(), 2247);
    assert!(opened.payload.starts_with(b"ISA*00*"), "X12 interchange");
    assert!(opened.payload.ends_with(b"IEA*1*000000002~"));
    assert_eq!(opened.file_name.as_deref(), Some("Mclane_850_494457167"));
    assert!(opened
        .content_type
        .eq_ignore_ascii_case("Application/EDI-X12"));
}

/// Contrary to the vectors README, this receipt was not signed with the key
/// of cert_mecas2_public.pem but with an older Mendelson test key
/// ("CN=mecas2", 2016-2017) whose certificate travels inside the signature.
/// A receiver pinning cert_mecas2_public.pem must refuse it; pinning the
/// embedded certificate (extracted by the openssl CLI) it verifies.
#[test]
fn mendelson_signed_mdn_verifies_with_its_signing_certificate_only() {
    let (headers, body) = split_capture(&read_vector("mecas2_signed.mdn"));
    let content_type = headers
        .get("content-type")
        .expect("content-type")
        .to_string();
    let listed = [cert("cert_mecas2_public.pem")];
    let err = mdn::parse(&content_type, &body, MdnTrust::Verify(&listed))
        .expect_err("signed by another key");
    assert_eq!(err.modifier(), ErrorModifier::IntegrityCheckFailed);

    let embedded = embedded_signer_certificate(&content_type, &body);
    let parsed = mdn::parse(&content_type, &body, MdnTrust::Verify(&[embedded]))
        .expect("verifies with its signer");
    assert!(parsed.signed);
    let verified = parsed.verified.expect("verified");
    assert!(
        verified.signer_subject.contains("CN=mecas2"),
        "{}",
        verified.signer_subject
    );
    assert_eq!(parsed.disposition, Disposition::Processed);
    assert!(parsed.original_message_id.is_some());
    assert!(parsed.received_mic.is_some());
}

/// Extracts the certificates a CMS signature carries with `openssl cms`.
fn embedded_signer_certificate(content_type: &str, body: &[u8]) -> openssl::x509::X509 {
    let outer = atom_connectors::as2::mime::ContentType::parse(content_type).expect("content type");
    let parts = atom_connectors::as2::signed::split(&outer, body).expect("multipart/signed");
    let dir = tempfile::tempdir().expect("tempdir");
    let sig = dir.path().join("sig.der");
    let out = dir.path().join("certs.pem");
    std::fs::write(&sig, &parts.signature_der).expect("write");
    let status = std::process::Command::new("openssl")
        .args(["cms", "-cmsout", "-inform", "DER", "-in"])
        .arg(&sig)
        .args(["-certsout"])
        .arg(&out)
        .output()
        .expect("openssl runs");
    assert!(
        status.status.success(),
        "openssl cms: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    atom_connectors::keys::load_certificates(&out)
        .expect("certificate")
        .remove(0)
}

#[test]
fn mendelson_unsigned_error_mdn_parses() {
    let (headers, body) = split_capture(&read_vector("mecas2_unsigned.mdn"));
    let parsed = mdn::parse(
        headers.get("content-type").expect("content-type"),
        &body,
        MdnTrust::Skip,
    )
    .expect("parses");
    assert!(!parsed.signed);
    assert_eq!(
        parsed.disposition,
        Disposition::Error(ErrorModifier::AuthenticationFailed)
    );
    assert!(!parsed.disposition.is_positive());
}

#[test]
fn sterling_signed_mdn_verifies() {
    let (headers, body) = split_capture(&read_vector("sb2bi_signed.mdn"));
    let certs = [cert("cert_sb2bi_public.pem")];
    let parsed = mdn::parse(
        headers.get("content-type").expect("content-type"),
        &body,
        MdnTrust::Verify(&certs),
    )
    .expect("Sterling MDN verifies");
    assert!(parsed.verified.is_some());
    assert!(
        parsed.disposition.is_positive(),
        "{:?}",
        parsed.disposition_raw
    );
    eprintln!(
        "sterling MDN: {:?} mic={:?} via {:?}",
        parsed.disposition_raw,
        parsed.received_mic,
        parsed.verified.map(|v| v.digest)
    );
}
