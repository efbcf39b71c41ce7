//! Outbound AS2 end to end: `as2` steps of the real `atom` binary send
//! through the outbox to `tests/peers/pyas2_server.py`, an independent
//! receiver built on pyas2lib (1.4.4), which decrypts, verifies,
//! decompresses, stores and answers with its own signed MDNs. Without the
//! peer venv (`.ci/setup-peers`) these tests fail, they never skip.
//!
//! A plain inbound message starts each execution; its steps send the
//! payload (or what a guest made of it) to the partner profiles in
//! `partners/`.

mod common;

use common::{peer_python, plain_headers, plain_start, post, Site};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Our AS2 ID, as the partner knows us.
const OUR_ID: &str = "ATOM-OUT";
/// The partner's (pyas2lib's) AS2 ID.
const PARTNER_ID: &str = "PYAS2-IN";
/// Who sends Atom the plain messages that start executions.
const TRIGGER_ID: &str = "ERP";

/// An X12 810 with a binary tail, so byte-exact delivery is visible.
fn invoice() -> Vec<u8> {
    let mut data = b"ISA*00*          *00*          *ZZ*ATOMOUT        *ZZ*PYAS2IN        *261128*1200*U*00401*000004711*0*P*>~\n\
GS*IN*ATOMOUT*PYAS2IN*20261128*1200*4711*X*004010~\nST*810*0001~\nBIG*20261128*INV-4711~\nTDS*995~\nSE*4*0001~\nGE*1*4711~\nIEA*1*000004711~\n"
        .to_vec();
    data.extend((0u8..=255).cycle().take(700));
    data
}

/// A pyas2lib receiver on a loopback port.
struct Peer {
    child: Child,
    port: u16,
    out: PathBuf,
}

/// Who the receiver is and whom it receives from.
struct Identity<'a> {
    org_id: &'a str,
    /// Its key and certificate (PEM).
    org_pem: PathBuf,
    partner_id: &'a str,
    /// The sender's certificate (PEM).
    partner_cert: PathBuf,
}

impl Peer {
    /// Starts the receiver on `port` (0: any) with our certificate as
    /// the partner `OUR_ID` (and `extra` options).
    fn start(site: &Site, port: u16, extra: &[&str]) -> Peer {
        let identity = Identity {
            org_id: PARTNER_ID,
            org_pem: site.path().join("pyas2.pem"),
            partner_id: OUR_ID,
            partner_cert: site.path().join("ours.cert.pem"),
        };
        let out = site
            .path()
            .join(format!("received-{}", common::free_port()));
        Peer::start_as(&identity, &out, port, extra)
    }

    /// Starts the receiver as `identity.org_id`, writing into `out`.
    fn start_as(identity: &Identity<'_>, out: &Path, port: u16, extra: &[&str]) -> Peer {
        let mut child = Command::new(peer_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pyas2_server.py"))
            .args(["--org-id", identity.org_id, "--org-pem"])
            .arg(&identity.org_pem)
            .args(["--partner", identity.partner_id])
            .arg(&identity.partner_cert)
            .args(["--port", &port.to_string(), "--out"])
            .arg(out)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pyas2_server.py starts (did `.ci/setup-peers` run?)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("pyas2_server.py printed no port ({line:?}); rerun `.ci/setup-peers`")
        });
        Peer {
            child,
            port,
            out: out.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/as2", self.port)
    }

