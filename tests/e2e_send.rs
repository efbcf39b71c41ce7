//! Our own client against our own server: `atom send` (its own data
//! directory and keys, as a partner would have) posts to the real
//! `atom run` over HTTP, and both sides' views are checked: the client's
//! verdict (MDN disposition, signed receipt, MIC) and the runtime's message
//! log (`atom messages --json`) with the stored payload.
//!
//! - signed (sha256) + encrypted (aes256-cbc) + compressed, signed sync MDN;
//! - the same with an asynchronous MDN to `atom send --listen`: the log
//!   shows the receipt `delivered`;
//! - a load run: `--count 50 --concurrency 8 --json`, 50 ok, 50 logged.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Site;
use serde_json::Value;

/// The sender's AS2 ID (AS2-From) and ours (AS2-To).
const SENDER_ID: &str = "atom-sender";
const ATOM_ID: &str = "atom-e2e";

/// An X12 850 with a binary tail, so byte-exact delivery is visible.
fn payload() -> Vec<u8> {
    let mut data = b"ISA*00*          *00*          *ZZ*ATOMSENDER     *ZZ*ATOME2E        *260101*1200*U*00401*000000001*0*P*>~\n\
GS*PO*ATOMSENDER*ATOME2E*20260101*1200*1*X*004010~\nST*850*0001~\nBEG*00*SA*4500012345**20260101~\n\
PO1*1*10*EA*9.95**VP*WIDGET-1~\nCTT*1~\nSE*6*0001~\nGE*1*1~\nIEA*1*000000001~\n"
        .to_vec();
    data.extend((0u8..=255).cycle().take(4000));
    data
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The running Atom with a listener for [`SENDER_ID`], and the sender's
/// own data directory (keys `sender` and the Atom's certificate `atom`).
struct Setup {
    site: Site,
    running: common::Running,
    sender_dir: PathBuf,
    file: PathBuf,
    url: String,
}

impl Setup {
    fn new() -> Setup {
        let site = Site::new("");
        let sender_dir = site.path().join("sender");
        std::fs::create_dir_all(&sender_dir).expect("sender dir");
        let sender_data = sender_dir.join("data");
        let text = |p: &Path| p.to_str().expect("utf-8").to_string();
        let data = text(&sender_data);
        let file = |name: &str| text(&site.path().join(name));

        site.atom_ok(&["certs", "generate", "atom-as2", "--cn", "Atom e2e receiver"]);
        site.atom_ok(&[
            "--data-dir",
            &data,
            "certs",
            "generate",
            "sender",
            "--cn",
            "Atom e2e sender",
        ]);
        // Certificates exchanged as partners do: exported, imported.
        site.atom_ok(&[
            "--data-dir",
            &data,
            "certs",
            "export",
            "sender",
            "--out",
            &file("sender.cert.pem"),
        ]);
        site.atom_ok(&[
            "certs",
            "import",
            "sender-partner",
            &file("sender.cert.pem"),
        ]);
        site.atom_ok(&[
            "certs",
            "export",
            "atom-as2",
            "--out",
            &file("atom.cert.pem"),
        ]);
        site.atom_ok(&[
            "--data-dir",
            &data,
            "certs",
            "import",
            "atom",
            &file("atom.cert.pem"),
        ]);
        site.deploy(
            "from-sender",
            &format!(
                "start:\n  as2:\n    as2_from:\n      id: {SENDER_ID}\n      signing_certificate: keystore:sender-partner\n    \
                 as2_to:\n      id: {ATOM_ID}\n      decryption_key: keystore:atom-as2\n      mdn_signing_key: keystore:atom-as2\n    \
                 security:\n      require_signed: true\n      require_encrypted: true\n    \
                 async_mdn:\n      allowed_urls: [\"http://127.0.0.1:\"]\n"
            ),
        );
        let payload_file = sender_dir.join("po.edi");
        std::fs::write(&payload_file, payload()).expect("payload");
        let running = site.start();
        let url = format!("http://{}/as2/acme", running.http());
        Setup {
            site,
            running,
            sender_dir,
            file: payload_file,
            url,
        }
    }

    /// `atom --data-dir SENDER send po.edi --url URL --from --to`, signed
    /// with sha256 and encrypted with aes256-cbc, plus `args`.
    fn send(&self, args: &[&str]) -> Output {
        let data = self.sender_dir.join("data");
        Command::new(env!("CARGO_BIN_EXE_atom"))
            .current_dir(&self.sender_dir)
            .arg("--data-dir")
            .arg(&data)
            .arg("send")
            .arg(&self.file)
            .args(["--url", &self.url, "--from", SENDER_ID, "--to", ATOM_ID])
            .args([
                "--sign",
                "sender",
                "--digest",
                "sha256",
                "--encrypt",
                "atom",
                "--cipher",
                "aes256-cbc",
                "--timeout",
                "30",
            ])
            .args(args)
            .env_remove("ATOM_CONFIG")
            .env_remove("ATOM_DATA_DIR")
            .env("RUST_LOG", "warn")
            .output()
            .expect("atom send runs")
    }

    /// The log row for a Message-ID (without brackets), checked to be
    /// processed with the payload stored byte for byte.
    fn logged(&self, rows: &[Value], id: &str) -> Value {
        let wanted = format!("<{id}>");
        let matching: Vec<&Value> = rows.iter().filter(|r| r["message_id"] == wanted).collect();
        assert_eq!(matching.len(), 1, "rows for {wanted}: {rows:#?}");
        let row = matching[0].clone();
        assert_eq!(row["disposition"], "processed", "{row:#}");
        assert_eq!(row["listener"], "from-sender", "{row:#}");
        assert_eq!(row["signature"], "sha256", "{row:#}");
        assert_eq!(row["encryption"], "aes256-cbc", "{row:#}");
        assert!(
            self.site.document(&row, "payload") == payload(),
            "{id}: stored payload differs from the file sent"
        );
        assert_eq!(row["file_name"], "po.edi", "{row:#}");
        row
    }
}

/// The Message-ID in `OK <id> ...`.
fn message_id(stdout: &str) -> String {
    let start = stdout.find('<').expect("a Message-ID in the output") + 1;
    let end = stdout[start..].find('>').expect("closing >") + start;
    stdout[start..end].to_string()
}

/// The MIC in `MIC verified (VALUE, ALG)`.
fn verified_mic(stdout: &str) -> String {
    let start = stdout
        .find("MIC verified (")
        .unwrap_or_else(|| panic!("MIC not verified:\n{stdout}"))
        + "MIC verified (".len();
    let end = stdout[start..].find(')').expect("closing )") + start;
    stdout[start..end].to_string()
}

#[test]
fn signed_encrypted_compressed_with_signed_sync_mdn() {
    let setup = Setup::new();
    let out = setup.send(&["--compress", "before-signing", "--signed-mdn", "sha256"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with("OK <"), "{}", describe(&out));
    assert!(stdout.contains("sync MDN processed"), "{}", describe(&out));
    assert!(
        stdout.contains("signed receipt verified (CN=Atom e2e receiver)"),
        "{}",
        describe(&out)
    );
    let mic = verified_mic(&stdout);
    assert!(mic.ends_with(", sha256"), "{mic}");

    let rows = setup.site.messages();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = setup.logged(&rows, &message_id(&stdout));
    // The MIC the runtime computed is the one the client expected and verified.
    assert_eq!(row["mic"], mic.as_str(), "{row:#}");
    assert_eq!(row["compression"], "before-signing", "{row:#}");
    assert_eq!(
        (&row["mdn_mode"], &row["mdn_status"]),
        (&Value::from("sync"), &Value::from("sent"))
    );
    assert_eq!(setup.running.stop(), Some(0));
}

#[test]
fn async_mdn_is_delivered_to_the_client() {
    let setup = Setup::new();
    let out = setup.send(&[
        "--compress",
        "after-signing",
        "--mdn",
        "async",
        "--listen",
        "127.0.0.1:0",
        "--async-timeout",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}\n--- atom log\n{}",
        describe(&out),
        setup.site.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("async MDN processed"), "{}", describe(&out));
    assert!(
        stdout.contains("signed receipt verified (CN=Atom e2e receiver)"),
        "{}",
        describe(&out)
    );
    let mic = verified_mic(&stdout);
    let id = message_id(&stdout);

    // The runtime records the delivery once the client's listener answered.
    let deadline = Instant::now() + Duration::from_secs(15);
    let row = loop {
        let rows = setup.site.messages();
        assert_eq!(rows.len(), 1, "{rows:#?}");
        let row = setup.logged(&rows, &id);
        if row["mdn_status"] == "delivered" || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (&row["mdn_mode"], &row["mdn_status"]),
        (&Value::from("async"), &Value::from("delivered")),
        "{row:#}"
    );
    assert!(
        row["mdn_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{row:#}"
    );
    assert_eq!(row["mic"], mic.as_str(), "{row:#}");
    assert_eq!(row["compression"], "after-signing", "{row:#}");
    assert_eq!(setup.running.stop(), Some(0));
}

#[test]
fn load_run_of_50_with_concurrency_8() {
    let setup = Setup::new();
    let out = setup.send(&["--count", "50", "--concurrency", "8", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON object ({e}):\n{}", describe(&out)));
    for (key, want) in [
        ("sent", 50),
        ("ok", 50),
        ("failed", 0),
        ("mic_verified", 50),
        ("signed_receipts_verified", 50),
        ("concurrency", 8),
    ] {
        assert_eq!(summary[key].as_u64(), Some(want), "{key} in {summary:#}");
    }
    eprintln!(
        "atom send -> atom run: 50 of 50 ok, {:.1} messages/s",
        summary["messages_per_s"].as_f64().unwrap_or(0.0)
    );

    let rows = setup.site.messages();
    assert_eq!(rows.len(), 50, "{rows:#?}");
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| {
            r["message_id"]
                .as_str()
                .expect("message_id")
                .trim_matches(|c| c == '<' || c == '>')
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "one log row per distinct Message-ID");
    for id in &ids {
        let row = setup.logged(&rows, id);
        assert_eq!(row["mdn_status"], "sent", "{row:#}");
    }
    assert_eq!(setup.running.stop(), Some(0));
}
