//! End to end with an independent AS2 sender: `pyas2lib` (1.4.4) builds
//! messages and POSTs them over HTTP to the real `atom run`
//! (`/as2/acme`), then parses every MDN Atom returns with its own
//! `Mdn.parse`. Driven through `tests/peers/pyas2_sender.py` in the venv
//! `.ci/setup-peers` creates (`$ATOM_PEER_VENV`, by default
//! `target/peer-venv`); without that venv the test fails, it never skips.
//!
//! - the 50-message matrix (signing unsigned/sha1/sha256/sha384/sha512 x
//!   encryption none/3DES/AES-128/192/256-CBC x compressed or not), each
//!   asking for a sync MDN, signed with the message's digest when it is
//!   signed: every MDN is `processed` for pyas2lib, carries pyas2lib's MIC
//!   and (when signed) verifies against our certificate;
//! - 4 more with an asynchronous MDN to an HTTP receiver the script runs on
//!   127.0.0.1: Atom answers 200 with no body, the MDN arrives and pyas2lib
//!   accepts it;
//! - `atom messages --json` logs all 54 as `processed` with the layers
//!   pyas2lib used, and every stored payload is byte for byte what was sent.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peer_python;
use common::{interop, Site};
use serde_json::{json, Value};

/// pyas2lib's AS2 ID (AS2-From).
const PYAS2_ID: &str = "pyas2lib-sender";
/// Ours (AS2-To).
const ATOM_ID: &str = "atom-e2e";
const MATRIX_SIZE: usize = 50;
const ASYNC_SIZE: usize = 4;
/// How long the whole pyas2lib run may take.
const PEER_DEADLINE: Duration = Duration::from_secs(120);

/// pyas2lib's cipher names and ours (as logged in the message record).
const CIPHER_NAMES: [(&str, &str); 4] = [
    ("tripledes_192_cbc", "3des"),
    ("aes_128_cbc", "aes128-cbc"),
    ("aes_192_cbc", "aes192-cbc"),
    ("aes_256_cbc", "aes256-cbc"),
];

/// Payloads pyas2lib transmits unaltered in every combination: EDIFACT
/// with CRLF line ends (already MIME canonical, so wrapping it changes
/// nothing) and binary (sent with Content-Transfer-Encoding: binary).
const PAYLOADS: [(&str, &str, &str, &str); 2] = [
    (
        "text",
        "payload_dos.txt",
        "application/EDIFACT",
        "orders.edi",
    ),
    (
        "binary",
        "payload.binary",
        "application/octet-stream",
        "payload.bin",
    ),
];

/// Runs `pyas2_sender.py DIR` with a deadline and returns its JSON output.
fn run_sender(python: &Path, dir: &Path, site: &Site) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pyas2_sender.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run pyas2_sender.py (did `bash .ci/setup-peers` succeed?): {e}")
        });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + PEER_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the peer") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pyas2_sender.py did not finish within {PEER_DEADLINE:?}; atom log:\n{}",
                site.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    assert!(
        status.success(),
        "pyas2_sender.py failed ({status}); if pyas2lib or oscrypto cannot be imported, rerun `bash .ci/setup-peers`:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "pyas2_sender.py printed no JSON ({e}):\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    })
}

fn s<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

/// Checks one result of the script: HTTP 200 and an MDN pyas2lib read as
/// `processed`, for this message, signed and carrying its MIC as asked.
fn check_mdn(result: &Value, asynchronous: bool) {
    let name = s(result, "name").unwrap_or("?");
    assert!(result["error"].is_null(), "{name}: {result:#}");
    assert_eq!(result["http_status"], 200, "{name}: {result:#}");
    if asynchronous {
        assert_eq!(
            result["body_len"], 0,
            "{name}: an async request gets an empty 200: {result:#}"
        );
        assert_eq!(
            s(result, "mdn_path"),
            Some("/mdn"),
            "{name}: async MDN never arrived at Receipt-Delivery-Option: {result:#}"
        );
    }
    assert_eq!(
        s(result, "status"),
        Some("processed"),
        "{name}: pyas2lib read our MDN as {result:#}"
    );
    assert!(result["detailed_status"].is_null(), "{name}: {result:#}");
    assert_eq!(
        s(result, "orig_message_id"),
        s(result, "message_id"),
        "{name}"
    );
    assert_eq!(s(result, "orig_recipient"), Some(ATOM_ID), "{name}");
    match s(result, "digest") {
        Some(digest) => {
            // pyas2lib verified our signature (it reports the digest) ...
            assert_eq!(result["mdn_signed"], true, "{name}: {result:#}");
            assert_eq!(
                s(result, "mdn_digest_alg"),
                Some(digest),
                "{name}: MDN signature digest: {result:#}"
            );
            // ... and the MIC is pyas2lib's own, in the algorithm it asked for.
            let mic = s(result, "mic").unwrap_or_else(|| panic!("{name}: no pyas2lib MIC"));
            assert_eq!(
                s(result, "mdn_mic"),
                Some(format!("{mic}, {digest}").as_str()),
                "{name}: Received-Content-MIC: {result:#}"
            );
        }
        None => {
            assert_eq!(
                result["mdn_signed"], false,
                "{name}: unsigned MDN asked: {result:#}"
            );
            assert!(
                s(result, "mdn_mic").is_some_and(|m| m.ends_with(", sha256")),
                "{name}: Received-Content-MIC: {result:#}"
            );
        }
    }
}

