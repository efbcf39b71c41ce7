//! `atom certs` end to end: the real binary on a temporary data directory,
//! its output checked with the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn atom(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atom"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ATOM_KEY_PASSWORD")
        .output()
        .expect("atom runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "atom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn interop(name: &str) -> PathBuf {
    let shared = std::env::var_os("ATOM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("interop").join(name)
}

#[test]
fn generate_export_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    ok(&atom(
        &data,
        &[
            "certs", "generate", "acme-as2", "--cn", "ACME AS2", "--days", "30",
        ],
    ));

    // The private key file is owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("keys/acme-as2.key.pem"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let cert_file = dir.path().join("acme.pem");
    ok(&atom(
        &data,
        &[
            "certs",
            "export",
            "acme-as2",
            "--out",
            cert_file.to_str().expect("utf-8"),
        ],
    ));
    let subject = openssl(&[
        "x509",
        "-in",
        cert_file.to_str().expect("utf-8"),
        "-noout",
        "-subject",
        "-ext",
        "keyUsage",
    ]);
    assert!(subject.contains("CN = ACME AS2"), "{subject}");
    assert!(
        subject.contains("Digital Signature") && subject.contains("Key Encipherment"),
        "{subject}"
    );

    let p12 = dir.path().join("acme.p12");
    ok(&atom(
        &data,
        &[
            "certs",
            "export",
            "acme-as2",
            "--format",
            "p12",
            "--password",
            "s3cret",
            "--out",
            p12.to_str().expect("utf-8"),
        ],
    ));
    let info = openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().expect("utf-8"),
        "-passin",
        "pass:s3cret",
        "-nodes",
    ]);
    assert!(
        info.contains("BEGIN PRIVATE KEY") && info.contains("BEGIN CERTIFICATE"),
        "p12 holds key and cert"
    );

    // Round trip: the exported PKCS#12 imports under another name.
    ok(&atom(
        &data,
        &[
            "certs",
            "import",
            "acme-copy",
            p12.to_str().expect("utf-8"),
            "--password",
            "s3cret",
        ],
    ));
    let list = ok(&atom(&data, &["certs", "list"]));
    assert!(
        list.contains("acme-as2") && list.contains("acme-copy"),
        "{list}"
    );
}

#[test]
fn import_legacy_pkcs12_and_partner_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // cert_test.p12 uses RC2-40 bags: opens only with OpenSSL's legacy provider.
    let out = ok(&atom(
        &data,
        &[
            "certs",
            "import",
            "receiver",
            interop("cert_test.p12").to_str().expect("utf-8"),
            "--password",
            "test",
        ],
    ));
    assert!(out.contains("imported key pair receiver"), "{out}");
    ok(&atom(
        &data,
        &[
            "certs",
            "import",
            "mendelson",
            interop("cert_mecas2_public.pem").to_str().expect("utf-8"),
        ],
    ));
    let list = ok(&atom(&data, &["certs", "list"]));
    let mendelson = list
        .lines()
        .find(|l| l.starts_with("mendelson"))
        .expect("listed");
    assert!(
        mendelson.contains(" no "),
        "partner certificate has no key: {mendelson}"
    );
    let receiver = list
        .lines()
        .find(|l| l.starts_with("receiver"))
        .expect("listed");
    assert!(receiver.contains(" yes "), "{receiver}");
    // The expired Sterling certificate is flagged.
    ok(&atom(
        &data,
        &[
            "certs",
            "import",
            "sterling",
            interop("cert_sb2bi_public.pem").to_str().expect("utf-8"),
        ],
    ));
    let list = ok(&atom(&data, &["certs", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("sterling") && l.contains("EXPIRED")),
        "{list}"
    );

    // Wrong password: a clear error, nothing stored.
    let bad = atom(
        &data,
        &[
            "certs",
            "import",
            "wrong",
            interop("cert_test.p12").to_str().expect("utf-8"),
            "--password",
            "nope",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("cannot open PKCS#12"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!data.join("keys/wrong.key.pem").exists());
}

#[test]
fn refusals_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let traversal = atom(&data, &["certs", "generate", "../escape"]);
    assert_eq!(traversal.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&traversal.stderr).contains("invalid key name"));
    assert!(!dir.path().join("escape.key.pem").exists());

    ok(&atom(
        &data,
        &["certs", "generate", "k1", "--key", "ec-p256"],
    ));
    let dup = atom(&data, &["certs", "generate", "k1"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let no_pw = atom(
        &data,
        &["certs", "export", "k1", "--format", "p12", "--out", "x.p12"],
    );
    assert_eq!(no_pw.status.code(), Some(2), "usage error");
    let to_tty = atom(&data, &["certs", "export", "k1", "--format", "pem"]);
    assert_eq!(to_tty.status.code(), Some(2));
    let missing = atom(&data, &["certs", "export", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no key or certificate named"));
}

#[test]
fn config_typo_is_refused_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("atom.yaml");
    std::fs::write(&config, "atom:\n  name: edge\ndata_dirr: elsewhere\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_atom"))
        .args(["-c", config.to_str().expect("utf-8"), "certs", "list"])
        .output()
        .expect("atom runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("atom.yaml") && stderr.contains("data_dirr"),
        "{stderr}"
    );

    // A valid file's data_dir is resolved next to the file.
    std::fs::write(&config, "atom:\n  name: edge\ndata_dir: store\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_atom"))
        .args([
            "-c",
            config.to_str().expect("utf-8"),
            "certs",
            "generate",
            "k",
        ])
        .output()
        .expect("atom runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("store/keys/k.key.pem").is_file());
}
