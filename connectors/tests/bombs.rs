//! Issue 11, "Zip bombs before authentication": decompression bombs cost a
//! bounded amount of heap, and a partner's policy refuses what it must
//! before anything is inflated.
//!
//! Memory is measured with a counting global allocator (per thread, so
//! tests running in parallel do not see each other's allocations).

use std::io::Write;
use std::path::Path;

use atom_connectors::as2::build::{self, CompressionOrder, MdnRequest, Outbound, SignWith};
use atom_connectors::as2::cms::SignatureScheme;
use atom_connectors::as2::compress;
use atom_connectors::as2::headers::{Headers, MicAlg};
use atom_connectors::as2::payload::MEMORY_THRESHOLD;
use atom_connectors::as2::unwrap::{self, Compression, ReceiveSettings, Unwrapped};
use atom_connectors::keys::{self, KeyKind};
use atom_connectors::{As2Error, ErrorKind};
use base64::Engine;

#[path = "common/heap_meter.rs"]
mod heap_meter;

use heap_meter::measured;

#[global_allocator]
static ALLOCATOR: heap_meter::MeteredAllocator = heap_meter::MeteredAllocator;

// ---------------------------------------------------------------------------
// Bombs, built without ever holding the inflated bytes.

const MIB: usize = 1 << 20;

/// Adler-32 state after `data`, from `(a, b)`.
fn adler_update((mut a, mut b): (u32, u32), data: &[u8]) -> (u32, u32) {
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (a, b)
}

/// Adler-32 state after `n` zero bytes: a stays, b grows by a per byte.
fn adler_zeros((a, b): (u32, u32), n: u64) -> (u32, u32) {
    (
        a,
        ((u64::from(b) + n % 65521 * u64::from(a)) % 65521) as u32,
    )
}

/// Raw deflate of `data` by a fresh compressor, sync-flushed: a
/// self-contained, byte-aligned run of blocks that can be concatenated.
fn deflate_block(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("deflate");
    encoder.flush().expect("sync flush");
    encoder.get_ref().clone()
}

/// A zlib stream of `head` followed by `mib` MiB of `fill` bytes.
fn zlib_bomb(head: &[u8], fill: u8, mib: usize) -> Vec<u8> {
    let chunk = vec![fill; MIB];
    let block = deflate_block(&chunk);
    let last = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best())
        .finish()
        .expect("final block");
    let mut out = Vec::with_capacity(block.len() * mib + head.len() + 64);
    out.extend_from_slice(&[0x78, 0xda]);
    if !head.is_empty() {
        out.extend_from_slice(&deflate_block(head));
    }
    for _ in 0..mib {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&last);
    let mut adler = adler_update((1, 0), head);
    adler = if fill == 0 {
        adler_zeros(adler, (mib * MIB) as u64)
    } else {
        let mut state = adler;
        for _ in 0..mib {
            state = adler_update(state, &chunk);
        }
        state
    };
    out.extend_from_slice(&((adler.1 << 16) | adler.0).to_be_bytes());
    out
}

/// 1 GiB of zeros (a MIME entity) in about a megabyte of CompressedData.
fn one_gib_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        compress::compressed_data(&zlib_bomb(
            b"Content-Type: application/octet-stream\r\n\r\n",
            0,
            1024,
        ))
    })
}

const COMPRESSED: &str = "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z";

