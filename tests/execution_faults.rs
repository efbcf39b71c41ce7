//! Executions under faults, against the real `atom` binary on loopback:
//! a panicking step does not poison its worker or leak its listener's
//! slot, a transient disk failure is retried with back-off until it
//! succeeds (or gives up), and `atom executions rerun` runs a finished
//! execution again on the deployed version.
//!
//! Faults are injected with the runtime's test-only switches
//! (`ATOM_TEST_PANIC_SUBJECT`, `ATOM_TEST_TRANSIENT_FAILURES`), set on the
//! `atom run` child only.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A guest that copies nothing and exits 0.
const OK_GUEST: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn send(atom: &Running, partner: &str, id: &str, subject: &str, body: &[u8]) -> Response {
    let mut headers = plain_headers(partner, "US", id);
    set_header(&mut headers, "Subject", subject);
    post(atom.http(), "/as2", &headers, body)
}

/// Polls one execution until `done` holds for it.
fn wait_for(site: &Site, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown: Value =
            serde_json::from_str(&site.atom_ok(&["executions", "show", id, "--json"]))
                .expect("execution JSON");
        if done(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never got {what}: {shown}\nlog:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_final(e: &Value) -> bool {
    matches!(
        e["status"].as_str(),
        Some("COMPLETE" | "COMPLETE_WARN" | "ERROR" | "ABORTED")
    )
}

fn text<'a>(e: &'a Value, field: &str) -> &'a str {
    e[field].as_str().unwrap_or_default()
}

