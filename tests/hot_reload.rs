//! Hot reload of the processes folder while the Atom runs: deploy, refuse
//! an invalid version (the old one keeps serving), swap, undeploy, and no
//! failed request while versions are swapped under load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Installs a bundle the way deployers should: write a dot-folder, rename it into place.
fn deploy_atomically(site: &Site, name: &str, yaml: &str) {
    let processes = site.path().join("processes");
    let tmp = processes.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("tmp bundle");
    std::fs::write(tmp.join("process.yaml"), yaml).expect("write");
    let target = processes.join(name);
    if target.exists() {
        // Replace the file inside by rename, so readers never see half a file.
        std::fs::rename(tmp.join("process.yaml"), target.join("process.yaml"))
            .expect("rename file");
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    } else {
        std::fs::rename(&tmp, &target).expect("rename folder");
    }
}

fn wait_for(site: &Site, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = site.atom_ok(&["listeners"]);
        if check(&list) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; listeners:\n{list}\nlog:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(atom: &Running, id: &str, auth: bool) -> Response {
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    set_header(&mut headers, "Message-ID", id);
    if auth {
        use base64::Engine;
        headers.push((
            "Authorization".into(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("mecas2:pw")
            ),
        ));
    }
    post(atom.http(), "/as2", &headers, &body)
}

fn processed(r: &Response) -> bool {
    r.status == 200 && r.text().contains("; processed\r\n")
}

#[test]
fn deploy_refuse_swap_and_undeploy_while_running() {
    let site = Site::new("");
    site.import_interop_keys();
    let atom = site.start();
    let before = send(&atom, "<hr-0@mecas2>", false);
    assert!(
        before.text().contains("authentication-failed"),
        "no listener yet: {}",
        before.text()
    );

    deploy_atomically(&site, "mendelson", MENDELSON_BUNDLE);
    wait_for(&site, "deployment", |l| {
        l.lines()
            .any(|x| x.starts_with("mendelson") && x.contains("listening"))
    });
    assert!(processed(&send(&atom, "<hr-1@mecas2>", false)));

    // An invalid new version is refused; the previous one keeps serving.
    deploy_atomically(&site, "mendelson", "start:\n  as2:\n    as2_from: { id: mecas2, signing_certificate: keystore:nope }\n    as2_to: { id: pyas2lib }\n");
    wait_for(&site, "the refusal", |l| {
        l.contains("new version refused") && l.contains("nope")
    });
    assert!(
        processed(&send(&atom, "<hr-2@mecas2>", false)),
        "old version serves"
    );

    // A valid new version replaces it: now Basic authentication is required.
    let with_auth = MENDELSON_BUNDLE.replace("      signing_certificate: keystore:mecas2\n", "      signing_certificate: keystore:mecas2\n      basic_auth: { username: mecas2, password: pw }\n");
    deploy_atomically(&site, "mendelson", &with_auth);
    let deadline = Instant::now() + Duration::from_secs(15);
    while send(&atom, "<hr-probe@mecas2>", false).status != 401 {
        assert!(Instant::now() < deadline, "new version never became active");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !site.atom_ok(&["listeners"]).contains("new version refused"),
        "error cleared"
    );
    assert!(processed(&send(&atom, "<hr-3@mecas2>", true)));

    // Removing the folder undeploys the listener.
    std::fs::remove_dir_all(site.path().join("processes/mendelson")).expect("remove");
    wait_for(&site, "undeployment", |l| !l.contains("mendelson"));
    let after = send(&atom, "<hr-4@mecas2>", true);
    assert!(
        after.text().contains("authentication-failed"),
        "undeployed: {}",
        after.text()
    );
}

/// A bundle whose guest answers with its version number, then writes the
/// result to `out/swaps/<message id>.txt`.
fn versioned_bundle(root: &std::path::Path, version: usize) -> std::path::PathBuf {
    let dir = root.join("swaps");
    std::fs::create_dir_all(&dir).expect("bundle dir");
    std::fs::write(
        dir.join("guest.wat"),
        format!(
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "v{version:02}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
        ),
    )
    .expect("guest");
    std::fs::write(
        dir.join("process.yaml"),
        format!(
            "{}steps:\n  - wasm: guest.wat\n  - disk:\n      directory: out/swaps\n      file_name: \"{{message_id}}.txt\"\n",
            plain_start("SWAPPER", "US")
        ),
    )
    .expect("process.yaml");
    dir
}

fn execution_for(site: &Site, file: &str) -> Option<serde_json::Value> {
    site.executions().into_iter().find(|e| {
        e["documents"][0]["delivered"][0]
            .as_str()
            .is_some_and(|p| p.ends_with(file))
    })
}

#[test]
fn twenty_swaps_under_load_fail_no_request_and_each_document_runs_on_one_version() {
    let site = Site::new("");
    let staging = tempfile::tempdir().expect("staging");
    let deploy = |version: usize| -> String {
        let dir = versioned_bundle(staging.path(), version);
        let run = site.atom(&["deploy", dir.to_str().expect("utf-8")]);
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            run.status.success(),
            "deploy {version}: {out}{}\nlog:\n{}",
            String::from_utf8_lossy(&run.stderr),
            site.log()
        );
        // "deployed swaps version <hash> to ..." and it waited until served.
        assert!(out.contains("the running Atom serves swaps"), "{out}");
        out.split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .expect("version in output")
            .to_string()
    };
    let atom = site.start();
    let mut versions = std::collections::HashMap::new();
    versions.insert(deploy(0), 0);
    let http = atom.http();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut senders = Vec::new();
    for s in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        senders.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let headers = plain_headers("SWAPPER", "US", &format!("<swap-{s}-{n}@x>"));
                n += 1;
                // A steady stream, not a flood: the point is the swaps.
                std::thread::sleep(Duration::from_millis(10));
                match try_post(http, "/as2", &headers, b"ST*850~") {
                    Ok(r) if processed(&r) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed: {} {}", r.status, r.text());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut probes = 0;
    for version in 1..=20 {
        let hash = deploy(version);
        versions.insert(hash.clone(), version);
        // The new version serves the next document.
        let probe = format!("<probe-{version}@x>");
        let r = post(
            http,
            "/as2",
            &plain_headers("SWAPPER", "US", &probe),
            b"probe",
        );
        assert!(processed(&r), "{}", r.text());
        probes += 1;
        let file = format!("_probe-{version}@x_.txt");
        let deadline = Instant::now() + Duration::from_secs(30);
        let run = loop {
            match execution_for(&site, &file) {
                Some(e) if e["status"] == "COMPLETE" => break e,
                _ => {
                    assert!(Instant::now() < deadline, "probe {version} never ran");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        assert_eq!(run["version"], hash.as_str(), "probe after swap {version}");
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().expect("sender");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("swaps under load: {ok} processed, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 40, "senders kept sending during the swaps ({ok})");
    assert_eq!(
        site.messages().len(),
        ok + probes,
        "every message stored once"
    );
    // Every document ran exactly once, on the one version its history names.
    let executions = site.wait_for_executions(ok + probes);
    assert_eq!(executions.len(), ok + probes);
    let mut files = std::collections::HashSet::new();
    for e in &executions {
        assert_eq!(e["status"], "COMPLETE", "{e}");
        assert_eq!(e["attempts"], 1);
        let version = versions[e["version"].as_str().expect("version")];
        let path = e["documents"][0]["delivered"][0]
            .as_str()
            .expect("delivered");
        assert!(files.insert(path.to_string()), "{path} written twice");
        let written = std::fs::read_to_string(path).expect("output");
        assert_eq!(written, format!("v{version:02}"), "{path}");
    }
}
