//! `atom send` end to end against an independent AS2 receiver: the real
//! `atom` binary posts to `tests/peers/pyas2_server.py`, a small HTTP server
//! around the `pyas2lib` Python package (1.4.4) that decrypts, verifies,
//! decompresses and answers with pyas2lib's own MDNs, sync or async. It runs
//! in the venv `.ci/setup-peers` creates (`$ATOM_PEER_VENV`, by default
//! `target/peer-venv`); without that venv these tests fail, they never skip.
//!
//! Each test has its own data directory (keys made by `atom certs
//! generate`, PEMs for Python by `atom certs export`) and its own server.

mod common;

use common::peer_python;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// Our AS2 ID as the server knows it; the variants below share our certificate.
const OUR_ID: &str = "atom-client";
/// A sender the server requires encryption from (pyas2lib's `encrypt=True`).
const STRICT_ID: &str = "atom-strict";
/// A sender whose MDNs the server gives a wrong Received-Content-MIC.
const TAMPER_ID: &str = "atom-tamper";
const PARTNER_ID: &str = "pyas2-server";

/// An X12 850 with a binary tail, so byte-exact delivery is visible.
fn payload() -> Vec<u8> {
    let mut data = b"ISA*00*          *00*          *ZZ*ATOMCLIENT     *ZZ*PYAS2SERVER    *260101*1200*U*00401*000000001*0*P*>~\n\
GS*PO*ATOMCLIENT*PYAS2SERVER*20260101*1200*1*X*004010~\nST*850*0001~\nBEG*00*SA*4500012345**20260101~\n\
PO1*1*10*EA*9.95**VP*WIDGET-1~\nCTT*1~\nSE*6*0001~\nGE*1*1~\nIEA*1*000000001~\n"
        .to_vec();
    data.extend((0u8..=255).cycle().take(1000));
    data
}

