//! HTTPS end to end with an independent client, the `curl` command line
//! (OpenSSL build): the real `atom run` with its self-signed HTTPS
//! certificate (`self_signed_if_missing`).
//!
//! - TLS versions: 1.1 is refused by the server during the handshake (the
//!   client is allowed every cipher, so the refusal is the server's
//!   `protocol version` alert), 1.2 and 1.3 get `ok` from `/health`;
//! - a real Mendelson message (signed and encrypted) POSTed by curl over
//!   HTTPS gets a 200 with a signed MDN carrying the expected MIC;
//! - client certificates: with `client_auth: optional` and the partner's
//!   certificate pinned in the listener (`client_certificate`), curl with
//!   that certificate reaches AS2 processing (200 + MDN), curl without a
//!   certificate gets 403, and a certificate outside `client_ca` is refused
//!   (the server names `client_ca`'s subjects when it asks for a certificate)
//!   in the TLS handshake.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{capture, request_signed_mdn, Site, MENDELSON_BUNDLE};

/// The MIC of `mecas2_signed_encrypted.as2` (the signed entity, sha256).
const MENDELSON_MIC: &str = "G6PhshLOERWJEIfypIh6Q3sno6cBUWJBDky1igJvDMo=, sha256";

/// Runs curl (bounded by `--max-time`) and returns its output.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed and runs")
}

fn describe(out: &Output) -> String {
    format!(
        "curl exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn https(running: &common::Running) -> SocketAddr {
    running.https.expect("HTTPS enabled")
}

/// An HTTP exchange made by curl: status, response headers, body.
struct Exchange {
    status: u16,
    headers: String,
    body: Vec<u8>,
    out: Output,
}

impl Exchange {
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs `body` with `headers` to `url` with curl; `extra` are further curl
/// arguments (client certificate).
fn post_with_curl(
    dir: &Path,
    tag: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    extra: &[&str],
) -> Exchange {
    let body_file = dir.join(format!("{tag}.request"));
    let head_file = dir.join(format!("{tag}.response-headers"));
    let out_file = dir.join(format!("{tag}.response-body"));
    std::fs::write(&body_file, body).expect("write request body");
    let mut args: Vec<String> = vec![
        "--insecure".into(),
        "--http1.1".into(),
        "--data-binary".into(),
        format!("@{}", body_file.display()),
        // No `Expect: 100-continue` round trip.
        "-H".into(),
        "Expect:".into(),
        "--dump-header".into(),
        head_file.display().to_string(),
        "--output".into(),
        out_file.display().to_string(),
        "--write-out".into(),
        "%{http_code}".into(),
    ];
    for (name, value) in headers {
        args.push("-H".into());
        args.push(format!("{name}: {value}"));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Exchange {
        status,
        headers: std::fs::read_to_string(&head_file).unwrap_or_default(),
        body: std::fs::read(&out_file).unwrap_or_default(),
        out,
    }
}

/// Asserts a 200 with a signed MDN reporting `processed` and the Mendelson MIC.
fn assert_mendelson_mdn(exchange: &Exchange, site: &Site) {
    assert_eq!(
        exchange.status,
        200,
        "{}\n--- response headers\n{}\n--- body\n{}\n--- atom log\n{}",
        describe(&exchange.out),
        exchange.headers,
        exchange.body_text(),
        site.log()
    );
    let content_type = exchange
        .headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/signed"),
        "a signed MDN was asked for: Content-Type {content_type:?}\n{}",
        exchange.headers
    );
    let body = exchange.body_text();
    let mic = body
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("Received-Content-MIC:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Received-Content-MIC in the MDN:\n{body}"));
    assert_eq!(mic, MENDELSON_MIC, "MDN:\n{body}");
    let disposition = body
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("Disposition:"))
        .unwrap_or_else(|| panic!("no Disposition in the MDN:\n{body}"));
    assert!(
        disposition.trim().ends_with("processed"),
        "Disposition {disposition:?}"
    );
}

#[test]
fn tls_1_1_refused_1_2_and_1_3_served() {
    let site = Site::new("");
    let running = site.start();
    let url = format!("https://{}/health", https(&running));

    // TLS 1.1 only; every cipher allowed on the client side, so that the
    // failure is the server refusing the protocol version.
    let out = curl(&[
        "--insecure",
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
        &url,
    ]);
    assert!(
        !out.status.success(),
        "TLS 1.1 must fail: {}",
        describe(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(35),
        "curl 35 = TLS handshake failed: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alert protocol version"),
        "the server answers TLS 1.1 with a protocol_version alert: {}",
        describe(&out)
    );
    assert!(out.stdout.is_empty(), "no HTTP answer over TLS 1.1");

    for (flags, version) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
        (&["--tlsv1.3"][..], "TLSv1.3"),
    ] {
        let mut args = vec!["--insecure", "--verbose"];
        args.extend_from_slice(flags);
        args.push(&url);
        let out = curl(&args);
        assert!(out.status.success(), "{version}: {}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            r#"{"status":"ok"}"#,
            "{version}: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(&format!("SSL connection using {version}")),
            "negotiated {version}: {}",
            describe(&out)
        );
    }
    assert_eq!(running.stop(), Some(0));
}

