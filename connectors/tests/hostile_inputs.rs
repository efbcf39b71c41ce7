//! Hostile inputs against every parser that sees network bytes.
//!
//! (a) The bodies of the cargo-fuzz targets (`fuzz/src/lib.rs`, compiled in
//!     here) run over the interop vectors and deterministic mutations of
//!     them: no panic, and every error has a kind that fits.
//! (b) Property tests: MIME entity and multipart round trips (LF and CRLF),
//!     base64 and quoted-printable decoding, BER `der`/`read`, parameter
//!     parsing, file-name sanitising.
//! (c) Named hostile cases with the error kind each must produce: truncated
//!     MIME, garbage ASN.1, a key that does not match, a zip bomb (memory
//!     measured), huge and numerous header fields, deep nesting, path
//!     traversal in file names.

mod common;

// `cms_unwrap` and `mdn_parse` (fuzz-only fixture) go unused: the `_with` forms run here.
#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Instant;

use atom_connectors::as2::ber;
use atom_connectors::as2::cms::{self, ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::compress;
use atom_connectors::as2::headers::{Headers, MicAlg};
use atom_connectors::as2::mdn::{self, MdnTrust};
use atom_connectors::as2::mime;
use atom_connectors::as2::signed;
use atom_connectors::as2::unwrap::{self, ReceiveSettings, Unwrapped};
use atom_connectors::keys::{self, KeyKind};
use atom_connectors::{As2Error, ErrorKind};
use base64::Engine;
use common::{cert, interop_dir, receiver_key};
use fuzz_bodies::{check_file_name, Fixture};
use proptest::prelude::*;

#[path = "common/heap_meter.rs"]
mod heap_meter;

use heap_meter::{allocated_bytes, peak_heap};

// A per-thread allocation meter, to show that a zip bomb stays bounded.
#[global_allocator]
static ALLOCATOR: heap_meter::MeteredAllocator = heap_meter::MeteredAllocator;

// ---------------------------------------------------------------------------
// Shared fixtures.

/// The fuzz fixture plus the vectors' own keys, so that mutated vectors
/// reach real decryption and signature verification.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let generated = fuzz_bodies::fixture();
        Fixture::new(
            vec![
                generated.settings.decryption_keys[0].clone(),
                receiver_key(),
            ],
            generated.signer.clone(),
            vec![
                cert("cert_mecas2_public.pem"),
                cert("cert_sb2bi_public.pem"),
            ],
        )
    })
}

fn other_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| keys::generate("not-the-receiver", KeyKind::Rsa(2048), 30).expect("key"))
}

fn kind_of<T>(result: Result<T, As2Error>) -> Result<(), ErrorKind> {
    result.map(|_| ()).map_err(|e| e.kind())
}

fn headers_with(content_type: &str) -> Headers {
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    headers
}

fn unwrap_with(
    settings: &ReceiveSettings,
    content_type: &str,
    body: &[u8],
) -> Result<Unwrapped, As2Error> {
    unwrap::unwrap(&headers_with(content_type), body, settings, None)
}

/// Splits a capture (headers, blank line, body) without panicking.
fn capture_body(raw: &[u8]) -> Option<&[u8]> {
    mime::parse_entity(raw).ok().map(|e| e.body)
}

// ---------------------------------------------------------------------------
// (a) The fuzz bodies over the vectors and their mutations.

/// xorshift64*: deterministic mutations, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\x00\xff\x80\x7f\n\r-\";=:\\/\t \x30\x04\x06\xa0\x24";

fn mutations(seed: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let len = seed.len();
    // Truncations: near both ends and spread over the whole input.
    let mut cuts: Vec<usize> = (0..8.min(len)).chain(len.saturating_sub(8)..len).collect();
    cuts.extend((1..24).map(|i| len * i / 24));
    cuts.sort_unstable();
    cuts.dedup();
    out.extend(cuts.into_iter().map(|cut| seed[..cut].to_vec()));
    if len == 0 {
        return out;
    }
    // Single and multiple bit flips.
    for flips in [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 16] {
        let mut m = seed.to_vec();
        for _ in 0..flips {
            let at = rng.below(len);
            m[at] ^= 1 << rng.below(8);
        }
        out.push(m);
    }
    // Inserted bytes, single and runs.
    for run in [1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 64, 300] {
        let mut m = seed.to_vec();
        let at = rng.below(len + 1);
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        m.splice(at..at, std::iter::repeat_n(byte, run));
        out.push(m);
    }
    // Deleted ranges and a duplicated chunk.
    for _ in 0..6 {
        let mut m = seed.to_vec();
        let at = rng.below(len);
        let n = 1 + rng.below((len - at).min(64));
        m.drain(at..at + n);
        out.push(m);
    }
    let at = rng.below(len);
    let n = 1 + rng.below((len - at).min(256));
    let mut m = seed.to_vec();
    let chunk = seed[at..at + n].to_vec();
    m.splice(at..at, chunk);
    out.push(m);
    out
}

