//! The bodies of the fuzz targets of `atom-connectors`.
//!
//! Every function here takes arbitrary bytes, drives one family of parsers
//! that sees network input, and panics only when an invariant breaks: a
//! parser panicked, returned an error of a kind that makes no sense for the
//! input (an MDN would then report the wrong disposition modifier), or a
//! round trip that must hold did not.
//!
//! The same file is compiled into `connectors/tests/hostile_inputs.rs`
//! (through `#[path]`), so plain `cargo test` on stable runs these bodies
//! over a fixed corpus; `fuzz/run-briefly` runs them under libFuzzer.

use std::sync::OnceLock;

use atom_connectors::as2::ber;
use atom_connectors::as2::cms::{self, ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::compress;
use atom_connectors::as2::error::ErrorModifier;
use atom_connectors::as2::headers::{self, DispositionNotificationOptions, Headers, MicAlg};
use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use atom_connectors::as2::mic::Mic;
use atom_connectors::as2::mime::{self, Entity};
use atom_connectors::as2::signed;
use atom_connectors::as2::stream;
use atom_connectors::as2::unwrap::{self, ReceiveSettings};
use atom_connectors::keys::{self, KeyKind};
use atom_connectors::{As2Error, ErrorKind};

/// The decompression limit the fuzz targets apply: small, so a generated
/// zip bomb costs nothing, yet far above any input libFuzzer generates.
pub const FUZZ_DECOMPRESS_LIMIT: u64 = 1 << 20;

/// MIME nesting the targets follow (multipart inside multipart).
const MAX_MIME_DEPTH: usize = 4;

/// Keys and the receive agreement used by the CMS and MDN bodies.
pub struct Fixture {
    /// The agreement `unwrap` applies: our decryption keys, pinned partner certificates.
    pub settings: ReceiveSettings,
    /// Signs wrapped inputs; its certificate is in `settings.partner_certs`.
    pub signer: KeyPair,
    /// Encrypted wrapped inputs go to this certificate (the first decryption key's).
    pub recipient: openssl::x509::X509,
}

impl Fixture {
    /// Generates a receiver and a signer key (RSA 1024: fast enough to keep
    /// the fuzzer's executions per second up; these keys protect nothing).
    pub fn generate() -> Fixture {
        let _ = atom_connectors::crypto_init::init();
        let receiver = keys::generate("atom-fuzz receiver", KeyKind::Rsa(1024), 3650)
            .expect("generating the receiver key");
        let signer = keys::generate("atom-fuzz signer", KeyKind::Rsa(1024), 3650)
            .expect("generating the signer key");
        Fixture::new(vec![receiver], signer, Vec::new())
    }

    /// A fixture around given keys: `decryption_keys[0]` receives the
    /// encrypted wrapped inputs; `signer` and `extra_certs` are pinned.
    pub fn new(
        decryption_keys: Vec<KeyPair>,
        signer: KeyPair,
        extra_certs: Vec<openssl::x509::X509>,
    ) -> Fixture {
        let recipient = decryption_keys
            .first()
            .expect("at least one decryption key")
            .cert
            .clone();
        let mut partner_certs = vec![signer.cert.clone()];
        partner_certs.extend(extra_certs);
        let settings = ReceiveSettings {
            decryption_keys,
            partner_certs,
            max_decompressed_size: FUZZ_DECOMPRESS_LIMIT,
            ..ReceiveSettings::default()
        };
        Fixture {
            settings,
            signer,
            recipient,
        }
    }
}

/// The fixture of the fuzz targets, generated once per process (never in
/// the hot loop).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::generate)
}

// ---------------------------------------------------------------------------
// Invariants shared by the bodies.

/// Asserts that an error has one of the kinds this operation may produce.
pub fn expect_kind(what: &str, err: &As2Error, allowed: &[ErrorKind]) {
    assert!(
        allowed.contains(&err.kind()),
        "{what}: error of unexpected kind {:?} (allowed {allowed:?}): {err}",
        err.kind()
    );
    assert!(!err.message().is_empty(), "{what}: error without a message");
}

