//! The receive path of the running Atom, driven over HTTP with the real
//! messages Mendelson AS2 wrote (shared/interop), and its refusals.

mod common;

use atom_connectors::as2::error::ErrorModifier;
use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use common::*;

const SIGNED_MIC: &str = "G6PhshLOERWJEIfypIh6Q3sno6cBUWJBDky1igJvDMo=";
const COMPRESSED_MIC: &str = "14SZThwSYUH4aPdkglDwdRFnKUFmgjKsJFZWcSXBTww=";

fn receiver_cert() -> openssl::x509::X509 {
    let pair = atom_connectors::keys::pkcs12_from_bytes(
        &std::fs::read(interop("cert_test.p12")).expect("p12"),
        "test",
        "p12",
    )
    .expect("opens");
    pair.cert
}

fn mendelson_site() -> Site {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", MENDELSON_BUNDLE);
    site
}

fn parse_mdn(response: &Response) -> mdn::ParsedMdn {
    let content_type = response.header("content-type").expect("MDN content type");
    mdn::parse(
        content_type,
        &response.body,
        MdnTrust::Verify(&[receiver_cert()]),
    )
    .expect("MDN parses and its signature verifies")
}

#[test]
fn mendelson_messages_get_signed_receipts_with_the_right_mic_and_are_stored() {
    let site = mendelson_site();
    let atom = site.start();
    let cases = [
        ("mecas2_signed.as2", SIGNED_MIC, "/as2"),
        ("mecas2_compressed.as2", COMPRESSED_MIC, "/as2/acme"),
        ("mecas2_signed_encrypted.as2", SIGNED_MIC, "/as2/acme.prod"),
        (
            "mecas2_compressed_signed_encrypted.as2",
            COMPRESSED_MIC,
            "/as2/acme",
        ),
    ];
    for (file, mic, path) in cases {
        let (mut headers, body) = capture(file);
        request_signed_mdn(&mut headers);
        let response = post(atom.http(), path, &headers, &body);
        assert_eq!(response.status, 200, "{file}: {}", response.text());
        let receipt = parse_mdn(&response);
        assert_eq!(receipt.disposition, Disposition::Processed, "{file}");
        let received = receipt.received_mic.expect("MIC in receipt");
        assert_eq!(
            (received.value.as_str(), received.spelling.as_str()),
            (mic, "sha256"),
            "{file}"
        );
        let message_id = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("message-id"))
            .map(|(_, v)| v.clone());
        assert_eq!(receipt.original_message_id, message_id, "{file}");
    }
    // Unsigned, encrypted, no signed receipt asked: an unsigned receipt.
    let (mut headers, body) = capture("mecas2_encrypted.as2");
    set_header(
        &mut headers,
        "Disposition-Notification-To",
        "edi@example.com",
    );
    let response = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("multipart/report")),
        "{:?}",
        response.headers
    );

    let payload = std::fs::read(interop("payload.txt")).expect("payload");
    let messages = site.messages();
    assert_eq!(messages.len(), 5);
    for m in &messages {
        assert_eq!(m["disposition"], "processed", "{m}");
        assert_eq!(m["listener"], "mendelson");
        assert_eq!(m["file_name"], "payload.txt");
        assert_eq!(site.document(m, "payload"), payload, "stored payload bytes");
        let raw = site.document(m, "raw");
        let size = m["request_size"].as_u64().expect("request_size") as usize;
        assert!(
            raw.len() > size && raw[..raw.len() - size].ends_with(b"\r\n\r\n"),
            "raw request: its headers, a blank line, the body as received"
        );
    }
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["encryption"] == "3des")
            .count(),
        3
    );
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["compression"] == "before-signing")
            .count(),
        2
    );
    assert_eq!(atom.stop(), Some(0), "SIGTERM exits 0");
}

