//! The streaming unwrap (large messages, from a spooled file) against the
//! in-memory one (small messages): on the captured messages of other
//! products, on every layering and algorithm our builder makes, and on
//! damaged copies, both must open the same payload with the same MIC and
//! description, or refuse with the same disposition modifier. And the
//! streaming one must not hold the message in memory.

mod common;
#[path = "common/heap_meter.rs"]
mod heap_meter;

#[global_allocator]
static ALLOCATOR: heap_meter::MeteredAllocator = heap_meter::MeteredAllocator;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use atom_connectors::as2::build::{
    self, CompressionOrder, EncryptFor, MdnRequest, Outbound, SignWith,
};
use atom_connectors::as2::cms::{ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::error::As2Error;
use atom_connectors::as2::headers::{
    ChosenMicAlg, DispositionNotificationOptions, Headers, MicAlg,
};
use atom_connectors::as2::stream::{self, Source};
use atom_connectors::as2::unwrap::{self, Opened, ReceiveSettings};
use atom_connectors::keys::{self, KeyKind};
use common::*;
use proptest::prelude::*;

/// Opens with the streaming unwrap; returns the description and payload.
fn open_streaming(
    headers: &Headers,
    body: &[u8],
    settings: &ReceiveSettings,
    chosen: Option<&ChosenMicAlg>,
) -> Result<(Opened, Vec<u8>), As2Error> {
    let mut spooled = tempfile::tempfile().expect("temp file");
    spooled.write_all(body).expect("spool");
    let source = Source::whole(Arc::new(spooled)).expect("source");
    let mut payload = tempfile::tempfile().expect("temp file");
    let opened = stream::unwrap_file(headers, &source, settings, chosen, &payload)?;
    let mut bytes = Vec::new();
    payload.seek(SeekFrom::Start(0)).expect("seek");
    payload.read_to_end(&mut bytes).expect("read payload");
    assert_eq!(
        bytes.len() as u64,
        opened.payload_len,
        "payload length reported"
    );
    Ok((opened, bytes))
}

fn chosen_of(headers: &Headers) -> Option<ChosenMicAlg> {
    headers
        .get("disposition-notification-options")
        .map(DispositionNotificationOptions::parse)
        .and_then(|o| o.choose_mic_alg())
}

/// Both ways; panics where they disagree. Returns whether it opened.
fn assert_agree(what: &str, headers: &Headers, body: &[u8], settings: &ReceiveSettings) -> bool {
    let chosen = chosen_of(headers);
    let in_memory = unwrap::unwrap(headers, body, settings, chosen.as_ref());
    let streamed = open_streaming(headers, body, settings, chosen.as_ref());
    match (in_memory, streamed) {
        (Ok(memory), Ok((opened, payload))) => {
            let (memory_payload, memory) = memory.into_opened();
            assert!(
                memory_payload.as_slice() == payload.as_slice(),
                "{what}: payload"
            );
            assert_eq!(memory.mic, opened.mic, "{what}: MIC");
            assert_eq!(
                memory.content_type, opened.content_type,
                "{what}: content type"
            );
            assert_eq!(memory.file_name, opened.file_name, "{what}: file name");
            assert_eq!(memory.encryption, opened.encryption, "{what}: encryption");
            assert_eq!(
                memory.compression, opened.compression,
                "{what}: compression"
            );
            assert_eq!(memory.warnings, opened.warnings, "{what}: warnings");
            let describe = |o: &Opened| {
                o.signature
                    .as_ref()
                    .map(|s| (s.digest, s.signer.clone(), s.canonicalization))
            };
            assert_eq!(describe(&memory), describe(&opened), "{what}: signature");
            true
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.modifier(),
                b.modifier(),
                "{what}: in memory {a}; streamed {b}"
            );
            false
        }
        // OpenSSL's defence against the million-message attack: a content
        // key that does not unwrap is replaced by a random one, and about
        // one time in 256 the padding of what that decrypts to looks
        // right. The in-memory path then "opens" garbage without MIME
        // headers; the streaming one refuses (it unwraps the key itself).
        (Ok(memory), Err(e))
            if e.kind() == atom_connectors::as2::error::ErrorKind::Decryption
                && memory
                    .warnings
                    .iter()
                    .any(|w| w.contains("no MIME headers")) =>
        {
            false
        }
        (Ok(_), Err(e)) => panic!("{what}: opens in memory, streaming refuses: {e}"),
        (Err(e), Ok(_)) => panic!("{what}: streaming opens what memory refuses: {e}"),
    }
}