/// A panic in a step used to kill the worker thread and leak the
/// listener's slot: with `max_concurrent_executions: 1`, one panic was
/// enough for the process never to run again (and with one
/// Low_Latency_Debug worker, for no such process to run again).
#[test]
fn worker_panic_does_not_leak_the_listener_slot() {
    let site = Site::new("");
    let config = std::fs::read_to_string(site.config()).expect("config")
        + "quotas:\n  low_latency_debug:\n    max_running_executions: 1\n";
    std::fs::write(site.config(), config).expect("config");
    for (name, partner, mode) in [
        ("fragile", "FRAGILE", "general"),
        ("fragile-lld", "FRAGILE-LLD", "low_latency_debug"),
    ] {
        site.deploy(
            name,
            &format!(
                "{}mode: {mode}\nlimits:\n  max_concurrent_executions: 1\nsteps:\n  - disk:\n      directory: out/{name}\n      file_name: \"{{subject}}-{{execution_id}}.txt\"\n",
                plain_start(partner, "US")
            ),
        );
    }
    let atom = site.start_with_env(&[("ATOM_TEST_PANIC_SUBJECT", "boom")]);
    for n in 0..3 {
        let r = send(&atom, "FRAGILE", &format!("<boom-{n}@x>"), "boom", b"ISA");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for n in 0..3 {
        let r = send(&atom, "FRAGILE", &format!("<fine-{n}@x>"), "fine", b"ISA");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all = site.wait_for_executions(6);
    let (panicked, fine): (Vec<&Value>, Vec<&Value>) = all
        .iter()
        .partition(|e| text(e, "log").contains("injected test panic"));
    assert_eq!(panicked.len(), 3, "{all:?}");
    for e in &panicked {
        assert_eq!(e["status"], "ERROR", "{e}");
        assert_eq!(e["attempts"], 1, "{e}");
        let error = text(e, "error");
        assert!(
            error.contains("the execution panicked: injected test panic in step 1")
                && error.contains("ATOM_TEST_PANIC_SUBJECT=boom")
                && error.contains("the worker carried on"),
            "{error}"
        );
        assert!(
            text(e, "log").contains("ERROR the execution panicked"),
            "{e}"
        );
    }
    assert_eq!(fine.len(), 3, "{all:?}");
    for e in &fine {
        assert_eq!(e["status"], "COMPLETE", "{e}");
    }
    let written = std::fs::read_dir(site.path().join("data/out/fragile"))
        .expect("out dir")
        .count();
    assert_eq!(written, 3, "only the documents that did not panic");
    // The runtime still serves, and the process still runs.
    let r = send(&atom, "FRAGILE", "<later@x>", "later", b"ISA");
    assert_eq!(r.status, 200, "{}", r.text());
    let all = site.wait_for_executions(7);
    assert_eq!(
        all.iter().filter(|e| e["status"] == "COMPLETE").count(),
        4,
        "{all:?}"
    );
    assert!(site.log().contains("execution panicked; recorded as ERROR"));

    // Low_Latency_Debug: the admission and the only worker are freed too.
    for (n, subject) in ["boom", "boom", "fine", "fine"].iter().enumerate() {
        let r = send(
            &atom,
            "FRAGILE-LLD",
            &format!("<lld-{n}@x>"),
            subject,
            b"ISA",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all = site.wait_for_executions(11);
    let lld: Vec<&Value> = all
        .iter()
        .filter(|e| e["process"] == "fragile-lld")
        .collect();
    assert_eq!(lld.len(), 4, "{all:?}");
    for e in &lld {
        assert_eq!(e["mode"], "low_latency_debug", "{e}");
        if text(e, "log").contains("injected test panic") {
            assert_eq!(e["status"], "ERROR", "{e}");
            assert!(text(e, "error").contains("the execution panicked"), "{e}");
        } else {
            assert_eq!(e["status"], "COMPLETE", "{e}");
        }
    }
    assert_eq!(
        lld.iter().filter(|e| e["status"] == "COMPLETE").count(),
        2,
        "{lld:?}"
    );
}

/// An acknowledged message whose disk step hit a full disk used to end
/// ERROR at once. Now it is queued again with a doubling delay until the
/// write succeeds, or gives up after its retries.
#[test]
fn transient_disk_failures_are_retried_with_back_off() {
    let site = Site::new("");
    let disk = |dir: &str| {
        format!("steps:\n  - disk:\n      directory: out/{dir}\n      file_name: \"{{message_id}}.txt\"\n")
    };
    site.deploy(
        "giving-up",
        &format!(
            "{}limits:\n  retries: 1\n  retry_delay_seconds: 1\n{}",
            plain_start("GIVER", "US"),
            disk("giving-up")
        ),
    );
    site.deploy(
        "recovering",
        &format!(
            "{}limits:\n  retries: 3\n  retry_delay_seconds: 1\n{}",
            plain_start("RECOVERER", "US"),
            disk("recovering")
        ),
    );
    // The first four disk writes of this Atom fail with ENOSPC.
    let atom = site.start_with_env(&[("ATOM_TEST_TRANSIENT_FAILURES", "4")]);

    // Two attempts (retries: 1), both on a "full disk": ERROR, after both.
    assert_eq!(send(&atom, "GIVER", "<g@x>", "s", b"G").status, 200);
    let given_up = site.wait_for_executions(1).remove(0);
    assert_eq!(given_up["status"], "ERROR", "{given_up}");
    assert_eq!(given_up["attempts"], 2, "{given_up}");
    let error = text(&given_up, "error");
    assert!(
        error.contains("No space left on device")
            && error.contains("transient failure; gave up after 2 attempts"),
        "{error}"
    );
    assert!(
        text(&given_up, "log").contains("WARN attempt 2 of 2 in 1 s: step 1 (disk"),
        "{given_up}"
    );

    // Two more injected failures, then the disk "has room": COMPLETE on
    // the third attempt, after 1 s and 2 s.
    let started = Instant::now();
    assert_eq!(send(&atom, "RECOVERER", "<r@x>", "s", b"R").status, 200);
    let id = site
        .executions()
        .into_iter()
        .find(|e| e["process"] == "recovering")
        .and_then(|e| e["id"].as_str().map(str::to_string))
        .expect("queued execution");
    // Between attempts it is queued (STARTED) with the last failure.
    let waiting = wait_for(&site, &id, "a retry queued", |e| {
        e["status"] == "STARTED" && e["attempts"].as_u64() >= Some(1)
    });
    assert!(
        text(&waiting, "error").contains("No space left on device"),
        "{waiting}"
    );
    let done = wait_for(&site, &id, "a final state", is_final);
    assert_eq!(done["status"], "COMPLETE", "{done}");
    assert_eq!(done["attempts"], 3, "{done}");
    assert!(done["error"].is_null(), "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited 1 s + 2 s"
    );
    let log = text(&done, "log");
    assert!(log.contains("WARN attempt 2 of 4 in 1 s: "), "{log}");
    assert!(log.contains("WARN attempt 3 of 4 in 2 s: "), "{log}");
    assert!(!log.contains("attempt 4 of 4"), "{log}");
    let path = done["documents"][0]["delivered"][0]
        .as_str()
        .expect("delivered to a file");
    assert_eq!(std::fs::read(path).expect("written"), b"R");
}

/// Deploys `guest` as process `name` through `atom deploy`, which waits
/// until the running Atom serves it.
fn deploy_through_cli(
    site: &Site,
    staging: &std::path::Path,
    name: &str,
    partner: &str,
    guest: &str,
) {
    let bundle = staging.join(name);
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("guest.wat"), guest).expect("guest");
    std::fs::write(
        bundle.join("process.yaml"),
        format!(
            "{}steps:\n  - wasm: guest.wat\n",
            plain_start(partner, "US")
        ),
    )
    .expect("process.yaml");
    let out = site.atom_ok(&["deploy", bundle.to_str().expect("utf-8")]);
    assert!(out.contains("the running Atom serves"), "{out}");
}

fn refused(site: &Site, args: &[&str]) -> String {
    let out = site.atom(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rerun_runs_a_finished_execution_again_on_the_deployed_version() {
    let site = Site::new("");
    let staging = tempfile::tempdir().expect("staging");
    let atom = site.start();
    deploy_through_cli(&site, staging.path(), "fixable", "FIXABLE", FAILING_GUEST);
    deploy_through_cli(&site, staging.path(), "slow", "SLOW", &sleeping_guest(3000));

    assert_eq!(send(&atom, "FIXABLE", "<f@x>", "s", b"ISA").status, 200);
    let failed = site.wait_for_executions(1).remove(0);
    assert_eq!(failed["status"], "ERROR", "{failed}");
    assert_eq!(failed["attempts"], 1);
    let id = text(&failed, "id").to_string();
    let old_version = text(&failed, "version").to_string();

    // Unknown and unfinished executions are refused.
    let stderr = refused(
        &site,
        &[
            "executions",
            "rerun",
            "execution-00000000-0000-0000-0000-000000000000-2026.01.01",
        ],
    );
    assert!(
        stderr.contains("404") && stderr.contains("no execution"),
        "{stderr}"
    );
    assert_eq!(send(&atom, "SLOW", "<s@x>", "s", b"ISA").status, 200);
    let running = site
        .executions()
        .into_iter()
        .find(|e| e["process"] == "slow")
        .expect("slow execution");
    assert!(!is_final(&running), "{running}");
    let stderr = refused(&site, &["executions", "rerun", text(&running, "id")]);
    assert!(
        stderr.contains("409") && stderr.contains("not finished"),
        "{stderr}"
    );

    // Fixed and redeployed: the rerun runs the new version and completes.
    deploy_through_cli(&site, staging.path(), "fixable", "FIXABLE", OK_GUEST);
    let out = site.atom_ok(&["executions", "rerun", &id]);
    assert!(
        out.contains(&format!("execution {id} queued again")),
        "{out}"
    );
    assert!(out.contains("(attempt 2)"), "{out}");
    let rerun = wait_for(&site, &id, "its second attempt's end", |e| {
        e["attempts"] == 2 && is_final(e)
    });
    assert_eq!(rerun["status"], "COMPLETE", "{rerun}");
    assert!(rerun["error"].is_null(), "{rerun}");
    assert_ne!(
        text(&rerun, "version"),
        old_version,
        "runs the deployed version"
    );
    let log = text(&rerun, "log");
    assert!(log.contains("(attempt 2, general mode)"), "{log}");
    assert!(!log.contains("bad input"), "a fresh log: {log}");

    // A purged document cannot be rerun; nor can an undeployed process's execution.
    site.remove_document(text(&rerun, "payload_path"));
    let stderr = refused(&site, &["executions", "rerun", &id]);
    assert!(
        stderr.contains("410") && stderr.contains("is gone"),
        "{stderr}"
    );
    site.atom_ok(&["undeploy", "fixable"]);
    let stderr = refused(&site, &["executions", "rerun", &id]);
    assert!(
        stderr.contains("409") && stderr.contains("not deployed"),
        "{stderr}"
    );
    // The refusals changed nothing.
    let after = wait_for(&site, &id, "its state kept", is_final);
    assert_eq!(
        (after["status"].clone(), after["attempts"].clone()),
        ("COMPLETE".into(), 2.into())
    );
}

/// An execution waiting for its retry is STARTED in the store: a crash
/// meanwhile loses nothing, recovery at the next start runs it.
#[test]
fn an_execution_waiting_for_a_retry_survives_a_crash() {
    let site = Site::new("");
    site.deploy(
        "patient",
        &format!(
            "{}limits:\n  retries: 3\n  retry_delay_seconds: 300\nsteps:\n  - disk:\n      directory: out/patient\n      file_name: \"{{execution_id}}.txt\"\n",
            plain_start("PATIENT", "US")
        ),
    );
    let atom = site.start_with_env(&[("ATOM_TEST_TRANSIENT_FAILURES", "1")]);
    assert_eq!(send(&atom, "PATIENT", "<p@x>", "s", b"P").status, 200);
    let id = site
        .executions()
        .first()
        .and_then(|e| e["id"].as_str().map(str::to_string))
        .expect("queued execution");
    let waiting = wait_for(&site, &id, "a retry queued", |e| {
        e["status"] == "STARTED" && e["attempts"] == 1
    });
    assert!(
        text(&waiting, "log").contains("attempt 2 of 4 in 300 s: "),
        "{waiting}"
    );
    // SIGKILL while the retry waits; the next start recovers it at once.
    drop(atom);
    let _atom = site.start();
    let done = wait_for(&site, &id, "a final state", is_final);
    assert_eq!(done["status"], "COMPLETE", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let log = text(&done, "log");
    assert!(log.contains("(attempt 2, general mode)"), "{log}");
}

/// An execution cut off by a crash right after its first delivery used to
/// come back with attempts = 1, as if it had never run: its INPROCESS
/// state was written only after 100 ms. Now the attempt is durable before
/// anything leaves, so the recovered run is attempt 2.
#[test]
fn recovered_executions_show_attempts_1_regression() {
    let site = Site::new("");
    site.deploy(
        "interrupted",
        &format!(
            "{}steps:\n  - disk:\n      directory: out/interrupted\n      file_name: \"{{execution_id}}.txt\"\n  - wasm: sleep.wat\n",
            plain_start("INTERRUPTED", "US")
        ),
    );
    site.deploy_file("interrupted", "sleep.wat", sleeping_guest(2000).as_bytes());
    let atom = site.start();
    assert_eq!(send(&atom, "INTERRUPTED", "<i@x>", "s", b"I").status, 200);
    // SIGKILL as soon as the first step has delivered (nothing slower, such
    // as asking the CLI for the execution's ID, in between).
    let out = site.path().join("data/out/interrupted");
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let found = std::fs::read_dir(&out).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "txt"))
        });
        if let Some(path) = found {
            break path;
        }
        assert!(Instant::now() < deadline, "never delivered: {}", site.log());
        std::thread::sleep(Duration::from_millis(1));
    };
    drop(atom);
    let id = delivered
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("execution ID")
        .to_string();
    let _atom = site.start();
    let done = wait_for(&site, &id, "a final state", is_final);
    assert_eq!(done["status"], "COMPLETE", "{done}");
    assert_eq!(done["attempts"], 2, "the interrupted run counts: {done}");
    assert!(
        text(&done, "log").contains("(attempt 2, general mode)"),
        "{done}"
    );
    assert_eq!(std::fs::read(&delivered).expect("delivered"), b"I");
}
