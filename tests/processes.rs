//! The process engine in the running Atom: WebAssembly guests stopped at
//! their time and memory limits, failing guests with their stderr kept,
//! disk steps that cannot escape their directory, http steps, both worker
//! modes with history, the Low_Latency_Debug quotas, and deploy/undeploy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A guest that copies nothing and loops forever.
const LOOP_GUEST: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

/// A guest that grows its memory 1 MiB at a time and never stops asking.
const GROW_GUEST: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))))"#;

/// A guest that sets `name` to a hostile path and emits two documents
/// through the `atom` module.
const EMITTING_GUEST: &str = r#"(module
  (import "atom" "set_property" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "atom" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "name")
  (data (i32.const 16) "../../../escaped")
  (data (i32.const 48) "first")
  (data (i32.const 64) "second")
  (data (i32.const 80) "plain")
  (func (export "_start")
    (drop (call $set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 16)))
    (drop (call $emit (i32.const 48) (i32.const 5)))
    (drop (call $set (i32.const 0) (i32.const 4) (i32.const 80) (i32.const 5)))
    (drop (call $emit (i32.const 64) (i32.const 6)))))"#;

/// Deploys a bundle: start step for PARTNER -> US plus `process_keys`, and a module.
fn deploy_guest(site: &Site, name: &str, partner: &str, process_keys: &str, wat: &str) {
    site.deploy_file(name, "guest.wat", wat.as_bytes());
    site.deploy(
        name,
        &format!("{}{process_keys}", plain_start(partner, "US")),
    );
}

fn send(atom: &Running, partner: &str, id: &str, body: &[u8]) -> Response {
    post(atom.http(), "/as2", &plain_headers(partner, "US", id), body)
}

fn execution_of<'a>(all: &'a [Value], process: &str) -> &'a Value {
    all.iter()
        .find(|e| e["process"] == process)
        .unwrap_or_else(|| panic!("no execution of {process}: {all:?}"))
}

#[test]
fn guests_are_stopped_at_their_limits_and_failures_keep_their_log() {
    let site = Site::new("");
    let steps = "steps:\n  - wasm: guest.wat\n";
    deploy_guest(
        &site,
        "looping",
        "LOOPER",
        &format!("limits:\n  max_execution_time_seconds: 1\n{steps}"),
        LOOP_GUEST,
    );
    deploy_guest(
        &site,
        "growing",
        "GROWER",
        &format!("limits:\n  max_memory_mb: 4\n{steps}"),
        GROW_GUEST,
    );
    deploy_guest(&site, "failing", "FAILER", steps, FAILING_GUEST);
    // Waiting in a host call (a WASI sleep) does not escape the limit either.
    deploy_guest(
        &site,
        "sleeping",
        "SLEEPER",
        &format!("limits:\n  max_execution_time_seconds: 1\n{steps}"),
        &sleeping_guest(600_000),
    );
    let atom = site.start();
    let started = Instant::now();
    for (partner, id) in [
        ("LOOPER", "<l@x>"),
        ("GROWER", "<g@x>"),
        ("FAILER", "<f@x>"),
        ("SLEEPER", "<s@x>"),
    ] {
        // The receipt does not wait for the process: a positive MDN at once.
        let r = send(&atom, partner, id, b"ISA*00~");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("; processed\r\n"), "{}", r.text());
    }
    let all = site.wait_for_executions(4);
    assert!(started.elapsed() < Duration::from_secs(30));
    let sleeping = execution_of(&all, "sleeping");
    assert_eq!(sleeping["status"], "ERROR");
    assert!(
        sleeping["error"]
            .as_str()
            .is_some_and(|e| e.contains("time limit of 1s exceeded")),
        "{sleeping}"
    );

    let looping = execution_of(&all, "looping");
    assert_eq!(looping["status"], "ERROR");
    let error = looping["error"].as_str().expect("error");
    assert!(
        error.contains("step 1 (wasm guest.wat), document 1")
            && error.contains("time limit of 1s exceeded"),
        "{error}"
    );

    let growing = execution_of(&all, "growing");
    assert_eq!(growing["status"], "ERROR");
    let error = growing["error"].as_str().expect("error");
    assert!(
        error.contains("memory limit of 4194304 bytes exceeded"),
        "{error}"
    );

    let failing = execution_of(&all, "failing");
    assert_eq!(failing["status"], "ERROR");
    assert!(
        failing["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with code 3")),
        "{failing}"
    );
    assert!(
        failing["log"]
            .as_str()
            .is_some_and(|l| l.contains("GUEST bad input: no ISA segment")),
        "{failing}"
    );
    // The runtime and its workers are fine afterwards.
    assert_eq!(send(&atom, "FAILER", "<f2@x>", b"x").status, 200);
    site.wait_for_executions(5);
    let shown = site.atom_ok(&["executions", "--status", "ERROR"]);
    assert_eq!(shown.matches("ERROR").count(), 5, "{shown}");
}