#[test]
fn streaming_agrees_with_memory_on_the_captured_messages() {
    let mendelson = ReceiveSettings {
        decryption_keys: vec![receiver_key()],
        partner_certs: vec![cert("cert_mecas2_public.pem")],
        ..ReceiveSettings::default()
    };
    for file in [
        "mecas2_signed.as2",
        "mecas2_encrypted.as2",
        "mecas2_compressed.as2",
        "mecas2_signed_encrypted.as2",
        "mecas2_compressed_signed_encrypted.as2",
    ] {
        let (headers, body) = split_capture(&read_vector(file));
        assert!(
            assert_agree(file, &headers, &body, &mendelson),
            "{file} opens"
        );
        let strict = ReceiveSettings {
            require_signed: true,
            require_encrypted: true,
            ..mendelson.clone()
        };
        assert_agree(&format!("{file}, strict"), &headers, &body, &strict);
    }
    let sterling = ReceiveSettings {
        partner_certs: vec![cert("cert_sb2bi_public.pem")],
        ..ReceiveSettings::default()
    };
    let (headers, body) = split_capture(&read_vector("sb2bi_signed_cmp.msg"));
    assert!(assert_agree("sterling", &headers, &body, &sterling));
    let wrong = ReceiveSettings {
        partner_certs: vec![cert("cert_sb2bi_public.pem")],
        ..mendelson
    };
    let (headers, body) = split_capture(&read_vector("mecas2_signed_encrypted.as2"));
    assert!(!assert_agree("wrong signer", &headers, &body, &wrong));
}

struct Parties {
    partner: KeyPair,
    us: KeyPair,
}

fn parties() -> Parties {
    Parties {
        partner: keys::generate("stream-partner", KeyKind::Rsa(2048), 30).expect("key"),
        us: keys::generate("stream-us", KeyKind::Rsa(2048), 30).expect("key"),
    }
}

fn edi(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 64);
    let mut n = 0u64;
    while out.len() < bytes {
        out.extend_from_slice(
            format!(
                "PO1*{n}*{}*EA*{}.{:02}**BP*{}~\n",
                n % 97,
                n % 1000,
                n % 100,
                n * 7919
            )
            .as_bytes(),
        );
        n += 1;
    }
    out.truncate(bytes);
    out
}

#[allow(clippy::too_many_arguments)]
fn built(
    parties: &Parties,
    payload: &[u8],
    sign: Option<MicAlg>,
    cipher: Option<ContentCipher>,
    transport: KeyTransport,
    compression: CompressionOrder,
    mdn: Option<MicAlg>,
) -> build::Built {
    build::build(&Outbound {
        payload,
        content_type: "application/edi-x12",
        file_name: Some("order.edi"),
        from: "PARTNER",
        to: "US",
        subject: "stream test",
        message_id: None,
        compression,
        sign: sign.map(|digest| SignWith {
            key: &parties.partner,
            digest,
            scheme: SignatureScheme::Pkcs1v15,
        }),
        encrypt: cipher.map(|cipher| EncryptFor {
            cert: &parties.us.cert,
            cipher,
            transport,
        }),
        mdn: match mdn {
            Some(alg) => MdnRequest::Sync { signed: Some(alg) },
            None => MdnRequest::Sync { signed: None },
        },
        notification_to: "edi@example.com",
        unsigned_compressed_mic: Default::default(),
    })
    .expect("builds")
}