fn open(
    settings: &ReceiveSettings,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Result<Unwrapped, As2Error> {
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    for (name, value) in extra {
        headers.push(*name, *value);
    }
    unwrap::unwrap(&headers, body, settings, None)
}

fn settings_in(spool: &Path, limit: u64) -> ReceiveSettings {
    ReceiveSettings {
        max_decompressed_size: limit,
        spool_dir: Some(spool.to_path_buf()),
        ..ReceiveSettings::default()
    }
}

fn spool_entries(spool: &Path) -> usize {
    std::fs::read_dir(spool).expect("spool dir").count()
}

// ---------------------------------------------------------------------------

#[test]
fn one_gib_bomb_is_refused_at_the_limit_with_a_flat_heap() {
    const LIMIT: u64 = 64 << 20;
    let bomb = one_gib_bomb();
    assert!(bomb.len() < 2 * MIB, "bomb of {} bytes", bomb.len());
    let spool = tempfile::tempdir().expect("spool");
    let settings = settings_in(spool.path(), LIMIT);
    let (result, peak, _) = measured(|| open(&settings, COMPRESSED, &[], bomb));
    let err = result.expect_err("1 GiB refused");
    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
    assert_eq!(err.modifier().as_str(), "decompression-failed");
    assert!(
        err.message()
            .contains("exceeds the limit of 67108864 bytes (max_decompressed_size"),
        "{err}"
    );
    assert!(
        err.message()
            .contains("raise security.max_decompressed_size"),
        "{err}"
    );
    eprintln!(
        "1 GiB bomb ({} bytes) refused at {LIMIT} bytes; peak heap {} KiB",
        bomb.len(),
        peak >> 10
    );
    // The compressed octets (about 1 MiB), the in-memory part of the spill
    // (4 MiB) and a 64 KiB inflate buffer; nothing grows with the bomb.
    assert!(
        peak < bomb.len() + MEMORY_THRESHOLD + 2 * MIB,
        "peak heap {} KiB",
        peak >> 10
    );
    // The spill file was anonymous: nothing is left behind.
    assert_eq!(spool_entries(spool.path()), 0);
}

#[test]
fn inflation_stops_at_limit_plus_one_byte() {
    let zlib = zlib_bomb(b"", 0, 8);
    let mut delivered = 0u64;
    let limit = 5 * MIB as u64 + 7;
    let err = compress::inflate_to(&zlib, limit, |chunk| {
        delivered += chunk.len() as u64;
        Ok(())
    })
    .expect_err("over the limit");
    assert_eq!(err.kind(), ErrorKind::Decompression);
    assert!(
        err.message()
            .contains(&format!("exceeds the limit of {limit} bytes")),
        "{err}"
    );
    assert!(delivered <= limit, "{delivered} bytes passed the limit");
    // Exactly at the limit is fine.
    let mut total = 0u64;
    compress::inflate_to(&zlib, 8 * MIB as u64, |chunk| {
        total += chunk.len() as u64;
        Ok(())
    })
    .expect("exactly the limit");
    assert_eq!(total, 8 * MIB as u64);
}

#[test]
fn content_under_the_limit_is_spilled_and_mapped() {
    let spool = tempfile::tempdir().expect("spool");
    let settings = settings_in(spool.path(), 512 << 20);
    let head = b"Content-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"big.edi\"\r\n\r\n";
    let body = compress::compressed_data(&zlib_bomb(head, 0, 48));
    let (result, peak, _) = measured(|| open(&settings, COMPRESSED, &[], &body));
    let opened = result.expect("48 MiB opens");
    eprintln!("48 MiB inflated; peak heap {} KiB", peak >> 10);
    assert!(opened.payload.is_mapped(), "{:?}", opened.payload);
    assert_eq!(opened.payload.len(), 48 * MIB);
    assert!(opened.payload.iter().step_by(4096).all(|&b| b == 0));
    assert_eq!(opened.content_type, "application/edi-x12");
    assert_eq!(opened.file_name.as_deref(), Some("big.edi"));
    assert_eq!(opened.compression, Some(Compression::Unsigned));
    assert!(
        peak < body.len() + MEMORY_THRESHOLD + 2 * MIB,
        "peak heap {} KiB",
        peak >> 10
    );
    // Without MIME headers: the header search stops after 64 KiB (the
    // mapped zeros are not scanned) and the content is the payload.
    let bare = compress::compressed_data(&zlib_bomb(b"", 0, 16));
    let opened = open(&settings, COMPRESSED, &[], &bare).expect("16 MiB opens");
    assert!(opened.payload.is_mapped());
    assert_eq!(opened.payload.len(), 16 * MIB);
    assert_eq!(opened.content_type, "application/octet-stream");
    assert_eq!(
        opened.warnings,
        vec!["decompressed content has no MIME headers; treated as application/octet-stream"]
    );
    // Small content stays on the heap.
    let small = compress::compressed_data(&zlib_bomb(head, 0, 1));
    let opened = open(&settings, COMPRESSED, &[], &small).expect("1 MiB opens");
    assert!(!opened.payload.is_mapped());
    assert_eq!(opened.payload.len(), MIB);
}

#[test]
fn inflated_base64_payload_is_decoded_to_the_spill() {
    // 32 MiB of "AAAA" inside: 24 MiB of zeros once decoded.
    let spool = tempfile::tempdir().expect("spool");
    let settings = settings_in(spool.path(), 512 << 20);
    let head =
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    let body = compress::compressed_data(&zlib_bomb(head, b'A', 32));
    let (result, peak, _) = measured(|| open(&settings, COMPRESSED, &[], &body));
    let opened = result.expect("opens");
    eprintln!(
        "32 MiB base64 inflated and decoded; peak heap {} KiB",
        peak >> 10
    );
    assert!(opened.payload.is_mapped());
    assert_eq!(opened.payload.len(), 24 * MIB);
    assert!(opened.payload.iter().step_by(4093).all(|&b| b == 0));
    assert!(
        peak < body.len() + MEMORY_THRESHOLD + 2 * MIB,
        "peak heap {} KiB",
        peak >> 10
    );
}

#[test]
fn require_encrypted_refuses_unencrypted_bodies_before_inflating() {
    let spool = tempfile::tempdir().expect("spool");
    let settings = ReceiveSettings {
        require_encrypted: true,
        ..settings_in(spool.path(), 512 << 20)
    };
    let bomb = one_gib_bomb();
    let b64 = base64::engine::general_purpose::STANDARD.encode(bomb);
    // (what, Content-Type, extra headers, body)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);
    let cases: [Case<'_>; 5] = [
        ("compressed, binary", COMPRESSED, &[], bomb),
        (
            "compressed, base64",
            COMPRESSED,
            &[("Content-Transfer-Encoding", "base64")],
            b64.as_bytes(),
        ),
        // No smime-type: the ContentInfo OID (first bytes) tells.
        ("compressed, undeclared", "application/pkcs7-mime", &[], bomb),
        (
            "plain",
            "application/edi-x12",
            &[],
            b"ISA*00*...~".as_slice(),
        ),
        (
            "signed",
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=b",
            &[],
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\ngarbage\r\n--b--\r\n".as_slice(),
        ),
    ];
    for (what, content_type, extra, body) in cases {
        let (result, peak, allocated) = measured(|| open(&settings, content_type, extra, body));
        let err = result.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InsufficientSecurity, "{what}: {err}");
        assert_eq!(err.modifier().as_str(), "insufficient-message-security");
        assert!(
            err.message().contains("requires encryption")
                && err.message().contains("refused before decompression"),
            "{what}: {err}"
        );
        // Not even the compressed octets (about 1 MiB) were copied, let
        // alone inflated: a few KiB of headers and the peeked prefix.
        eprintln!("{what}: refused; {allocated} bytes allocated, peak {peak}");
        assert!(allocated < 64 << 10, "{what}: {allocated} bytes allocated");
    }
    let err = open(&settings, COMPRESSED, &[], bomb).expect_err("refused");
    assert!(
        err.message()
            .contains("outer layer is application/pkcs7-mime compressed-data"),
        "{err}"
    );
    assert_eq!(spool_entries(spool.path()), 0);
}