/// Every vector, whole and as body, and the mutations of each.
fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(interop_dir())
            .expect("interop dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            let data = common::read_vector(&name);
            if let Some(body) =
                capture_body(&data).filter(|b| !b.is_empty() && b.len() < data.len())
            {
                seeds.push((format!("{name} (body)"), body.to_vec()));
            }
            seeds.push((name, data));
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut all = Vec::new();
        for (name, data) in seeds {
            for (i, m) in mutations(&data, &mut rng).into_iter().enumerate() {
                all.push((format!("{name} mutation {i}"), m));
            }
            all.push((name, data));
        }
        all
    })
}

/// Runs a fuzz body over the corpus; lists every input that panicked.
fn run_corpus(target: &str, body: impl Fn(&[u8])) {
    let corpus = corpus();
    let started = Instant::now();
    let mut failures = Vec::new();
    for (name, data) in corpus {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| body(data))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let head: String = data.iter().take(48).map(|b| format!("{b:02x}")).collect();
            failures.push(format!(
                "{name} ({} bytes, starts {head}): {message}",
                data.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    eprintln!(
        "{target}: {} inputs in {:.1?}",
        corpus.len(),
        started.elapsed()
    );
}

#[test]
fn corpus_mime_entity() {
    run_corpus("mime_entity", fuzz_bodies::mime_entity);
}

#[test]
fn corpus_cms_unwrap() {
    let fx = fixture();
    run_corpus("cms_unwrap", |data| fuzz_bodies::cms_unwrap_with(fx, data));
}

#[test]
fn corpus_ber() {
    run_corpus("ber", fuzz_bodies::ber);
}

#[test]
fn corpus_mdn_parse() {
    let fx = fixture();
    run_corpus("mdn_parse", |data| fuzz_bodies::mdn_parse_with(fx, data));
}

#[test]
fn corpus_headers() {
    run_corpus("headers", fuzz_bodies::headers);
}

/// The corpus really exercises the deep layers: the vectors, unmutated,
/// open under the corpus fixture.
#[test]
fn corpus_fixture_opens_the_vectors() {
    let fx = fixture();
    for name in [
        "mecas2_signed.as2",
        "mecas2_compressed_signed_encrypted.as2",
        "sb2bi_signed_cmp.msg",
    ] {
        let raw = common::read_vector(name);
        let (headers, body) = common::split_capture(&raw);
        let opened = unwrap::unwrap(&headers, &body, &fx.settings, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(opened.signature.is_some(), "{name}");
    }
}

// ---------------------------------------------------------------------------
// (b) Properties.

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}"
}

fn header_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,30}[!-~])?"
}

