//! Durability of receipts: an acknowledged message is never lost, a resent
//! one is never stored twice, an asynchronous MDN survives a restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The Mendelson signed+encrypted vector with its own Message-ID and a signed sync MDN request.
fn message(id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    set_header(&mut headers, "Message-ID", id);
    (headers, body)
}

/// Reads one HTTP request from a socket; answers 200.
fn accept_one(listener: &TcpListener) -> Vec<u8> {
    let (mut stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    data
}

#[test]
fn async_mdn_reaches_a_receiver_that_was_down_across_a_runtime_restart() {
    let site = Site::new("");
    site.import_interop_keys();
    let receiver_port = free_port(); // nothing listens here yet
                                     // The test's receiver is on loopback, which partners may not name unless allowed.
    site.deploy(
        "mendelson",
        &format!("{MENDELSON_BUNDLE}    async_mdn:\n      allowed_urls: [\"http://127.0.0.1:{receiver_port}/\"]\n"),
    );
    let atom = site.start();
    let (mut headers, body) = message("<async-restart@mecas2>");
    set_header(
        &mut headers,
        "Receipt-Delivery-Option",
        &format!("http://127.0.0.1:{receiver_port}/mdn"),
    );
    let response = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(
        (response.status, response.body.len()),
        (200, 0),
        "async: 200 at once, no body"
    );
    std::thread::sleep(Duration::from_millis(1500)); // a first failed attempt
    assert_eq!(site.messages()[0]["mdn_status"], "pending");
    assert_eq!(atom.stop(), Some(0));

    // The receiver comes up while the Atom is down; the restarted Atom delivers.
    let listener = TcpListener::bind(("127.0.0.1", receiver_port)).expect("receiver binds");
    let atom = site.start();
    let request = accept_one(&listener);
    let text = String::from_utf8_lossy(&request);
    assert!(text.starts_with("POST /mdn"), "{text}");
    assert!(
        text.contains("<async-restart@mecas2>"),
        "the MDN names the original message"
    );
    assert!(
        text.contains("G6PhshLOERWJEIfypIh6Q3sno6cBUWJBDky1igJvDMo="),
        "with its MIC"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while site.messages()[0]["mdn_status"] != "delivered" {
        assert!(Instant::now() < deadline, "status never became delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(atom);
}

/// Concurrent senders keep sending until the runtime has been SIGKILLed
/// at pseudo-random moments and restarted several times; senders retry
/// whatever got no positive MDN. Afterwards every acknowledged message is
/// stored once, with the right bytes, and nothing else is.
/// A guest that takes 40 ms (a WASI sleep), then copies stdin to stdout:
/// long enough that kills land in the middle of executions.
const SLOW_COPY_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $n i32)
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 40000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (loop $copy
      (i32.store (i32.const 256) (i32.const 1024))
      (i32.store (i32.const 260) (i32.const 65536))
      (drop (call $read (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 264)))
      (local.set $n (i32.load (i32.const 264)))
      (if (local.get $n)
        (then
          (i32.store (i32.const 260) (local.get $n))
          (drop (call $write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264)))
          (br $copy))))))"#;