#[test]
fn mendelson_message_over_https_gets_signed_mdn() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", MENDELSON_BUNDLE);
    let running = site.start();
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    let url = format!("https://{}/as2/acme", https(&running));
    let exchange = post_with_curl(site.path(), "mendelson", &url, &headers, &body, &[]);
    assert_mendelson_mdn(&exchange, &site);

    let rows = site.messages();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["disposition"], "processed", "{:#}", rows[0]);
    assert_eq!(rows[0]["mic"], MENDELSON_MIC, "{:#}", rows[0]);
    assert_eq!(rows[0]["mdn_status"], "sent", "{:#}", rows[0]);
    assert_eq!(running.stop(), Some(0));
}

/// `atom.yaml` with HTTPS client certificates optional and checked against
/// `client_ca` (the harness's `Site::new` writes `client_auth: none`).
fn client_auth_config(site: &Site, client_ca: &Path) -> String {
    format!(
        "atom:\n  name: test-atom\n  account_id: acme\n  instance_suffix: prod\ndata_dir: data\nprocesses_dir: processes\n\
         shared_web_server:\n  bind_address: 127.0.0.1\n  http_port: 0\n  https:\n    port: 0\n    keystore_name: atom-https\n    \
         self_signed_if_missing: true\n    client_auth: optional\n    client_ca: {}\n\
         admin:\n  address: 127.0.0.1:{}\nconsole:\n  enabled: false\n",
        client_ca.display(),
        site.admin_port()
    )
}

#[test]
fn pinned_client_certificate() {
    let site = Site::new("");
    site.import_interop_keys();
    let file = |name: &str| -> PathBuf { site.path().join(name) };
    let text = |p: &Path| p.to_str().expect("utf-8").to_string();
    // The partner's TLS client key, and one that is not trusted.
    site.atom_ok(&["certs", "generate", "client", "--cn", "mecas2 TLS client"]);
    site.atom_ok(&["certs", "generate", "stranger", "--cn", "not a partner"]);
    let (client_cert, client_pem, stranger_pem) = (
        file("client.cert.pem"),
        file("client.pem"),
        file("stranger.pem"),
    );
    site.atom_ok(&["certs", "export", "client", "--out", &text(&client_cert)]);
    site.atom_ok(&[
        "certs",
        "export",
        "client",
        "--format",
        "pem",
        "--out",
        &text(&client_pem),
    ]);
    site.atom_ok(&[
        "certs",
        "export",
        "stranger",
        "--format",
        "pem",
        "--out",
        &text(&stranger_pem),
    ]);
    std::fs::write(site.config(), client_auth_config(&site, &client_cert)).expect("atom.yaml");
    let bundle = MENDELSON_BUNDLE.replace(
        "      signing_certificate: keystore:mecas2\n",
        "      signing_certificate: keystore:mecas2\n      client_certificate: keystore:client\n",
    );
    assert!(bundle.contains("client_certificate: keystore:client"));
    site.deploy("mendelson-pinned", &bundle);
    let running = site.start();
    let url = format!("https://{}/as2/acme", https(&running));
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);

    // The CertificateRequest names the acceptable CAs (client_ca's subjects).
    let handshake = Command::new("openssl")
        .args(["s_client", "-connect", &https(&running).to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let shown = String::from_utf8_lossy(&handshake.stdout);
    let names = shown
        .split("Acceptable client certificate CA names")
        .nth(1)
        .unwrap_or_default();
    assert!(
        names
            .lines()
            .take(3)
            .any(|l| l.contains("mecas2 TLS client")),
        "no client CA names sent when asking for a client certificate:\n{shown}"
    );

    // No client certificate: TLS succeeds (optional), the listener refuses.
    let without = post_with_curl(site.path(), "without", &url, &headers, &body, &[]);
    assert_eq!(without.status, 403, "{}", describe(&without.out));
    assert!(
        without
            .body_text()
            .contains("requires the partner's TLS client certificate"),
        "{}",
        without.body_text()
    );

    // A certificate not in client_ca: refused during the TLS handshake.
    let stranger = text(&stranger_pem);
    let refused = post_with_curl(
        site.path(),
        "stranger",
        &url,
        &headers,
        &body,
        &["--cert", &stranger, "--key", &stranger],
    );
    assert!(
        !refused.out.status.success() && refused.status == 0,
        "an untrusted client certificate gets no HTTP answer: {}",
        describe(&refused.out)
    );

    // The pinned certificate: through to AS2 processing, MDN as usual.
    let pem = text(&client_pem);
    let with = post_with_curl(
        site.path(),
        "with",
        &url,
        &headers,
        &body,
        &["--cert", &pem, "--key", &pem],
    );
    assert_mendelson_mdn(&with, &site);

    let rows = site.messages();
    assert_eq!(
        rows.len(),
        1,
        "only the pinned request is logged: {rows:#?}"
    );
    assert_eq!(rows[0]["listener"], "mendelson-pinned", "{:#}", rows[0]);
    assert_eq!(rows[0]["disposition"], "processed", "{:#}", rows[0]);
    assert_eq!(running.stop(), Some(0));
}