#[test]
fn a_resent_message_gets_the_identical_receipt_and_is_not_processed_again() {
    let site = mendelson_site();
    let atom = site.start();
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    let first = post(atom.http(), "/as2", &headers, &body);
    let second = post(atom.http(), "/as2", &headers, &body);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body, second.body, "byte-identical MDN");
    assert_eq!(first.header("message-id"), second.header("message-id"));
    assert_eq!(
        site.messages().len(),
        1,
        "the duplicate is not logged or processed again"
    );
    // A new Message-ID is a new message.
    set_header(&mut headers, "Message-ID", "<another-one@mecas2>");
    let third = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(third.status, 200);
    assert_ne!(third.body, first.body);
    assert_eq!(site.messages().len(), 2);
}

#[test]
fn missing_headers_unknown_routes_and_partners_are_refused_and_nothing_is_stored() {
    let site = mendelson_site();
    let atom = site.start();
    let (headers, body) = capture("mecas2_signed.as2");
    for missing in ["AS2-From", "AS2-To", "Message-ID", "Content-Type"] {
        let reduced: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(missing))
            .cloned()
            .collect();
        let response = post(atom.http(), "/as2", &reduced, &body);
        assert_eq!(response.status, 400, "{missing}");
        assert!(response.text().contains(missing), "{}", response.text());
    }
    for path in ["/as2/other", "/as2/acme.dev"] {
        assert_eq!(
            post(atom.http(), path, &headers, &body).status,
            404,
            "{path}"
        );
    }
    // Unknown partner without an MDN request: a readable 403.
    let mut stranger = headers.clone();
    stranger.retain(|(n, _)| {
        !n.to_ascii_lowercase()
            .starts_with("disposition-notification")
    });
    set_header(&mut stranger, "AS2-From", "\"Stranger Inc\"");
    let response = post(atom.http(), "/as2", &stranger, &body);
    assert_eq!(response.status, 403);
    assert!(
        response.text().contains("Stranger Inc"),
        "{}",
        response.text()
    );
    // With a synchronous MDN request: a negative MDN, authentication-failed.
    request_signed_mdn(&mut stranger);
    let response = post(atom.http(), "/as2", &stranger, &body);
    assert_eq!(response.status, 200);
    let receipt = mdn::parse(
        response.header("content-type").expect("ct"),
        &response.body,
        MdnTrust::Skip,
    )
    .expect("MDN");
    assert_eq!(
        receipt.disposition,
        Disposition::Error(ErrorModifier::AuthenticationFailed)
    );
    assert!(site.messages().is_empty(), "nothing stored as received");
}

#[test]
fn a_message_we_cannot_open_gets_the_right_negative_receipt() {
    let site = Site::new("");
    site.import_interop_keys();
    site.atom_ok(&["certs", "generate", "other-key"]);
    site.deploy(
        "mendelson",
        "start:\n  as2:\n    as2_from:\n      id: mecas2\n      signing_certificate: keystore:mecas2\n    as2_to:\n      id: pyas2lib\n      decryption_key: keystore:other-key\n      mdn_signing_key: keystore:receiver\n    security:\n      require_signed: true\n",
    );
    let atom = site.start();
    let (mut headers, body) = capture("mecas2_encrypted.as2");
    request_signed_mdn(&mut headers);
    let receipt = parse_mdn(&post(atom.http(), "/as2", &headers, &body));
    assert_eq!(
        receipt.disposition,
        Disposition::Error(ErrorModifier::DecryptionFailed)
    );
    // An unsigned message violates require_signed.
    let (mut plain_headers, _) = capture("mecas2_signed.as2");
    request_signed_mdn(&mut plain_headers);
    set_header(
        &mut plain_headers,
        "Content-Type",
        "application/edi-consent",
    );
    set_header(&mut plain_headers, "Message-ID", "<x2@mecas2>");
    let receipt = parse_mdn(&post(atom.http(), "/as2", &plain_headers, b"UNB+UNOA:2+X'"));
    assert_eq!(
        receipt.disposition,
        Disposition::Error(ErrorModifier::InsufficientMessageSecurity)
    );
    // Without an MDN request a refusal is a 400 with the reason.
    set_header(&mut plain_headers, "Message-ID", "<x3@mecas2>");
    plain_headers.retain(|(n, _)| {
        !n.to_ascii_lowercase()
            .starts_with("disposition-notification")
    });
    let response = post(atom.http(), "/as2", &plain_headers, b"UNB+UNOA:2+X'");
    assert_eq!(response.status, 400);
    assert!(
        response.text().contains("insufficient-message-security"),
        "{}",
        response.text()
    );
    let messages = site.messages();
    assert_eq!(messages.len(), 3, "refusals are logged for the operator");
    assert!(
        messages
            .iter()
            .all(|m| m["error"].is_string() && m["payload_path"].is_null()),
        "{messages:?}"
    );
}