fn boundary() -> impl Strategy<Value = String> {
    "[A-Za-z0-9'()+_,./:=?-]{1,70}"
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Stripping carried certificates from a signature never panics on
    /// arbitrary bytes, and whatever it returns is SignedData again.
    #[test]
    fn stripping_certificates_from_arbitrary_bytes(
        mut data in prop::collection::vec(any::<u8>(), 0..600),
        signed_data_prefix in any::<bool>(),
    ) {
        if signed_data_prefix {
            // ContentInfo { id-signedData, [0] ... } with indefinite lengths, then noise.
            let mut framed = b"\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x80\x30\x80".to_vec();
            framed.append(&mut data);
            data = framed;
        }
        if let Some(stripped) = ber::signed_data_without_certificates(&data) {
            let (content_type, _) = ber::content_info(&stripped).expect("re-encoded ContentInfo parses");
            prop_assert_eq!(content_type, ber::oid::SIGNED_DATA);
            prop_assert!(ber::signed_data_without_certificates(&stripped).is_none());
        }
    }

    #[test]
    fn entity_round_trip(
        fields in prop::collection::vec((header_name(), header_value(), any::<bool>()), 0..12),
        body in prop::collection::vec(any::<u8>(), 0..400),
        crlf in any::<bool>(),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let mut raw = Vec::new();
        let mut canonical = Vec::new();
        let mut expected = Vec::new();
        for (name, value, fold) in &fields {
            // A folded field: the value again on a continuation line.
            let (written, unfolded) = if *fold {
                (format!("{name}: {value}{sep}\t{value}"), format!("{value} {value}"))
            } else {
                (format!("{name}: {value}"), value.clone())
            };
            raw.extend_from_slice(format!("{written}{sep}").as_bytes());
            canonical.extend_from_slice(written.replace(sep, "\r\n").as_bytes());
            canonical.extend_from_slice(b"\r\n");
            expected.push((name.clone(), unfolded));
        }
        let header_len = raw.len();
        raw.extend_from_slice(sep.as_bytes());
        raw.extend_from_slice(&body);
        canonical.extend_from_slice(b"\r\n");
        canonical.extend_from_slice(&body);

        let entity = mime::parse_entity(&raw).expect("a generated entity parses");
        let got: Vec<(String, String)> = entity.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(entity.body, &body[..]);
        prop_assert_eq!(entity.header_block, &raw[..header_len]);
        prop_assert_eq!(entity.with_crlf_headers(), canonical);
    }

    #[test]
    fn multipart_round_trip(
        boundary in boundary(),
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
        preamble in prop::collection::vec(any::<u8>(), 0..40),
        epilogue in prop::collection::vec(any::<u8>(), 0..40),
        padding in "[ \t]{0,3}",
        crlf in any::<bool>(),
    ) {
        let sep: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let delimiter = format!("--{boundary}");
        prop_assume!(!contains(&preamble, delimiter.as_bytes()));
        prop_assume!(parts.iter().all(|p| !contains(p, delimiter.as_bytes())));
        // With LF line ends a part's final CR would read as part of a CRLF.
        prop_assume!(crlf || parts.iter().all(|p| !p.ends_with(b"\r")));
        let mut body = Vec::new();
        if !preamble.is_empty() {
            body.extend_from_slice(&preamble);
            body.extend_from_slice(sep);
        }
        for part in &parts {
            body.extend_from_slice(delimiter.as_bytes());
            body.extend_from_slice(padding.as_bytes());
            body.extend_from_slice(sep);
            body.extend_from_slice(part);
            body.extend_from_slice(sep);
        }
        body.extend_from_slice(format!("{delimiter}--").as_bytes());
        body.extend_from_slice(padding.as_bytes());
        body.extend_from_slice(sep);
        body.extend_from_slice(&epilogue);

        let split = mime::split_multipart(&body, &boundary).expect("a generated multipart splits");
        let expected: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(split, expected);

        // Without its closing delimiter the same body is refused.
        let open = &body[..body.len() - epilogue.len() - sep.len() - padding.len() - delimiter.len() - 2];
        prop_assert_eq!(kind_of(mime::split_multipart(open, &boundary)), Err(ErrorKind::Malformed));

        // Inside an entity with the boundary in its Content-Type.
        let mut entity = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"").into_bytes();
        entity.extend_from_slice(sep);
        entity.extend_from_slice(sep);
        entity.extend_from_slice(&body);
        let parsed = mime::parse_entity(&entity).expect("parses");
        let ct = parsed.content_type().expect("content type");
        prop_assert_eq!(ct.param("boundary"), Some(boundary.as_str()));
        prop_assert_eq!(mime::split_multipart(parsed.body, &boundary).expect("splits").len(), parts.len());
    }

    #[test]
    fn base64_decoding(data in prop::collection::vec(any::<u8>(), 0..600), noise in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![" ", "\t", "\n", "\r\n"])), 0..8)) {
        let lines = mime::encode_base64_lines(&data);
        prop_assert_eq!(mime::decode_base64(&lines).expect("MIME base64"), data.clone());
        let lf: Vec<u8> = lines.iter().copied().filter(|&b| b != b'\r').collect();
        prop_assert_eq!(mime::decode_transfer_encoding("Base64", &lf).expect("LF base64").into_owned(), data.clone());
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data);
        let mut noisy = unpadded.into_bytes();
        for (at, ws) in &noise {
            let at = at.index(noisy.len() + 1);
            noisy.splice(at..at, ws.bytes());
        }
        prop_assert_eq!(mime::decode_base64(&noisy).expect("unpadded with whitespace"), data);
    }

    #[test]
    fn base64_garbage_is_malformed_or_decodes(garbage in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = mime::decode_base64(&garbage) {
            prop_assert_eq!(e.kind(), ErrorKind::Malformed);
        }
    }

    #[test]
    fn quoted_printable_decoding(text in "[ -~\t\n]{0,300}", binary in prop::collection::vec(any::<u8>(), 0..300)) {
        // Text with LF line ends, encoded the way a MIME writer does (CRLF).
        let canonical = text.replace('\n', "\r\n");
        let encoded = quoted_printable::encode(canonical.as_bytes());
        let decoded = mime::decode_transfer_encoding("quoted-printable", &encoded).expect("qp");
        prop_assert_eq!(decoded.as_ref(), canonical.as_bytes());
        // Arbitrary bytes as a body: decoded or refused as Malformed, never a panic.
        if let Err(e) = mime::decode_transfer_encoding("quoted-printable", &binary) {
            prop_assert_eq!(e.kind(), ErrorKind::Malformed);
        }
    }

    #[test]
    fn ber_der_read_round_trip(identifier in any::<u8>(), content in prop::collection::vec(any::<u8>(), 0..700), trailing in prop::collection::vec(any::<u8>(), 0..8)) {
        prop_assume!(identifier & 0x1f != 0x1f);
        let mut encoded = ber::der(identifier, &content);
        encoded.extend_from_slice(&trailing);
        let (tlv, rest) = ber::read(&encoded).expect("reads back");
        prop_assert_eq!(tlv.content, &content[..]);
        prop_assert_eq!(rest, &trailing[..]);
        prop_assert_eq!(tlv.tag, u32::from(identifier & 0x1f));
        prop_assert_eq!(tlv.class, identifier >> 6);
        prop_assert_eq!(tlv.constructed, identifier & 0x20 != 0);
    }

    #[test]
    fn ber_nested_round_trip(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let inner: Vec<u8> = chunks.iter().flat_map(|c| ber::der(ber::ID_OCTET_STRING, c)).collect();
        let outer = ber::der(0x24, &inner); // constructed OCTET STRING
        let (tlv, rest) = ber::read(&outer).expect("reads");
        prop_assert!(rest.is_empty());
        prop_assert_eq!(tlv.children().expect("children").len(), chunks.len());
        prop_assert_eq!(tlv.octets().expect("octets"), chunks.concat());
    }

    #[test]
    fn ber_oid_round_trip(first in 0u64..3, second in 0u64..40, rest in prop::collection::vec(0u64..(1 << 40), 0..8)) {
        let dotted = std::iter::once(first).chain(std::iter::once(second)).chain(rest).map(|a| a.to_string()).collect::<Vec<_>>().join(".");
        let encoded = ber::der_oid(&dotted);
        let (tlv, _) = ber::read(&encoded).expect("reads");
        prop_assert_eq!(tlv.oid().expect("oid"), dotted);
    }

    #[test]
    fn ber_read_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = ber::read(&data) {
            prop_assert_eq!(e.kind(), ErrorKind::Malformed);
        }
        fuzz_bodies::ber(&data);
    }

    #[test]
    fn parameterized_parse_never_panics(any_text in ".{0,80}", tokens in "[a-z/;=\" \\\\\t'*%-]{0,60}") {
        for text in [any_text.as_str(), tokens.as_str()] {
            match mime::Parameterized::parse(text) {
                Ok(p) => {
                    prop_assert_eq!(p.value.clone(), p.value.to_ascii_lowercase());
                    prop_assert!(p.params.iter().all(|(n, _)| !n.is_empty()));
                }
                Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Malformed),
            }
            let _ = mime::ContentType::parse(text);
        }
    }

    #[test]
    fn sanitized_file_names_are_base_names(any_text in ".{0,40}", tricky in "[./\\\\ \t\u{0}:a%é\u{2028}\u{a0}]{0,24}") {
        for raw in [any_text.as_str(), tricky.as_str()] {
            if let Some(name) = mime::sanitize_file_name(raw) {
                check_file_name(&name);
            }
            let quoted = format!("attachment; filename=\"{}\"", raw.replace(['"', '\\'], ""));
            if let Some(name) = mime::disposition_file_name(&quoted) {
                check_file_name(&name);
            }
            let encoded: String = raw.bytes().map(|b| format!("%{b:02X}")).collect();
            if let Some(name) = mime::disposition_file_name(&format!("attachment; filename*=utf-8''{encoded}")) {
                check_file_name(&name);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (c) Named hostile cases.

#[test]
fn truncated_mime_is_malformed() {
    // No blank line ends the header section.
    for raw in [
        &b"Content-Type: text/plain\r\nX-A: 1\r\n"[..],
        b"Content-Type: text/plain",
        b"",
        b"X: y\n\r",
    ] {
        let err = mime::parse_entity(raw)
            .map(|_| ())
            .expect_err("no blank line");
        assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
    }
    // A multipart without its closing delimiter, as a cut-off upload shows.
    for body in [
        &b"--b1\r\nA: 1\r\n\r\none\r\n--b1\r\n\r\ntwo\r\n"[..],
        b"--b1\r\n\r\none",
        b"--b1",
        b"preamble only",
        b"--b1--\r\n",
    ] {
        assert_eq!(
            kind_of(mime::split_multipart(body, "b1")),
            Err(ErrorKind::Malformed),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A signed vector cut before its closing delimiter, through unwrap.
    let raw = common::read_vector("mecas2_signed.as2");
    let (headers, body) = common::split_capture(&raw);
    let close = body
        .windows(2)
        .rposition(|w| w == b"--")
        .expect("closing delimiter");
    let cut_at = body[..close]
        .windows(2)
        .rposition(|w| w == b"\n-")
        .expect("delimiter line")
        + 1;
    let err = unwrap::unwrap(&headers, &body[..cut_at], &fixture().settings, None)
        .expect_err("truncated");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
    assert!(err.message().contains("closing delimiter"), "{err}");
    // An MDN cut inside its report.
    let raw = common::read_vector("mecas2_unsigned.mdn");
    let (headers, body) = common::split_capture(&raw);
    let content_type = headers.get("content-type").expect("content type");
    let err = mdn::parse(content_type, &body[..body.len() / 2], MdnTrust::Skip)
        .expect_err("truncated MDN");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
}

#[test]
fn garbage_asn1_in_pkcs7_mime() {
    let settings = &fixture().settings;
    let mut rng = Rng(7);
    let random: Vec<u8> = (0..2048).map(|_| rng.next() as u8).collect();
    let sequence_of_garbage = [&[0x30, 0x82, 0x07, 0xff][..], &random].concat();
    let bodies: [(&str, &[u8]); 6] = [
        ("random bytes", &random),
        ("SEQUENCE of garbage", &sequence_of_garbage),
        (
            "truncated SEQUENCE",
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06],
        ),
        (
            "indefinite without end",
            &[0x30, 0x80, 0x06, 0x03, 0x2a, 0x86, 0x48],
        ),
        ("base64 of junk", b"TUlNRSBpcyBub3QgQVNOLjE=\r\n"),
        ("text", b"hello, I am not a CMS structure\r\n"),
    ];
    for content_type in [
        "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime; smime-type=compressed-data",
    ] {
        for (what, body) in bodies {
            let err = unwrap_with(settings, content_type, body).expect_err(what);
            let allowed: &[ErrorKind] = if content_type.contains("compressed") {
                &[ErrorKind::Decompression, ErrorKind::Malformed]
            } else {
                &[ErrorKind::Decryption, ErrorKind::Malformed]
            };
            assert!(
                allowed.contains(&err.kind()),
                "{content_type} / {what}: {:?} {err}",
                err.kind()
            );
        }
    }
    // Garbage in place of a detached signature: the signature check fails.
    let mut garbage_signed = b"--s\r\nContent-Type: text/plain\r\n\r\nhello\r\n--s\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    garbage_signed.extend_from_slice(&sequence_of_garbage);
    garbage_signed.extend_from_slice(b"\r\n--s--\r\n");
    let err = unwrap_with(
        settings,
        "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s",
        &garbage_signed,
    )
    .expect_err("garbage signature");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[test]
fn key_that_does_not_match_fails_decryption() {
    let settings = ReceiveSettings {
        decryption_keys: vec![other_key().clone()],
        ..fixture().settings.clone()
    };
    for name in [
        "mecas2_encrypted.as2",
        "mecas2_signed_encrypted.as2",
        "mecas2_compressed_signed_encrypted.as2",
    ] {
        let raw = common::read_vector(name);
        let (headers, body) = common::split_capture(&raw);
        let err = unwrap::unwrap(&headers, &body, &settings, None).expect_err("wrong key");
        assert_eq!(err.kind(), ErrorKind::Decryption, "{name}: {err}");
    }
    // Our own envelope to one key, opened with another.
    let der = cms::encrypt(
        b"Content-Type: text/plain\r\n\r\nsecret",
        &fixture().recipient,
        ContentCipher::Aes256Gcm,
        KeyTransport::RsaOaep,
    )
    .expect("encrypts");
    let err = unwrap_with(
        &settings,
        "application/pkcs7-mime; smime-type=authEnveloped-data",
        &der,
    )
    .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err}");
    // No key at all.
    let none = ReceiveSettings {
        decryption_keys: Vec::new(),
        ..settings
    };
    assert_eq!(
        kind_of(unwrap_with(
            &none,
            "application/pkcs7-mime; smime-type=enveloped-data",
            &der
        )),
        Err(ErrorKind::Decryption)
    );
}

/// A zlib stream that inflates to `copies` MiB of zeros, built without
/// ever holding the inflated bytes: one MiB is deflated by a fresh
/// compressor and sync-flushed (self-contained, byte-aligned blocks), and
/// the blocks are repeated.
fn zlib_zero_bomb(copies: usize) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let mut one = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    one.write_all(&vec![0u8; CHUNK]).expect("deflate");
    one.flush().expect("sync flush");
    let block = one.get_ref().clone();
    let last = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best())
        .finish()
        .expect("final block");
    let mut out = Vec::with_capacity(block.len() * copies + 16);
    out.extend_from_slice(&[0x78, 0xda]);
    for _ in 0..copies {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&last);
    // Adler-32 of n zero bytes: a stays 1, b = n mod 65521.
    let b = ((copies as u64 * CHUNK as u64) % 65521) as u32;
    out.extend_from_slice(&((b << 16) | 1).to_be_bytes());
    out
}

#[test]
fn zip_bomb_is_refused_with_bounded_memory() {
    const LIMIT: u64 = 10 << 20;
    // The construction is sound: a small bomb inflates to exactly its size.
    let small = compress::compressed_data(&zlib_zero_bomb(3));
    let inflated = compress::decompress(&small, 4 << 20).expect("a 3 MiB stream inflates");
    assert_eq!(inflated.len(), 3 << 20);
    assert!(inflated.iter().all(|&b| b == 0));
    drop(inflated);

    // 1 GiB of zeros in about a megabyte.
    let bomb = compress::compressed_data(&zlib_zero_bomb(1024));
    assert!(bomb.len() < 2 << 20, "bomb of {} bytes", bomb.len());
    let (result, peak) = peak_heap(|| compress::decompress(&bomb, LIMIT));
    let err = result.expect_err("1 GiB refused");
    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
    assert!(err.message().contains("exceeds the limit"), "{err}");
    eprintln!(
        "zip bomb: {} bytes inflating to 1 GiB; decompress peak heap {} MiB",
        bomb.len(),
        peak >> 20
    );
    assert!(
        peak < 48 << 20,
        "decompressing the bomb held {} MiB at once",
        peak >> 20
    );

    // Through the receive path, as an AS2 body.
    let settings = ReceiveSettings {
        max_decompressed_size: LIMIT,
        ..fixture().settings.clone()
    };
    let (result, peak) = peak_heap(|| {
        unwrap_with(
            &settings,
            "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z",
            &bomb,
        )
    });
    let err = result.expect_err("1 GiB refused");
    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
    assert_eq!(err.modifier().as_str(), "decompression-failed");
    assert!(
        peak < 64 << 20,
        "unwrapping the bomb held {} MiB at once",
        peak >> 20
    );
}

/// Found by the mime_entity fuzz target: a field folded right after its
/// colon kept a leading space (" <id@x>"), and a blank continuation line
/// left a trailing one.
#[test]
fn folded_header_values_are_trimmed() {
    for sep in ["\r\n", "\n"] {
        let raw = format!("Original-Message-ID:{sep} <id@x>{sep}X-Blank: a{sep} {sep}X-Two:{sep}\t{sep} b{sep}{sep}body");
        let entity = mime::parse_entity(raw.as_bytes()).expect("parses");
        assert_eq!(entity.headers.get("original-message-id"), Some("<id@x>"));
        assert_eq!(entity.headers.get("x-blank"), Some("a"));
        assert_eq!(entity.headers.get("x-two"), Some("b"));
    }
    let fields = mime::parse_field_block(b"Original-Message-ID:\r\n <id@x>\r\nDisposition:\r\n\tautomatic-action/MDN-sent-automatically; processed\r\n")
        .expect("parses");
    assert_eq!(fields.get("original-message-id"), Some("<id@x>"));
}

#[test]
fn one_mebibyte_header_line_is_malformed() {
    let line = format!("X-Big: {}\r\n", "a".repeat(1 << 20));
    for raw in [
        format!("{line}\r\nbody"),
        format!("Content-Type: text/plain\r\n{line}\r\n"),
        format!("{}\r\n\r\n", "b".repeat(1 << 20)),
    ] {
        let err = mime::parse_entity(raw.as_bytes())
            .map(|_| ())
            .expect_err("1 MiB header line");
        assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
        assert!(err.message().contains("longer than"), "{err}");
    }
    // In an MDN report part, and in a decompressed layer.
    let report = format!("--r\r\nContent-Type: message/disposition-notification\r\n{line}\r\nDisposition: processed\r\n--r--\r\n");
    let err = mdn::parse(
        "multipart/report; boundary=r",
        report.as_bytes(),
        MdnTrust::Skip,
    )
    .expect_err("huge line");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
    // Field values inside message/disposition-notification.
    let fields = format!("--r\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: {}\r\nDisposition: processed\r\n\r\n--r--\r\n", "u".repeat(1 << 20));
    let err = mdn::parse(
        "multipart/report; boundary=r",
        fields.as_bytes(),
        MdnTrust::Skip,
    )
    .expect_err("huge field");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
}

#[test]
fn ten_thousand_header_fields_are_malformed() {
    let many: String = (0..10_000).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let raw = format!("Content-Type: text/plain\r\n{many}\r\nbody");
    let err = mime::parse_entity(raw.as_bytes())
        .map(|_| ())
        .expect_err("10,000 fields");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
    // The same fields as a multipart part and as an MDN report part.
    let report = format!("--r\r\n{many}\r\nx\r\n--r--\r\n");
    let err = mdn::parse(
        "multipart/report; boundary=r",
        report.as_bytes(),
        MdnTrust::Skip,
    )
    .expect_err("10,000 fields");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
    let dn =
        format!("--r\r\nContent-Type: message/disposition-notification\r\n\r\n{many}\r\n--r--\r\n");
    let err = mdn::parse(
        "multipart/report; boundary=r",
        dn.as_bytes(),
        MdnTrust::Skip,
    )
    .expect_err("10,000 fields");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");
}

/// message/disposition-notification may hold several groups of fields;
/// many tiny groups must cost linear work, not a copy of the rest each
/// (which allocated about 40 GB for this 800 KB block).
#[test]
fn many_small_field_groups_parse_in_linear_work() {
    let groups = "X: y\r\n\r\n".repeat(100_000);
    let (fields, allocated) =
        allocated_bytes(|| mime::parse_field_block(groups.as_bytes()).expect("parses"));
    assert_eq!(fields.len(), 100_000);
    assert!(
        allocated < 200 * groups.len(),
        "{} MiB allocated for {} KiB of field groups",
        allocated >> 20,
        groups.len() >> 10
    );
    drop(fields);
    let report = format!("--r\r\nContent-Type: message/disposition-notification\r\n\r\n{groups}Disposition: processed\r\n\r\n--r--\r\n");
    let (parsed, allocated) = allocated_bytes(|| {
        mdn::parse(
            "multipart/report; boundary=r",
            report.as_bytes(),
            MdnTrust::Skip,
        )
        .expect("parses")
    });
    assert_eq!(parsed.disposition, mdn::Disposition::Processed);
    assert!(
        allocated < 200 * report.len(),
        "{} MiB allocated for a {} KiB report",
        allocated >> 20,
        report.len() >> 10
    );
}

#[test]
fn deep_ber_nesting() {
    // 10,000 indefinite-length SEQUENCEs: refused before the stack suffers.
    let indefinite: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 10_000)
        .flatten()
        .chain(std::iter::repeat_n(0u8, 20_000))
        .collect();
    assert_eq!(kind_of(ber::read(&indefinite)), Err(ErrorKind::Malformed));
    fuzz_bodies::ber(&indefinite);
    // 10,000 definite-length SEQUENCEs: each level reads; walking is the caller's.
    let mut definite = ber::der(ber::ID_OCTET_STRING, b"core");
    for _ in 0..10_000 {
        definite = ber::der(ber::ID_SEQUENCE, &definite);
    }
    fuzz_bodies::ber(&definite);
    assert_eq!(
        kind_of(compress::decompress(&definite, 1 << 20)),
        Err(ErrorKind::Decompression)
    );
    // A chunked OCTET STRING nested 1,000 deep as the eContent of CompressedData.
    let mut chunk = ber::der(ber::ID_OCTET_STRING, b"x");
    for _ in 0..1_000 {
        chunk = ber::der(0x24, &chunk);
    }
    let econtent = ber::der(ber::ID_CONTEXT_0, &chunk);
    let encap = ber::der(
        ber::ID_SEQUENCE,
        &[ber::der_oid(ber::oid::DATA), econtent].concat(),
    );
    let algorithm = ber::der(ber::ID_SEQUENCE, &ber::der_oid(ber::oid::ZLIB_COMPRESS));
    let inner = ber::der(
        ber::ID_SEQUENCE,
        &[ber::der(ber::ID_INTEGER, &[0]), algorithm, encap].concat(),
    );
    let deep_compressed = ber::der(
        ber::ID_SEQUENCE,
        &[
            ber::der_oid(ber::oid::COMPRESSED_DATA),
            ber::der(ber::ID_CONTEXT_0, &inner),
        ]
        .concat(),
    );
    let err = compress::decompress(&deep_compressed, 1 << 20).expect_err("nested too deeply");
    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
    // The same three through the receive path.
    let settings = &fixture().settings;
    for (what, body) in [
        ("indefinite", &indefinite),
        ("definite", &definite),
        ("chunked", &deep_compressed),
    ] {
        for content_type in [
            "application/pkcs7-mime",
            "application/pkcs7-mime; smime-type=enveloped-data",
            "application/pkcs7-mime; smime-type=compressed-data",
        ] {
            let err = unwrap_with(settings, content_type, body).expect_err(what);
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Malformed | ErrorKind::Decryption | ErrorKind::Decompression
                ),
                "{what} as {content_type}: {:?} {err}",
                err.kind()
            );
        }
    }
}

