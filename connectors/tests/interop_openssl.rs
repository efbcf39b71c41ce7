//! Interoperability with the `openssl cms` command line (OpenSSL 3.0), an
//! independent CMS implementation with its own S/MIME parser:
//!
//! - what we build (3DES, AES-CBC, AES-GCM AuthEnvelopedData, RSA-OAEP;
//!   detached SHA-1/256/512 and RSASSA-PSS signatures) opens and verifies
//!   with `openssl cms -decrypt` / `-verify -binary -noverify`;
//! - what `openssl cms -encrypt` / `-sign` writes opens with our
//!   [`unwrap::unwrap`] and [`cms`] functions.
//!
//! Every comparison is byte for byte.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use atom_connectors::as2::build::{
    self, CompressionOrder, EncryptFor, MdnRequest, Outbound, SignWith,
};
use atom_connectors::as2::cms::{self, ContentCipher, KeyPair, KeyTransport, SignatureScheme};
use atom_connectors::as2::headers::{Headers, MicAlg};
use atom_connectors::as2::mic::{Mic, UnsignedCompressedMic};
use atom_connectors::as2::mime;
use atom_connectors::as2::unwrap::{self, ReceiveSettings};
use atom_connectors::keys::{self, KeyKind};
use common::{read_vector, split_capture};

/// Our key and the openssl side's key, written to a tempdir as PEM.
struct Fixture {
    dir: tempfile::TempDir,
    atom: KeyPair,
    peer: KeyPair,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let atom = keys::generate("atom-openssl", KeyKind::Rsa(2048), 30).expect("our key");
        let peer = keys::generate("openssl-peer", KeyKind::Rsa(2048), 30).expect("peer key");
        let fx = Fixture { dir, atom, peer };
        fx.write(
            "atom.key",
            &fx.atom.key.private_key_to_pem_pkcs8().expect("pem"),
        );
        fx.write("atom.crt", &fx.atom.cert.to_pem().expect("pem"));
        fx.write(
            "peer.key",
            &fx.peer.key.private_key_to_pem_pkcs8().expect("pem"),
        );
        fx.write("peer.crt", &fx.peer.cert.to_pem().expect("pem"));
        fx
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    fn read(&self, name: &str) -> Vec<u8> {
        let path = self.path(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Runs `openssl` in the tempdir; fails the test on a non-zero exit.
    fn openssl<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run the openssl command line (is it on PATH?): {e}")
            });
        assert!(
            output.status.success(),
            "openssl {:?} failed ({}):\n{}",
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A human-readable dump of a DER CMS structure.
    fn print_cms(&self, der_file: &str) -> String {
        self.openssl([
            "cms", "-cmsout", "-print", "-inform", "DER", "-in", der_file,
        ])
    }

    fn receive_settings(&self) -> ReceiveSettings {
        ReceiveSettings {
            decryption_keys: vec![self.atom.clone()],
            partner_certs: vec![self.peer.cert.clone()],
            ..ReceiveSettings::default()
        }
    }
}

/// An outbound message from us to the openssl side.
fn outbound<'a>(
    fx: &'a Fixture,
    payload: &'a [u8],
    sign: Option<(MicAlg, SignatureScheme)>,
    encrypt: Option<(ContentCipher, KeyTransport)>,
) -> Outbound<'a> {
    Outbound {
        payload,
        content_type: "application/octet-stream",
        file_name: Some("payload.bin"),
        from: "atom-openssl",
        to: "openssl-peer",
        subject: "openssl interop",
        message_id: None,
        compression: CompressionOrder::None,
        sign: sign.map(|(digest, scheme)| SignWith {
            key: &fx.atom,
            digest,
            scheme,
        }),
        encrypt: encrypt.map(|(cipher, transport)| EncryptFor {
            cert: &fx.peer.cert,
            cipher,
            transport,
        }),
        mdn: MdnRequest::Sync {
            signed: sign.map(|(d, _)| d),
        },
        notification_to: "atom@example.invalid",
        unsigned_compressed_mic: Default::default(),
    }
}