    /// What the receiver logged, one JSON object per message.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out.join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("received.jsonl line"))
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A site with our key (`ours`) and the partner's (`pyas2`), the PEMs the
/// peer needs, and a listener `trigger` whose steps are `steps`.
fn site_with(steps: &str) -> Site {
    let site = Site::new("");
    site.atom_ok(&["certs", "generate", "ours", "--cn", "Atom outbound test"]);
    site.atom_ok(&["certs", "generate", "pyas2", "--cn", "pyas2lib receiver"]);
    let path = |name: &str| site.path().join(name).to_str().expect("utf-8").to_string();
    site.atom_ok(&[
        "certs",
        "export",
        "pyas2",
        "--format",
        "pem",
        "--out",
        &path("pyas2.pem"),
    ]);
    site.atom_ok(&["certs", "export", "ours", "--out", &path("ours.cert.pem")]);
    std::fs::create_dir_all(site.path().join("partners")).expect("partners dir");
    site.deploy(
        "trigger",
        &format!("{}steps:\n{steps}", plain_start(TRIGGER_ID, OUR_ID)),
    );
    site
}

/// Writes `partners/<name>.yaml` for the peer at `url` with `security`
/// (YAML lines of the profile).
fn profile(site: &Site, name: &str, url: &str, security: &str) {
    std::fs::write(
        site.path().join("partners").join(format!("{name}.yaml")),
        format!("url: {url}\nas2_from: {OUR_ID}\nas2_to: {PARTNER_ID}\n{security}"),
    )
    .expect("write profile");
}

/// Posts one plain message to Atom: it starts one execution.
fn trigger(running: &common::Running, body: &[u8], file_name: &str) {
    trigger_from(running, TRIGGER_ID, body, file_name);
}

/// Like [`trigger`], from another sender (another bundle).
fn trigger_from(running: &common::Running, from: &str, body: &[u8], file_name: &str) {
    let mut headers = plain_headers(
        from,
        OUR_ID,
        &format!("<{}@erp.example>", common::free_port()),
    );
    headers.push((
        "Content-Disposition".into(),
        format!("attachment; filename=\"{file_name}\""),
    ));
    let response = post(running.http(), "/as2", &headers, body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.text().contains("processed"),
        "trigger refused: {}",
        response.text()
    );
}

fn outbox(site: &Site) -> Vec<Value> {
    serde_json::from_str(&site.atom_ok(&["outbox", "--json", "--limit", "10000"]))
        .expect("outbox JSON")
}

/// Polls the outbox until `done` holds for its rows.
fn wait_outbox(site: &Site, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = outbox(site);
        if done(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "outbox never got to {what}: {rows:#?}\nlog:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn sha256_hex(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_digest_cipher_and_compression_reaches_pyas2lib_and_its_receipts_verify() {
    let digests = ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"];
    // What pyas2lib decrypts: no AES-GCM, and RC2 needs OpenSSL's legacy
    // provider, which its oscrypto does not load (openssl covers both).
    let ciphers = ["3des", "aes128-cbc", "aes192-cbc", "aes256-cbc"];
    let compressions = ["none", "before_signing", "after_signing"];
    // Every combination with a sync receipt (bundle `trigger`) and with an
    // async one (bundle `trigger-async`, started by another sender).
    let mut names = Vec::new();
    let (mut sync_steps, mut async_steps) = (String::new(), String::new());
    for mode in ["sync", "async"] {
        for (d, digest) in digests.iter().enumerate() {
            for (c, cipher) in ciphers.iter().enumerate() {
                for (z, compress) in compressions.iter().enumerate() {
                    let name = format!("{mode}-{d}-{c}-{z}");
                    let steps = if mode == "sync" {
                        &mut sync_steps
                    } else {
                        &mut async_steps
                    };
                    steps.push_str(&format!("  - as2: {{ partner: {name} }}\n"));
                    names.push((name, *digest, *cipher, *compress, mode));
                }
            }
        }
    }
    // Two more: unsigned and unencrypted with an unsigned receipt, and no receipt at all.
    sync_steps.push_str("  - as2: { partner: plain }\n  - as2: { partner: no-mdn }\n");
    let site = site_with(&sync_steps);
    site.deploy(
        "trigger-async",
        &format!("{}steps:\n{async_steps}", plain_start("ERP-ASYNC", OUR_ID)),
    );
    let port = fix_http_port(&site);
    let peer = Peer::start(&site, 0, &[]);
    for (name, digest, cipher, compress, mode) in &names {
        let mdn = match *mode {
            "sync" => "mdn: { mode: sync, signed: true }\n".to_string(),
            _ => format!(
                "mdn: {{ mode: async, signed: true, url: \"http://127.0.0.1:{port}/as2/mdn\" }}\n"
            ),
        };
        profile(
            &site,
            name,
            &peer.url(),
            &format!(
                "sign: {{ key: keystore:ours, digest: {digest} }}\n\
                 encrypt: {{ certificate: keystore:pyas2, cipher: {cipher} }}\n\
                 compress: {compress}\n{mdn}"
            ),
        );
    }
    profile(&site, "plain", &peer.url(), "mdn: { mode: sync }\n");
    profile(&site, "no-mdn", &peer.url(), "mdn: { mode: none }\n");
    let running = site.start();
    let payload = invoice();
    trigger(&running, &payload, "INV-4711.x12");
    trigger_from(&running, "ERP-ASYNC", &payload, "INV-4711.x12");

    let executions = site.wait_for_executions(2);
    for execution in &executions {
        assert_eq!(
            s(execution, "status"),
            "COMPLETE",
            "{}",
            s(execution, "log")
        );
    }
    let rows = outbox(&site);
    assert_eq!(rows.len(), names.len() + 2);
    let received = peer.received();
    assert_eq!(received.len(), names.len() + 2, "{received:#?}");
    for row in &rows {
        let partner = s(row, "partner");
        let expected_status = if partner == "no-mdn" {
            "sent"
        } else {
            "acknowledged"
        };
        assert_eq!(s(row, "status"), expected_status, "{row:#}");
        assert_eq!(row["attempts"], 1, "{row:#}");
        assert_eq!(s(row, "file_name"), "INV-4711.x12");
        let got = received
            .iter()
            .find(|r| s(r, "message_id") == s(row, "message_id").trim_matches(['<', '>']))
            .unwrap_or_else(|| panic!("pyas2lib never got {row:#}"));
        assert_eq!(s(got, "status"), "processed", "{got:#}");
        assert_eq!(s(got, "payload_sha256"), sha256_hex(&payload), "{got:#}");
        assert_eq!(s(got, "filename"), "INV-4711.x12");
        if let Some((_, digest, cipher, compress, mode)) = names.iter().find(|n| n.0 == partner) {
            let expected_mode = if *mode == "sync" { "SYNC" } else { "ASYNC" };
            assert_eq!(s(got, "mdn_mode"), expected_mode, "{partner}");
            assert_eq!(row["mdn_disposition"], "processed", "{row:#}");
            assert_eq!(s(got, "digest_alg"), *digest, "{partner}");
            assert_eq!(got["encrypted"], true, "{partner}");
            if *cipher == "3des" {
                // pyas2lib names only this one.
                assert_eq!(s(got, "enc_alg"), "tripledes_192_cbc", "{partner}");
            }
            assert_eq!(got["compressed"], *compress != "none", "{partner}");
            assert_eq!(got["signed"], true);
            // The MIC pyas2lib computed is the one we expected and checked.
            let ours = s(row, "mic").split(',').next().unwrap_or("").trim();
            assert_eq!(ours, s(got, "mic"), "{partner}");
        } else {
            assert_eq!(got["signed"], false);
            assert_eq!(got["encrypted"], false);
        }
    }
    // The executions link each document to its outbox row.
    let sync = executions
        .iter()
        .find(|e| e["process"] == "trigger")
        .expect("the sync execution");
    assert!(
        s(sync, "log").contains("acknowledged, processed"),
        "{}",
        s(sync, "log")
    );
    let kept = &sync["documents"][0]["delivered"];
    assert_eq!(kept.as_array().map(Vec::len), Some(names.len() / 2 + 2));
    let metrics = common::get(running.admin, "/metrics", &[admin_auth(&site)]).text();
    assert!(
        metrics.contains("atom_as2_outbound_total{partner=\"plain\",result=\"acknowledged\"} 1"),
        "{metrics}"
    );
}

fn admin_auth(site: &Site) -> (String, String) {
    let token = std::fs::read_to_string(site.path().join("data/admin.token")).expect("token");
    (
        "Authorization".to_string(),
        format!("Bearer {}", token.trim()),
    )
}

/// A site whose one `as2` step sends to profile `pyas2` with `security`, at
/// a loopback port where nothing listens yet; returns the port.
fn site_sending_to_a_closed_port(security: &str) -> (Site, u16) {
    let site = site_with("  - as2: { partner: pyas2 }\n");
    let port = common::free_port();
    profile(
        &site,
        "pyas2",
        &format!("http://127.0.0.1:{port}/as2"),
        security,
    );
    (site, port)
}

const SIGNED_ENCRYPTED: &str = "sign: { key: keystore:ours, digest: sha256 }\n\
    encrypt: { certificate: keystore:pyas2, cipher: aes256-cbc }\n\
    compress: before_signing\nmdn: { mode: sync, signed: true }\n\
    retry: { first_delay_seconds: 1, max_delay_seconds: 2, give_up_after_hours: 1 }\n";

#[test]
fn a_partner_down_then_a_lost_receipt_get_the_document_once_with_one_message_id() {
    // Nothing listens there yet.
    let (site, port) = site_sending_to_a_closed_port(SIGNED_ENCRYPTED);
    let running = site.start();
    let payload = invoice();
    trigger(&running, &payload, "INV-1.x12");
    // Between attempts (an attempt under way shows "sending").
    let rows = wait_outbox(&site, "two failed attempts", |rows| {
        rows.len() == 1
            && rows[0]["attempts"].as_u64() >= Some(2)
            && s(&rows[0], "status") == "retrying"
    });
    assert!(
        s(&rows[0], "last_error").contains("cannot connect"),
        "{rows:#?}"
    );
    let message_id = s(&rows[0], "message_id").to_string();

    // Up, but the first receipt is lost on the way back: the resend with
    // the same Message-ID is pyas2lib's duplicate.
    let peer = Peer::start(
        &site,
        port,
        &["--detect-duplicates", "--lose-first-responses", "1"],
    );
    let rows = wait_outbox(&site, "acknowledged", |rows| {
        s(&rows[0], "status") == "acknowledged"
    });
    assert_eq!(s(&rows[0], "message_id"), message_id);
    let executions = site.wait_for_executions(1);
    assert_eq!(
        s(&executions[0], "status"),
        "COMPLETE_WARN",
        "{}",
        s(&executions[0], "log")
    );
    let received = peer.received();
    let bare = message_id.trim_matches(['<', '>']);
    assert!(received.iter().all(|r| s(r, "message_id") == bare));
    let stored: Vec<&Value> = received
        .iter()
        .filter(|r| s(r, "status") == "processed")
        .collect();
    assert_eq!(stored.len(), 1, "exactly one copy stored: {received:#?}");
    assert_eq!(s(stored[0], "payload_sha256"), sha256_hex(&payload));
    assert_eq!(
        received.len(),
        2,
        "one lost receipt, one duplicate: {received:#?}"
    );
    assert!(
        s(&rows[0], "mdn_disposition").contains("duplicate"),
        "{rows:#?}"
    );
}

#[test]
fn documents_waiting_in_the_outbox_survive_a_restart() {
    let (site, port) = site_sending_to_a_closed_port(SIGNED_ENCRYPTED);
    let running = site.start();
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut p = invoice();
            p.extend(format!("copy {i}").bytes());
            p
        })
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        trigger(&running, p, &format!("INV-{i}.x12"));
    }
    let before = wait_outbox(&site, "three retrying", |rows| {
        rows.len() == 3 && rows.iter().all(|r| s(r, "status") == "retrying")
    });
    running.stop();

    let peer = Peer::start(&site, port, &["--detect-duplicates"]);
    let _running = site.start();
    let rows = wait_outbox(&site, "three acknowledged", |rows| {
        rows.len() == 3 && rows.iter().all(|r| s(r, "status") == "acknowledged")
    });
    for row in &rows {
        let earlier = before
            .iter()
            .find(|b| b["id"] == row["id"])
            .expect("same rows");
        assert_eq!(row["message_id"], earlier["message_id"]);
    }
    let received = peer.received();
    assert_eq!(received.len(), 3, "{received:#?}");
    let mut hashes: Vec<String> = received
        .iter()
        .map(|r| s(r, "payload_sha256").to_string())
        .collect();
    hashes.sort();
    let mut sent: Vec<String> = payloads.iter().map(|p| sha256_hex(p)).collect();
    sent.sort();
    assert_eq!(hashes, sent);
    let executions = site.wait_for_executions(3);
    assert!(
        executions.iter().all(|e| s(e, "status") == "COMPLETE_WARN"),
        "{executions:#?}"
    );
}

