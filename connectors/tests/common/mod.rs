//! Helpers shared by the connector integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use atom_connectors::as2::cms::KeyPair;
use atom_connectors::as2::headers::Headers;
use atom_connectors::keys;
use openssl::x509::X509;

/// `shared/interop` beside the checkout (CI puts `shared/` there), or
/// `$ATOM_SHARED_DIR/interop`.
pub fn interop_dir() -> PathBuf {
    let shared = std::env::var_os("ATOM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("interop");
    assert!(
        dir.join("README.md").is_file(),
        "interop vectors not found at {} (set ATOM_SHARED_DIR)",
        dir.display()
    );
    dir
}

pub fn read_vector(name: &str) -> Vec<u8> {
    let path = interop_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Splits a captured request (headers, blank line, body) without touching the body.
pub fn split_capture(raw: &[u8]) -> (Headers, Vec<u8>) {
    let mut headers = Headers::new();
    let mut pos = 0;
    loop {
        let nl = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("header line ends")
            + pos;
        let line = &raw[pos..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = nl + 1;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line).to_string();
        if text.starts_with([' ', '\t']) {
            // A folded header: append to the previous one.
            let (name, value) = headers
                .iter()
                .last()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .expect("fold follows a header");
            headers.set(&name, format!("{value} {}", text.trim()));
            continue;
        }
        let (name, value) = text.split_once(':').expect("header has a colon");
        headers.push(name.trim(), value.trim());
    }
    (headers, raw[pos..].to_vec())
}

/// The receiver key of the vectors, opened from the RC2-40 PKCS#12.
pub fn receiver_key() -> KeyPair {
    keys::pkcs12_from_bytes(&read_vector("cert_test.p12"), "test", "cert_test.p12")
        .expect("cert_test.p12 opens")
}

pub fn cert(name: &str) -> X509 {
    keys::certificates_from_bytes(&read_vector(name), name)
        .expect("certificate loads")
        .remove(0)
}