/// The body of a MIME entity, which must be the payload exactly.
fn entity_body(entity: &[u8]) -> Vec<u8> {
    let parsed = mime::parse_entity(entity).expect("MIME entity");
    parsed.decoded_body().expect("decodable body").into_owned()
}

/// `openssl cms -decrypt` opens what we encrypt, for every cipher and key
/// transport we send, and reads the algorithms we claim to use.
#[test]
fn openssl_decrypts_our_messages() {
    let fx = Fixture::new();
    let payload = read_vector("payload.binary");
    let cases: [(ContentCipher, KeyTransport, &str, &str); 7] = [
        (
            ContentCipher::Des3,
            KeyTransport::RsaPkcs1v15,
            "des-ede3-cbc",
            "rsaEncryption",
        ),
        (
            ContentCipher::Aes128Cbc,
            KeyTransport::RsaPkcs1v15,
            "aes-128-cbc",
            "rsaEncryption",
        ),
        (
            ContentCipher::Aes192Cbc,
            KeyTransport::RsaPkcs1v15,
            "aes-192-cbc",
            "rsaEncryption",
        ),
        (
            ContentCipher::Aes256Cbc,
            KeyTransport::RsaPkcs1v15,
            "aes-256-cbc",
            "rsaEncryption",
        ),
        (
            ContentCipher::Aes128Gcm,
            KeyTransport::RsaPkcs1v15,
            "aes-128-gcm",
            "rsaEncryption",
        ),
        (
            ContentCipher::Aes256Cbc,
            KeyTransport::RsaOaep,
            "aes-256-cbc",
            "rsaesOaep",
        ),
        (
            ContentCipher::Aes128Gcm,
            KeyTransport::RsaOaep,
            "aes-128-gcm",
            "rsaesOaep",
        ),
    ];
    let mut decrypted = 0;
    for (cipher, transport, openssl_cipher, openssl_transport) in cases {
        let name = format!("{}-{transport:?}", cipher.name());
        let message = build::build(&outbound(&fx, &payload, None, Some((cipher, transport))))
            .unwrap_or_else(|e| panic!("{name}: build: {e}"));
        let der = format!("{name}.der");
        fx.write(&der, &message.body);
        let dump = fx.print_cms(&der);
        let authenticated = cipher == ContentCipher::Aes128Gcm;
        let content_type = if authenticated {
            "id-smime-ct-authEnvelopedData"
        } else {
            "pkcs7-envelopedData"
        };
        // The label says what the CMS structure is (RFC 8551 3.2.2).
        let label = message
            .headers
            .get("content-type")
            .expect("a Content-Type")
            .to_string();
        let smime_type = if authenticated {
            "smime-type=authEnveloped-data;"
        } else {
            "smime-type=enveloped-data;"
        };
        assert!(label.contains(smime_type), "{name}: labelled {label}");
        assert!(
            dump.contains(content_type),
            "{name}: not {content_type}:\n{dump}"
        );
        assert!(
            dump.contains(openssl_cipher),
            "{name}: openssl does not see {openssl_cipher}:\n{dump}"
        );
        assert!(
            dump.contains(openssl_transport),
            "{name}: openssl does not see {openssl_transport}:\n{dump}"
        );

        let out = format!("{name}.out");
        fx.openssl([
            "cms", "-decrypt", "-binary", "-inform", "DER", "-in", &der, "-recip", "peer.crt",
            "-inkey", "peer.key", "-out", &out,
        ]);
        let plain = fx.read(&out);
        // Byte for byte what our own decryption yields, and the payload inside.
        let ours = cms::decrypt(&message.body, std::slice::from_ref(&fx.peer))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.authenticated, authenticated, "{name}");
        assert!(
            plain == ours.content,
            "{name}: openssl and Atom decrypt to different bytes"
        );
        assert!(entity_body(&plain) == payload, "{name}: payload differs");
        // Unsigned and encrypted: the MIC covers the decrypted entity.
        let mic = Mic::compute(message.expected_mic.alg, "sha256", &plain).expect("mic");
        assert!(
            mic.matches(&message.expected_mic),
            "{name}: MIC over the decrypted entity"
        );
        decrypted += 1;
    }
    assert_eq!(decrypted, 7);
}