#[test]
fn a_negative_mdn_and_a_mic_mismatch_end_the_execution_error_with_the_reason() {
    let site = site_with("  - as2: { partner: strict }\n");
    // pyas2lib requires encryption from us: an unencrypted message gets
    // its negative receipt.
    let peer = Peer::start(&site, 0, &["--require-encryption", OUR_ID]);
    profile(
        &site,
        "strict",
        &peer.url(),
        "sign: { key: keystore:ours }\nmdn: { mode: sync, signed: true, partner_certificates: [keystore:pyas2] }\n",
    );
    let running = site.start();
    trigger(&running, &invoice(), "INV-9.x12");
    let executions = site.wait_for_executions(1);
    assert_eq!(s(&executions[0], "status"), "ERROR");
    let error = s(&executions[0], "error");
    assert!(
        error.contains("negative MDN") && error.contains("insufficient-message-security"),
        "{error}"
    );
    let rows = outbox(&site);
    assert_eq!(s(&rows[0], "status"), "failed");
    assert_eq!(rows[0]["attempts"], 1, "permanent: not retried");
    assert!(s(&rows[0], "last_error").contains("negative MDN"));
    // The document and the reason stay; cancel marks it handled.
    let id = rows[0]["id"].to_string();
    let payload = site.atom(&["outbox", "download", &id, "payload"]);
    assert_eq!(payload.stdout, invoice());
    site.atom_ok(&["outbox", "cancel", &id]);
    assert_eq!(s(&outbox(&site)[0], "status"), "cancelled");
    drop(running);
    drop(peer);

    // A receipt whose MIC is not ours.
    let site = site_with("  - as2: { partner: tampered }\n");
    let peer = Peer::start(&site, 0, &["--tamper-mic", OUR_ID]);
    profile(&site, "tampered", &peer.url(), SIGNED_ENCRYPTED);
    let running = site.start();
    trigger(&running, &invoice(), "INV-10.x12");
    let executions = site.wait_for_executions(1);
    assert_eq!(s(&executions[0], "status"), "ERROR");
    assert!(
        s(&executions[0], "error").contains("MIC mismatch"),
        "{}",
        s(&executions[0], "error")
    );
    let rows = outbox(&site);
    assert_eq!(s(&rows[0], "status"), "failed");
    drop(running);
}