#[test]
fn sigkill_under_load_loses_no_acknowledged_message_and_stores_none_twice() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const SENDERS: usize = 4;
    const KILLS: usize = 5;
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy_file("mendelson", "copy.wat", SLOW_COPY_GUEST.as_bytes());
    site.deploy(
        "mendelson",
        &format!("{MENDELSON_BUNDLE}steps:\n  - wasm: copy.wat\n  - disk:\n      directory: out/crash\n      file_name: \"{{message_id}}.txt\"\n"),
    );
    let atom = Arc::new(Mutex::new(site.start()));
    let http = atom.lock().map(|a| a.http()).expect("lock");
    // Keep the HTTP port across restarts.
    let config = std::fs::read_to_string(site.config())
        .expect("config")
        .replace("http_port: 0", &format!("http_port: {}", http.port()));
    std::fs::write(site.config(), config).expect("config");

    let acknowledged: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for s in 0..SENDERS {
        let (acknowledged, retries, stop) = (acknowledged.clone(), retries.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("<crash-{s}-{n}@mecas2>");
                n += 1;
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    assert!(Instant::now() < deadline, "{id} never acknowledged");
                    let (headers, body) = message(&id);
                    match try_post(http, "/as2", &headers, &body) {
                        Ok(r) if r.status == 200 && r.text().contains("; processed\r\n") => {
                            *acknowledged
                                .lock()
                                .expect("lock")
                                .entry(id.clone())
                                .or_default() += 1;
                            break;
                        }
                        _ => {
                            // Down, cut off or refused: retry, as an AS2 product does.
                            retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }
        }));
    }
    let mut seed: u64 = 0x5eed;
    let mut acknowledged_at_kill = Vec::new();
    for _ in 0..KILLS {
        // Kill only once senders made progress since the last restart, so
        // every kill lands in the middle of the stream, however slow the machine.
        let before = acknowledged_at_kill.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().expect("lock").len() <= before {
            assert!(Instant::now() < deadline, "no progress after a restart");
            std::thread::sleep(Duration::from_millis(10));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 250));
        let mut running = atom.lock().expect("lock");
        acknowledged_at_kill.push(acknowledged.lock().expect("lock").len());
        let _ = running.child.kill(); // SIGKILL
        let _ = running.child.wait();
        *running = site.start();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("sender thread");
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let total = acknowledged.len();
    // Every kill landed while senders were sending, and they had to retry.
    assert!(
        acknowledged_at_kill.windows(2).all(|w| w[0] < w[1]) && acknowledged_at_kill[0] > 0,
        "{acknowledged_at_kill:?}"
    );
    assert!(
        *acknowledged_at_kill.last().unwrap_or(&0) < total,
        "{acknowledged_at_kill:?} of {total}"
    );
    assert!(
        retries.load(Ordering::Relaxed) > 0,
        "no sender ever had to retry"
    );
    assert!(acknowledged.values().all(|&count| count == 1));

    let payload = std::fs::read(interop("payload.txt")).expect("payload");
    let messages = site.messages();
    let mut seen = HashSet::new();
    for m in &messages {
        let id = m["message_id"].as_str().expect("id").to_string();
        assert!(seen.insert(id.clone()), "{id} stored twice");
        assert_eq!(m["disposition"], "processed");
        assert_eq!(site.document(m, "payload"), payload, "{id}: stored bytes");
    }
    for id in acknowledged.keys() {
        assert!(
            seen.contains(id),
            "{id} was acknowledged but is not in the store"
        );
    }
    assert_eq!(
        messages.len(),
        total,
        "nothing stored that no sender holds a receipt for"
    );

    // Processed exactly once: one execution per stored message, completed,
    // its output written; those a kill interrupted were recovered at start.
    let executions = site.wait_for_executions(total);
    assert_eq!(executions.len(), total, "one execution per message");
    let rows: HashSet<i64> = executions
        .iter()
        .map(|e| e["message_row"].as_i64().expect("row"))
        .collect();
    assert_eq!(rows.len(), total, "no message ran twice");
    let recovered = site
        .log()
        .matches("recovering interrupted execution")
        .count();
    for e in &executions {
        assert_eq!(e["status"], "COMPLETE", "{e}");
        let written = e["documents"][0]["delivered"][0]
            .as_str()
            .expect("delivered");
        assert_eq!(
            std::fs::read(written).expect("output"),
            payload,
            "{written}"
        );
    }
    let outputs = std::fs::read_dir(site.path().join("data/out/crash"))
        .expect("outputs")
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| !f.file_name().to_string_lossy().starts_with('.'))
        })
        .count();
    assert_eq!(outputs, total, "one output file per message");
    eprintln!(
        "crash test: {total} acknowledged, kills at {acknowledged_at_kill:?}, {} retries, {recovered} executions recovered at restarts and run again",
        retries.load(Ordering::Relaxed)
    );
}