/// The two parts of our multipart/signed body, split here without the
/// crate's MIME code: the signed entity and the base64 signature part body.
fn split_signed(content_type: &str, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary")
        .trim_matches('"');
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
            .expect("delimiter")
    };
    let open = format!("--{boundary}\r\n");
    let delimiter = format!("\r\n--{boundary}\r\n");
    let start = find(body, open.as_bytes(), 0) + open.len();
    let end = find(body, delimiter.as_bytes(), start);
    let signature_part = &body[end + delimiter.len()..];
    let blank = find(signature_part, b"\r\n\r\n", 0) + 4;
    let close = find(signature_part, format!("--{boundary}--").as_bytes(), blank);
    (
        body[start..end].to_vec(),
        signature_part[blank..close].to_vec(),
    )
}

/// `openssl cms -verify -binary -noverify` accepts our detached signatures
/// (PKCS#1 v1.5 with SHA-1/256/512, RSASSA-PSS with SHA-256/384) over text
/// with LF line ends and over binary data, and the bytes it verified digest
/// to the MIC we expect back.
///
/// OpenSSL's own S/MIME reader rejoins the lines of the signed part with LF
/// (CRLF with -crlfeol) even with -binary, so it can only check a signed part
/// whose line ends are uniform; that path is exercised with a CRLF payload.
/// Arbitrary content goes through detached DER plus `-content`.
#[test]
fn openssl_verifies_our_signatures() {
    let fx = Fixture::new();
    let payloads = [
        ("text-lf", read_vector("payload.txt")),
        ("binary", read_vector("payload.binary")),
    ];
    let cases: [(MicAlg, SignatureScheme, &str); 5] = [
        (MicAlg::Sha1, SignatureScheme::Pkcs1v15, "sha1"),
        (MicAlg::Sha256, SignatureScheme::Pkcs1v15, "sha256"),
        (MicAlg::Sha512, SignatureScheme::Pkcs1v15, "sha512"),
        (MicAlg::Sha256, SignatureScheme::Pss, "sha256"),
        (MicAlg::Sha384, SignatureScheme::Pss, "sha384"),
    ];
    let verify = |sig: &str, content: &str, out: &str| {
        fx.openssl([
            "cms",
            "-verify",
            "-binary",
            "-noverify",
            "-nointern",
            "-certfile",
            "atom.crt",
            "-inform",
            "DER",
            "-in",
            sig,
            "-content",
            content,
            "-out",
            out,
        ])
    };
    let mut verified = 0;
    for (digest, scheme, openssl_digest) in cases {
        for (kind, payload) in &payloads {
            let name = format!("{digest}-{scheme:?}-{kind}");
            let message = build::build(&outbound(&fx, payload, Some((digest, scheme)), None))
                .unwrap_or_else(|e| panic!("{name}: build: {e}"));
            let content_type = message.headers.get("content-type").expect("content-type");
            assert!(
                content_type.contains(&format!("micalg={}", digest.compact_name())),
                "{name}: {content_type}"
            );
            let (content, signature_b64) = split_signed(content_type, &message.body);
            let content_file = format!("{name}.content");
            fx.write(&content_file, &content);
            let b64 = format!("{name}.b64");
            let sig = format!("{name}.p7s");
            fx.write(&b64, &signature_b64);
            fx.openssl(["base64", "-d", "-in", &b64, "-out", &sig]);

            let dump = fx.print_cms(&sig);
            assert!(
                dump.contains(&format!("algorithm: {openssl_digest} ")),
                "{name}: digest not {openssl_digest}:\n{dump}"
            );
            if scheme == SignatureScheme::Pss {
                // RFC 4056: RSASSA-PSS with explicit parameters.
                // The signatureAlgorithm field, up to the signature value.
                let algorithm = dump
                    .split("rsassaPss")
                    .nth(1)
                    .and_then(|rest| rest.split("signature:").next())
                    .unwrap_or_else(|| panic!("{name}: not RSASSA-PSS:\n{dump}"));
                assert!(
                    algorithm.contains("parameter: SEQUENCE")
                        && algorithm.contains(&format!(":{openssl_digest}\n"))
                        && algorithm.contains(":mgf1\n"),
                    "{name}: RSASSA-PSS parameters missing or not {openssl_digest}:\n{dump}"
                );
            }
            let out = format!("{name}.out");
            verify(&sig, &content_file, &out);
            let signed = fx.read(&out);
            assert!(signed == content, "{name}: openssl verified other bytes");
            assert!(entity_body(&signed) == *payload, "{name}: payload differs");
            let mic = Mic::compute(digest, digest.compact_name(), &signed).expect("mic");
            assert!(
                mic.matches(&message.expected_mic),
                "{name}: MIC {mic:?} vs expected {:?}",
                message.expected_mic
            );
            // A changed byte must not verify.
            let mut tampered = content.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            fx.write(&content_file, &tampered);
            let refused = Command::new("openssl")
                .args([
                    "cms",
                    "-verify",
                    "-binary",
                    "-noverify",
                    "-nointern",
                    "-certfile",
                    "atom.crt",
                    "-inform",
                    "DER",
                    "-in",
                    &sig,
                ])
                .args(["-content", &content_file, "-out", "/dev/null"])
                .current_dir(fx.dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                !refused.status.success(),
                "{name}: tampered content verifies"
            );
            verified += 1;
        }

        // OpenSSL parses our multipart/signed itself (CRLF payload, -crlfeol).
        let name = format!("{digest}-{scheme:?}-smime");
        let payload = read_vector("payload_dos.txt");
        let message = build::build(&outbound(&fx, &payload, Some((digest, scheme)), None))
            .unwrap_or_else(|e| panic!("{name}: build: {e}"));
        let mut smime = format!(
            "MIME-Version: 1.0\r\nContent-Type: {}\r\n\r\n",
            message.headers.get("content-type").expect("content-type")
        )
        .into_bytes();
        smime.extend_from_slice(&message.body);
        let eml = format!("{name}.eml");
        fx.write(&eml, &smime);
        let out = format!("{name}.out");
        fx.openssl([
            "cms",
            "-verify",
            "-binary",
            "-crlfeol",
            "-noverify",
            "-nointern",
            "-certfile",
            "atom.crt",
            "-in",
            &eml,
            "-out",
            &out,
        ]);
        let signed = fx.read(&out);
        assert!(entity_body(&signed) == payload, "{name}: payload differs");
        let mic = Mic::compute(digest, digest.compact_name(), &signed).expect("mic");
        assert!(
            mic.matches(&message.expected_mic),
            "{name}: MIC {mic:?} vs expected {:?}",
            message.expected_mic
        );
        verified += 1;
    }
    assert_eq!(verified, 15);
}