#[test]
fn an_operator_retries_a_failed_document_with_its_message_id() {
    // Gives up at once: the first transient failure is final.
    let (site, port) = site_sending_to_a_closed_port(
        "sign: { key: keystore:ours }\nencrypt: { certificate: keystore:pyas2 }\n\
         retry: { first_delay_seconds: 3600, max_delay_seconds: 3600, give_up_after_hours: 1 }\n",
    );
    let running = site.start();
    trigger(&running, &invoice(), "INV-2.x12");
    let executions = site.wait_for_executions(1);
    assert_eq!(s(&executions[0], "status"), "ERROR");
    assert!(
        s(&executions[0], "error").contains("gave up after 1 attempts"),
        "{}",
        s(&executions[0], "error")
    );
    let row = &outbox(&site)[0];
    let id = row["id"].to_string();
    let message_id = s(row, "message_id").to_string();
    // An acknowledged or running row is not retried without --new-id.
    let refused = site.atom(&["outbox", "cancel", "999999"]);
    assert!(!refused.status.success());

    let peer = Peer::start(&site, port, &[]);
    site.atom_ok(&["outbox", "retry", &id]);
    let rows = wait_outbox(&site, "acknowledged", |rows| {
        s(&rows[0], "status") == "acknowledged"
    });
    assert_eq!(s(&rows[0], "message_id"), message_id);
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(peer.received().len(), 1);
    let again = site.atom(&["outbox", "retry", &id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--new-id"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    site.atom_ok(&["outbox", "retry", &id, "--new-id"]);
    let rows = wait_outbox(&site, "acknowledged again", |rows| {
        s(&rows[0], "status") == "acknowledged" && s(&rows[0], "message_id") != message_id
    });
    assert_eq!(rows[0]["attempts"], 3);
    let received = peer.received();
    assert_eq!(received.len(), 2);
    assert_ne!(received[0]["message_id"], received[1]["message_id"]);
    drop(running);
}

/// The README's round trip: pyas2lib sends an X12 850 (signed, encrypted,
/// asking for a signed receipt) to Atom; the process's WebAssembly step
/// (examples/x12-997) answers it with a 997, and an `as2` step sends the
/// 997 back to pyas2lib, whose signed MDN closes the loop.
#[test]
fn an_850_from_pyas2lib_comes_back_as_a_997_whose_mdn_closes_the_loop() {
    let Some(guest) = common::guests::build("x12-997", "orders") else {
        return;
    };
    let site = Site::new("");
    let peer_dir = site.path().join("peer");
    let start = common::pyas2lib::share_keys(std::slice::from_ref(&site), &peer_dir);
    let wasm = std::fs::read(guest.path.join("x12-997.wasm")).expect("module");
    site.deploy_file("orders", "x12-997.wasm", &wasm);
    site.deploy(
        "orders",
        &format!("{start}steps:\n  - wasm: x12-997.wasm\n  - as2: {{ partner: pyas2lib, subject: \"997 for {{message_id}}\" }}\n"),
    );
    // pyas2lib receives as PYAS2LIB, with its own key, and knows us as ATOM.
    let peer = Peer::start_as(
        &Identity {
            org_id: "PYAS2LIB",
            org_pem: peer_dir.join("pyas2lib.pem"),
            partner_id: "ATOM",
            partner_cert: peer_dir.join("atom.cert.pem"),
        },
        &site.path().join("received"),
        0,
        &[],
    );
    std::fs::create_dir_all(site.path().join("partners")).expect("partners dir");
    std::fs::write(
        site.path().join("partners/pyas2lib.yaml"),
        format!(
            "url: {}\nas2_from: ATOM\nas2_to: PYAS2LIB\ncontent_type: application/edi-x12\n\
             sign: {{ key: keystore:atom-as2, digest: sha256 }}\n\
             encrypt: {{ certificate: keystore:pyas2lib-partner, cipher: aes256-cbc }}\n\
             mdn: {{ mode: sync, signed: true }}\n",
            peer.url()
        ),
    )
    .expect("profile");
    let running = site.start();

    let order = std::fs::read(common::guests::repo().join("examples/demo/order-850.x12"))
        .expect("the demo 850");
    let order_file = site.path().join("order-850.x12");
    std::fs::write(&order_file, &order).expect("write 850");
    let built = common::pyas2lib::pyas2lib_messages_with(
        &peer_dir,
        "po",
        1,
        &common::pyas2lib::Options {
            payload_file: Some(&order_file),
            compress: false,
        },
    );
    let response = post(running.http(), "/as2", &built[0].headers, &built[0].body);
    assert_eq!(response.status, 200);
    let mdn = response.text();
    assert!(
        mdn.contains("processed") && !mdn.contains("processed/error"),
        "{mdn}"
    );
    assert!(
        mdn.contains(&built[0].mic),
        "the receipt carries pyas2lib's MIC: {mdn}"
    );

    let executions = site.wait_for_executions(1);
    assert_eq!(
        s(&executions[0], "status"),
        "COMPLETE",
        "{}",
        s(&executions[0], "log")
    );
    let rows = outbox(&site);
    assert_eq!(rows.len(), 1);
    assert_eq!(s(&rows[0], "status"), "acknowledged", "{rows:#?}");
    assert_eq!(s(&rows[0], "mdn_disposition"), "processed");
    assert_eq!(
        s(&rows[0], "subject"),
        format!("997 for {}", built[0].message_id)
    );
    let received = peer.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(s(&received[0], "status"), "processed");
    assert_eq!(received[0]["signed"], true);
    assert_eq!(received[0]["encrypted"], true);
    let ack = std::fs::read_to_string(s(&received[0], "payload_file")).expect("the 997");
    // The 997 answers the 850: its envelope goes the other way, and it
    // accepts group 1 and transaction set 0001.
    assert!(
        ack.starts_with("ISA*00*          *00*          *ZZ*ATOMLOCAL      *ZZ*DEMOPARTNER    *"),
        "{ack}"
    );
    for segment in [
        "ST*997*0001~",
        "AK1*PO*1~",
        "AK2*850*0001~",
        "AK5*A~",
        "AK9*A*1*1*1~",
        "IEA*1*000000001~",
    ] {
        assert!(ack.contains(segment), "{segment} missing from\n{ack}");
    }
    // What pyas2lib computed is the MIC we checked in its receipt.
    let ours = s(&rows[0], "mic").split(',').next().unwrap_or("").trim();
    assert_eq!(ours, s(&received[0], "mic"));
    drop(running);
}

/// Moves the site's plain HTTP listener to a fixed free port (profiles
/// publish it as their receipt URL before Atom starts); returns the port.
fn fix_http_port(site: &Site) -> u16 {
    let port = common::free_port();
    let config = std::fs::read_to_string(site.config()).expect("atom.yaml");
    std::fs::write(
        site.config(),
        config.replace("  http_port: 0\n", &format!("  http_port: {port}\n")),
    )
    .expect("write atom.yaml");
    port
}

#[test]
fn asynchronous_receipts_come_back_to_as2_mdn_and_are_matched_to_the_outbox() {
    let site = site_with("  - as2: { partner: signed }\n  - as2: { partner: plain }\n");
    let port = fix_http_port(&site);
    let peer = Peer::start(&site, 0, &[]);
    let receipt_url = format!("http://127.0.0.1:{port}/as2/mdn");
    profile(
        &site,
        "signed",
        &peer.url(),
        &format!(
            "sign: {{ key: keystore:ours, digest: sha384 }}\n\
             encrypt: {{ certificate: keystore:pyas2, cipher: aes128-cbc }}\n\
             compress: after_signing\n\
             mdn: {{ mode: async, signed: true, url: \"{receipt_url}\" }}\n"
        ),
    );
    // An unsigned receipt, POSTed to /as2 (multipart/report is recognised there).
    profile(
        &site,
        "plain",
        &peer.url(),
        &format!("mdn: {{ mode: async, url: \"http://127.0.0.1:{port}/as2\" }}\n"),
    );
    let running = site.start();
    let payload = invoice();
    trigger(&running, &payload, "INV-5.x12");
    let executions = site.wait_for_executions(1);
    assert_eq!(
        s(&executions[0], "status"),
        "COMPLETE",
        "{}",
        s(&executions[0], "log")
    );
    assert!(
        s(&executions[0], "log").contains("waiting for its asynchronous MDN"),
        "{}",
        s(&executions[0], "log")
    );
    let rows = outbox(&site);
    assert_eq!(rows.len(), 2);
    let received = peer.received();
    for row in &rows {
        assert_eq!(s(row, "status"), "acknowledged", "{row:#}");
        assert_eq!(s(row, "mdn_disposition"), "processed", "{row:#}");
        assert_eq!(row["attempts"], 1);
        let got = received
            .iter()
            .find(|r| s(r, "message_id") == s(row, "message_id").trim_matches(['<', '>']))
            .expect("pyas2lib got it");
        assert_eq!(s(got, "mdn_mode"), "ASYNC");
        assert_eq!(s(got, "payload_sha256"), sha256_hex(&payload));
        if s(row, "partner") == "signed" {
            assert_eq!(s(got, "digest_alg"), "sha384");
            let ours = s(row, "mic").split(',').next().unwrap_or("").trim();
            assert_eq!(ours, s(got, "mic"));
        }
        // The receipt as it came is kept with the row.
        let id = row["id"].to_string();
        let mdn = site.atom(&["outbox", "download", &id, "mdn"]);
        assert!(mdn.status.success());
        assert!(
            String::from_utf8_lossy(&mdn.stdout).contains(s(row, "message_id")),
            "the kept receipt names the message"
        );
    }

    // `atom messages` shows both directions; JSON with a direction says which.
    let table = site.atom_ok(&["messages"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("out ")).count(),
        2,
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("in ")).count(),
        1,
        "{table}"
    );
    let out: Vec<Value> =
        serde_json::from_str(&site.atom_ok(&["messages", "--direction", "out", "--json"]))
            .expect("JSON");
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|r| r["direction"] == "out" && r["status"] == "acknowledged"));

    // A receipt for a Message-ID never sent is refused, not taken for a message.
    let stranger = atom_connectors::as2::mdn::build(&atom_connectors::as2::mdn::MdnInput {
        reporting_ua: "someone",
        our_id: PARTNER_ID,
        partner_id: OUR_ID,
        original_message_id: "<never-sent@ATOM-OUT>",
        disposition: atom_connectors::as2::mdn::Disposition::Processed,
        mic: None,
        text: "hello",
        sign: None,
        micalg_spelling: None,
    })
    .expect("an MDN");
    let headers: Vec<(String, String)> = stranger
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for path in ["/as2/mdn", "/as2"] {
        let response = post(running.http(), path, &headers, &stranger.body);
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert!(
            response
                .text()
                .contains("no message with Message-ID <never-sent@ATOM-OUT> was sent from here"),
            "{}",
            response.text()
        );
    }
    assert_eq!(
        site.messages().len(),
        1,
        "only the trigger was logged as a message"
    );
}