/// What a sanitised file name must look like.
pub fn check_file_name(name: &str) {
    assert!(!name.is_empty(), "empty file name");
    assert!(
        !name.contains(['/', '\\']),
        "file name {name:?} has a path separator"
    );
    assert!(
        name != "." && name != "..",
        "file name {name:?} is a directory reference"
    );
    assert!(
        !name.starts_with('.'),
        "file name {name:?} starts with a dot"
    );
    assert!(
        !name.chars().any(char::is_control),
        "file name {name:?} has a control character"
    );
    assert!(!name.contains(':'), "file name {name:?} has a colon");
    assert!(
        name.chars().count() <= 255,
        "file name of {} characters",
        name.chars().count()
    );
}

/// True if `inner` lies within `outer` (same allocation, by address).
fn is_within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

/// A multipart boundary taken from the input: its first line without the
/// leading `--` (and a closing `--`), as a delimiter line would carry it.
pub fn derive_boundary(data: &[u8]) -> String {
    let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"--").unwrap_or(line);
    let line = line.strip_suffix(b"--").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches([' ', '\t']);
    if text.is_empty() {
        "----=_Part_fuzz".to_string()
    } else {
        text.chars().take(100).collect()
    }
}

/// The first line of the input (a header value) and what follows it.
fn first_line(data: &[u8]) -> (String, &[u8]) {
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line = &data[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (
        String::from_utf8_lossy(line).into_owned(),
        data.get(end + 1..).unwrap_or(&[]),
    )
}

// ---------------------------------------------------------------------------
// mime_entity

/// MIME: `parse_entity`, `ContentType::parse`, `Parameterized::parse`,
/// `split_multipart` (boundary from the Content-Type and from the input's
/// first line), `decode_transfer_encoding`, `parse_field_block`,
/// `disposition_file_name` and `sanitize_file_name`; multiparts are
/// followed `MAX_MIME_DEPTH` levels deep.
pub fn mime_entity(data: &[u8]) {
    match mime::parse_entity(data) {
        Ok(entity) => {
            check_entity(data, &entity);
            mime_layers(&entity, 0);
        }
        Err(e) => expect_kind("parse_entity", &e, &[ErrorKind::Malformed]),
    }
    let text = String::from_utf8_lossy(data);
    let (line, _) = first_line(data);
    for value in [line.as_str(), text.as_ref()] {
        header_value(value);
    }
    split_checked(data, &derive_boundary(data));
    for encoding in [
        "base64",
        "quoted-printable",
        "7bit",
        "binary",
        " BASE64 ",
        "x-uuencode",
        "",
    ] {
        if let Err(e) = mime::decode_transfer_encoding(encoding, data) {
            expect_kind(
                "decode_transfer_encoding",
                &e,
                &[ErrorKind::Malformed, ErrorKind::Unsupported],
            );
        }
    }
    match mime::parse_field_block(data) {
        Ok(fields) => assert!(
            fields.iter().all(|(n, _)| !n.is_empty()),
            "empty field name"
        ),
        Err(e) => expect_kind("parse_field_block", &e, &[ErrorKind::Malformed]),
    }
    let _ = mime::to_crlf(data);
}

/// A header value as Content-Type, as Content-Disposition, as a file name.
fn header_value(value: &str) {
    match mime::Parameterized::parse(value) {
        Ok(p) => {
            assert_eq!(
                p.value,
                p.value.to_ascii_lowercase(),
                "token not lowercased"
            );
            for (name, _) in &p.params {
                assert!(!name.is_empty(), "empty parameter name in {value:?}");
                assert_eq!(
                    *name,
                    name.to_ascii_lowercase(),
                    "parameter name not lowercased"
                );
            }
        }
        Err(e) => expect_kind("Parameterized::parse", &e, &[ErrorKind::Malformed]),
    }
    match mime::ContentType::parse(value) {
        Ok(ct) => {
            assert!(
                ct.mime_type.contains('/'),
                "content type {:?} without '/'",
                ct.mime_type
            );
            let _ = (
                ct.is_multipart(),
                ct.is_pkcs7_mime(),
                ct.is_pkcs7_signature(),
                ct.param("boundary"),
            );
        }
        Err(e) => expect_kind("ContentType::parse", &e, &[ErrorKind::Malformed]),
    }
    if let Some(name) = mime::disposition_file_name(value) {
        check_file_name(&name);
    }
    if let Some(name) = mime::sanitize_file_name(value) {
        check_file_name(&name);
    }
}

fn check_entity(raw: &[u8], entity: &Entity<'_>) {
    assert!(
        raw.starts_with(entity.header_block),
        "header block is not a prefix of the entity"
    );
    assert!(
        raw.ends_with(entity.body),
        "body is not a suffix of the entity"
    );
    assert!(
        entity.header_block.len() + entity.body.len() <= raw.len(),
        "header block and body overlap"
    );
    assert!(
        entity.header_block.len() <= mime::MAX_HEADER_BLOCK,
        "header block over the limit was accepted"
    );
    assert!(
        entity.headers.len() <= mime::MAX_HEADER_FIELDS,
        "{} header fields accepted",
        entity.headers.len()
    );
    for (name, value) in entity.headers.iter() {
        assert!(
            !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c.is_control()),
            "header name {name:?}"
        );
        assert_eq!(value, value.trim(), "header value not trimmed");
    }
    let canonical = entity.with_crlf_headers();
    assert!(
        canonical.ends_with(entity.body),
        "with_crlf_headers altered the body"
    );
}