#[test]
fn disk_steps_never_write_outside_their_directory() {
    let site = Site::new("");
    deploy_guest(
        &site,
        "emitting",
        "EMITTER",
        "steps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/emitted\n      file_name: \"{name}-{document_index}.txt\"\n",
        EMITTING_GUEST,
    );
    // A symbolic link inside the target directory that points outside it.
    let outside = site.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let linked = site.path().join("data/out/linked");
    std::fs::create_dir_all(&linked).expect("mkdir");
    std::os::unix::fs::symlink(&outside, linked.join("escape")).expect("symlink");
    deploy_guest(
        &site,
        "linking",
        "LINKER",
        "steps:\n  - disk:\n      directory: out/linked\n      file_name: \"escape/{as2_from}.txt\"\n",
        "",
    );
    // A literal `..` in the template is refused at deploy.
    deploy_guest(
        &site,
        "climbing",
        "CLIMBER",
        "steps:\n  - disk:\n      directory: out\n      file_name: \"../{as2_from}\"\n",
        "",
    );
    let atom = site.start();
    assert_eq!(send(&atom, "EMITTER", "<e@x>", b"in").status, 200);
    assert_eq!(send(&atom, "LINKER", "<k@x>", b"in").status, 200);
    let all = site.wait_for_executions(2);

    let emitting = execution_of(&all, "emitting");
    assert_eq!(emitting["status"], "COMPLETE", "{emitting}");
    let dir = site
        .path()
        .join("data/out/emitted")
        .canonicalize()
        .expect("dir");
    let documents = emitting["documents"].as_array().expect("documents");
    assert_eq!(documents.len(), 2);
    let expected = [
        ("first", "../../../escaped", "___.._.._escaped-1.txt"),
        ("second", "plain", "plain-2.txt"),
    ];
    for (document, (bytes, property, file)) in documents.iter().zip(expected) {
        assert_eq!(document["properties"]["name"], property);
        let path = std::path::PathBuf::from(document["delivered"][0].as_str().expect("path"));
        assert_eq!(path, dir.join(file));
        assert_eq!(std::fs::read(&path).expect("written"), bytes.as_bytes());
    }
    assert!(!site.path().join("escaped-1.txt").exists());

    let linking = execution_of(&all, "linking");
    assert_eq!(linking["status"], "ERROR");
    assert!(
        linking["error"]
            .as_str()
            .is_some_and(|e| e.contains("resolves outside the target directory")),
        "{linking}"
    );
    assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0);

    let processes = site.atom_ok(&["processes"]);
    assert!(
        processes.contains("climbing")
            && processes.contains("steps[0].disk.file_name: file_name must not contain '..'"),
        "{processes}"
    );
}

