//! Issue 11, items 5 and 6, against the real `atom` binary:
//!
//! - "Guest output silently truncated": more output than
//!   `limits.max_output_mb` ends the execution ERROR, and later steps
//!   deliver nothing of it;
//! - "Bundles escape": a disk directory outside data_dir (absolute or
//!   `../..`), a symlinked directory, a symlinked module and a templated
//!   host are refused at deploy while the previous version serves on; a
//!   property value in an http URL path arrives percent-encoded.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Copies stdin to stdout (64 KiB chunks), then writes `marker`.
fn copy_guest(marker: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "{marker}")
  (func (export "_start")
    (local $n i32)
    (block $eof
      (loop $copy
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (i32.store (i32.const 4) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br $copy)))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = marker.len()
    )
}

fn send(atom: &Running, partner: &str, id: &str, body: &[u8]) -> Response {
    post(atom.http(), "/as2", &plain_headers(partner, "US", id), body)
}

/// Polls `atom processes` until it shows `wanted`.
fn wait_for_processes(site: &Site, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = site.atom_ok(&["processes"]);
        if shown.contains(wanted) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "`atom processes` never showed {wanted:?}:\n{shown}\nlog:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn guest_output_silently_truncated_is_an_error_and_nothing_is_written() {
    let site = Site::new("");
    site.deploy_file("lanes-out", "guest.wat", copy_guest("").as_bytes());
    site.deploy(
        "lanes-out",
        &format!(
            "{}limits:\n  max_output_mb: 1\nsteps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/truncated\n      file_name: \"{{execution_id}}.bin\"\n",
            plain_start("BIG", "US")
        ),
    );
    let atom = site.start();
    // 3 MB in, copied out by a guest that never checks its writes.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = send(&atom, "BIG", "<big@x>", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let all = site.wait_for_executions(1);
    let run = &all[0];
    assert_eq!(run["status"], "ERROR", "{run}");
    let error = run["error"].as_str().expect("error");
    assert!(
        error.contains("output limit exceeded")
            && error.contains("limits.max_output_mb = 1 MiB")
            && error.contains("process lanes-out")
            && error.contains("step 1 (wasm guest.wat)"),
        "{error}"
    );
    assert_eq!(run["output_documents"], 0, "{run}");
    assert_eq!(run["documents"].as_array().map_or(0, Vec::len), 0, "{run}");
    // The disk step never ran: no file, not even the directory.
    let out = site.path().join("data/out/truncated");
    let files = std::fs::read_dir(&out).map_or(0, |d| d.count());
    assert_eq!(files, 0, "{}", out.display());
    // Nothing kept with the execution either.
    let id = run["id"].as_str().expect("id");
    assert!(!site.path().join("data/executions").join(id).exists());
}