#[test]
fn deep_multipart_nesting() {
    // 2,000 multiparts, each inside the previous one.
    let depth = 2_000;
    let mut raw = String::new();
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\ncore\r\n");
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let entity = mime::parse_entity(raw.as_bytes()).expect("outer entity");
    let parts = mime::split_multipart(entity.body, "b0").expect("outer level splits");
    assert_eq!(parts.len(), 1);
    fuzz_bodies::mime_entity(raw.as_bytes());
    // As an MDN: one level is read, and no disposition-notification is found.
    let err = mdn::parse(
        "multipart/report; boundary=\"b0\"",
        &raw.as_bytes()[raw.find("--b0").expect("delimiter")..],
        MdnTrust::Skip,
    )
    .expect_err("no report");
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err}");

    // Security layers nested past what RFC 4130 allows: refused, by kind.
    let fx = fixture();
    let payload = b"Content-Type: text/plain\r\n\r\nhello\r\n".to_vec();
    let sign = |entity: &[u8]| {
        let built = signed::build(
            entity,
            &fx.signer,
            MicAlg::Sha256,
            SignatureScheme::Pkcs1v15,
            "sha-256",
        )
        .expect("signs");
        let mut out = format!("Content-Type: {}\r\n\r\n", built.content_type).into_bytes();
        out.extend_from_slice(&built.body);
        out
    };
    let compress_entity = |entity: &[u8]| {
        let mut out = b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
        out.extend_from_slice(&compress::compress(entity).expect("compresses"));
        out
    };
    let encrypt_entity = |entity: &[u8]| {
        let mut out =
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n".to_vec();
        out.extend_from_slice(
            &cms::encrypt(
                entity,
                &fx.recipient,
                ContentCipher::Aes128Cbc,
                KeyTransport::RsaPkcs1v15,
            )
            .expect("encrypts"),
        );
        out
    };
    let cases: [(&str, Vec<u8>); 3] = [
        ("signed twice", sign(&sign(&payload))),
        (
            "compressed twice",
            compress_entity(&sign(&compress_entity(&payload))),
        ),
        (
            "encrypted twice",
            encrypt_entity(&compress_entity(&encrypt_entity(&payload))),
        ),
    ];
    for (what, entity) in cases {
        let parsed = mime::parse_entity(&entity).expect("entity");
        let err = unwrap::unwrap(&parsed.headers, parsed.body, &fx.settings, None).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{what}: {err}");
        assert!(err.message().contains(what), "{what}: {err}");
    }
    // Many levels of compression: the first repeat is refused, nothing deeper is inflated.
    let mut onion = payload;
    for _ in 0..50 {
        onion = compress_entity(&onion);
    }
    let parsed = mime::parse_entity(&onion).expect("entity");
    assert_eq!(
        kind_of(unwrap::unwrap(
            &parsed.headers,
            parsed.body,
            &fx.settings,
            None
        )),
        Err(ErrorKind::Unsupported)
    );
}

