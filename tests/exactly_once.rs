//! Exactly once on one node: concurrent copies of one message, a duplicate
//! window that only the partner moves, a drain at SIGTERM, and store faults
//! (a full disk) that never produce a positive MDN for an unstored message.
//! Each test is named after the finding it pins.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A process that writes each document to `out/<dir>` (one execution per message).
fn disk_steps(dir: &str) -> String {
    format!(
        "steps:\n  - disk:\n      directory: out/{dir}\n      file_name: \"{{message_id}}.txt\"\n"
    )
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `COPIES` concurrent copies of each of `IDS` messages (released
/// together by a barrier) and checks that each was stored and processed once,
/// and that every copy got the original MDN or a 503.
fn copies_are_stored_and_processed_once(
    site: &Site,
    atom: &Running,
    make: impl Fn(&str) -> (Vec<(String, String)>, Vec<u8>) + Sync,
) {
    const COPIES: usize = 8;
    const IDS: usize = 10;
    let addr = atom.http();
    let mut answers: HashMap<String, Vec<Response>> = HashMap::new();
    for round in 0..IDS {
        let id = format!("<copies-{round}@exactly-once>");
        let (headers, body) = make(&id);
        let barrier = Barrier::new(COPIES);
        let responses: Vec<Response> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..COPIES)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        post(addr, "/as2", &headers, &body)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sender"))
                .collect()
        });
        answers.insert(id, responses);
    }
    let messages = site.messages();
    assert_eq!(messages.len(), IDS, "one stored receipt per Message-ID");
    let stored: HashSet<&str> = messages
        .iter()
        .filter_map(|m| m["message_id"].as_str())
        .collect();
    assert_eq!(stored.len(), IDS);
    let mut retried = 0;
    for (id, responses) in &answers {
        assert!(stored.contains(id.as_str()), "{id} stored");
        let mdns: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
        retried += responses.iter().filter(|r| r.status == 503).count();
        for r in responses {
            assert!(
                r.status == 200 || (r.status == 503 && r.header("Retry-After").is_some()),
                "{id}: every copy gets the MDN or 503 with Retry-After: {} {}",
                r.status,
                r.text()
            );
        }
        assert!(!mdns.is_empty(), "{id}: at least one copy got its MDN");
        assert!(
            mdns.iter().all(|r| r.body == mdns[0].body),
            "{id}: every copy got the original MDN, byte for byte"
        );
        assert!(
            mdns[0].text().contains("; processed\r\n") || mdns[0].text().contains("processed"),
            "{id}: positive MDN: {}",
            mdns[0].text()
        );
    }
    let executions = site.wait_for_executions(IDS);
    assert_eq!(executions.len(), IDS, "one execution per Message-ID");
    let rows: HashSet<i64> = executions
        .iter()
        .filter_map(|e| e["message_row"].as_i64())
        .collect();
    assert_eq!(rows.len(), IDS);
    assert!(
        executions.iter().all(|e| e["status"] == "COMPLETE"),
        "{executions:?}"
    );
    eprintln!("{} copies answered 503 to retry", retried);
}

#[test]
fn concurrent_resends_stored_and_processed_several_times_regression() {
    let site = Site::new("");
    site.deploy(
        "copies",
        &format!("{}{}", plain_start("COPIER", "US"), disk_steps("copies")),
    );
    let atom = site.start();
    copies_are_stored_and_processed_once(&site, &atom, |id| {
        (
            plain_headers("COPIER", "US", id),
            format!("ISA*00*copy of {id}~").into_bytes(),
        )
    });
}

#[test]
fn concurrent_signed_encrypted_resends_stored_and_processed_several_times_regression() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy(
        "mendelson",
        &format!("{MENDELSON_BUNDLE}{}", disk_steps("signed")),
    );
    let atom = site.start();
    copies_are_stored_and_processed_once(&site, &atom, |id| {
        let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
        request_signed_mdn(&mut headers);
        set_header(&mut headers, "Message-ID", id);
        (headers, body)
    });
}