#[test]
fn bundles_escape_refused_at_deploy_while_the_previous_version_serves_on() {
    let site = Site::new("");
    // One allowed root outside data_dir: writing there works.
    let srv = site.path().join("srv-out");
    let config = std::fs::read_to_string(site.config()).expect("config")
        + &format!("delivery:\n  allowed_directories: [{}]\n", srv.display());
    std::fs::write(site.config(), config).expect("config");
    let start = plain_start("LANE", "US");
    let good = format!(
        "{start}steps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/lane\n      file_name: \"{{execution_id}}.txt\"\n  - disk:\n      directory: {}/lane\n      file_name: \"{{execution_id}}.txt\"\n",
        srv.display()
    );
    site.deploy_file("lane", "guest.wat", copy_guest("-v1").as_bytes());
    site.deploy("lane", &good);
    let outside = site.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret.wat"), "TOP-SECRET-CONTENT").expect("secret");
    let atom = site.start();
    let shown = wait_for_processes(&site, "lane");
    assert!(!shown.contains("error"), "{shown}");
    let version = |shown: &str| -> String {
        shown
            .lines()
            .find(|l| l.starts_with("lane "))
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("version column")
            .to_string()
    };
    let v1 = version(&shown);

    let disk = |directory: &str| {
        format!(
            "{start}steps:\n  - wasm: guest.wat\n  - disk:\n      directory: {directory}\n      file_name: \"{{execution_id}}.txt\"\n"
        )
    };
    let absolute = outside.display().to_string();
    // A data/out/linked directory that is a link to a folder outside.
    std::fs::create_dir_all(site.path().join("data/out")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, site.path().join("data/out/linked")).expect("symlink");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "absolute directory",
            disk(&absolute),
            vec![
                "steps[1].disk.directory".into(),
                format!("resolves to {absolute}, outside the directories disk steps may write to"),
                format!("delivery.allowed_directories [{}]", srv.display()),
            ],
        ),
        (
            "../.. directory",
            disk("../.."),
            vec![
                "steps[1].disk.directory".into(),
                "../.. resolves to".into(),
                "outside the directories disk steps may write to".into(),
            ],
        ),
        (
            "symlinked out directory",
            disk("out/linked/orders"),
            vec![
                "steps[1].disk.directory".into(),
                "out/linked is a symbolic link".into(),
            ],
        ),
        (
            "symlinked module",
            format!("{start}steps:\n  - wasm: secret.wat\n"),
            vec![
                "steps[0].wasm".into(),
                "secret.wat is a symbolic link".into(),
            ],
        ),
        (
            "templated host",
            format!("{start}steps:\n  - http:\n      url: \"http://{{subject}}.internal/in\"\n"),
            vec![
                "steps[0].http.url".into(),
                "the scheme, host and port must be literal".into(),
            ],
        ),
    ];
    let bundle = site.path().join("processes/lane");
    std::os::unix::fs::symlink(outside.join("secret.wat"), bundle.join("secret.wat"))
        .expect("module symlink");
    for (n, (case, yaml, expected)) in cases.iter().enumerate() {
        std::fs::write(bundle.join("process.yaml"), yaml).expect("new version");
        let shown = wait_for_processes(&site, "new version refused");
        for text in expected {
            assert!(
                shown.contains(text.as_str()),
                "{case}: {text:?} in\n{shown}"
            );
        }
        assert!(!shown.contains("TOP-SECRET"), "{case}: {shown}");
        assert_eq!(version(&shown), v1, "{case}: the old version serves on");
        // The old version still runs every document, inside its lanes.
        let id = format!("<lane-{n}@x>");
        assert_eq!(send(&atom, "LANE", &id, b"doc").status, 200, "{case}");
        let all = site.wait_for_executions(n + 1);
        // Newest first: this document's execution.
        assert_eq!(all.len(), n + 1, "{case}");
        let run = &all[0];
        assert_eq!(run["status"], "COMPLETE", "{case}: {run}");
        assert_eq!(run["version"], v1.as_str(), "{case}: {run}");
        let delivered = run["documents"][0]["delivered"]
            .as_array()
            .expect("delivered");
        assert_eq!(delivered.len(), 2, "{case}: {run}");
        assert!(delivered[0]
            .as_str()
            .is_some_and(|p| p.contains("/data/out/lane/")));
        assert!(delivered[1]
            .as_str()
            .is_some_and(|p| p.starts_with(&srv.join("lane").display().to_string())));
        for path in delivered {
            let path = path.as_str().expect("path");
            assert_eq!(std::fs::read(path).expect("written"), b"doc-v1");
        }
        // Put the good version back, so the next case is a fresh refusal.
        std::fs::write(bundle.join("process.yaml"), &good).expect("good again");
        let deadline = Instant::now() + Duration::from_secs(30);
        while site.atom_ok(&["processes"]).contains("new version refused") {
            assert!(Instant::now() < deadline, "{case}: refusal never cleared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Nothing ever reached the outside folder.
    let names: Vec<String> = std::fs::read_dir(&outside)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["secret.wat"]);
}

#[test]
fn bundles_escape_http_path_values_arrive_percent_encoded() {
    let site = Site::new("");
    let (port, received) = http_receiver(0);
    site.deploy(
        "posting",
        &format!(
            "{}steps:\n  - http:\n      url: \"http://127.0.0.1:{port}/in/{{subject}}?from={{as2_from}}\"\n      retries: 0\n",
            plain_start("POSTER", "US")
        ),
    );
    let atom = site.start();
    let mut headers = plain_headers("POSTER", "US", "<admin@x>");
    set_header(&mut headers, "Subject", "../../admin?x=1");
    let r = post(atom.http(), "/as2", &headers, b"ORDER");
    assert_eq!(r.status, 200, "{}", r.text());
    let (head, body) = received
        .recv_timeout(Duration::from_secs(30))
        .expect("delivered");
    let request_line = head.lines().next().unwrap_or_default();
    assert_eq!(
        request_line, "POST /in/..%2F..%2Fadmin%3Fx%3D1?from=POSTER HTTP/1.1",
        "{head}"
    );
    assert_eq!(body, b"ORDER");
    let all = site.wait_for_executions(1);
    assert_eq!(all[0]["status"], "COMPLETE", "{:?}", all[0]);
}