/// The MIME entity the openssl side signs and encrypts.
fn peer_entity(payload: &[u8]) -> Vec<u8> {
    let mut entity = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"payload.bin\"\r\n\r\n".to_vec();
    entity.extend_from_slice(payload);
    entity
}

/// HTTP headers for a DER enveloped-data body.
fn enveloped_headers() -> Headers {
    pkcs7_mime_headers("enveloped-data")
}

/// HTTP headers for a DER CMS body with this smime-type.
fn pkcs7_mime_headers(smime_type: &str) -> Headers {
    let mut headers = Headers::new();
    headers.push(
        "Content-Type",
        format!("application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m"),
    );
    headers
}

/// Messages encrypted by `openssl cms -encrypt` open with our unwrap.
#[test]
fn we_open_openssl_encrypted_messages() {
    let fx = Fixture::new();
    let payload = read_vector("payload.binary");
    let entity = peer_entity(&payload);
    fx.write("entity.mime", &entity);
    let settings = fx.receive_settings();
    let cases: [(&str, &[&str], &str, &str); 7] = [
        ("des3", &["-des3"], "3des", "rsa-pkcs1v15"),
        ("aes128", &["-aes128"], "aes128-cbc", "rsa-pkcs1v15"),
        ("aes192", &["-aes192"], "aes192-cbc", "rsa-pkcs1v15"),
        ("aes256", &["-aes256"], "aes256-cbc", "rsa-pkcs1v15"),
        (
            "aes128-gcm",
            &["-aes-128-gcm"],
            "aes128-gcm",
            "rsa-pkcs1v15",
        ),
        (
            "aes256-oaep",
            &["-aes256", "-keyopt", "rsa_padding_mode:oaep"],
            "aes256-cbc",
            "rsa-oaep",
        ),
        (
            "gcm-oaep-sha256",
            &[
                "-aes-256-gcm",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
            "aes256-gcm",
            "rsa-oaep",
        ),
    ];
    let mut opened_count = 0;
    for (name, options, cipher, transport) in cases {
        let der = format!("{name}.der");
        // -keyopt applies to the -recip before it.
        let mut args = vec![
            "cms",
            "-encrypt",
            "-binary",
            "-in",
            "entity.mime",
            "-outform",
            "DER",
            "-out",
            &der,
            "-recip",
            "atom.crt",
        ];
        args.extend_from_slice(options);
        fx.openssl(&args);
        let body = fx.read(&der);
        let opened = unwrap::unwrap(&enveloped_headers(), &body, &settings, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if cipher.ends_with("-gcm") {
            // Labelled as RFC 8551 says (authEnveloped-data), it opens too.
            let relabelled = unwrap::unwrap(
                &pkcs7_mime_headers("authEnveloped-data"),
                &body,
                &settings,
                None,
            )
            .unwrap_or_else(|e| panic!("{name} labelled authEnveloped-data: {e}"));
            assert!(relabelled.payload == payload, "{name}: payload differs");
        }
        assert!(opened.payload == payload, "{name}: payload differs");
        assert_eq!(opened.file_name.as_deref(), Some("payload.bin"), "{name}");
        let enc = opened.encryption.as_ref().expect("encrypted");
        assert_eq!(enc.algorithm, cipher, "{name}");
        assert_eq!(enc.key_transport.as_deref(), Some(transport), "{name}");
        // The MIC of an unsigned encrypted message covers the decrypted entity.
        assert_eq!(
            opened.mic.value,
            Mic::compute(MicAlg::Sha256, "sha256", &entity)
                .expect("mic")
                .value,
            "{name}: MIC"
        );
        opened_count += 1;
    }

    // S/MIME output (base64 with its own MIME headers) used as the request.
    fx.openssl([
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-in",
        "entity.mime",
        "-out",
        "smime.txt",
        "atom.crt",
    ]);
    let (headers, body) = split_capture(&fx.read("smime.txt"));
    assert_eq!(headers.get("content-transfer-encoding"), Some("base64"));
    let opened = unwrap::unwrap(&headers, &body, &settings, None).expect("base64 S/MIME opens");
    assert!(opened.payload == payload, "smime: payload differs");
    opened_count += 1;
    assert_eq!(opened_count, 8);
}

/// Detached signatures by `openssl cms -sign` verify with our unwrap (from
/// openssl's own multipart/signed) and with cms::verify_detached (DER).
#[test]
fn we_verify_openssl_signatures() {
    let fx = Fixture::new();
    let payload = read_vector("payload.txt");
    let entity = peer_entity(&payload);
    fx.write("entity.mime", &entity);
    let settings = fx.receive_settings();
    let cases: [(&str, MicAlg, &[&str]); 5] = [
        ("sha1", MicAlg::Sha1, &["-md", "sha1"]),
        ("sha256", MicAlg::Sha256, &["-md", "sha256"]),
        ("sha384", MicAlg::Sha384, &["-md", "sha384"]),
        (
            "sha512-crlfeol",
            MicAlg::Sha512,
            &["-md", "sha512", "-crlfeol"],
        ),
        (
            "pss-sha256",
            MicAlg::Sha256,
            &["-md", "sha256", "-keyopt", "rsa_padding_mode:pss"],
        ),
    ];
    let mut verified = 0;
    for (name, digest, options) in cases {
        // S/MIME multipart/signed exactly as openssl writes it (LF line ends
        // unless -crlfeol, a preamble, micalg spelled "sha-256").
        let smime = format!("{name}.eml");
        let mut args = vec![
            "cms",
            "-sign",
            "-binary",
            "-in",
            "entity.mime",
            "-signer",
            "peer.crt",
            "-inkey",
            "peer.key",
            "-out",
            &smime,
        ];
        args.extend_from_slice(options);
        fx.openssl(&args);
        let (headers, body) = split_capture(&fx.read(&smime));
        let opened = unwrap::unwrap(&headers, &body, &settings, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(opened.payload == payload, "{name}: payload differs");
        let sig = opened.signature.as_ref().expect("signed");
        assert_eq!(sig.digest, Some(digest), "{name}");
        // -binary: openssl signed the entity byte for byte, so the MIC is over it.
        let mic = Mic::compute(digest, digest.compact_name(), &entity).expect("mic");
        assert!(
            opened.mic.matches(&mic),
            "{name}: MIC {:?} vs {mic:?}",
            opened.mic
        );

        // The same signature as detached DER, through cms::verify_detached.
        let der = format!("{name}.p7s");
        let mut args = vec![
            "cms",
            "-sign",
            "-binary",
            "-in",
            "entity.mime",
            "-signer",
            "peer.crt",
            "-inkey",
            "peer.key",
            "-outform",
            "DER",
            "-out",
            &der,
        ];
        args.extend(options.iter().filter(|o| **o != "-crlfeol"));
        fx.openssl(&args);
        let checked =
            cms::verify_detached(&fx.read(&der), &entity, std::slice::from_ref(&fx.peer.cert))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked.digest, Some(digest), "{name}");
        let mut tampered = entity.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(
            cms::verify_detached(
                &fx.read(&der),
                &tampered,
                std::slice::from_ref(&fx.peer.cert)
            )
            .is_err(),
            "{name}: tampered content verifies"
        );
        verified += 1;
    }
    assert_eq!(verified, 5);

    // Signed then encrypted by openssl, as an AS2 sender layers them.
    fx.openssl([
        "cms",
        "-sign",
        "-binary",
        "-crlfeol",
        "-md",
        "sha384",
        "-in",
        "entity.mime",
        "-signer",
        "peer.crt",
        "-inkey",
        "peer.key",
        "-out",
        "signed.eml",
    ]);
    fx.openssl([
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-in",
        "signed.eml",
        "-outform",
        "DER",
        "-out",
        "signed-encrypted.der",
        "atom.crt",
    ]);
    let opened = unwrap::unwrap(
        &enveloped_headers(),
        &fx.read("signed-encrypted.der"),
        &settings,
        None,
    )
    .expect("signed+encrypted opens");
    assert!(
        opened.payload == payload,
        "signed+encrypted: payload differs"
    );
    assert!(opened.encryption.is_some() && opened.signature.is_some());
    let mic = Mic::compute(MicAlg::Sha384, "sha384", &entity).expect("mic");
    assert!(
        opened.mic.matches(&mic),
        "signed+encrypted: MIC {:?} vs {mic:?}",
        opened.mic
    );
}

/// Opens with the streaming unwrap (what a spooled large request takes).
fn open_streamed(headers: &Headers, body: &[u8], settings: &ReceiveSettings) -> String {
    use std::io::Write;
    let mut spooled = tempfile::tempfile().expect("temp file");
    spooled.write_all(body).expect("spool");
    let source =
        atom_connectors::as2::stream::Source::whole(std::sync::Arc::new(spooled)).expect("source");
    let payload = tempfile::tempfile().expect("temp file");
    atom_connectors::as2::stream::unwrap_file(headers, &source, settings, None, &payload)
        .expect("opens streamed")
        .mic
        .value
}

fn sha256_mic(bytes: &[u8]) -> String {
    Mic::compute(MicAlg::Sha256, "sha256", bytes)
        .expect("mic")
        .value
}

/// Found with OpenAS2 (issue 16): for a message compressed but not
/// signed, Atom's MIC covered the compressed entity, which no other
/// product computes, so their senders refused our receipts. RFC 5402 4.2
/// and 4.3: the MIC covers the MIME entity before compression, headers
/// included (Mendelson, and OpenAS2 for compressed and encrypted
/// messages); `payload` is OpenAS2's form for compressed-only messages;
/// `compressed_entity` keeps the old one. Opened in memory and streamed.
#[test]
fn unsigned_compressed_mic_covered_the_compressed_entity_regression() {
    let fx = Fixture::new();
    let payload = read_vector("payload.binary");
    let entity = peer_entity(&payload);
    fx.write("entity.mime", &entity);
    // Debian's openssl has no zlib (`cms -compress` fails): the
    // CompressedData layer is ours, the encryption around it openssl's.
    let compressed = atom_connectors::as2::compress::compress(&entity).expect("compresses");
    // The compressed layer as a MIME entity, for encrypting.
    let mut compressed_entity = b"Content-Type: application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    compressed_entity.extend_from_slice(&compressed);
    fx.write("z.mime", &compressed_entity);
    fx.openssl([
        "cms", "-encrypt", "-binary", "-aes256", "-in", "z.mime", "-outform", "DER", "-out",
        "ez.der", "atom.crt",
    ]);
    let encrypted = fx.read("ez.der");
    let cases: [(&str, Headers, &[u8], &[u8]); 2] = [
        (
            "compressed",
            pkcs7_mime_headers("compressed-data"),
            &compressed,
            &compressed,
        ),
        (
            "compressed+encrypted",
            enveloped_headers(),
            &encrypted,
            &compressed_entity,
        ),
    ];
    for (name, headers, body, old_mic_over) in cases {
        for (policy, covered) in [
            (UnsignedCompressedMic::UncompressedEntity, entity.as_slice()),
            (UnsignedCompressedMic::Payload, payload.as_slice()),
            (UnsignedCompressedMic::CompressedEntity, old_mic_over),
        ] {
            let settings = ReceiveSettings {
                unsigned_compressed_mic: policy,
                ..fx.receive_settings()
            };
            let opened = unwrap::unwrap(&headers, body, &settings, None)
                .unwrap_or_else(|e| panic!("{name} {policy:?}: {e}"));
            assert!(opened.payload == payload, "{name}: payload");
            assert_eq!(
                opened.mic.value,
                sha256_mic(covered),
                "{name} {policy:?}: MIC in memory"
            );
            assert_eq!(
                open_streamed(&headers, body, &settings),
                opened.mic.value,
                "{name} {policy:?}: MIC streamed"
            );
        }
    }
}

/// What we send unsigned and compressed expects back the MIC the partner's
/// setting says, and a receiver with the same setting returns it.
#[test]
fn our_unsigned_compressed_messages_expect_the_partners_mic() {
    let fx = Fixture::new();
    let payload = b"ISA*00*unsigned compressed\r\n".repeat(50);
    for encrypt in [false, true] {
        for policy in [
            UnsignedCompressedMic::UncompressedEntity,
            UnsignedCompressedMic::Payload,
            UnsignedCompressedMic::CompressedEntity,
        ] {
            let mut out = outbound(
                &fx,
                &payload,
                None,
                encrypt.then_some((ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15)),
            );
            out.compression = CompressionOrder::BeforeSigning;
            out.unsigned_compressed_mic = policy;
            let built = build::build(&out).expect("builds");
            if policy == UnsignedCompressedMic::Payload {
                assert_eq!(built.expected_mic.value, sha256_mic(&payload));
            }
            // The peer's key opens what was encrypted for it.
            let settings = ReceiveSettings {
                decryption_keys: vec![fx.peer.clone()],
                unsigned_compressed_mic: policy,
                ..ReceiveSettings::default()
            };
            let opened = unwrap::unwrap(&built.headers, &built.body, &settings, None)
                .unwrap_or_else(|e| panic!("{policy:?} encrypt {encrypt}: {e}"));
            assert!(opened.payload == payload);
            assert_eq!(
                opened.mic.value, built.expected_mic.value,
                "{policy:?} encrypt {encrypt}"
            );
        }
    }
}