#[test]
fn require_signed_refuses_only_what_cannot_hold_a_signature() {
    let signer = keys::generate("bombs signer", KeyKind::Rsa(2048), 30).expect("key");
    let settings = ReceiveSettings {
        require_signed: true,
        partner_certs: vec![signer.cert.clone()],
        ..ReceiveSettings::default()
    };
    // A plain body cannot carry a signature: refused as it is read.
    let (result, _, allocated) =
        measured(|| open(&settings, "application/edi-x12", &[], &[b'x'; 100_000]));
    let err = result.expect_err("unsigned");
    assert_eq!(err.kind(), ErrorKind::InsufficientSecurity, "{err}");
    assert!(err.message().contains("requires a signature"), "{err}");
    assert!(allocated < 64 << 10, "{allocated} bytes allocated");
    // A signature inside the compression (sign, then compress) or outside
    // it (compress, then sign) is found and verified.
    let payload = b"ISA*00*          *00*          *ZZ*SENDER~".repeat(1000);
    for (order, expected) in [
        (CompressionOrder::AfterSigning, Compression::AfterSigning),
        (CompressionOrder::BeforeSigning, Compression::BeforeSigning),
    ] {
        let built = build::build(&Outbound {
            payload: &payload,
            content_type: "application/edi-x12",
            file_name: None,
            from: "a",
            to: "b",
            subject: "s",
            message_id: None,
            compression: order,
            sign: Some(SignWith {
                key: &signer,
                digest: MicAlg::Sha256,
                scheme: SignatureScheme::Pkcs1v15,
            }),
            encrypt: None,
            mdn: MdnRequest::None,
            notification_to: "x@example.com",
            unsigned_compressed_mic: Default::default(),
        })
        .expect("builds");
        let opened = unwrap::unwrap(&built.headers, &built.body, &settings, None)
            .unwrap_or_else(|e| panic!("{order:?}: {e}"));
        assert_eq!(opened.compression, Some(expected));
        assert_eq!(opened.payload, payload);
        assert_eq!(opened.mic, built.expected_mic, "{order:?}");
    }
    // A compressed bomb to a require_signed partner may hold a signature,
    // so it is inflated, but only as far as the limit and off the heap.
    let spool = tempfile::tempdir().expect("spool");
    let settings = ReceiveSettings {
        max_decompressed_size: 64 << 20,
        spool_dir: Some(spool.path().to_path_buf()),
        ..settings
    };
    let (result, peak, _) = measured(|| open(&settings, COMPRESSED, &[], one_gib_bomb()));
    let err = result.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Decompression, "{err}");
    assert!(peak < 8 * MIB, "peak heap {} KiB", peak >> 10);
}

