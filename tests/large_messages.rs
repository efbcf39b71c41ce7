//! Large messages through the running Atom (issue 13 item 3, issue 12
//! item 2): a request larger than the in-memory limit is spooled and opened
//! as a stream, its payload written to a file and stored from there. Built
//! by pyas2lib (compressed, signed, encrypted): the receipt must carry the
//! MIC pyas2lib computed, the stored payload must be the bytes sent, and
//! the server's memory must not grow with the message.

mod common;

use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use common::pyas2lib::{dense_edi, pyas2lib_messages_with, share_keys, Built, Options};
use common::*;

/// A large message built by pyas2lib (compressed, signed, encrypted) for
/// a site that shares keys with it; the payload and the message.
fn large_message(site: &Site, start_step_then: &str) -> (Vec<u8>, Built) {
    let peer = site.path().join("peer");
    let start_step = share_keys(std::slice::from_ref(site), &peer);
    site.deploy("acme", &format!("{start_step}{start_step_then}"));
    let payload = dense_edi(40 << 20);
    let payload_file = peer.join("large.edi");
    std::fs::write(&payload_file, &payload).expect("payload file");
    let message = pyas2lib_messages_with(
        &peer,
        "large",
        1,
        &Options {
            payload_file: Some(&payload_file),
            compress: true,
        },
    )
    .remove(0);
    assert!(
        message.body.len() > 16 << 20,
        "the request ({} bytes) must be larger than the in-memory limit",
        message.body.len()
    );
    (payload, message)
}

/// Starts the Atom, sends `message` and waits for its execution, which
/// must complete; returns the running Atom, the execution and the
/// server's peak RSS before and after (KiB).
fn receive_and_run(site: &Site, message: &Built) -> (Running, serde_json::Value, u64, u64) {
    let atom = site.start();
    let before = peak_rss_kib(atom.child.id());
    let response = post(atom.http(), "/as2", &message.headers, &message.body);
    assert_eq!(response.status, 200, "{}", response.text());
    let executions = site.wait_for_executions(1);
    let execution = executions[0].clone();
    assert_eq!(execution["status"], "COMPLETE", "{execution:?}");
    let after = peak_rss_kib(atom.child.id());
    (atom, execution, before, after)
}

/// The first document the execution kept, downloaded with the CLI.
fn kept_document(site: &Site, execution: &serde_json::Value) -> Vec<u8> {
    let id = execution["id"].as_str().expect("execution id");
    let kept = site.atom(&["executions", "download", id, "1"]);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    kept.stdout
}

/// The server's peak RSS grew far less than the payload: it was streamed.
fn assert_memory_flat(what: &str, payload_len: usize, before_kib: u64, after_kib: u64) {
    let growth_mib = after_kib.saturating_sub(before_kib) >> 10;
    eprintln!(
        "{} MiB payload {what}: server peak RSS {} -> {} MiB",
        payload_len >> 20,
        before_kib >> 10,
        after_kib >> 10
    );
    assert!(
        growth_mib < 24,
        "peak RSS grew by {growth_mib} MiB for a {} MiB payload ({what})",
        payload_len >> 20
    );
}

/// The stored payload of a large message goes to a disk step and an HTTP
/// step as a stream, and is kept with the execution the same way: the
/// server holds none of it whole.
#[test]
fn a_large_payload_is_streamed_through_disk_and_http_steps() {
    let site = Site::new("");
    let (port, posted) = http_receiver(0);
    let (payload, message) = large_message(
        &site,
        &format!(
            "steps:\n  - disk:\n      directory: out\n      file_name: \"{{execution_id}}.edi\"\n  \
             - http:\n      url: http://127.0.0.1:{port}/in\n      retries: 0\n"
        ),
    );
    let (_atom, execution, before, after) = receive_and_run(&site, &message);

    let id = execution["id"].as_str().expect("execution id");
    let written =
        std::fs::read(site.path().join(format!("data/out/{id}.edi"))).expect("disk step output");
    assert!(
        written == payload,
        "the disk step wrote the payload byte for byte"
    );
    let (head, body) = posted
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the http step posted");
    assert!(
        body == payload,
        "the http step sent the payload byte for byte"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", payload.len())),
        "sent with its length: {head}"
    );
    assert!(
        kept_document(&site, &execution) == payload,
        "the kept document is the payload"
    );
    assert_eq!(execution["output_bytes"], payload.len());

    assert_memory_flat("through disk and http steps", payload.len(), before, after);
}