#[test]
fn an_asynchronous_receipt_that_never_comes_fails_the_document_at_the_deadline() {
    let site = site_with("  - as2: { partner: silent }\n");
    // Answers 200 and never sends a receipt.
    let (peer_port, _requests) = common::http_receiver(0);
    profile(
        &site,
        "silent",
        &format!("http://127.0.0.1:{peer_port}/as2"),
        "mdn: { mode: async, url: \"http://127.0.0.1:1/as2/mdn\", wait_hours: 24 }\n",
    );
    let running = site.start();
    trigger(&running, &invoice(), "INV-6.x12");
    let rows = wait_outbox(&site, "awaiting its receipt", |rows| {
        rows.len() == 1 && s(&rows[0], "status") == "awaiting_mdn"
    });
    let deadline = s(&rows[0], "next_attempt_at");
    assert!(deadline > s(&rows[0], "last_attempt_at"), "{rows:#?}");
    // A day passes (the deadline is moved, not waited for).
    let db = rusqlite::Connection::open(site.path().join("data/atom.db")).expect("atom.db");
    db.busy_timeout(Duration::from_secs(10)).expect("timeout");
    db.execute(
        "UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00Z' WHERE id = ?1",
        [rows[0]["id"].as_i64().expect("id")],
    )
    .expect("move the deadline");
    let executions = site.wait_for_executions(1);
    assert_eq!(s(&executions[0], "status"), "ERROR");
    assert!(
        s(&executions[0], "error").contains("no asynchronous MDN came within 24 h"),
        "{}",
        s(&executions[0], "error")
    );
    assert_eq!(s(&outbox(&site)[0], "status"), "failed");
    drop(running);
}