#[test]
fn both_worker_modes_run_the_same_bundle_and_record_history() {
    let site = Site::new("");
    let steps = "steps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/{mode}\n      file_name: \"{as2_from}-{document_index}.x12\"\n";
    let pretty = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("processes/demo-partner/x12-pretty.wat"),
    )
    .expect("sample transform");
    for mode in ["general", "low_latency_debug"] {
        deploy_guest(
            &site,
            mode,
            &format!("P-{mode}"),
            &format!("mode: {mode}\n{}", steps.replace("{mode}", mode)),
            &pretty,
        );
    }
    let atom = site.start();
    for mode in ["general", "low_latency_debug"] {
        for n in 0..5 {
            let r = send(
                &atom,
                &format!("P-{mode}"),
                &format!("<{mode}-{n}@x>"),
                b"ST*850~SE*1~",
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let all = site.wait_for_executions(10);
    for mode in ["general", "low_latency_debug"] {
        let runs: Vec<&Value> = all.iter().filter(|e| e["process"] == mode).collect();
        assert_eq!(runs.len(), 5);
        for run in runs {
            assert_eq!(run["status"], "COMPLETE", "{run}");
            assert_eq!(run["mode"], mode);
            assert_eq!(run["attempts"], 1);
            let id = run["id"].as_str().expect("id");
            assert!(
                id.starts_with("execution-") && id.len() == "execution-".len() + 36 + 11,
                "{id}"
            );
            assert!(run["engine_us"].as_i64().is_some_and(|us| us > 0));
            assert_eq!(run["output_bytes"], 14);
            let path = run["documents"][0]["delivered"][0]
                .as_str()
                .expect("delivered");
            assert_eq!(std::fs::read(path).expect("file"), b"ST*850~\nSE*1~\n");
        }
    }
    // Debug-level detail is logged for Low_Latency_Debug executions only.
    let lld = execution_of(&all, "low_latency_debug");
    assert!(
        lld["log"].as_str().is_some_and(|l| l.contains("DEBUG")),
        "{lld}"
    );
    let general = execution_of(&all, "general");
    assert!(
        !general["log"].as_str().unwrap_or("DEBUG").contains("DEBUG"),
        "{general}"
    );
    let token = std::fs::read_to_string(site.path().join("data/admin.token")).expect("token");
    let metrics = get(
        atom.admin,
        "/metrics",
        &[("Authorization".into(), format!("Bearer {}", token.trim()))],
    )
    .text();
    for mode in ["general", "low_latency_debug"] {
        let line = format!(
            "atom_executions_total{{mode=\"{mode}\",process=\"{mode}\",status=\"COMPLETE\"}} 5"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let listing = site.atom_ok(&["executions", "--process", "general"]);
    assert_eq!(listing.matches("COMPLETE").count(), 5, "{listing}");
    let processes = site.atom_ok(&["processes"]);
    assert!(
        processes.contains("low_latency_debug") && processes.contains("general"),
        "{processes}"
    );
}

#[test]
fn low_latency_quotas_refuse_excess_work_clearly_and_lose_nothing() {
    let site = Site::new("");
    let config = std::fs::read_to_string(site.config()).expect("config")
        + "quotas:\n  low_latency_debug:\n    max_running_executions: 1\n    max_queued_executions: 1\n    queued_execution_timeout_seconds: 1\n";
    std::fs::write(site.config(), config).expect("config");
    deploy_guest(
        &site,
        "slow",
        "SLOW",
        "mode: low_latency_debug\nsteps:\n  - wasm: guest.wat\n",
        &sleeping_guest(2500),
    );
    let atom = site.start();
    let addr = atom.http();
    let running = std::thread::spawn(move || {
        post(addr, "/as2", &plain_headers("SLOW", "US", "<1@x>"), b"one")
    });
    std::thread::sleep(Duration::from_millis(500));
    let queued = std::thread::spawn(move || {
        post(addr, "/as2", &plain_headers("SLOW", "US", "<2@x>"), b"two")
    });
    std::thread::sleep(Duration::from_millis(300));
    // One running, one queued: the third is refused at once.
    let refused = send(&atom, "SLOW", "<3@x>", b"three");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("Atom Worker quota reached: 1 executions running and 1 queued"),
        "{}",
        refused.text()
    );
    assert!(refused.header("retry-after").is_some());
    // The admitted one shows as running meanwhile.
    let running_now = site.atom_ok(&["executions", "--status", "INPROCESS"]);
    assert!(running_now.contains("slow"), "{running_now}");
    // The queued one waits for its timeout, then is refused too.
    let timed_out = queued.join().expect("queued sender");
    assert_eq!(timed_out.status, 503, "{}", timed_out.text());
    assert!(
        timed_out.text().contains("queued execution timeout of 1 s"),
        "{}",
        timed_out.text()
    );
    let first = running.join().expect("running sender");
    assert_eq!(first.status, 200, "{}", first.text());
    // Refused requests stored nothing; their retries are accepted.
    assert_eq!(site.messages().len(), 1);
    site.wait_for_executions(1);
    for id in ["<2@x>", "<3@x>"] {
        let r = send(&atom, "SLOW", id, b"retry");
        assert_eq!(r.status, 200, "{}", r.text());
        site.wait_for_executions(site.executions().len());
    }
    let all = site.wait_for_executions(3);
    assert!(all.iter().all(|e| e["status"] == "COMPLETE"), "{all:?}");
    assert_eq!(site.messages().len(), 3);
}

#[test]
fn http_steps_post_with_property_headers_and_retry() {
    let site = Site::new("");
    let (port, received) = http_receiver(1);
    site.deploy(
        "posting",
        &format!(
            "{}steps:\n  - http:\n      url: http://127.0.0.1:{port}/orders\n      headers:\n        X-Partner: \"{{as2_from}}\"\n      retries: 2\n      retry_backoff_ms: 100\n",
            plain_start("POSTER", "US")
        ),
    );
    let atom = site.start();
    assert_eq!(send(&atom, "POSTER", "<p@x>", b"ORDER").status, 200);
    let (head, body) = received
        .recv_timeout(Duration::from_secs(30))
        .expect("delivered");
    assert!(head.starts_with("POST /orders"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-partner: poster"),
        "{head}"
    );
    assert_eq!(body, b"ORDER");
    let all = site.wait_for_executions(1);
    // Delivered on the second attempt: complete, with a warning.
    assert_eq!(all[0]["status"], "COMPLETE_WARN", "{:?}", all[0]);
    assert!(all[0]["log"]
        .as_str()
        .is_some_and(|l| l.contains("delivered after 2 attempts")));
}

#[test]
fn deploy_validates_then_swaps_and_undeploy_removes() {
    let site = Site::new("");
    let atom = site.start();
    let staging = tempfile::tempdir().expect("tmp");
    let bundle = staging.path().join("orders");
    std::fs::create_dir_all(&bundle).expect("mkdir");
    std::fs::write(
        bundle.join("guest.wat"),
        "(module (func (export \"_start\")) (memory (export \"memory\") 1))",
    )
    .expect("wat");
    std::fs::write(
        bundle.join("process.yaml"),
        format!(
            "{}steps:\n  - wasm: guest.wat\n",
            plain_start("ORDERS", "US")
        ),
    )
    .expect("yaml");
    let out = site.atom_ok(&["deploy", bundle.to_str().expect("utf-8")]);
    assert!(
        out.contains("the running Atom serves orders version"),
        "{out}"
    );
    assert!(site.path().join("processes/orders/guest.wat").is_file());
    assert_eq!(send(&atom, "ORDERS", "<o@x>", b"x").status, 200);
    assert_eq!(site.wait_for_executions(1)[0]["status"], "COMPLETE");

    // A module that does not compile is refused before anything is copied.
    std::fs::write(
        bundle.join("guest.wat"),
        "(module (func $broken (i32.add)))",
    )
    .expect("wat");
    let refused = site.atom(&["deploy", bundle.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("steps[0].wasm: guest.wat: does not compile"),
        "{stderr}"
    );
    let deployed =
        std::fs::read_to_string(site.path().join("processes/orders/guest.wat")).expect("kept");
    assert!(
        deployed.contains("_start"),
        "the old version stays: {deployed}"
    );
    // A module importing what Atom does not provide is refused too.
    std::fs::write(
        bundle.join("guest.wat"),
        "(module (import \"env\" \"launch\" (func)) (func (export \"_start\")))",
    )
    .expect("wat");
    let refused = site.atom(&["deploy", bundle.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("imports something Atom does not provide"),
        "{stderr}"
    );

    let out = site.atom_ok(&["undeploy", "orders"]);
    assert!(out.contains("the running Atom undeployed orders"), "{out}");
    assert!(!site.path().join("processes/orders").exists());
    // No listener for the partner any more: a negative MDN.
    let gone = send(&atom, "ORDERS", "<o2@x>", b"x");
    assert!(
        gone.text().contains("authentication-failed"),
        "{}",
        gone.text()
    );
}