fn mime_layers(entity: &Entity<'_>, depth: usize) {
    let _ = entity.transfer_encoding();
    if let Err(e) = entity.decoded_body() {
        expect_kind(
            "decoded_body",
            &e,
            &[ErrorKind::Malformed, ErrorKind::Unsupported],
        );
    }
    if let Some(cd) = entity.headers.get("content-disposition") {
        if let Some(name) = mime::disposition_file_name(cd) {
            check_file_name(&name);
        }
    }
    let content_type = match entity.content_type() {
        Ok(ct) => ct,
        Err(e) => return expect_kind("content_type", &e, &[ErrorKind::Malformed]),
    };
    let Some(boundary) = content_type.param("boundary") else {
        return;
    };
    let Some(parts) = split_checked(entity.body, boundary) else {
        return;
    };
    if depth >= MAX_MIME_DEPTH {
        return;
    }
    for part in parts {
        match mime::parse_entity(part) {
            Ok(inner) => {
                check_entity(part, &inner);
                mime_layers(&inner, depth + 1);
            }
            Err(e) => expect_kind("parse_entity (part)", &e, &[ErrorKind::Malformed]),
        }
    }
}

/// `split_multipart`, checking that the parts are ordered, disjoint views
/// into the body.
fn split_checked<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    match mime::split_multipart(body, boundary) {
        Ok(parts) => {
            let mut previous_end = body.as_ptr() as usize;
            for part in &parts {
                assert!(is_within(body, part), "part is not a view into the body");
                if !part.is_empty() {
                    assert!(
                        part.as_ptr() as usize >= previous_end,
                        "parts overlap or are out of order"
                    );
                    previous_end = part.as_ptr() as usize + part.len();
                }
            }
            Some(parts)
        }
        Err(e) => {
            expect_kind("split_multipart", &e, &[ErrorKind::Malformed]);
            None
        }
    }
}

// ---------------------------------------------------------------------------
// cms_unwrap

/// Kinds `unwrap` may report for hostile input under [`Fixture`] settings
/// (no policy requirement, keys that load, so never `InsufficientSecurity`,
/// `Key` or `Internal`).
pub const UNWRAP_KINDS: &[ErrorKind] = &[
    ErrorKind::Malformed,
    ErrorKind::Authentication,
    ErrorKind::Decryption,
    ErrorKind::Decompression,
    ErrorKind::Integrity,
    ErrorKind::Unsupported,
];