#[test]
fn duplicate_window_flushed_by_junk_regression() {
    let site = Site::new("");
    site.import_interop_keys();
    // Window of 100 (the smallest allowed); the partner must sign.
    site.deploy(
        "windowed",
        &format!(
            "start:\n  as2:\n    as2_from:\n      id: mecas2\n      signing_certificate: keystore:mecas2\n      duplicate_window: 100\n    as2_to:\n      id: pyas2lib\n      decryption_key: keystore:receiver\n      mdn_signing_key: keystore:receiver\n    security:\n      require_signed: true\n{}",
            disk_steps("windowed")
        ),
    );
    site.deploy(
        "bystander",
        &format!("{}{}", plain_start("BYSTANDER", "US"), disk_steps("by")),
    );
    let atom = site.start();
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    set_header(&mut headers, "Message-ID", "<the-real-one@mecas2>");
    let first = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(first.status, 200);
    assert!(first.text().contains("processed"), "{}", first.text());

    // 150 junk messages under the partner's ID that fail its checks, and
    // 150 accepted messages of another partner.
    for i in 0..150 {
        let junk = post(
            atom.http(),
            "/as2",
            &plain_headers("mecas2", "pyas2lib", &format!("<junk-{i}@x>")),
            b"junk",
        );
        assert!(
            junk.text().contains("insufficient-message-security"),
            "junk refused: {}",
            junk.text()
        );
        let other = post(
            atom.http(),
            "/as2",
            &plain_headers("BYSTANDER", "US", &format!("<by-{i}@x>")),
            b"ISA*00~",
        );
        assert_eq!(other.status, 200);
    }
    let resent = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(resent.status, 200);
    assert_eq!(
        resent.body, first.body,
        "the resend gets the original MDN: it was not pushed out of the window"
    );
    let executions = site.wait_for_executions(151);
    assert_eq!(
        executions
            .iter()
            .filter(|e| e["process"] == "windowed")
            .count(),
        1,
        "the real message ran once"
    );
    let stored = site
        .messages()
        .iter()
        .filter(|m| m["message_id"] == "<the-real-one@mecas2>")
        .count();
    assert_eq!(stored, 1);
}

#[test]
fn shutdown_did_not_drain_regression() {
    let site = Site::new("");
    let (port, posted) = http_receiver(0);
    site.deploy_file("slow", "guest.wat", sleeping_guest(2000).as_bytes());
    site.deploy(
        "slow",
        &format!(
            "{}steps:\n  - wasm: guest.wat\n  - http:\n      url: http://127.0.0.1:{port}/done\n",
            plain_start("SLOW", "US")
        ),
    );
    let atom = site.start();
    let http = atom.http();
    assert_eq!(
        post(
            http,
            "/as2",
            &plain_headers("SLOW", "US", "<slow@x>"),
            b"doc"
        )
        .status,
        200
    );
    wait_until("the execution to run", Duration::from_secs(30), || {
        site.executions()
            .first()
            .is_some_and(|e| e["status"] == "INPROCESS")
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(atom.child.id() as i32, libc::SIGTERM) };
    // While it drains: /health says so, and new messages are refused with 503.
    wait_until("/health to say draining", Duration::from_secs(10), || {
        get(http, "/health", &[]).status == 503
    });
    assert!(get(http, "/health", &[]).text().contains("draining"));
    let refused = post(
        http,
        "/as2",
        &plain_headers("SLOW", "US", "<late@x>"),
        b"doc",
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("Retry-After").is_some());
    assert_eq!(atom.stop(), Some(0), "exit 0 after the drain");
    let (_, body) = posted
        .recv_timeout(Duration::from_secs(5))
        .expect("the running execution finished its http step");
    assert_eq!(body, b"done");

    let log_before = site.log().len();
    let atom = site.start();
    let executions = site.executions();
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0]["status"], "COMPLETE", "{:?}", executions[0]);
    assert_eq!(executions[0]["attempts"], 1);
    assert!(
        !site.log()[log_before..].contains("recovering interrupted execution"),
        "a completed execution never runs again"
    );
    assert!(
        posted.try_recv().is_err(),
        "the http step POSTed exactly once"
    );
    assert_eq!(
        site.messages().len(),
        1,
        "the message refused while draining is not stored"
    );
    assert_eq!(atom.stop(), Some(0));
}