/// Sending over HTTPS to another Atom: the partner's server certificate
/// (not from a public CA) trusted through the profile's `ca_certificates`,
/// and our TLS client certificate (`client_certificate`) presented to a
/// server that checks it against its `client_ca` and pins it in the
/// listener. Without the trust, the attempt fails on the certificate.
#[test]
fn https_with_the_partners_certificate_trusted_and_our_client_certificate() {
    let site = site_with("  - as2: { partner: tls }\n  - as2: { partner: untrusted }\n");
    let path = |name: &str| site.path().join(name).to_str().expect("utf-8").to_string();
    // The partner's server certificate, for 127.0.0.1, and our client key.
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (name, cn, extra) in [
        (
            "server",
            "partner AS2 server",
            "subjectAltName=IP:127.0.0.1",
        ),
        (
            "client",
            "ATOM-OUT TLS client",
            "extendedKeyUsage=clientAuth",
        ),
    ] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            extra,
            "-keyout",
            &path(&format!("{name}.key")),
            "-out",
            &path(&format!("{name}.crt")),
        ]);
        let pem = [
            std::fs::read(path(&format!("{name}.key"))).expect("key"),
            std::fs::read(path(&format!("{name}.crt"))).expect("cert"),
        ]
        .concat();
        std::fs::write(path(&format!("{name}.pem")), pem).expect("pem");
    }
    site.atom_ok(&["certs", "import", "tls-client", &path("client.pem")]);

    // The partner: an Atom on HTTPS with that certificate, client
    // certificates checked against ours and pinned in its listener.
    let partner = Site::new(&format!(
        "    client_auth: optional\n    client_ca: {}\n",
        path("client.crt")
    ));
    partner.atom_ok(&["certs", "import", "atom-https", &path("server.pem")]);
    partner.atom_ok(&["certs", "import", "sender", &path("ours.cert.pem")]);
    partner.atom_ok(&["certs", "import", "receiver", &path("pyas2.pem")]);
    partner.atom_ok(&["certs", "import", "client-pin", &path("client.crt")]);
    partner.deploy(
        "from-atom",
        &format!(
            "start:\n  as2:\n    as2_from:\n      id: {OUR_ID}\n      signing_certificate: keystore:sender\n      \
             client_certificate: keystore:client-pin\n    as2_to:\n      id: {PARTNER_ID}\n      \
             decryption_key: keystore:receiver\n      mdn_signing_key: keystore:receiver\n    \
             security: {{ require_signed: true, require_encrypted: true }}\n"
        ),
    );
    let partner_atom = partner.start();
    let url = format!("https://{}/as2", partner_atom.https.expect("https"));
    let security = "sign: { key: keystore:ours }\nencrypt: { certificate: keystore:pyas2 }\n\
         mdn: { mode: sync, signed: true }\n\
         retry: { first_delay_seconds: 3600, max_delay_seconds: 3600, give_up_after_hours: 1 }\n\
         http:\n  client_certificate: keystore:tls-client\n";
    profile(
        &site,
        "tls",
        &url,
        &format!("{security}  ca_certificates: {}\n", path("server.crt")),
    );
    profile(&site, "untrusted", &url, security);
    let running = site.start();
    trigger(&running, &invoice(), "INV-7.x12");
    let executions = site.wait_for_executions(1);
    // The first step got through, the second gave up on the certificate.
    let rows = outbox(&site);
    let tls = rows
        .iter()
        .find(|r| r["partner"] == "tls")
        .expect("tls row");
    assert_eq!(s(tls, "status"), "acknowledged", "{rows:#?}");
    let untrusted = rows
        .iter()
        .find(|r| r["partner"] == "untrusted")
        .expect("row");
    assert_eq!(s(untrusted, "status"), "failed", "{rows:#?}");
    assert!(
        s(untrusted, "last_error")
            .to_lowercase()
            .contains("certificate"),
        "{}",
        s(untrusted, "last_error")
    );
    assert_eq!(s(&executions[0], "status"), "ERROR");
    let received = partner.messages();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["disposition"], "processed");
    assert_eq!(received[0]["message_id"], tls["message_id"]);
    drop(running);
}