/// The Content-Types the input is fed under, as an HTTP body.
pub fn cms_content_types(boundary: &str) -> Vec<(String, Option<&'static str>)> {
    vec![
        ("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m".into(), None),
        ("application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z".into(), None),
        ("application/x-pkcs7-mime".into(), Some("base64")),
        ("application/pkcs7-mime; smime-type=authEnveloped-data".into(), Some("binary")),
        (format!("multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{boundary}\""), None),
        ("multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha1; boundary=\"----=_Part_fuzz\"".into(), None),
    ]
}

/// The receive side with the fuzz fixture: see [`cms_unwrap_with`].
pub fn cms_unwrap(data: &[u8]) {
    cms_unwrap_with(fixture(), data)
}

/// `unwrap::unwrap` on the input as the HTTP body under several
/// Content-Types (enveloped, compressed, multipart/signed with a boundary
/// from the input), on the input as a whole captured request (headers, blank
/// line, body), and, chosen by the first byte, on the rest of the input
/// wrapped by us in one layer (encrypted to our key, signed by the pinned
/// signer, or compressed) so the layers beneath see fuzzed MIME.
pub fn cms_unwrap_with(fx: &Fixture, data: &[u8]) {
    let boundary = derive_boundary(data);
    for (content_type, encoding) in cms_content_types(&boundary) {
        let mut headers = Headers::new();
        headers.push("Content-Type", content_type);
        if let Some(encoding) = encoding {
            headers.push("Content-Transfer-Encoding", encoding);
        }
        let _ = open("unwrap (body)", fx, &headers, data);
    }
    if let Ok(capture) = mime::parse_entity(data) {
        if capture.headers.get("content-type").is_some() {
            let _ = open("unwrap (capture)", fx, &capture.headers, capture.body);
        }
    }
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let cipher = [
                ContentCipher::Aes128Cbc,
                ContentCipher::Des3,
                ContentCipher::Aes128Gcm,
            ][usize::from(selector / 4) % 3];
            let transport = if selector & 0x40 != 0 {
                KeyTransport::RsaOaep
            } else {
                KeyTransport::RsaPkcs1v15
            };
            let der = cms::encrypt(rest, &fx.recipient, cipher, transport)
                .expect("encrypting to our own certificate");
            let mut headers = Headers::new();
            headers.push(
                "Content-Type",
                "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
            );
            if let Err(e) = open("unwrap (encrypted by us)", fx, &headers, &der) {
                assert!(
                    !e.message().contains("no configured key opens"),
                    "our own envelope did not open: {e}"
                );
            }
        }
        1 => {
            let digest = MicAlg::ALL[usize::from(selector / 4) % MicAlg::ALL.len()];
            let built = signed::build(
                rest,
                &fx.signer,
                digest,
                SignatureScheme::Pkcs1v15,
                digest.rfc5751_name(),
            )
            .expect("signing with our own key");
            let mut headers = Headers::new();
            headers.push("Content-Type", built.content_type);
            if let Err(e) = open("unwrap (signed by us)", fx, &headers, &built.body) {
                // Beneath our signature nothing can be verified again (a
                // second signature is refused as Unsupported).
                assert_ne!(
                    e.kind(),
                    ErrorKind::Integrity,
                    "our own signature did not verify: {e}"
                );
            }
        }
        2 => {
            let der = compress::compress(rest).expect("compressing");
            let mut headers = Headers::new();
            headers.push(
                "Content-Type",
                "application/pkcs7-mime; smime-type=compressed-data",
            );
            headers.push("Content-Transfer-Encoding", "binary");
            if let Err(e) = open("unwrap (compressed by us)", fx, &headers, &der) {
                assert!(
                    !e.message().contains("invalid CompressedData"),
                    "our own CompressedData did not open: {e}"
                );
            }
        }
        _ => {}
    }
}