#[test]
fn streaming_agrees_with_memory_on_every_layering_and_algorithm() {
    atom_connectors::crypto_init::init().expect("OpenSSL legacy provider (RC2)");
    let parties = parties();
    let settings = ReceiveSettings {
        decryption_keys: vec![parties.us.clone()],
        partner_certs: vec![parties.partner.cert.clone()],
        ..ReceiveSettings::default()
    };
    let payload = edi(300 << 10);
    let mut binary = edi(70 << 10);
    binary.extend((0..=255u8).cycle().take(5000));
    let mut opened = 0;
    for cipher in [
        None,
        Some(ContentCipher::Aes128Cbc),
        Some(ContentCipher::Aes192Cbc),
        Some(ContentCipher::Aes256Cbc),
        Some(ContentCipher::Des3),
        Some(ContentCipher::Aes128Gcm),
        Some(ContentCipher::Rc2_128),
    ] {
        for sign in [
            None,
            Some(MicAlg::Sha1),
            Some(MicAlg::Sha256),
            Some(MicAlg::Sha512),
        ] {
            for compression in [
                CompressionOrder::None,
                CompressionOrder::BeforeSigning,
                CompressionOrder::AfterSigning,
            ] {
                for mdn in [None, Some(MicAlg::Sha384)] {
                    let message = built(
                        &parties,
                        &payload,
                        sign,
                        cipher,
                        KeyTransport::RsaPkcs1v15,
                        compression,
                        mdn,
                    );
                    let what = format!("{cipher:?} {sign:?} {compression:?} mdn {mdn:?}");
                    assert!(
                        assert_agree(&what, &message.headers, &message.body, &settings),
                        "{what} opens"
                    );
                    // The receipt's MIC is the one the sender expects.
                    let chosen = chosen_of(&message.headers);
                    let mic =
                        unwrap::unwrap(&message.headers, &message.body, &settings, chosen.as_ref())
                            .expect("opens")
                            .mic;
                    assert!(
                        mic.matches(&message.expected_mic),
                        "{what}: MIC {mic:?} expected {:?}",
                        message.expected_mic
                    );
                    opened += 1;
                }
            }
        }
    }
    for transport in [KeyTransport::RsaOaep, KeyTransport::RsaPkcs1v15] {
        let message = built(
            &parties,
            &binary,
            Some(MicAlg::Sha256),
            Some(ContentCipher::Aes256Cbc),
            transport,
            CompressionOrder::None,
            None,
        );
        assert!(assert_agree(
            &format!("{transport:?}, binary"),
            &message.headers,
            &message.body,
            &settings
        ));
        opened += 1;
    }
    assert_eq!(opened, 7 * 4 * 3 * 2 + 2);
    // Refusals agree too: the wrong key, the wrong signer, the policy.
    let message = built(
        &parties,
        &payload,
        Some(MicAlg::Sha256),
        Some(ContentCipher::Aes128Cbc),
        KeyTransport::RsaPkcs1v15,
        CompressionOrder::BeforeSigning,
        None,
    );
    let stranger = keys::generate("stranger", KeyKind::Rsa(2048), 30).expect("key");
    for (what, settings) in [
        (
            "wrong key",
            ReceiveSettings {
                decryption_keys: vec![stranger.clone()],
                ..settings.clone()
            },
        ),
        (
            "wrong signer",
            ReceiveSettings {
                partner_certs: vec![stranger.cert.clone()],
                ..settings.clone()
            },
        ),
        (
            "no key",
            ReceiveSettings {
                decryption_keys: vec![],
                ..settings.clone()
            },
        ),
        (
            "small limit",
            ReceiveSettings {
                max_decompressed_size: 1000,
                ..settings.clone()
            },
        ),
    ] {
        assert!(
            !assert_agree(what, &message.headers, &message.body, &settings),
            "{what} refused"
        );
    }
    let unsigned = built(
        &parties,
        &payload,
        None,
        None,
        KeyTransport::RsaPkcs1v15,
        CompressionOrder::None,
        None,
    );
    let strict = ReceiveSettings {
        require_signed: true,
        require_encrypted: true,
        ..settings.clone()
    };
    assert!(!assert_agree(
        "policy",
        &unsigned.headers,
        &unsigned.body,
        &strict
    ));
}

