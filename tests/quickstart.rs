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

/// The README walkthrough "Sending a 997 back": the demo partner's own
/// AS2 server (a second Atom, examples/demo-partner-site/) and our Atom
/// running the x12-997 example with the shipped profile
/// partners/demo-partner.yaml; only the ports and absolute paths differ.
#[test]
fn readme_round_trip_sends_a_997_back_to_the_demo_partner() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(guest) = common::guests::build("x12-997", "ack-orders") else {
        return;
    };
    // The partner's site: the shipped bundle, keys by relative paths.
    let partner = Site::new("");
    let config = std::fs::read_to_string(partner.config()).expect("config");
    let config = config.replace(
        "processes_dir: processes",
        &format!(
            "processes_dir: {}",
            repo.join("examples/demo-partner-site/processes").display()
        ),
    );
    std::fs::write(partner.config(), config).expect("config");
    let partner_atom = partner.start();

    // Our site: the x12-997 bundle as built, and the shipped profile.
    let site = Site::new("");
    let config = std::fs::read_to_string(site.config()).expect("config");
    std::fs::write(
        site.config(),
        config.replace("account_id: acme", "account_id: atom-local"),
    )
    .expect("config");
    let profile = std::fs::read_to_string(repo.join("partners/demo-partner.yaml"))
        .expect("the shipped profile");
    let profile = profile
        .replace(
            "http://127.0.0.1:9094/as2",
            &format!("http://{}/as2", partner_atom.http()),
        )
        .replace("../examples/", &format!("{}/examples/", repo.display()));
    std::fs::create_dir_all(site.path().join("partners")).expect("partners");
    std::fs::write(site.path().join("partners/demo-partner.yaml"), profile).expect("profile");
    for (name, file) in [
        ("atom-local", "examples/demo-keys/atom-local.pem"),
        ("demo-partner", "examples/demo-keys/demo-partner.cert.pem"),
    ] {
        site.atom_ok(&[
            "certs",
            "import",
            name,
            repo.join(file).to_str().expect("utf-8"),
        ]);
    }
    guest.deploy(&site, "ack-orders");
    let atom = site.start();

    let url = format!("http://{}/as2/atom-local", atom.http());
    let out = Command::new(env!("CARGO_BIN_EXE_atom"))
        .current_dir(repo)
        .args(["-c", site.config().to_str().expect("utf-8")])
        .args(["send", "examples/demo/order-850.x12", "--url", &url])
        .args(["--from", "DEMO-PARTNER", "--to", "ATOM-LOCAL"])
        .args(["--sign", "examples/demo-keys/demo-partner.pem"])
        .args(["--encrypt", "examples/demo-keys/atom-local.cert.pem"])
        .output()
        .expect("atom send runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let executions = site.wait_for_executions(1);
    assert_eq!(executions[0]["status"], "COMPLETE", "{executions:#?}");
    let outbox: Vec<serde_json::Value> =
        serde_json::from_str(&site.atom_ok(&["outbox", "--json"])).expect("outbox");
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["status"], "acknowledged");
    assert_eq!(outbox[0]["partner"], "demo-partner");
    assert_eq!(outbox[0]["file_name"], "997-order-850.x12");

    // The partner's Atom received it, signed and encrypted, and filed it.
    let received = partner.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["as2_from"], "ATOM-LOCAL");
    assert_eq!(received[0]["disposition"], "processed");
    assert_eq!(received[0]["message_id"], outbox[0]["message_id"]);
    let filed = partner.wait_for_executions(1);
    assert_eq!(filed[0]["status"], "COMPLETE", "{filed:#?}");
    let written = partner.path().join("data/out/from-atom/997-order-850.x12");
    let ack = std::fs::read_to_string(&written).expect("the 997 on the partner's side");
    assert!(ack.contains("AK1*PO*1~") && ack.contains("AK5*A~"), "{ack}");
}