fn open(what: &str, fx: &Fixture, headers: &Headers, body: &[u8]) -> Result<(), As2Error> {
    let options = headers
        .get("disposition-notification-options")
        .map(DispositionNotificationOptions::parse);
    let chosen = options
        .as_ref()
        .and_then(DispositionNotificationOptions::choose_mic_alg);
    let in_memory = unwrap::unwrap(headers, body, &fx.settings, chosen.as_ref());
    // The streaming pipeline (large requests) on the same bytes: it may
    // never open what the in-memory one refuses, and what both open must
    // be the same payload with the same MIC.
    let streamed = open_streaming(headers, body, &fx.settings, chosen.as_ref());
    match (&in_memory, &streamed) {
        (Ok(memory), Ok((opened, payload))) => {
            assert!(
                memory.payload.as_slice() == payload.as_slice(),
                "{what}: streamed payload differs"
            );
            assert_eq!(memory.mic, opened.mic, "{what}: streamed MIC differs");
        }
        (Err(e), Ok(_)) => panic!("{what}: the streaming unwrap opens what memory refuses: {e}"),
        (_, Err(e)) => expect_kind(&format!("{what} (streamed)"), e, UNWRAP_KINDS),
    }
    match in_memory {
        Ok(opened) => {
            if let Some(name) = &opened.file_name {
                check_file_name(name);
            }
            assert!(!opened.mic.value.is_empty(), "{what}: empty MIC");
            assert!(
                opened.payload.len() as u64 <= FUZZ_DECOMPRESS_LIMIT.max(body.len() as u64),
                "{what}: payload larger than possible"
            );
            Ok(())
        }
        Err(e) => {
            expect_kind(what, &e, UNWRAP_KINDS);
            Err(e)
        }
    }
}

/// [`stream::unwrap_file`] on `body` written to an anonymous file.
fn open_streaming(
    headers: &Headers,
    body: &[u8],
    settings: &ReceiveSettings,
    chosen: Option<&headers::ChosenMicAlg>,
) -> Result<(unwrap::Opened, Vec<u8>), As2Error> {
    use std::io::{Read, Seek, Write};
    let mut spooled = tempfile::tempfile().expect("temp file");
    spooled.write_all(body).expect("spool");
    let source = stream::Source::whole(std::sync::Arc::new(spooled)).expect("source");
    let mut payload = tempfile::tempfile().expect("temp file");
    let opened = stream::unwrap_file(headers, &source, settings, chosen, &payload)?;
    let mut bytes = Vec::new();
    payload.rewind().expect("rewind");
    payload.read_to_end(&mut bytes).expect("read payload");
    Ok((opened, bytes))
}

// ---------------------------------------------------------------------------
// ber

/// ASN.1: `ber::read` and a walk of the whole tree (`children`, `octets`,
/// `oid` at every node), `content_info`, `envelope_algorithms`,
/// `compress::decompress` and `inflate_limited` with a 64 KiB limit, and
/// the round trips `der` → `read`, `der_oid` → `oid`, `compress` → `decompress`.
pub fn ber(data: &[u8]) {
    const LIMIT: u64 = 64 * 1024;
    match ber::read(data) {
        Ok((tlv, rest)) => {
            assert!(
                data.ends_with(rest) && is_within(data, tlv.content),
                "read returned bytes outside its input"
            );
            walk(data, &tlv, 0);
        }
        Err(e) => expect_kind("ber::read", &e, &[ErrorKind::Malformed]),
    }
    if let Err(e) = ber::content_info(data) {
        expect_kind("content_info", &e, &[ErrorKind::Malformed]);
    }
    match ber::envelope_algorithms(data) {
        Ok(algs) => {
            let _ = (algs.content_encryption, algs.key_transport);
        }
        Err(e) => expect_kind("envelope_algorithms", &e, &[ErrorKind::Malformed]),
    }
    match compress::decompress(data, LIMIT) {
        Ok(out) => assert!(out.len() as u64 <= LIMIT, "decompress passed its limit"),
        Err(e) => expect_kind("decompress", &e, &[ErrorKind::Decompression]),
    }
    match compress::inflate_limited(data, LIMIT) {
        Ok(out) => assert!(
            out.len() as u64 <= LIMIT,
            "inflate_limited passed its limit"
        ),
        Err(e) => expect_kind("inflate_limited", &e, &[ErrorKind::Decompression]),
    }
    // Round trips.
    if let Some((&identifier, content)) = data.split_first() {
        // A low tag of 0x1f announces a multi-byte tag, which der() does not write.
        let identifier = if identifier & 0x1f == 0x1f {
            identifier & !0x01
        } else {
            identifier
        };
        let encoded = ber::der(identifier, content);
        let (tlv, rest) = ber::read(&encoded).expect("der() output reads back");
        assert!(rest.is_empty(), "der() output has trailing bytes");
        assert_eq!(tlv.content, content, "der() content changed");
        assert_eq!(tlv.tag, u32::from(identifier & 0x1f));
        assert_eq!(tlv.constructed, identifier & 0x20 != 0);
        assert_eq!(tlv.class, identifier >> 6);
    }
    let as_oid = ber::der(ber::ID_OID, data);
    if let Ok(dotted) = ber::read(&as_oid).and_then(|(tlv, _)| tlv.oid()) {
        let again = ber::der_oid(&dotted);
        let reread = ber::read(&again).and_then(|(tlv, _)| tlv.oid());
        assert_eq!(
            reread.as_deref(),
            Ok(dotted.as_str()),
            "der_oid({dotted}) does not read back"
        );
        let _ = ber::algorithm_name(&dotted);
    }
    if data.len() <= 16 * 1024 {
        let der = compress::compress(data).expect("compressing");
        let out =
            compress::decompress(&der, data.len() as u64).expect("our CompressedData decompresses");
        assert_eq!(out, data, "compress/decompress round trip");
    }
}

