//! Operating the running Atom: per-partner access checks, listener states
//! driven by the CLI, and the admin API's protection.

mod common;

use common::*;

fn bundle_with(extra_from: &str, extra_as2: &str) -> String {
    format!(
        "start:\n  as2:\n    as2_from:\n      id: mecas2\n      signing_certificate: keystore:mecas2\n{extra_from}    as2_to:\n      id: pyas2lib\n      decryption_key: keystore:receiver\n      mdn_signing_key: keystore:receiver\n{extra_as2}"
    )
}

/// A fresh signed+encrypted Mendelson message with its own Message-ID.
fn message(n: u32) -> (Vec<(String, String)>, Vec<u8>) {
    let (mut headers, body) = capture("mecas2_signed_encrypted.as2");
    request_signed_mdn(&mut headers);
    set_header(&mut headers, "Message-ID", &format!("<ops-{n}@mecas2>"));
    (headers, body)
}

fn send(atom: &Running, n: u32) -> Response {
    let (headers, body) = message(n);
    post(atom.http(), "/as2", &headers, &body)
}

fn basic(user: &str, password: &str) -> (String, String) {
    use base64::Engine;
    (
        "Authorization".into(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
    )
}

#[test]
fn basic_authentication_ip_filter_and_size_limit() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", &bundle_with("      basic_auth: { username: mecas2, password: s3cret }\n      allowed_ips: [\"127.0.0.*\", \"::1\"]\n", ""));
    let atom = site.start();
    let (headers, body) = message(1);
    let response = post(atom.http(), "/as2", &headers, &body);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Basic realm=\"AS2\"")
    );
    let mut wrong = headers.clone();
    wrong.push(basic("mecas2", "guess"));
    assert_eq!(post(atom.http(), "/as2", &wrong, &body).status, 401);
    let mut right = headers.clone();
    right.push(basic("mecas2", "s3cret"));
    let response = post(atom.http(), "/as2", &right, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("processed") && !response.text().contains("processed/error"));
    drop(atom);

    // The loopback address is not in this filter; an empty filter blocks all.
    for filter in ["[\"10.9.8.7\", \"192.168.0.1-192.168.0.9\"]", "[]"] {
        let site = Site::new("");
        site.import_interop_keys();
        site.deploy(
            "mendelson",
            &bundle_with(&format!("      allowed_ips: {filter}\n"), ""),
        );
        let atom = site.start();
        let response = send(&atom, 2);
        assert_eq!(response.status, 403, "{filter}");
        assert!(response.text().contains("127.0.0.1"), "{}", response.text());
        assert!(site.messages().is_empty());
    }

    // A listener limit below the message size: 413 before the body is read.
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy(
        "mendelson",
        &bundle_with("", "    max_request_size: 2048\n"),
    );
    let atom = site.start();
    let response = send(&atom, 3);
    assert_eq!(response.status, 413);
    assert!(response.text().contains("2048"), "{}", response.text());
}

#[test]
fn pause_resume_restart_and_pause_survives_a_runtime_restart() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", &bundle_with("", ""));
    let atom = site.start();
    assert_eq!(send(&atom, 1).status, 200);

    let out = site.atom_ok(&["listeners", "pause", "mendelson"]);
    assert!(out.contains("paused"), "{out}");
    let paused = send(&atom, 2);
    assert_eq!(paused.status, 503);
    assert_eq!(paused.header("retry-after"), Some("60"));
    let list = site.atom_ok(&["listeners"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("mendelson") && l.contains("paused")),
        "{list}"
    );

    // Restart re-reads the bundle but keeps the pause.
    let out = site.atom_ok(&["listeners", "restart", "--all"]);
    assert!(out.contains("still paused"), "{out}");
    assert_eq!(send(&atom, 3).status, 503);

    // The pause survives a runtime restart.
    assert_eq!(atom.stop(), Some(0));
    let atom = site.start();
    assert_eq!(send(&atom, 4).status, 503, "still paused after restart");

    site.atom_ok(&["listeners", "resume", "mendelson"]);
    let resumed = send(&atom, 4);
    assert_eq!(resumed.status, 200, "the retried message is accepted");
    assert!(resumed.text().contains("processed"));
    let ids: Vec<String> = site
        .messages()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ids,
        vec!["<ops-4@mecas2>".to_string(), "<ops-1@mecas2>".to_string()],
        "paused requests were not stored"
    );

    // Unknown listener names are reported, exit code non-zero.
    let out = site.atom(&["listeners", "pause", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no listener named \"nope\""));
}

