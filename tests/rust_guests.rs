//! The example Rust guests, built by their own build.sh with the system's
//! rustc and run end to end with their example bundles: AS2 POST, guest,
//! disk step, execution history.
//!
//! - `examples/rust-guest` (x12-to-csv): stdin to stdout, exit code on bad input;
//! - `examples/route-by-sender`: the `atom` host module (set_property, emit).
//!
//! They need a rustc with the wasm32-wasi standard library (Debian:
//! `apt-get install rustc libstd-rust-dev-wasm32`). Without one the tests
//! are skipped with a note, except under CI (`CI` set), where they fail.

mod common;

use std::path::{Path, PathBuf};

use common::guests::{build, repo};
use common::*;

/// The files directly in a folder, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn x12_to_csv_turns_the_sample_order_into_csv_and_fails_on_other_input() {
    let Some(bundle) = build("rust-guest", "x12-to-csv") else {
        return;
    };
    assert!(
        bundle.path.join("x12-to-csv.wasm").is_file() && bundle.path.join("process.yaml").is_file(),
        "build.sh makes a deployable bundle folder"
    );
    let site = Site::new("");
    bundle.deploy(&site, "x12-to-csv");
    let atom = site.start();

    let order = std::fs::read(repo().join("examples/demo/order-850.x12")).expect("sample order");
    let headers = plain_headers("DEMO-PARTNER", "ATOM-LOCAL", "<csv-1@demo-partner>");
    let response = post(atom.http(), "/as2", &headers, &order);
    assert_eq!(response.status, 200, "{}", response.text());
    let executions = site.wait_for_executions(1);
    let execution = &executions[0];
    assert_eq!(execution["process"], "x12-to-csv");
    assert_eq!(execution["status"], "COMPLETE", "{execution:#}");
    assert_eq!(execution["output_documents"], 1, "{execution:#}");
    let log = execution["log"].as_str().expect("log");
    assert!(log.contains("GUEST x12-to-csv: 1 line(s)"), "{log}");

    let csv_dir = site.path().join("data/out/csv/DEMO-PARTNER");
    let written = files_in(&csv_dir);
    assert_eq!(written.len(), 1, "{written:?}");
    let delivered = execution["documents"][0]["delivered"][0]
        .as_str()
        .expect("delivered path");
    assert_eq!(canonical(Path::new(delivered)), canonical(&written[0]));
    let id = execution["id"].as_str().expect("execution id");
    let file_name = written[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    // {date}-{execution_id}.csv, the date as YYYYMMDD.
    let date = file_name
        .strip_suffix(&format!("-{id}.csv"))
        .expect("file name ends with the execution ID");
    assert!(
        date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()),
        "{file_name}"
    );
    assert_eq!(
        std::fs::read_to_string(&written[0]).expect("CSV file"),
        "po_number,line,quantity,unit,unit_price,product_id\n\
         PO-1001,1,10,EA,9.95,WIDGET-1\n"
    );

    // Not X12: the guest exits 2 with a reason, in the log and the error.
    let headers = plain_headers("DEMO-PARTNER", "ATOM-LOCAL", "<csv-2@demo-partner>");
    let response = post(
        atom.http(),
        "/as2",
        &headers,
        b"this is a letter, not an interchange\n",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let executions = site.wait_for_executions(2);
    let failed = executions
        .iter()
        .find(|e| e["id"] != id)
        .expect("the second execution");
    assert_eq!(failed["status"], "ERROR", "{failed:#}");
    let log = failed["log"].as_str().expect("log");
    assert!(
        log.contains(
            "GUEST x12-to-csv: the input is not X12: it does not start with an ISA segment"
        ),
        "{log}"
    );
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains("exited with code 2"), "{error}");
    assert_eq!(
        files_in(&csv_dir).len(),
        1,
        "nothing written for the failure"
    );
}

#[test]
fn route_by_sender_files_each_transaction_set_under_its_sender() {
    let Some(bundle) = build("route-by-sender", "route-by-sender") else {
        return;
    };
    let site = Site::new("");
    bundle.deploy(&site, "route-by-sender");
    let atom = site.start();

    // ISA06 is padded to 15 characters; the guest files under the trimmed ID.
    let isa = "ISA*00*          *00*          *ZZ*ACMECORP       *ZZ*ATOMLOCAL      \
               *261123*1200*U*00401*000000002*0*P*>~";
    assert_eq!(isa.len(), 106, "an ISA segment is 106 characters");
    let order =
        "ST*850*0001~BEG*00*SA*PO-2001**20261123~PO1*1*5*EA*2.50**VP*BOLT-7~CTT*1~SE*5*0001~";
    let notice = "ST*856*0002~BSN*00*SHIP-1*20261123*1200~HL*1**S~SE*4*0002~";
    // One segment a line, as people save X12: the line breaks are not
    // part of the segments and must not reach the emitted documents.
    let segments = format!(
        "{isa}GS*PO*ACMECORP*ATOMLOCAL*20261123*1200*2*X*004010~{order}GE*1*2~\
         GS*SH*ACMECORP*ATOMLOCAL*20261123*1200*3*X*004010~{notice}GE*1*3~IEA*2*000000002~"
    );
    let interchange = segments.replace('~', "~\r\n");
    let headers = plain_headers("DEMO-VAN", "ATOM-LOCAL", "<route-1@demo-van>");
    let response = post(atom.http(), "/as2", &headers, interchange.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());

    let executions = site.wait_for_executions(1);
    let execution = &executions[0];
    assert_eq!(execution["process"], "route-by-sender");
    assert_eq!(execution["status"], "COMPLETE", "{execution:#}");
    assert_eq!(execution["output_documents"], 2, "{execution:#}");
    let log = execution["log"].as_str().expect("log");
    assert!(
        log.contains("GUEST route-by-sender: 2 transaction set(s) from ACMECORP"),
        "{log}"
    );
    let id = execution["id"].as_str().expect("execution id");
    let by_sender = site.path().join("data/out/by-sender/ACMECORP");
    let expected = [
        ("850", format!("850-1-{id}.x12"), order),
        ("856", format!("856-2-{id}.x12"), notice),
    ];
    assert_eq!(
        files_in(&by_sender),
        expected
            .iter()
            .map(|(_, file, _)| by_sender.join(file))
            .collect::<Vec<_>>()
    );
    let documents = execution["documents"].as_array().expect("documents");
    assert_eq!(documents.len(), 2, "{execution:#}");
    for (document, (set, file, segments)) in documents.iter().zip(&expected) {
        assert_eq!(
            document["properties"],
            serde_json::json!({ "sender": "ACMECORP", "transaction_set": set }),
            "{document:#}"
        );
        let path = by_sender.join(file);
        let delivered = document["delivered"][0].as_str().expect("delivered path");
        assert_eq!(canonical(Path::new(delivered)), canonical(&path));
        assert_eq!(
            std::fs::read_to_string(&path).expect("delivered file"),
            *segments,
            "{file}"
        );
        assert_eq!(document["size"], segments.len(), "{document:#}");
    }
}