fn walk(data: &[u8], tlv: &ber::Tlv<'_>, depth: usize) {
    assert!(
        is_within(data, tlv.content),
        "element content outside the input"
    );
    if let Err(e) = tlv.oid() {
        expect_kind("oid", &e, &[ErrorKind::Malformed]);
    }
    if let Err(e) = tlv.octets() {
        expect_kind("octets", &e, &[ErrorKind::Malformed]);
    }
    match tlv.children() {
        Ok(children) if tlv.constructed && depth < 64 => {
            for child in &children {
                walk(data, child, depth + 1);
            }
        }
        Ok(_) => {}
        Err(e) => expect_kind("children", &e, &[ErrorKind::Malformed]),
    }
}

// ---------------------------------------------------------------------------
// mdn_parse

/// Kinds `mdn::parse` may report.
pub const MDN_KINDS: &[ErrorKind] = &[
    ErrorKind::Malformed,
    ErrorKind::Unsupported,
    ErrorKind::Integrity,
];

/// Receipts with the fuzz fixture: see [`mdn_parse_with`].
pub fn mdn_parse(data: &[u8]) {
    mdn_parse_with(fixture(), data)
}

/// `mdn::parse` with `MdnTrust::Skip` and `MdnTrust::Verify` (the pinned
/// signer): on the input as a captured response (headers, blank line,
/// body), on its first line as Content-Type and the rest as body, on the
/// whole input under multipart/report with a boundary from the input; and,
/// chosen by the first byte, the rest signed by the pinned signer so that
/// verification passes and the report beneath is parsed.
pub fn mdn_parse_with(fx: &Fixture, data: &[u8]) {
    let trusted = &fx.settings.partner_certs;
    let mut cases: Vec<(String, &[u8])> = Vec::new();
    if let Ok(capture) = mime::parse_entity(data) {
        if let Some(ct) = capture.headers.get("content-type") {
            cases.push((ct.to_string(), capture.body));
        }
    }
    let (line, rest) = first_line(data);
    cases.push((line, rest));
    cases.push((
        format!(
            "multipart/report; report-type=disposition-notification; boundary=\"{}\"",
            derive_boundary(data)
        ),
        data,
    ));
    for (content_type, body) in &cases {
        for trust in [MdnTrust::Skip, MdnTrust::Verify(trusted)] {
            let _ = check_mdn("mdn::parse", content_type, body, trust);
        }
    }
    if let Some((&selector, rest)) = data.split_first() {
        if selector % 4 == 3 {
            let built = signed::build(
                rest,
                &fx.signer,
                MicAlg::Sha256,
                SignatureScheme::Pkcs1v15,
                "sha-256",
            )
            .expect("signing");
            if let Err(e) = check_mdn(
                "mdn::parse (signed by us)",
                &built.content_type,
                &built.body,
                MdnTrust::Verify(trusted),
            ) {
                assert_ne!(
                    e.kind(),
                    ErrorKind::Integrity,
                    "our own signature did not verify: {e}"
                );
            }
        }
    }
    if let Err(e) = Disposition::parse(&String::from_utf8_lossy(data)) {
        expect_kind("Disposition::parse", &e, &[ErrorKind::Malformed]);
    }
}

