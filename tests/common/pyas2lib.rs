//! pyas2lib (PyPI), an independent AS2 peer, building signed and encrypted
//! messages for tests (tests/peers/pyas2_build.py), and the keys it shares
//! with the Atoms under test.

use serde_json::Value;

use super::{capture_file, peer_python, Site};

/// Keys for signed+encrypted traffic: our key pair (the same on every
/// node, as a Molecule's nodes present one AS2 identity) and the partner's
/// certificate in each node's keystore; the partner's key (PEM) and our
/// certificate written into `peer` for pyas2lib. Returns the start step.
pub fn share_keys(sites: &[Site], peer: &std::path::Path) -> String {
    std::fs::create_dir_all(peer).expect("peer dir");
    let path = |name: &str| peer.join(name).to_str().expect("utf-8").to_string();
    let first = &sites[0];
    first.atom_ok(&["certs", "generate", "atom-as2", "--cn", "Atom Molecule"]);
    first.atom_ok(&[
        "certs",
        "export",
        "atom-as2",
        "--format",
        "pem",
        "--out",
        &path("atom.pem"),
    ]);
    first.atom_ok(&[
        "certs",
        "export",
        "atom-as2",
        "--out",
        &path("atom.cert.pem"),
    ]);
    let partner_data = path("partner-data");
    first.atom_ok(&[
        "--data-dir",
        &partner_data,
        "certs",
        "generate",
        "pyas2lib",
        "--cn",
        "pyas2lib sender",
    ]);
    first.atom_ok(&[
        "--data-dir",
        &partner_data,
        "certs",
        "export",
        "pyas2lib",
        "--format",
        "pem",
        "--out",
        &path("pyas2lib.pem"),
    ]);
    first.atom_ok(&[
        "--data-dir",
        &partner_data,
        "certs",
        "export",
        "pyas2lib",
        "--out",
        &path("pyas2lib.cert.pem"),
    ]);
    for (i, site) in sites.iter().enumerate() {
        if i > 0 {
            site.atom_ok(&["certs", "import", "atom-as2", &path("atom.pem")]);
        }
        site.atom_ok(&[
            "certs",
            "import",
            "pyas2lib-partner",
            &path("pyas2lib.cert.pem"),
        ]);
    }
    "start:\n  as2:\n    as2_from:\n      id: PYAS2LIB\n      signing_certificate: keystore:pyas2lib-partner\n    \
     as2_to:\n      id: ATOM\n      decryption_key: keystore:atom-as2\n      mdn_signing_key: keystore:atom-as2\n"
        .to_string()
}

/// One message built by tests/peers/pyas2_build.py.
#[derive(Clone, Debug)]
pub struct Built {
    pub message_id: String,
    pub mic: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `count` signed (sha256) and encrypted (AES-128-CBC) messages asking
/// for a signed sync MDN, built by pyas2lib, an independent AS2 peer.
pub fn pyas2lib_messages(peer: &std::path::Path, prefix: &str, count: usize) -> Vec<Built> {
    pyas2lib_messages_with(peer, prefix, count, &Options::default())
}

/// What else pyas2_build.py should do.
#[derive(Default)]
pub struct Options<'a> {
    /// Every message's payload is this file (instead of one X12 line).
    pub payload_file: Option<&'a std::path::Path>,
    /// Compress before signing.
    pub compress: bool,
}

/// [`pyas2lib_messages`] with [`Options`].
pub fn pyas2lib_messages_with(
    peer: &std::path::Path,
    prefix: &str,
    count: usize,
    options: &Options<'_>,
) -> Vec<Built> {
    let python = peer_python();
    let work = peer.join(prefix);
    std::fs::create_dir_all(&work).expect("work dir");
    let config = serde_json::json!({
        "pyas2_id": "PYAS2LIB", "atom_id": "ATOM",
        "pyas2_pem": peer.join("pyas2lib.pem"), "atom_cert": peer.join("atom.cert.pem"),
        "count": count, "prefix": prefix, "digest": "sha256", "cipher": "aes_128_cbc",
        "payload_file": options.payload_file, "compress": options.compress,
    });
    std::fs::write(work.join("config.json"), config.to_string()).expect("config.json");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pyas2_build.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(&work)
        .output()
        .expect("run pyas2_build.py");
    assert!(
        out.status.success(),
        "pyas2_build.py failed ({}); rerun `bash .ci/setup-peers` if pyas2lib cannot be imported:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("pyas2_build.py JSON");
    list.iter()
        .map(|m| {
            let (headers, body) =
                capture_file(std::path::Path::new(m["file"].as_str().expect("file")));
            Built {
                message_id: m["message_id"].as_str().expect("message_id").to_string(),
                mic: m["mic"].as_str().expect("mic").to_string(),
                payload: match options.payload_file {
                    Some(file) => std::fs::read(file).expect("payload file"),
                    None => m["payload"].as_str().expect("payload").as_bytes().to_vec(),
                },
                headers,
                body,
            }
        })
        .collect()
}

/// Text that compresses like a dense EDI file with varied numbers (about
/// 4:3), so the request stays larger than the in-memory limit.
pub fn dense_edi(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 64);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < bytes {
        // xorshift: cheap, deterministic, not compressible much.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(
            format!("PO1*{:x}*{:x}~\r\n", state, state.rotate_left(29)).as_bytes(),
        );
    }
    // Whole lines: pyas2lib writes line ends as CRLF.
    let whole = out[..bytes]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    out.truncate(whole);
    out
}
