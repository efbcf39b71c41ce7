//! The Molecule's test harnesses against the real parts: a PostgreSQL
//! cluster per test (tests/common/postgres.rs) and HAProxy in front of
//! real `atom run` nodes (tests/common/haproxy.rs). Without the binaries
//! these tests skip with a printed reason, unless `CI` is set: then they
//! fail.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atom_connectors::as2::mdn::{self, Disposition, MdnTrust};
use common::haproxy::{server_name, Haproxy};
use common::postgres::Postgres;
use common::*;

#[test]
fn harness_starts_postgres_and_connects() {
    let started = Instant::now();
    let Some(pg) = Postgres::new() else { return };
    eprintln!(
        "PostgreSQL up in {:?} on port {}",
        started.elapsed(),
        pg.port()
    );
    let url = pg.url();
    assert!(
        url.starts_with(&format!("postgres://atom:{}@127.0.0.1:", pg.password()))
            && url.ends_with(&format!(":{}/atom", pg.port())),
        "{url}"
    );

    // As the `atom` role, through the URL: scram-sha-256 over TCP.
    let atom = |sql: &str| {
        pg.psql_at(&url, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", pg.log_tail()))
    };
    atom("CREATE TABLE receipts (id int PRIMARY KEY, message_id text NOT NULL)");
    atom("INSERT INTO receipts VALUES (1, '<a@x>'), (2, '<b@x>')");
    assert_eq!(
        atom("SELECT current_user, count(*) FROM receipts"),
        "atom|2"
    );
    assert_eq!(
        pg.psql("SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'atom'"),
        "atom:atom"
    );

    // The password is really checked, and the settings are the harness's.
    let wrong = url.replace(pg.password(), "not-the-password");
    let refused = pg
        .psql_at(&wrong, "SELECT 1")
        .expect_err("a wrong password is refused");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    assert_eq!(pg.psql("SHOW fsync"), "on");
    assert_eq!(pg.psql("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(pg.psql("SHOW max_connections"), "100");
    assert_eq!(
        pg.psql("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host'"),
        "scram-sha-256"
    );

    // A clean stop and a start on the same data directory and port.
    pg.stop();
    assert!(!pg.is_running());
    assert!(
        pg.psql_at(&url, "SELECT 1").is_err(),
        "nothing answers while stopped"
    );
    let restarted = Instant::now();
    pg.start();
    eprintln!("restart after stop: {:?}", restarted.elapsed());
    assert_eq!(
        atom("SELECT string_agg(message_id, ',' ORDER BY id) FROM receipts"),
        "<a@x>,<b@x>"
    );

    // A crash: committed rows survive it (fsync on, WAL replayed).
    atom("INSERT INTO receipts VALUES (3, '<c@x>')");
    pg.kill();
    assert!(!pg.is_running());
    let recovered = Instant::now();
    pg.start();
    eprintln!("restart after kill: {:?}", recovered.elapsed());
    assert!(
        pg.log().contains("database system was interrupted"),
        "the start after kill ran crash recovery:\n{}",
        pg.log_tail()
    );
    assert_eq!(atom("SELECT count(*) FROM receipts"), "3");
    eprintln!("whole test: {:?}", started.elapsed());
}

#[test]
fn haproxy_config_text_is_accepted_by_haproxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backends: Vec<SocketAddr> = vec![
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    ];
    let text =
        common::haproxy::config_text("127.0.0.1:9000".parse().unwrap(), &backends, dir.path());
    for line in [
        "retries 0",
        "option forwardfor",
        "balance roundrobin",
        "option httpchk GET /health",
        "http-check expect status 200",
        "server atom1 127.0.0.1:9001 check",
        "server atom2 127.0.0.1:9002 check",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    let Some(haproxy) = Haproxy::new(&backends) else {
        return;
    };
    // Nothing listens on the backends: both are taken out.
    for i in 0..2 {
        haproxy.wait_for_state(&server_name(i), "DOWN", Duration::from_secs(20));
    }
}

/// The bundle both nodes deploy: partner HA sends to US; partner SLOW's
/// execution sleeps, to hold a node in its drain.
fn deploy_bundles(site: &Site) {
    site.deploy("ha", &plain_start("HA", "US"));
    site.deploy_file("slow", "guest.wat", sleeping_guest(15_000).as_bytes());
    site.deploy(
        "slow",
        &format!("{}steps:\n  - wasm: guest.wat\n", plain_start("SLOW", "US")),
    );
}

/// Sends message `id` from HA to US; asserts a 200 with a positive receipt.
fn send_through(address: SocketAddr, id: &str) {
    let response = post(
        address,
        "/as2",
        &plain_headers("HA", "US", id),
        format!("ISA*00*{id}~").as_bytes(),
    );
    assert_eq!(response.status, 200, "{id}: {}", response.text());
    let content_type = response.header("content-type").expect("MDN content type");
    let receipt = mdn::parse(content_type, &response.body, MdnTrust::Skip).expect("MDN parses");
    assert_eq!(receipt.disposition, Disposition::Processed, "{id}");
    assert_eq!(receipt.original_message_id.as_deref(), Some(id));
}

/// The Message-IDs of partner HA stored by a site.
fn stored_ids(site: &Site) -> BTreeSet<String> {
    site.messages()
        .iter()
        .filter(|m| m["as2_from"] == "HA")
        .map(|m| m["message_id"].as_str().expect("message_id").to_string())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn haproxy_routes_to_healthy_atoms_and_drops_a_draining_one() {
    let started = Instant::now();
    let sites = [Site::new(""), Site::new("")];
    for site in &sites {
        deploy_bundles(site);
    }
    let atoms: Vec<Running> = sites.iter().map(Site::start).collect();
    let backends: Vec<SocketAddr> = atoms.iter().map(Running::http).collect();
    let Some(haproxy) = Haproxy::new(&backends) else {
        return;
    };
    let (first, second) = (server_name(0), server_name(1));
    for name in [&first, &second] {
        haproxy.wait_for_state(name, "UP", Duration::from_secs(20));
    }
    eprintln!("two atoms and HAProxy up: {:?}", started.elapsed());

    let ids: Vec<String> = (0..10).map(|i| format!("<ha-{i}@x>")).collect();
    for id in &ids {
        send_through(haproxy.address(), id);
    }
    let stored = [stored_ids(&sites[0]), stored_ids(&sites[1])];
    assert!(
        !stored[0].is_empty() && !stored[1].is_empty(),
        "round robin used both nodes: {stored:?}"
    );
    assert!(stored[0].is_disjoint(&stored[1]), "{stored:?}");
    assert_eq!(
        stored[0]
            .union(&stored[1])
            .cloned()
            .collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect(),
        "each message stored exactly once across the two nodes"
    );
    // Each request came through HAProxy, which added X-Forwarded-For.
    for site in &sites {
        for m in site.messages() {
            let raw = site.document(&m, "raw");
            let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            let head = head.split("\r\n\r\n").next().unwrap_or_default();
            assert!(
                head.contains("x-forwarded-for: 127.0.0.1"),
                "{}: {head}",
                m["message_id"]
            );
        }
    }
    assert_eq!(
        haproxy.log().matches("POST /as2").count(),
        10,
        "{}",
        haproxy.log()
    );

    // The second node starts an execution that keeps it draining, then
    // gets SIGTERM: its /health answers 503 and HAProxy takes it out while
    // the process still runs.
    let draining = &atoms[1];
    assert_eq!(
        post(
            draining.http(),
            "/as2",
            &plain_headers("SLOW", "US", "<slow@x>"),
            b"doc"
        )
        .status,
        200
    );
    wait_until("the slow execution to run", Duration::from_secs(30), || {
        sites[1]
            .executions()
            .iter()
            .any(|e| e["status"] == "INPROCESS")
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(draining.child.id() as i32, libc::SIGTERM) };
    let marked = Instant::now();
    haproxy.wait_for_state(&second, "DOWN", Duration::from_secs(10));
    eprintln!("draining node marked DOWN after {:?}", marked.elapsed());
    assert_eq!(
        get(draining.http(), "/health", &[]).status,
        503,
        "it was taken out for draining, not for being gone"
    );

    let later: Vec<String> = (10..15).map(|i| format!("<ha-{i}@x>")).collect();
    for id in &later {
        send_through(haproxy.address(), id);
    }
    let survivor = stored_ids(&sites[0]);
    for id in &later {
        assert!(
            survivor.contains(id),
            "{id} landed on the survivor: {survivor:?}"
        );
    }
    assert_eq!(survivor.len(), stored[0].len() + later.len());
    assert_eq!(
        haproxy.server_states(),
        vec![(first, "UP".to_string()), (second, "DOWN".to_string())]
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

/// Behind HAProxy every connection comes from the balancer; with the
/// balancer in `trusted_proxies`, a partner's IP filter applies to the
/// partner's own address (from X-Forwarded-For), and a stranger's forged
/// header does not get it past.
#[test]
fn ip_filter_applies_to_the_client_behind_haproxy() {
    let site = Site::new("  trusted_proxies: [\"127.0.0.1\"]\n");
    site.deploy(
        "filtered",
        "start:\n  as2:\n    as2_from:\n      id: FILTERED\n      allowed_ips: [\"127.0.0.2\"]\n    as2_to:\n      id: US\n",
    );
    let atom = site.start();
    let Some(haproxy) = Haproxy::new(&[atom.http()]) else {
        return;
    };
    haproxy.wait_for_state(&server_name(0), "UP", Duration::from_secs(20));
    let send = |source: &str, id: &str, forged: Option<&str>| {
        let mut headers = plain_headers("FILTERED", "US", id);
        if let Some(forged) = forged {
            headers.push(("X-Forwarded-For".into(), forged.into()));
        }
        post_from(source, haproxy.address(), "/as2", &headers, b"ISA*00~")
    };
    let partner = send("127.0.0.2", "<partner@x>", None);
    assert_eq!(partner.status, 200, "{}", partner.text());
    let stranger = send("127.0.0.3", "<stranger@x>", None);
    assert_eq!(stranger.status, 403, "{}", stranger.text());
    assert!(
        stranger.text().contains("address 127.0.0.3 may not send"),
        "{}",
        stranger.text()
    );
    let forged = send("127.0.0.3", "<forged@x>", Some("127.0.0.2"));
    assert_eq!(forged.status, 403, "{}", forged.text());
    let stored: Vec<String> = site
        .messages()
        .iter()
        .filter_map(|m| m["message_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(stored, ["<partner@x>"]);
}