/// A guest that reads its stdin 64 KiB at a time and writes the number of
/// bytes and their sum (two little-endian u64): it holds 64 KiB, whatever
/// the document's size.
const COUNTING_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)
  (func (export "_start")
    (local $total i64) (local $sum i64) (local $i i32) (local $n i32)
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done
      (loop $more
        (br_if $done (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)) (i32.const 0)))
        (local.set $n (i32.load (i32.const 16)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $n))))
        (local.set $i (i32.const 0))
        (block $counted
          (loop $byte
            (br_if $counted (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $sum (i64.add (local.get $sum)
              (i64.extend_i32_u (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $more)))
    (i64.store (i32.const 32) (local.get $total))
    (i64.store (i32.const 40) (local.get $sum))
    (i32.store (i32.const 48) (i32.const 32))
    (i32.store (i32.const 52) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56)))))"#;

/// A guest reads a large stored payload on its stdin as a stream: it sees
/// every byte, and neither it nor the server holds the document whole.
#[test]
fn a_guest_reads_a_large_payload_as_a_stream() {
    let site = Site::new("");
    let (payload, message) = large_message(&site, "steps:\n  - wasm: count.wat\n");
    site.deploy_file("acme", "count.wat", COUNTING_GUEST.as_bytes());
    let (_atom, execution, before, after) = receive_and_run(&site, &message);
    let kept = kept_document(&site, &execution);
    assert_eq!(kept.len(), 16, "the guest's count and sum");
    let word = |i: usize| u64::from_le_bytes(kept[i..i + 8].try_into().expect("8 bytes"));
    assert_eq!(word(0), payload.len() as u64, "bytes the guest read");
    let sum: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(word(8), sum, "sum of the bytes the guest read");
    assert_memory_flat("read by a guest", payload.len(), before, after);
}

#[test]
fn a_large_compressed_signed_encrypted_message_is_streamed_to_the_store() {
    let site = Site::new("");
    let (payload, message) = large_message(&site, "");
    let peer = site.path().join("peer");
    let atom = site.start();
    let before = peak_rss_kib(atom.child.id());
    let response = post(atom.http(), "/as2", &message.headers, &message.body);
    let after = peak_rss_kib(atom.child.id());
    assert_eq!(response.status, 200, "{}", response.text());

    let ours = atom_connectors::keys::certificates_from_bytes(
        &std::fs::read(peer.join("atom.cert.pem")).expect("our certificate"),
        "atom.cert.pem",
    )
    .expect("certificate")
    .remove(0);
    let receipt = mdn::parse(
        response.header("content-type").expect("MDN content type"),
        &response.body,
        MdnTrust::Verify(&[ours]),
    )
    .expect("a signed MDN that verifies");
    assert_eq!(receipt.disposition, Disposition::Processed);
    assert_eq!(
        receipt.received_mic.as_ref().map(|m| m.value.as_str()),
        Some(message.mic.as_str()),
        "the MIC pyas2lib computed"
    );

    let messages = site.messages();
    assert_eq!(messages.len(), 1);
    let stored = &messages[0];
    assert_eq!(stored["message_id"], message.message_id.as_str());
    assert_eq!(stored["compression"], "before-signing");
    assert_eq!(stored["encryption"], "aes128-cbc");
    assert_eq!(stored["request_size"], message.body.len());
    assert_eq!(stored["payload_size"], payload.len());
    assert!(
        site.document(stored, "payload") == payload,
        "stored payload bytes"
    );
    let raw = site.document(stored, "raw");
    assert!(
        raw.ends_with(&message.body),
        "the raw request ends with the body as sent"
    );

    // A resend is a duplicate: the original receipt, nothing stored again,
    // and its content found equal to the stored request.
    let again = post(atom.http(), "/as2", &message.headers, &message.body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(
        again.body == response.body,
        "the original MDN, byte for byte"
    );
    assert_eq!(site.messages().len(), 1, "stored once");
    let log = site.log();
    assert!(
        log.contains("duplicate message: original receipt returned"),
        "{log}"
    );
    assert!(!log.contains("suspicious duplicate"), "{log}");

    // In memory, this message took more than twice its size (the
    // decrypted and the inflated copies); streamed, it takes buffers and
    // the first 8 MiB of the body, read before it is spooled.
    assert_memory_flat("received and stored", payload.len(), before, after);
}