/// The point of streaming: a 64 MiB payload, compressed, signed and
/// encrypted, opens with a few MiB of heap, not the message's size.
#[test]
fn a_large_message_opens_in_bounded_memory() {
    let parties = parties();
    let payload = edi(64 << 20);
    let message = built(
        &parties,
        &payload,
        Some(MicAlg::Sha256),
        Some(ContentCipher::Aes256Cbc),
        KeyTransport::RsaPkcs1v15,
        CompressionOrder::BeforeSigning,
        Some(MicAlg::Sha256),
    );
    let settings = ReceiveSettings {
        decryption_keys: vec![parties.us.clone()],
        partner_certs: vec![parties.partner.cert.clone()],
        ..ReceiveSettings::default()
    };
    let mut spooled = tempfile::tempfile().expect("temp file");
    spooled.write_all(&message.body).expect("spool");
    let source = Source::whole(Arc::new(spooled)).expect("source");
    let payload_file: File = tempfile::tempfile().expect("temp file");
    let chosen = chosen_of(&message.headers);
    let (opened, peak) = heap_meter::peak_heap(|| {
        stream::unwrap_file(
            &message.headers,
            &source,
            &settings,
            chosen.as_ref(),
            &payload_file,
        )
    });
    let opened = opened.expect("opens");
    assert_eq!(opened.payload_len, payload.len() as u64);
    assert_eq!(opened.mic, message.expected_mic);
    assert!(
        peak < 8 << 20,
        "peak heap {peak} bytes for a 64 MiB payload"
    );
    let mut written = Vec::new();
    let mut reader = &payload_file;
    reader.seek(SeekFrom::Start(0)).expect("seek");
    reader.read_to_end(&mut written).expect("read");
    assert!(written == payload, "payload bytes");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Damaged copies (cut short, a byte changed, bytes inserted) are
    /// refused or opened alike, never a panic or a different payload.
    #[test]
    fn damaged_messages_are_refused_or_opened_alike(cut in 0usize..4000, at in 0usize..4000, byte in any::<u8>(), kind in 0u8..3) {
        thread_local! {
            static CASE: (Parties, build::Built, build::Built) = {
                let parties = parties();
                let payload = edi(3000);
                let full = built(&parties, &payload, Some(MicAlg::Sha256), Some(ContentCipher::Aes128Cbc), KeyTransport::RsaPkcs1v15, CompressionOrder::BeforeSigning, None);
                let signed = built(&parties, &payload, Some(MicAlg::Sha256), None, KeyTransport::RsaPkcs1v15, CompressionOrder::AfterSigning, None);
                (parties, full, signed)
            };
        }
        CASE.with(|(parties, full, signed)| {
            let settings = ReceiveSettings {
                decryption_keys: vec![parties.us.clone()],
                partner_certs: vec![parties.partner.cert.clone()],
                ..ReceiveSettings::default()
            };
            for message in [full, signed] {
                let mut body = message.body.clone();
                match kind {
                    0 => body.truncate(cut % body.len()),
                    1 => { let i = at % body.len(); body[i] ^= byte.max(1); }
                    _ => { let i = at % body.len(); body.splice(i..i, std::iter::repeat_n(byte, 1 + cut % 40)); }
                }
                assert_agree("damaged", &message.headers, &body, &settings);
            }
        });
    }
}