/// A tmpfs mounted on a directory for the life of the value.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `path` to the last block; returns the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let block = vec![0x5au8; chunk];
        while file.write_all(&block).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn full_disk_acknowledged_unstored_messages_regression() {
    let site = Site::new("");
    let Some(_tmpfs) = Tmpfs::mount(&site.path().join("data"), "20m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    site.deploy_file("full", "guest.wat", sleeping_guest(500).as_bytes());
    site.deploy(
        "full",
        &format!(
            "{}limits:\n  max_concurrent_executions: 2\n  retries: 60\n  retry_delay_seconds: 1\nsteps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/full\n      file_name: \"{{message_id}}.txt\"\n",
            plain_start("FULL", "US")
        ),
    );
    let atom = site.start();
    let http = atom.http();
    let payload = |id: &str| -> Vec<u8> {
        let mut body = format!("ISA*00*{id}~").into_bytes();
        body.resize(64 * 1024, b'x');
        body
    };

    // A first batch, acknowledged; its executions (0.5 s each, two at a
    // time) are still queued when the disk fills.
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    for i in 0..6 {
        let id = format!("<before-{i}@full>");
        let r = post(
            http,
            "/as2",
            &plain_headers("FULL", "US", &id),
            &payload(&id),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        acknowledged.lock().expect("lock").insert(id);
    }
    let filler = site.path().join("data/filler");
    let filled = fill(&filler);

    assert!(filled > 0);

    // Load while full: nothing may be acknowledged that is not stored.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    // Answers cut off (a reset while the body was still being sent): not
    // acknowledged, and not known to be refused either.
    let unknown: Arc<Mutex<HashSet<String>>> = Arc::default();
    let senders: Vec<_> = (0..3)
        .map(|s| {
            let (acknowledged, stop, refused, unknown) = (
                acknowledged.clone(),
                stop.clone(),
                refused.clone(),
                unknown.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let id = format!("<load-{s}-{n}@full>");
                    n += 1;
                    let mut body = format!("ISA*00*{id}~").into_bytes();
                    body.resize(64 * 1024, b'x');
                    match try_post(http, "/as2", &plain_headers("FULL", "US", &id), &body) {
                        Ok(r) if r.status == 200 && r.text().contains("processed") => {
                            assert!(!r.text().contains("error"), "{}", r.text());
                            acknowledged.lock().expect("lock").insert(id);
                        }
                        Ok(r) => {
                            assert_eq!(r.status, 503, "{}", r.text());
                            // 60 s for a full disk; 30 s while draining or unknown.
                            assert!(matches!(r.header("Retry-After"), Some("60" | "30")));
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            unknown.lock().expect("lock").insert(id);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    wait_until(
        "/health to report the full store",
        Duration::from_secs(15),
        || get(http, "/health", &[]).status == 503,
    );
    let health = get(http, "/health", &[]).text();
    assert!(
        health.contains("store_unavailable") && health.contains(r#""kind":"full""#),
        "{health}"
    );
    wait_until("refusals while full", Duration::from_secs(15), || {
        refused.load(Ordering::SeqCst) >= 20
    });
    let acknowledged_while_full = acknowledged.lock().expect("lock").len();
    // Executions of the first batch meet the full disk in their disk step.
    wait_until(
        "an execution to fail on the full disk",
        Duration::from_secs(30),
        || {
            site.log()
                .contains("transient step failure; execution queued again")
        },
    );

    // Space comes back: the Atom serves again by itself.
    std::fs::remove_file(&filler).expect("free space");
    wait_until("/health to recover", Duration::from_secs(15), || {
        get(http, "/health", &[]).status == 200
    });
    wait_until("receipts again", Duration::from_secs(30), || {
        acknowledged.lock().expect("lock").len() >= acknowledged_while_full + 10
    });
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().expect("sender");
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let messages = site.messages();
    let mut stored = HashSet::new();
    for m in &messages {
        let id = m["message_id"].as_str().expect("id").to_string();
        assert!(stored.insert(id.clone()), "{id} stored twice");
        assert_eq!(
            site.document(m, "payload"),
            payload(&id),
            "{id}: stored bytes"
        );
    }
    let unknown = unknown.lock().expect("lock").clone();
    assert!(
        acknowledged.is_subset(&stored),
        "no positive MDN for an unstored message: {:?}",
        acknowledged.difference(&stored).collect::<Vec<_>>()
    );
    assert!(
        stored
            .iter()
            .all(|id| acknowledged.contains(id) || unknown.contains(id)),
        "nothing stored that was refused"
    );
    // Executions that failed on the full disk were retried to COMPLETE.
    let executions = site.wait_for_executions(acknowledged.len());
    assert_eq!(executions.len(), acknowledged.len());
    for e in &executions {
        assert_eq!(e["status"], "COMPLETE", "{e}");
    }
    let retried = executions
        .iter()
        .filter(|e| e["attempts"].as_u64().unwrap_or(0) > 1)
        .count();
    assert!(
        retried > 0,
        "some executions met the full disk and were retried: attempts {:?}",
        executions
            .iter()
            .map(|e| e["attempts"].clone())
            .collect::<Vec<_>>()
    );
    eprintln!(
        "full disk: {} acknowledged, {} refused with 503, {retried} executions retried",
        acknowledged.len(),
        refused.load(Ordering::SeqCst)
    );
    drop(atom);
}

#[test]
fn a_copy_with_different_content_gets_the_original_mdn_and_is_logged_suspicious() {
    let site = Site::new("");
    site.deploy(
        "suspicious",
        &format!("{}{}", plain_start("SUSPECT", "US"), disk_steps("suspect")),
    );
    let atom = site.start();
    let headers = plain_headers("SUSPECT", "US", "<same-id@x>");
    let first = post(atom.http(), "/as2", &headers, b"ISA*00*original~");
    let same = post(atom.http(), "/as2", &headers, b"ISA*00*original~");
    let other = post(atom.http(), "/as2", &headers, b"ISA*00*something else~");
    assert_eq!(first.status, 200);
    assert_eq!(same.body, first.body);
    assert_eq!(other.body, first.body, "the original MDN, not a new one");
    assert_eq!(site.messages().len(), 1);
    assert_eq!(site.wait_for_executions(1).len(), 1);
    let log = site.log();
    assert_eq!(log.matches("suspicious duplicate").count(), 1, "{log}");
    assert_eq!(
        log.matches("duplicate message: original receipt returned")
            .count(),
        1
    );
}