/// `atom messages show|download` and `atom executions download` serve what
/// the store keeps, wherever it keeps it: the payload byte for byte, the
/// raw request ending with the body as sent, the MDN as sent, the
/// documents an execution kept; unknown IDs and parts get clear errors.
#[test]
fn stored_documents_download_through_the_cli() {
    let site = Site::new("");
    site.deploy(
        "acme",
        &format!(
            "{}steps:\n  - disk:\n      directory: out\n      file_name: \"{{execution_id}}.edi\"\n",
            plain_start("ACME", "US")
        ),
    );
    let atom = site.start();
    // Sends a message; its answer and its row in the log.
    let store = |message_id: &str, body: &[u8]| {
        let response = post(
            atom.http(),
            "/as2",
            &plain_headers("ACME", "US", message_id),
            body,
        );
        assert_eq!(response.status, 200);
        let row = site
            .messages()
            .into_iter()
            .find(|m| m["message_id"] == message_id)
            .expect("stored");
        (response, row)
    };
    let body = b"ISA*00*download test~IEA*1*1~".to_vec();
    let (response, m) = store("<dl-1@acme>", &body);
    let m = &m;
    assert_eq!(site.document(m, "payload"), body);
    assert!(site.document(m, "raw").ends_with(&body));
    let mdn = site.document(m, "mdn");
    let mdn_text = String::from_utf8_lossy(&mdn);
    assert!(mdn_text.contains("multipart/report"), "{mdn_text}");
    assert!(mdn_text.contains("<dl-1@acme>"), "{mdn_text}");
    assert_eq!(
        response.body,
        mdn[mdn
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers")
            + 4..]
    );

    let id = m["id"].as_i64().expect("id").to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&site.atom_ok(&["messages", "show", &id, "--json"])).expect("JSON");
    assert_eq!(shown["message_id"], "<dl-1@acme>");
    assert!(site
        .atom_ok(&["messages", "show", &id])
        .contains("processed"));
    let out = site.path().join("payload.out");
    site.atom_ok(&[
        "messages",
        "download",
        &id,
        "payload",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(std::fs::read(&out).expect("written"), body);

    let executions = site.wait_for_executions(1);
    let execution = executions[0]["id"]
        .as_str()
        .expect("execution id")
        .to_string();
    let kept = site.atom(&["executions", "download", &execution, "1"]);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert_eq!(kept.stdout, body, "the document the execution kept");

    for (args, says) in [
        (
            vec!["messages", "download", "999999", "payload"],
            "no message 999999",
        ),
        (vec!["messages", "show", "999999"], "no message 999999"),
        (
            vec!["executions", "download", &execution, "2"],
            "kept 1 document(s)",
        ),
        (
            vec!["executions", "download", "execution-nope", "1"],
            "no execution execution-nope",
        ),
    ] {
        let out = site.atom(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let bad_part = site.atom(&["messages", "download", &id, "body"]);
    assert_eq!(bad_part.status.code(), Some(2), "a usage error");

    // A document past the size kept in the database is a file, streamed.
    let large: Vec<u8> = (0..3_000_000u32).map(|i| b'A' + (i % 23) as u8).collect();
    let (_, m) = store("<dl-2@acme>", &large);
    let m = &m;
    let id = m["id"].as_i64().expect("id").to_string();
    let out = site.path().join("large.out");
    site.atom_ok(&[
        "messages",
        "download",
        &id,
        "payload",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        std::fs::read(&out).expect("written") == large,
        "3 MB payload byte for byte"
    );
    assert!(site.document(m, "raw").ends_with(&large));
}