/// Found by the async matrix: pyas2lib's receipt came back before our POST
/// returned, found the row still `sending` and was ignored, so the
/// document waited for a receipt that had come. Here the receiver always
/// posts the receipt before it answers the POST.
#[test]
fn async_receipt_before_the_post_returns_regression() {
    let site = site_with("  - as2: { partner: eager }\n");
    let port = fix_http_port(&site);
    let peer = Peer::start(&site, 0, &["--mdn-before-response"]);
    profile(
        &site,
        "eager",
        &peer.url(),
        &format!(
            "sign: {{ key: keystore:ours }}\nencrypt: {{ certificate: keystore:pyas2 }}\n\
             mdn: {{ mode: async, signed: true, url: \"http://127.0.0.1:{port}/as2/mdn\" }}\n"
        ),
    );
    let running = site.start();
    for i in 0..3 {
        trigger(&running, &invoice(), &format!("INV-8{i}.x12"));
    }
    let executions = site.wait_for_executions(3);
    assert!(
        executions.iter().all(|e| s(e, "status") == "COMPLETE"),
        "{executions:#?}"
    );
    let rows = outbox(&site);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(s(row, "status"), "acknowledged", "{row:#}");
        assert_eq!(s(row, "mdn_disposition"), "processed");
        assert_eq!(row["attempts"], 1);
    }
    assert_eq!(peer.received().len(), 3);
    assert!(
        !site.log().contains("not waiting for one; ignored"),
        "{}",
        site.log()
    );
    drop(running);
}

