//! Keeps the README's guest examples true: the complete WAT and Rust
//! guests under "Writing a process" are taken from README.md as they are,
//! built, deployed and run end to end.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The first ```<lang> block after `heading` in README.md.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        .1;
    let fence = format!("```{lang}\n");
    let body = section
        .split_once(&fence)
        .unwrap_or_else(|| panic!("no {lang} block after {heading:?}"))
        .1;
    body.split_once("```")
        .expect("closed code block")
        .0
        .to_string()
}

#[test]
fn the_readme_wat_guest_copies_and_marks_documents() {
    let wat = readme_block("### A complete guest in WAT", "wat");
    // examples/wat-stamp ships the same text as a deployable bundle.
    let shipped =
        std::fs::read_to_string(repo().join("examples/wat-stamp/stamp.wat")).expect("example");
    assert_eq!(
        shipped, wat,
        "examples/wat-stamp/stamp.wat and the README differ"
    );
    let site = Site::new("");
    site.deploy_file("stamp", "stamp.wat", wat.as_bytes());
    site.deploy(
        "stamp",
        &format!(
            "{}steps:\n  - wasm: stamp.wat\n  - disk:\n      directory: out/stamp\n      file_name: \"{{stage}}-{{document_index}}.x12\"\n",
            plain_start("STAMPER", "US")
        ),
    );
    let atom = site.start();
    let order = std::fs::read(repo().join("examples/demo/order-850.x12")).expect("order");
    let r = post(
        atom.http(),
        "/as2",
        &plain_headers("STAMPER", "US", "<s@x>"),
        &order,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let run = &site.wait_for_executions(1)[0];
    assert_eq!(run["status"], "COMPLETE", "{run}");
    assert_eq!(run["documents"][0]["properties"]["stage"], "checked");
    let path = run["documents"][0]["delivered"][0]
        .as_str()
        .expect("delivered");
    assert!(path.ends_with("out/stamp/checked-1.x12"), "{path}");
    assert_eq!(std::fs::read(path).expect("written"), order);
    assert!(run["log"]
        .as_str()
        .is_some_and(|l| l.contains("stamp: document passed through")));
}

#[test]
fn the_readme_rust_guest_tags_the_sender_and_refuses_other_input() {
    let source = readme_block("### A complete guest in Rust", "rust");
    let build = tempfile::tempdir().expect("tmp");
    std::fs::write(build.path().join("main.rs"), source).expect("source");
    let module = build.path().join("tag-sender.wasm");
    let rustc = Path::new("/usr/bin/rustc");
    if !rustc.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but /usr/bin/rustc is missing: apt-get install rustc libstd-rust-dev-wasm32"
        );
        eprintln!("SKIPPED: no /usr/bin/rustc (apt-get install rustc libstd-rust-dev-wasm32)");
        return;
    }
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "--target",
            "wasm32-wasi",
            "-C",
            "strip=debuginfo",
        ])
        .arg(build.path().join("main.rs"))
        .arg("-o")
        .arg(&module)
        .output()
        .expect("rustc runs");
    assert!(
        out.status.success(),
        "the README's Rust guest does not build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site = Site::new("");
    site.deploy_file(
        "tagging",
        "tag-sender.wasm",
        &std::fs::read(&module).expect("module"),
    );
    site.deploy(
        "tagging",
        &format!(
            "{}steps:\n  - wasm: tag-sender.wasm\n  - disk:\n      directory: out/by-sender\n      file_name: \"{{sender}}/{{document_index}}.x12\"\n",
            plain_start("TAGGER", "US")
        ),
    );
    let atom = site.start();
    let order = std::fs::read(repo().join("examples/demo/order-850.x12")).expect("order");
    let r = post(
        atom.http(),
        "/as2",
        &plain_headers("TAGGER", "US", "<t1@x>"),
        &order,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let run = &site.wait_for_executions(1)[0];
    assert_eq!(run["status"], "COMPLETE", "{run}");
    let path = run["documents"][0]["delivered"][0]
        .as_str()
        .expect("delivered");
    assert!(path.ends_with("out/by-sender/DEMOPARTNER/1.x12"), "{path}");
    assert_eq!(std::fs::read(path).expect("written"), order);

    let r = post(
        atom.http(),
        "/as2",
        &plain_headers("TAGGER", "US", "<t2@x>"),
        b"hello",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let all = site.wait_for_executions(2);
    let failed = all
        .iter()
        .find(|e| e["status"] == "ERROR")
        .expect("an ERROR execution");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with code 2")),
        "{failed}"
    );
    assert!(
        failed["log"]
            .as_str()
            .is_some_and(|l| l.contains("not an X12 interchange")),
        "{failed}"
    );
}