fn atom(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atom"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ATOM_KEY_PASSWORD")
        .env_remove("ATOM_AS2_PASSWORD")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the atom binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "atom failed:\n{}", text(out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A pyas2lib AS2 server with our keys, in its own temporary directory.
struct Peer {
    dir: tempfile::TempDir,
    server: Child,
    url: String,
}

impl Peer {
    fn start() -> Peer {
        let python = peer_python();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        ok(&atom(
            &data,
            &["certs", "generate", "ours", "--cn", "Atom client test"],
        ));
        ok(&atom(
            &data,
            &[
                "certs",
                "generate",
                "partner",
                "--cn",
                "pyas2lib server test",
            ],
        ));
        let partner_pem = dir.path().join("partner.pem");
        let our_cert = dir.path().join("ours.cert.pem");
        let partner_cert = dir.path().join("partner.cert.pem");
        ok(&atom(
            &data,
            &[
                "certs",
                "export",
                "partner",
                "--format",
                "pem",
                "--out",
                partner_pem.to_str().expect("utf-8"),
            ],
        ));
        ok(&atom(
            &data,
            &[
                "certs",
                "export",
                "ours",
                "--out",
                our_cert.to_str().expect("utf-8"),
            ],
        ));
        ok(&atom(
            &data,
            &[
                "certs",
                "export",
                "partner",
                "--out",
                partner_cert.to_str().expect("utf-8"),
            ],
        ));
        std::fs::write(dir.path().join("po.edi"), payload()).expect("write payload");

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pyas2_server.py");
        let cert = our_cert.to_str().expect("utf-8");
        let mut server = Command::new(python)
            .arg(&script)
            .args([
                "--org-id",
                PARTNER_ID,
                "--org-pem",
                partner_pem.to_str().expect("utf-8"),
            ])
            .args([
                "--partner",
                OUR_ID,
                cert,
                "--partner",
                STRICT_ID,
                cert,
                "--partner",
                TAMPER_ID,
                cert,
            ])
            .args(["--require-encryption", STRICT_ID, "--tamper-mic", TAMPER_ID])
            .arg("--out")
            .arg(dir.path().join("received"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start pyas2_server.py (did `.ci/setup-peers` succeed?): {e}")
            });
        let mut line = String::new();
        let stdout = server.stdout.take().expect("server stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = server.kill();
            panic!(
                "pyas2_server.py printed no port ({line:?}); if pyas2lib or oscrypto cannot be imported, rerun `.ci/setup-peers`"
            )
        });
        Peer {
            dir,
            server,
            url: format!("http://127.0.0.1:{port}/as2"),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_string()
    }

    /// `atom send po.edi --url ... --to PARTNER_ID` plus `args`.
    fn send(&self, args: &[&str]) -> Output {
        let file = self.file("po.edi");
        let mut all = vec![
            "send",
            file.as_str(),
            "--url",
            self.url.as_str(),
            "--to",
            PARTNER_ID,
        ];
        all.extend_from_slice(args);
        atom(&self.data(), &all)
    }

    /// The server's log: one JSON object per message it received.
    fn received(&self) -> Vec<Value> {
        let path = self.dir.path().join("received/received.jsonl");
        let Ok(log) = std::fs::read_to_string(&path) else {
            return Vec::new();
        };
        log.lines()
            .map(|l| serde_json::from_str(l).expect("received.jsonl line is JSON"))
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends the server; kill in case it hangs.
        drop(self.server.stdin.take());
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn message_id(stdout: &str) -> String {
    let start = stdout.find('<').expect("a Message-ID in the output");
    let end = stdout[start..].find('>').expect("closing >") + start;
    stdout[start + 1..end].to_string()
}

/// The server's record of the message, checked to be the one we sent and
/// its payload to be byte for byte ours.
fn delivered(peer: &Peer, id: &str) -> Value {
    let received = peer.received();
    let entry = received
        .iter()
        .find(|e| e["message_id"] == id)
        .unwrap_or_else(|| panic!("the server did not log message {id}: {received:#?}"))
        .clone();
    assert_eq!(entry["status"], "processed", "{entry:#}");
    let file = entry["payload_file"].as_str().expect("payload written");
    assert_eq!(
        std::fs::read(file).expect("payload file"),
        payload(),
        "payload bytes differ at the server"
    );
    assert_eq!(entry["filename"], "po.edi", "{entry:#}");
    entry
}

#[test]
fn signed_encrypted_compressed_with_signed_sync_mdn() {
    let peer = Peer::start();
    let out = peer.send(&[
        "--from",
        OUR_ID,
        "--sign",
        "ours",
        "--encrypt",
        "partner",
        "--cipher",
        "aes256-cbc",
        "--compress",
        "before-signing",
        "--signed-mdn",
        "sha256",
    ]);
    let stdout = ok(&out);
    assert!(stdout.starts_with("OK <"), "{}", text(&out));
    assert!(stdout.contains("sync MDN processed"), "{}", text(&out));
    assert!(
        stdout.contains("signed receipt verified (CN=pyas2lib server test)"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("MIC verified ("), "{}", text(&out));
    let entry = delivered(&peer, &message_id(&stdout));
    assert_eq!(
        (&entry["signed"], &entry["encrypted"], &entry["compressed"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(entry["digest_alg"], "sha256");
    assert_eq!(entry["mdn_mode"], "SYNC");
    // The MIC pyas2lib computed is the one we verified.
    let mic = entry["mic"].as_str().expect("pyas2lib computed a MIC");
    assert!(
        stdout.contains(&format!("MIC verified ({mic}, sha256)")),
        "{stdout}"
    );
    assert_eq!(peer.received().len(), 1);
}

#[test]
fn unsigned_plain_with_sync_mdn() {
    let peer = Peer::start();
    let out = peer.send(&[
        "--from",
        OUR_ID,
        "--content-type",
        "application/EDI-X12",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&ok(&out))
        .unwrap_or_else(|e| panic!("JSON summary ({e}):\n{}", text(&out)));
    assert_eq!(
        (
            summary["sent"].as_u64(),
            summary["ok"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{summary:#}"
    );
    let message = &summary["message"];
    assert_eq!(message["ok"], true, "{summary:#}");
    assert_eq!(message["mdn"], "sync");
    assert_eq!(message["disposition"], "processed");
    assert_eq!(message["mdn_signed"], false);
    let id = message["message_id"]
        .as_str()
        .expect("message id")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let entry = delivered(&peer, &id);
    assert_eq!(
        (&entry["signed"], &entry["encrypted"], &entry["compressed"]),
        (
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Bool(false)
        )
    );
    assert_eq!(peer.received().len(), 1);
}

#[test]
fn async_mdn_on_local_listener() {
    let peer = Peer::start();
    // Certificates by file path rather than keystore name.
    let partner_cert = peer.file("partner.cert.pem");
    let out = peer.send(&[
        "--from",
        OUR_ID,
        "--sign",
        "ours",
        "--digest",
        "sha384",
        "--encrypt",
        &partner_cert,
        "--cipher",
        "3des",
        "--compress",
        "after-signing",
        "--mdn",
        "async",
        "--listen",
        "127.0.0.1:0",
        "--async-timeout",
        "30",
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("async MDN processed"), "{}", text(&out));
    assert!(
        stdout.contains("signed receipt verified (CN=pyas2lib server test)"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains(", sha384)"),
        "MIC in sha384: {}",
        text(&out)
    );
    let entry = delivered(&peer, &message_id(&stdout));
    assert_eq!(entry["mdn_mode"], "ASYNC");
    assert_eq!(
        (&entry["signed"], &entry["encrypted"], &entry["compressed"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(entry["digest_alg"], "sha384");
    assert_eq!(peer.received().len(), 1);
}

#[test]
fn failures_are_reported_with_reasons() {
    let peer = Peer::start();
    let mut checked = 0;

    // The server requires encryption from atom-strict: pyas2lib's negative MDN.
    let out = peer.send(&[
        "--from",
        STRICT_ID,
        "--sign",
        "ours",
        "--partner-cert",
        "partner",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("FAILED <"), "{all}");
    assert!(
        all.contains("negative MDN") && all.contains("insufficient-message-security"),
        "{all}"
    );
    checked += 1;

    // A wrong Received-Content-MIC in a correctly signed MDN.
    let out = peer.send(&[
        "--from",
        TAMPER_ID,
        "--sign",
        "ours",
        "--encrypt",
        "partner",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("MIC mismatch: expected "),
        "{}",
        text(&out)
    );
    checked += 1;

    // HTTP-level error: status and body text.
    let file = peer.file("po.edi");
    let wrong_url = peer.url.replace("/as2", "/nowhere");
    let out = atom(
        &peer.data(),
        &[
            "send", &file, "--url", &wrong_url, "--from", OUR_ID, "--to", PARTNER_ID,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("HTTP 404 Not Found: no AS2 endpoint here"),
        "{}",
        text(&out)
    );
    checked += 1;

    // Nothing listening.
    let out = atom(
        &peer.data(),
        &[
            "send",
            &file,
            "--url",
            "http://127.0.0.1:1/as2",
            "--from",
            OUR_ID,
            "--to",
            PARTNER_ID,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot connect to 127.0.0.1:1"),
        "{}",
        text(&out)
    );
    checked += 1;

    // Usage errors exit 2 with the flag named.
    let out = peer.send(&["--from", OUR_ID, "--sign", "no-such-key"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--sign no-such-key"), "{}", text(&out));
    checked += 1;

    assert_eq!(checked, 5);
    // The server refused the strict one and processed the tampered one.
    let received = peer.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(
        received
            .iter()
            .filter(|e| e["status"] == "processed")
            .count(),
        1,
        "{received:#?}"
    );
}

#[test]
fn load_run_reports_json_summary() {
    let peer = Peer::start();
    let out = peer.send(&[
        "--from",
        OUR_ID,
        "--sign",
        "ours",
        "--encrypt",
        "partner",
        "--count",
        "20",
        "--concurrency",
        "4",
        "--json",
    ]);
    let stdout = ok(&out);
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object ({e}):\n{}", text(&out)));
    eprintln!("load summary: {summary}");
    for (key, want) in [
        ("sent", 20),
        ("ok", 20),
        ("failed", 0),
        ("mic_verified", 20),
        ("signed_receipts_verified", 20),
        ("concurrency", 4),
    ] {
        assert_eq!(summary[key].as_u64(), Some(want), "{key} in {summary:#}");
    }
    assert_eq!(
        summary["payload_bytes"].as_u64(),
        Some(payload().len() as u64)
    );
    for key in ["p50", "p90", "p99", "max"] {
        assert!(
            summary["latency_ms"][key].as_f64().is_some_and(|v| v > 0.0),
            "latency {key} in {summary:#}"
        );
    }
    assert!(
        summary["messages_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{summary:#}"
    );
    assert!(summary["cpu_user_s"].as_f64().is_some(), "{summary:#}");
    // 20 distinct messages arrived intact.
    let received = peer.received();
    assert_eq!(received.len(), 20, "{received:#?}");
    let mut ids: Vec<&str> = received
        .iter()
        .map(|e| e["message_id"].as_str().expect("id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "Message-IDs must differ per send");
    for entry in &received {
        assert_eq!(entry["status"], "processed", "{entry:#}");
        assert_eq!(
            (&entry["signed"], &entry["encrypted"]),
            (&Value::Bool(true), &Value::Bool(true))
        );
        assert_eq!(
            std::fs::read(entry["payload_file"].as_str().expect("file")).expect("payload"),
            payload()
        );
    }
}
