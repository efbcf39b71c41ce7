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

#[test]
fn twenty_swaps_under_load_fail_no_request() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", MENDELSON_BUNDLE);
    let atom = site.start();
    let http = atom.http();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut senders = Vec::new();
    for s in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        senders.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
                request_signed_mdn(&mut headers);
                set_header(
                    &mut headers,
                    "Message-ID",
                    &format!("<swap-{s}-{n}@mecas2>"),
                );
                n += 1;
                match try_post(http, "/as2", &headers, &body) {
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
    for swap in 0..20 {
        // Two valid versions that differ (the duplicate window), alternately.
        let window = if swap % 2 == 0 { 1000 } else { 2000 };
        let yaml = MENDELSON_BUNDLE.replace(
            "      signing_certificate: keystore:mecas2\n",
            &format!(
                "      signing_certificate: keystore:mecas2\n      duplicate_window: {window}\n"
            ),
        );
        deploy_atomically(&site, "mendelson", &yaml);
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().expect("sender");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("swaps under load: {ok} processed, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 40, "senders kept sending during the swaps ({ok})");
    assert!(
        site.log().matches("bundle deployed").count() >= 10,
        "the swaps were seen by the watcher"
    );
    assert_eq!(
        site.messages().len(),
        ok,
        "every processed message stored once"
    );
}