#[test]
fn path_traversal_in_file_names_is_sanitised() {
    let cases: &[(&str, Option<&str>)] = &[
        ("attachment; filename=\"../../etc/passwd\"", Some("passwd")),
        ("attachment; filename=../../etc/passwd", Some("passwd")),
        ("attachment; filename=\"..\\\\..\\\\x\"", Some("x")),
        ("attachment; filename=..\\..\\x", Some("x")),
        ("attachment; filename=\"/abs/path\"", Some("path")),
        (
            "attachment; filename=\"C:\\\\Windows\\\\win.ini\"",
            Some("win.ini"),
        ),
        ("attachment; filename=\"C:evil.exe\"", Some("Cevil.exe")),
        ("attachment; filename*=utf-8''%2e%2e%2f", None),
        (
            "attachment; filename*=utf-8''%2e%2e%2fetc%2fpasswd",
            Some("passwd"),
        ),
        (
            "attachment; filename*=UTF-8''%2E%2E%5C%2E%2E%5Cboot.ini",
            Some("boot.ini"),
        ),
        ("attachment; filename*=utf-8''%2e%2e", None),
        ("attachment; filename*=utf-8''..%2F", None),
        ("attachment; filename*=utf-8''%00%2e%2e%2f", None),
        ("attachment; filename*=utf-8''evil%00.txt", Some("evil.txt")),
        ("attachment; filename=\"a\u{0}b.txt\"", Some("ab.txt")),
        ("attachment; filename=\"\u{0}\"", None),
        ("attachment; filename=\"..\"", None),
        ("attachment; filename=\".\"", None),
        ("attachment; filename=\"...\"", None),
        ("attachment; filename=\".htaccess\"", Some("htaccess")),
        ("attachment; filename=\". .hidden\"", Some("hidden")),
        ("attachment; filename=\" .. / .. /x\"", Some("x")),
        ("attachment; filename=\"dir/\"", None),
        (
            "attachment; filename=\"line\r\nbreak.txt\"",
            Some("linebreak.txt"),
        ),
        (
            "attachment; filename*=utf-8''%ZZ; filename=\"../fallback.txt\"",
            Some("fallback.txt"),
        ),
    ];
    for (header, expected) in cases {
        let got = mime::disposition_file_name(header);
        assert_eq!(got.as_deref(), *expected, "{header:?}");
        if let Some(name) = &got {
            check_file_name(name);
        }
    }
    // Through the receive path: in the payload's own header (inside a
    // compressed layer) and on the HTTP request.
    let settings = &fixture().settings;
    let inner = b"Content-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\nISA*00~";
    let opened = unwrap_with(
        settings,
        "application/pkcs7-mime; smime-type=compressed-data",
        &compress::compress(inner).expect("compresses"),
    )
    .expect("opens");
    assert_eq!(opened.file_name.as_deref(), Some("passwd"));
    let mut http = headers_with("application/edi-x12");
    http.push(
        "Content-Disposition",
        "attachment; filename*=utf-8''%2e%2e%2f%2e%2e%2fboot.ini",
    );
    let opened = unwrap::unwrap(&http, b"ISA*00~", settings, None).expect("opens");
    assert_eq!(opened.file_name.as_deref(), Some("boot.ini"));
    let mut http = headers_with("application/edi-x12");
    http.push("Content-Disposition", "attachment; filename=\"..\"");
    assert_eq!(
        unwrap::unwrap(&http, b"ISA*00~", settings, None)
            .expect("opens")
            .file_name,
        None
    );
}