#[test]
fn pyas2lib_sends_the_matrix_to_the_running_atom() {
    let started = Instant::now();
    // Fail first, with instructions, when the peer is not set up.
    let python = peer_python();
    let site = Site::new("");
    // Our key (the receiving organisation) in Atom's keystore; pyas2lib's
    // key in a keystore of its own, only its certificate imported here.
    site.atom_ok(&["certs", "generate", "atom-as2", "--cn", "Atom e2e receiver"]);
    let partner_data = site.path().join("partner-data");
    let partner_data = partner_data.to_str().expect("utf-8");
    site.atom_ok(&[
        "--data-dir",
        partner_data,
        "certs",
        "generate",
        "pyas2lib",
        "--cn",
        "pyas2lib e2e sender",
    ]);
    let work = site.path().join("peer");
    std::fs::create_dir_all(&work).expect("peer dir");
    let pyas2_pem = work.join("pyas2lib.pem");
    let pyas2_cert = work.join("pyas2lib.cert.pem");
    let atom_cert = work.join("atom.cert.pem");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    site.atom_ok(&[
        "--data-dir",
        partner_data,
        "certs",
        "export",
        "pyas2lib",
        "--format",
        "pem",
        "--out",
        &path(&pyas2_pem),
    ]);
    site.atom_ok(&[
        "--data-dir",
        partner_data,
        "certs",
        "export",
        "pyas2lib",
        "--out",
        &path(&pyas2_cert),
    ]);
    site.atom_ok(&["certs", "import", "pyas2lib-partner", &path(&pyas2_cert)]);
    site.atom_ok(&["certs", "export", "atom-as2", "--out", &path(&atom_cert)]);
    site.deploy(
        "from-pyas2lib",
        &format!(
            "description: pyas2lib end-to-end sender\nstart:\n  as2:\n    as2_from:\n      id: {PYAS2_ID}\n      \
             signing_certificate: keystore:pyas2lib-partner\n    as2_to:\n      id: {ATOM_ID}\n      \
             decryption_key: keystore:atom-as2\n      mdn_signing_key: keystore:atom-as2\n    \
             async_mdn:\n      allowed_urls: [\"http://127.0.0.1:\"]\n"
        ),
    );
    let running = site.start();
    let url = format!("http://{}/as2/acme", running.http());

    let payloads: Vec<Value> = PAYLOADS
        .iter()
        .map(|(name, vector, content_type, file_name)| {
            json!({"name": name, "path": interop(vector), "content_type": content_type, "filename": file_name})
        })
        .collect();
    let async_cases = json!([
        {"digest": "sha256", "cipher": "aes_256_cbc", "compressed": true},
        {"digest": null, "cipher": null, "compressed": false},
        {"digest": "sha512", "cipher": "tripledes_192_cbc", "compressed": false},
        {"digest": "sha1", "cipher": null, "compressed": true},
    ]);
    let config = json!({
        "url": url,
        "pyas2_id": PYAS2_ID,
        "atom_id": ATOM_ID,
        "pyas2_pem": pyas2_pem,
        "atom_cert": atom_cert,
        "payloads": payloads,
        "async_cases": async_cases,
        "timeout": 30,
    });
    std::fs::write(work.join("config.json"), config.to_string()).expect("config.json");

    let out = run_sender(&python, &work, &site);
    let sync = out["sync"].as_array().expect("sync results");
    let asynchronous = out["async"].as_array().expect("async results");
    assert_eq!(sync.len(), MATRIX_SIZE, "pyas2lib built the whole matrix");
    assert_eq!(asynchronous.len(), ASYNC_SIZE);
    assert_eq!(out["unexpected_mdns"], 0, "{out:#}");
    for result in sync {
        check_mdn(result, false);
    }
    for result in asynchronous {
        check_mdn(result, true);
    }
    let signed = sync.iter().filter(|r| !r["digest"].is_null()).count();
    let encrypted = sync.iter().filter(|r| !r["cipher"].is_null()).count();
    let compressed = sync.iter().filter(|r| r["compressed"] == true).count();
    assert_eq!(
        (signed, encrypted, compressed),
        (40, 40, 25),
        "matrix coverage"
    );

    // The message log: 54 processed, the layers pyas2lib used, payloads intact.
    let all: Vec<&Value> = sync.iter().chain(asynchronous).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = site.messages();
        let delivered = rows
            .iter()
            .filter(|r| r["mdn_mode"] == "async" && r["mdn_status"] == "delivered")
            .count();
        // The delivery task marks a receipt delivered right after the POST.
        if delivered == ASYNC_SIZE || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        rows.len(),
        MATRIX_SIZE + ASYNC_SIZE,
        "messages logged: {rows:#?}"
    );
    let payload_bytes: Vec<Vec<u8>> = PAYLOADS
        .iter()
        .map(|(_, vector, _, _)| std::fs::read(interop(vector)).expect("payload vector"))
        .collect();
    let mut checked = 0;
    for result in &all {
        let name = s(result, "name").expect("name");
        let id = format!("<{}>", s(result, "message_id").expect("message_id"));
        let matching: Vec<&Value> = rows
            .iter()
            .filter(|r| s(r, "message_id") == Some(id.as_str()))
            .collect();
        assert_eq!(matching.len(), 1, "{name}: log rows for {id}: {rows:#?}");
        let row = matching[0];
        assert_eq!(s(row, "disposition"), Some("processed"), "{name}: {row:#}");
        assert_eq!(s(row, "listener"), Some("from-pyas2lib"), "{name}");
        assert_eq!(s(row, "as2_from"), Some(PYAS2_ID), "{name}");
        assert_eq!(s(row, "as2_to"), Some(ATOM_ID), "{name}");
        let asynchronous = name.starts_with("async");
        assert_eq!(
            (s(row, "mdn_mode"), s(row, "mdn_status")),
            if asynchronous {
                (Some("async"), Some("delivered"))
            } else {
                (Some("sync"), Some("sent"))
            },
            "{name}: {row:#}"
        );
        if asynchronous {
            assert_eq!(
                s(row, "mdn_url"),
                s(&out, "mdn_url"),
                "{name}: Receipt-Delivery-Option recorded"
            );
        }
        // The layers, as Atom recorded them.
        assert_eq!(s(row, "signature"), s(result, "digest"), "{name}: {row:#}");
        let cipher = s(result, "cipher").map(|c| {
            CIPHER_NAMES
                .iter()
                .find(|(p, _)| *p == c)
                .map(|(_, ours)| *ours)
                .unwrap_or_else(|| panic!("unknown cipher {c}"))
        });
        assert_eq!(s(row, "encryption"), cipher, "{name}: {row:#}");
        let compression = match (result["compressed"] == true, result["digest"].is_null()) {
            (false, _) => None,
            (true, true) => Some("unsigned"),
            // pyas2lib compresses before it signs.
            (true, false) => Some("before-signing"),
        };
        assert_eq!(s(row, "compression"), compression, "{name}: {row:#}");
        // The stored payload: byte for byte what pyas2lib sent.
        let kind = PAYLOADS
            .iter()
            .position(|p| Some(p.0) == s(result, "payload"))
            .expect("payload kind");
        let stored = site.document(row, "payload");
        assert!(
            stored == payload_bytes[kind],
            "{name}: stored payload differs ({} bytes, sent {})",
            stored.len(),
            payload_bytes[kind].len()
        );
        assert_eq!(
            row["payload_size"].as_u64(),
            Some(payload_bytes[kind].len() as u64),
            "{name}"
        );
        assert_eq!(
            s(row, "file_name"),
            Some(PAYLOADS[kind].3),
            "{name}: {row:#}"
        );
        checked += 1;
    }
    assert_eq!(checked, MATRIX_SIZE + ASYNC_SIZE);
    assert_eq!(running.stop(), Some(0), "atom exits 0 on SIGTERM");
    eprintln!(
        "pyas2lib -> atom over HTTP: {MATRIX_SIZE} sync + {ASYNC_SIZE} async MDNs accepted by pyas2lib, \
         {checked} logged as processed with intact payloads ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