fn check_mdn(
    what: &str,
    content_type: &str,
    body: &[u8],
    trust: MdnTrust<'_>,
) -> Result<(), As2Error> {
    match mdn::parse(content_type, body, trust) {
        Ok(parsed) => {
            assert_eq!(
                parsed.verified.is_some(),
                parsed.signed && matches!(trust, MdnTrust::Verify(_)),
                "{what}: verified flag"
            );
            let _ = parsed.disposition.is_positive();
            Ok(())
        }
        Err(e) => {
            expect_kind(what, &e, MDN_KINDS);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// headers

/// AS2 header values: `DispositionNotificationOptions::parse` (and the
/// MIC algorithm it chooses), `parse_as2_id` (round trip through
/// `quote_as2_id`), `MicAlg::from_name`, `Mic::parse` (round trip through
/// `render`), `ErrorModifier::parse`, `Disposition::parse` (round trip
/// through `render`), each on the whole input and on each of its lines.
pub fn headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    header_field(&text);
    for line in text.lines().take(64) {
        header_field(line);
    }
}

fn header_field(text: &str) {
    let options = DispositionNotificationOptions::parse(text);
    let _ = options.wants_signed_receipt();
    if let Some(chosen) = options.choose_mic_alg() {
        assert_eq!(
            MicAlg::from_name(&chosen.spelling),
            Some(chosen.alg),
            "chosen spelling does not name its algorithm"
        );
        let rendered = DispositionNotificationOptions::render_signed_request(chosen.alg);
        let again = DispositionNotificationOptions::parse(&rendered);
        assert!(again.wants_signed_receipt());
        assert_eq!(again.choose_mic_alg().map(|c| c.alg), Some(chosen.alg));
    }
    if let Ok(id) = headers::parse_as2_id(text) {
        assert!(
            !id.is_empty() && id.len() <= 128,
            "AS2 ID of {} bytes accepted",
            id.len()
        );
        assert!(
            id.chars().all(|c| (' '..='~').contains(&c)),
            "AS2 ID {id:?} has a non-printable character"
        );
        let quoted = headers::quote_as2_id(&id);
        assert_eq!(
            headers::parse_as2_id(&quoted).as_deref(),
            Ok(id.as_str()),
            "AS2 ID {id:?} does not survive quoting as {quoted:?}"
        );
    }
    if let Some(alg) = MicAlg::from_name(text) {
        assert_eq!(MicAlg::from_name(alg.compact_name()), Some(alg));
        assert_eq!(MicAlg::from_name(alg.rfc5751_name()), Some(alg));
    }
    if let Some(mic) = Mic::parse(text) {
        assert_eq!(
            Mic::parse(&mic.render()).as_ref(),
            Some(&mic),
            "Received-Content-MIC round trip"
        );
    }
    if let Some(modifier) = ErrorModifier::parse(text) {
        assert_eq!(ErrorModifier::parse(modifier.as_str()), Some(modifier));
    }
    match Disposition::parse(text) {
        Ok(d) => {
            let field = format!("automatic-action/MDN-sent-automatically; {}", d.render());
            assert_eq!(
                Disposition::parse(&field).as_ref(),
                Ok(&d),
                "Disposition round trip through {field:?}"
            );
        }
        Err(e) => expect_kind("Disposition::parse", &e, &[ErrorKind::Malformed]),
    }
    let _ = ContentCipher::from_name(text);
}