#[test]
fn duplicate_routes_and_invalid_bundles_error_their_listener_only() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("a-first", &bundle_with("", ""));
    site.deploy("b-second", &bundle_with("", ""));
    site.deploy("c-broken", "start:\n  as2:\n    as2_from:\n      id: acme\n      signing_certificate: keystore:missing\n    as2_to:\n      id: us\n");
    site.deploy("d-typo", "start:\n  as2:\n    as2_frm:\n      id: x\n");
    let atom = site.start();
    let list = site.atom_ok(&["listeners"]);
    let line = |id: &str| {
        list.lines()
            .skip_while(|l| !l.starts_with(id))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(line("a-first").contains("listening"), "{list}");
    assert!(
        line("b-second").contains("errored") && line("b-second").contains("duplicate route"),
        "{list}"
    );
    assert!(
        line("c-broken").contains("errored") && line("c-broken").contains("signing_certificate"),
        "{list}"
    );
    assert!(
        line("d-typo").contains("errored") && line("d-typo").contains("as2_frm"),
        "{list}"
    );
    // The runtime keeps serving the first listener.
    assert_eq!(send(&atom, 1).status, 200);
    assert_eq!(site.messages()[0]["listener"], "a-first");

    // Restarting the second listener while the conflict remains keeps its error.
    let out = site.atom(&["listeners", "restart", "b-second"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("duplicate route"));
    // Once the conflict is gone (hot reload undeploys a-first), a restart clears it.
    std::fs::remove_dir_all(site.path().join("processes/a-first")).expect("remove");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !site
        .atom(&["listeners", "restart", "b-second"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "b-second still errored after a-first was removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(send(&atom, 2).status, 200);
    assert_eq!(site.messages()[0]["listener"], "b-second");
}

#[test]
fn admin_api_refuses_requests_without_the_token_and_serves_metrics_with_it() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy("mendelson", &bundle_with("", ""));
    let atom = site.start();
    assert_eq!(send(&atom, 1).status, 200);
    for auth in [
        vec![],
        vec![("Authorization".to_string(), "Bearer wrong".to_string())],
    ] {
        for path in ["/api/listeners", "/api/messages", "/metrics"] {
            assert_eq!(get(atom.admin, path, &auth).status, 401, "{path} {auth:?}");
        }
    }
    let token_file = site.path().join("data/admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "token is owner-only");
    }
    let token = std::fs::read_to_string(&token_file).expect("token");
    let auth = vec![(
        "Authorization".to_string(),
        format!("Bearer {}", token.trim()),
    )];
    let metrics = get(atom.admin, "/metrics", &auth);
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("atom_as2_requests_total{outcome=\"processed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("atom_listeners{state=\"listening\"} 1"),
        "{text}"
    );
    // The health endpoint is on the shared web server, without a token.
    let health = get(atom.http(), "/health", &[]);
    assert_eq!(
        (health.status, health.text().trim().to_string()),
        (200, r#"{"status":"ok"}"#.to_string())
    );
}

/// `atom molecule` shows this node: its address, version and heartbeat.
#[test]
fn molecule_lists_this_node_with_its_heartbeat() {
    let site = Site::new("");
    std::fs::write(
        site.config(),
        std::fs::read_to_string(site.config()).expect("config") + "molecule:\n  node_id: node-a\n",
    )
    .expect("config");
    let atom = site.start();
    let nodes: serde_json::Value =
        serde_json::from_str(&site.atom_ok(&["molecule", "--json"])).expect("JSON");
    let nodes = nodes.as_array().expect("array");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node = &nodes[0];
    assert_eq!(node["node_id"], "node-a");
    assert_eq!(node["address"], atom.http().to_string());
    assert_eq!(node["status"], "serving");
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        node["heartbeat_age_seconds"].as_f64().expect("age") < 10.0,
        "{node}"
    );
    let table = site.atom_ok(&["molecule"]);
    assert!(
        table.contains("node-a") && table.contains("serving"),
        "{table}"
    );
}

/// `atom messages` searches the log: by file name prefix, partner,
/// outcome and date, pages with `--before-id`; bad values are refused by
/// the CLI and by the admin API (400); `/api/activity` counts them.
#[test]
fn messages_are_searched_through_the_cli_and_the_admin_api() {
    let site = Site::new("");
    site.deploy("plain", &plain_start("SEARCHER", "US"));
    let atom = site.start();
    for (id, file) in [("<s1@x>", "INV-0001.edi"), ("<s2@x>", "ORD-0002.edi")] {
        let mut headers = plain_headers("SEARCHER", "US", id);
        headers.push((
            "Content-Disposition".into(),
            format!("attachment; filename=\"{file}\""),
        ));
        let response = post(atom.http(), "/as2", &headers, b"ISA*00*payload~");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = site.atom_ok(&[&["messages", "--json"], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let found = json(&["--file-name", "INV"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["file_name"], "INV-0001.edi");
    assert_eq!(found[0]["message_id"], "<s1@x>");
    assert!(
        found[0].get("direction").is_none(),
        "the JSON keeps its shape"
    );
    assert_eq!(
        json(&["--message-id", "s2@x"])[0]["file_name"],
        "ORD-0002.edi"
    );
    assert_eq!(
        json(&["--from", "SEARCHER", "--disposition", "processed"]).len(),
        2
    );
    assert!(json(&["--disposition", "error"]).is_empty());
    assert!(json(&["--from", "OTHER"]).is_empty());
    assert_eq!(
        json(&["--since", "2000-01-01", "--until", "2999-12-31T23:59"]).len(),
        2
    );
    assert!(json(&["--until", "2000-01-01"]).is_empty());
    // Pages: one at a time, older ones below the last ID shown.
    let first = json(&["--limit", "1"]);
    let last = first[0]["id"].as_i64().expect("id").to_string();
    let older = json(&["--limit", "1", "--before-id", &last]);
    assert_eq!(older[0]["message_id"], "<s1@x>");
    let table = site.atom_ok(&["messages", "--subject", "nothing like it"]);
    assert!(table.contains("no messages match"), "{table}");
    let table = site.atom_ok(&["messages", "--limit", "1", "--from", "SEARCHER"]);
    assert!(
        table.contains("ORD-0002.edi") && table.contains("--before-id"),
        "{table}"
    );

    // Refused: a bad date (naming the option), filters with --direction out.
    let bad = site.atom(&["messages", "--since", "yesterday"]);
    assert!(!bad.status.success());
    let said =
        String::from_utf8_lossy(&bad.stderr).to_string() + &String::from_utf8_lossy(&bad.stdout);
    assert!(
        said.contains("--since") && said.contains("YYYY-MM-DD"),
        "{said}"
    );
    let out = site.atom(&["messages", "--from", "X", "--direction", "out"]);
    assert!(!out.status.success());

    // The admin API: the same search, 400 for bad values, the activity.
    let token = std::fs::read_to_string(site.path().join("data/admin.token")).expect("token");
    let auth = vec![(
        "Authorization".to_string(),
        format!("Bearer {}", token.trim()),
    )];
    let api = |path: &str| get(atom.admin, path, &auth);
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&api("/api/messages?file_name=ORD&from=SEARCHER").text())
            .expect("JSON");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["message_id"], "<s2@x>");
    for (query, named) in [
        ("received_from=tomorrow", "received_from"),
        ("received_to=2026-02-30", "received_to"),
        ("limit=many", "limit"),
        ("before_id=x", "before_id"),
        ("disposition=maybe", "disposition"),
    ] {
        let refused = api(&format!("/api/messages?{query}"));
        assert_eq!(refused.status, 400, "{query}");
        assert!(
            refused.text().contains(named),
            "{query}: {}",
            refused.text()
        );
    }
    let activity: serde_json::Value =
        serde_json::from_str(&api("/api/activity?hours=1").text()).expect("JSON");
    let per_minute = activity["per_minute"].as_array().expect("minutes");
    let messages: u64 = per_minute
        .iter()
        .map(|m| m["messages"].as_u64().expect("count"))
        .sum();
    assert_eq!(messages, 2, "{activity}");
    assert_eq!(
        activity["executions_by_status"].as_array().map(Vec::len),
        Some(6)
    );
    assert_eq!(api("/api/activity").status, 200);
    for hours in ["0", "49", "x"] {
        assert_eq!(
            api(&format!("/api/activity?hours={hours}")).status,
            400,
            "{hours}"
        );
    }
}
