//! Keeps the README walkthrough true: the shipped sample bundle and demo
//! keys, and the exact `atom send` command the README gives (only the port
//! differs: tests run on free ports).

mod common;

use std::process::Command;

use common::*;

#[test]
fn readme_walkthrough_with_the_shipped_sample_bundle() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = Site::new("");
    // The shipped bundle, with its relative key paths, from the repository.
    let config = std::fs::read_to_string(site.config()).expect("config");
    let config = config.replace(
        "processes_dir: processes",
        &format!("processes_dir: {}", repo.join("processes").display()),
    );
    let config = config.replace("account_id: acme", "account_id: atom-local");
    std::fs::write(site.config(), config).expect("config");
    let atom = site.start();
    let url = format!("http://{}/as2/atom-local", atom.http());
    let out = Command::new(env!("CARGO_BIN_EXE_atom"))
        .current_dir(repo)
        .args(["-c", site.config().to_str().expect("utf-8")])
        .args([
            "send",
            "examples/demo/order-850.x12",
            "--url",
            &url,
            "--from",
            "DEMO-PARTNER",
            "--to",
            "ATOM-LOCAL",
        ])
        .args([
            "--sign",
            "examples/demo-keys/demo-partner.pem",
            "--encrypt",
            "examples/demo-keys/atom-local.cert.pem",
        ])
        .output()
        .expect("atom send runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("signed receipt verified") && stdout.contains("MIC verified"),
        "{stdout}"
    );
    let messages = site.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["listener"], "demo-partner");
    assert_eq!(messages[0]["disposition"], "processed");
    let stored = site.document(&messages[0], "payload");
    assert_eq!(
        stored,
        std::fs::read(repo.join("examples/demo/order-850.x12")).expect("sample")
    );
    // The sample process ran: the WAT transform split the segments onto
    // lines, and the disk step wrote the result under data/out/demo-partner/.
    let executions = site.wait_for_executions(1);
    assert_eq!(executions[0]["status"], "COMPLETE", "{executions:?}");
    assert_eq!(executions[0]["process"], "demo-partner");
    let document = &executions[0]["documents"][0];
    let delivered = document["delivered"][0].as_str().expect("delivered path");
    assert!(
        delivered.contains("/data/out/demo-partner/DEMO-PARTNER/"),
        "{delivered}"
    );
    let written = std::fs::read_to_string(delivered).expect("output file");
    let original =
        std::fs::read_to_string(repo.join("examples/demo/order-850.x12")).expect("sample");
    assert_eq!(written, original.replace('~', "~\n"));
    assert!(executions[0]["log"]
        .as_str()
        .is_some_and(|l| l.contains("x12-pretty: segments split")));
    let id = executions[0]["id"].as_str().expect("id");
    let shown = site.atom_ok(&["executions", "show", id]);
    assert!(
        shown.contains("COMPLETE") && shown.contains(delivered),
        "{shown}"
    );
    // The kept document, as `show` says how to fetch it.
    assert!(
        shown.contains(&format!("atom executions download {id} 1")),
        "{shown}"
    );
    let kept = site.atom(&["executions", "download", id, "1"]);
    assert!(kept.status.success());
    assert_eq!(
        kept.stdout,
        std::fs::read(delivered).expect("delivered file")
    );
    let processes = site.atom_ok(&["processes"]);
    assert!(
        processes.contains("demo-partner") && processes.contains("wasm x12-pretty.wat"),
        "{processes}"
    );
    let listeners = site.atom_ok(&["listeners"]);
    assert!(
        listeners.contains("demo-partner") && listeners.contains("listening"),
        "{listeners}"
    );
}