/// The console's Outbox page does what `atom outbox cancel|retry` do, for
/// operators only, and records who did it.
#[test]
fn console_operator_cancels_and_retries_an_outbound_document() {
    let (site, port) = site_sending_to_a_closed_port(SIGNED_ENCRYPTED);
    common::add_console_user(&site, "ana", "operator", "operator password 1");
    common::add_console_user(&site, "vic", "viewer", "viewer password 1");
    let running = site.start();
    let console = running.console.expect("console");
    trigger(&running, &invoice(), "INV-9.x12");
    let rows = wait_outbox(&site, "a failed attempt", |rows| {
        rows.len() == 1 && s(&rows[0], "status") == "retrying"
    });
    let id = rows[0]["id"].as_i64().expect("outbox id");

    let viewer = common::ConsoleSession::log_in(console, "vic", "viewer password 1");
    let page = viewer.get("/outbox").text();
    assert!(
        page.contains("INV-9.x12") && page.contains("retrying"),
        "{page}"
    );
    assert_eq!(viewer.post(&format!("/outbox/{id}/cancel"), "").status, 403);
    assert_eq!(s(&outbox(&site)[0], "status"), "retrying");

    let operator = common::ConsoleSession::log_in(console, "ana", "operator password 1");
    assert_eq!(
        operator.post(&format!("/outbox/{id}/cancel"), "").status,
        303
    );
    assert_eq!(s(&outbox(&site)[0], "status"), "cancelled");
    // The execution sees the cancel at its next attempt and ends; only a
    // finished execution can run again.
    let executions = site.wait_for_executions(1);
    assert_eq!(s(&executions[0], "status"), "ERROR");
    // The partner comes up; the retry sends it with its Message-ID.
    let message_id = s(&rows[0], "message_id").to_string();
    let _peer = Peer::start(&site, port, &[]);
    assert_eq!(
        operator.post(&format!("/outbox/{id}/retry"), "").status,
        303
    );
    let rows = wait_outbox(&site, "the retried document acknowledged", |rows| {
        rows.len() == 1 && s(&rows[0], "status") == "acknowledged"
    });
    assert_eq!(s(&rows[0], "message_id"), message_id);
    let audit = operator.get("/audit").text();
    for line in [
        "outbox.cancel",
        "outbox.retry",
        "refused: your role (viewer)",
    ] {
        assert!(audit.contains(line), "{line} missing: {audit}");
    }
}

/// A document that fails for good (a negative receipt) is told to the
/// alerts webhook, once.
#[test]
fn a_send_that_fails_for_good_is_alerted_to_the_webhook() {
    let site = site_with("  - as2: { partner: strict }\n");
    let peer = Peer::start(&site, 0, &["--require-encryption", OUR_ID]);
    profile(
        &site,
        "strict",
        &peer.url(),
        "sign: { key: keystore:ours }\nmdn: { mode: sync, signed: true, partner_certificates: [keystore:pyas2] }\n",
    );
    let (port, rx) = common::http_receiver(0);
    let mut config = std::fs::read_to_string(site.config()).expect("atom.yaml");
    config.push_str(&format!(
        "alerts:\n  webhook_url: http://127.0.0.1:{port}/hook\n  check_interval_seconds: 1\n"
    ));
    std::fs::write(site.config(), config).expect("atom.yaml");
    let running = site.start();
    trigger(&running, &invoice(), "INV-11.x12");
    let rows = wait_outbox(&site, "the document failed", |rows| {
        rows.len() == 1 && s(&rows[0], "status") == "failed"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert: Value = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, body) = rx.recv_timeout(left).expect("an alert within 30 s");
        let alert: Value = serde_json::from_slice(&body).expect("alert JSON");
        if alert["kind"] == "send_failed" {
            break alert;
        }
    };
    assert_eq!(alert["details"]["partner"], "strict", "{alert:#}");
    assert_eq!(alert["details"]["message_id"], rows[0]["message_id"]);
    assert_eq!(alert["details"]["file_name"], "INV-11.x12");
    assert!(s(&alert, "summary").contains("negative MDN"), "{alert:#}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        rx.try_iter()
            .all(|(_, b)| !String::from_utf8_lossy(&b).contains("send_failed")),
        "alerted twice"
    );
    drop(running);
}