#[test]
fn large_sign_then_compress_verifies_from_the_spill() {
    // 24 MiB signed, then compressed: the signed entity is inflated to a
    // mapped file and verified there, not copied onto the heap.
    let signer = keys::generate("bombs signer", KeyKind::Rsa(2048), 30).expect("key");
    let payload = vec![b'7'; 24 * MIB];
    let built = build::build(&Outbound {
        payload: &payload,
        content_type: "application/octet-stream",
        file_name: None,
        from: "a",
        to: "b",
        subject: "s",
        message_id: None,
        compression: CompressionOrder::AfterSigning,
        sign: Some(SignWith {
            key: &signer,
            digest: MicAlg::Sha256,
            scheme: SignatureScheme::Pkcs1v15,
        }),
        encrypt: None,
        mdn: MdnRequest::None,
        notification_to: "x@example.com",
        unsigned_compressed_mic: Default::default(),
    })
    .expect("builds");
    drop(payload);
    let spool = tempfile::tempdir().expect("spool");
    let settings = ReceiveSettings {
        require_signed: true,
        partner_certs: vec![signer.cert.clone()],
        ..settings_in(spool.path(), 512 << 20)
    };
    let (result, peak, _) =
        measured(|| unwrap::unwrap(&built.headers, &built.body, &settings, None));
    let opened = result.expect("opens");
    eprintln!(
        "24 MiB signed then compressed ({} bytes): peak heap {} KiB",
        built.body.len(),
        peak >> 10
    );
    assert!(opened.payload.is_mapped());
    assert_eq!(opened.payload.len(), 24 * MIB);
    assert_eq!(opened.mic, built.expected_mic);
    assert!(
        peak < built.body.len() + MEMORY_THRESHOLD + 4 * MIB,
        "peak heap {} KiB",
        peak >> 10
    );
}
