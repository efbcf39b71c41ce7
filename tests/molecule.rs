//! A Molecule: several real `atom run` nodes sharing one real PostgreSQL
//! (Debian's, started per test by tests/common/postgres.rs), each with its
//! own data and processes folders, as on separate machines. What the
//! nodes share goes through the store only: receipts and the duplicate
//! index, documents, executions and their leases, listener states,
//! bundles. Leases are 3 s here (30 s by default) to keep takeovers quick.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::pyas2lib::{
    dense_edi, pyas2lib_messages, pyas2lib_messages_with, share_keys, Built, Options,
};
use common::*;
use serde_json::Value;

/// One Molecule at a time: each test runs up to three nodes and a
/// PostgreSQL, and the timings they check (a pause everywhere within 1 s)
/// are about the Molecule, not about a machine running six of them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node of the Molecule on `pg`.
fn node(pg: &Postgres, id: &str) -> Site {
    let site = Site::new("");
    let config = std::fs::read_to_string(site.config()).expect("config")
        + &format!(
            "store:\n  postgres:\n    url: postgres://atom@127.0.0.1:{}/atom\n\
             molecule:\n  node_id: {id}\n  lease_seconds: 3\n",
            pg.port()
        );
    std::fs::write(site.config(), config).expect("config");
    site
}

fn start(site: &Site, pg: &Postgres) -> Running {
    site.start_with_env(&[("ATOM_STORE_PASSWORD", pg.password())])
}

/// Polls `check` every 50 ms until it holds, or fails after `limit`.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn executions(site: &Site) -> Vec<Value> {
    serde_json::from_str(&site.atom_ok(&["executions", "--json", "--limit", "100000"]))
        .expect("executions JSON")
}

const DISK_PROCESS: &str =
    "steps:\n  - disk:\n      directory: out/acme\n      file_name: \"{execution_id}.edi\"\n";

#[test]
fn copies_of_one_message_on_three_nodes_store_one_receipt_and_one_execution() {
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let sites: Vec<Site> = ["n1", "n2", "n3"].iter().map(|id| node(&pg, id)).collect();
    for site in &sites {
        site.deploy(
            "acme",
            &format!("{}{DISK_PROCESS}", plain_start("ACME", "US")),
        );
    }
    let atoms: Vec<Running> = sites.iter().map(|s| start(s, &pg)).collect();
    let addresses: Vec<_> = atoms.iter().map(Running::http).collect();
    // 8 copies at once, spread over the three nodes.
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let address = addresses[i % 3];
                scope.spawn(move || {
                    post(
                        address,
                        "/as2",
                        &plain_headers("ACME", "US", "<copy@acme>"),
                        b"ISA*00*copy~",
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect()
    });
    let mdns: Vec<&Response> = answers.iter().filter(|a| a.status == 200).collect();
    assert!(!mdns.is_empty(), "at least the first copy was acknowledged");
    assert!(
        answers.iter().all(|a| a.status == 200 || a.status == 503),
        "statuses: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for mdn in &mdns {
        assert!(processed(mdn), "{}", mdn.text());
    }
    // The store is shared: every node lists the same single receipt.
    for site in &sites {
        let stored: Vec<Value> = site
            .messages()
            .into_iter()
            .filter(|m| m["message_id"] == "<copy@acme>" && m["error"].is_null())
            .collect();
        assert_eq!(stored.len(), 1, "{stored:?}");
    }
    wait_until("its execution to complete", Duration::from_secs(30), || {
        executions(&sites[0])
            .iter()
            .any(|e| e["status"] == "COMPLETE")
    });
    let all = executions(&sites[2]);
    assert_eq!(all.len(), 1, "one execution: {all:?}");
    let delivered: usize = sites
        .iter()
        .map(|s| {
            std::fs::read_dir(s.path().join("data/out/acme"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(delivered, 1, "delivered once, on one node");
}

#[test]
fn a_pause_on_node_1_reaches_node_3_within_a_second_and_a_bundle_within_5() {
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let sites: Vec<Site> = ["p1", "p2", "p3"].iter().map(|id| node(&pg, id)).collect();
    let atoms: Vec<Running> = sites.iter().map(|s| start(s, &pg)).collect();

    // Dropped into node 1's processes folder while all run: node 3 serves
    // it within 5 s (hot reload on node 1, published, written on node 3).
    sites[0].deploy("acme", &plain_start("ACME", "US"));
    let took = wait_until("node 3 to serve acme", Duration::from_secs(5), || {
        let answer = post(
            atoms[2].http(),
            "/as2",
            &plain_headers("ACME", "US", &format!("<probe-{}@acme>", now_nanos())),
            b"ISA~",
        );
        processed(&answer)
    });
    eprintln!("bundle on node 3 after {took:?}");
    assert!(sites[2]
        .path()
        .join("processes/acme/process.yaml")
        .is_file());

    sites[0].atom_ok(&["listeners", "pause", "acme"]);
    let took = wait_until("node 3 to answer 503", Duration::from_secs(1), || {
        post(
            atoms[2].http(),
            "/as2",
            &plain_headers("ACME", "US", &format!("<paused-{}@acme>", now_nanos())),
            b"ISA~",
        )
        .status
            == 503
    });
    eprintln!("pause on node 3 after {took:?}");
    sites[1].atom_ok(&["listeners", "resume", "acme"]);
    let took = wait_until("node 3 to serve again", Duration::from_secs(1), || {
        let answer = post(
            atoms[2].http(),
            "/as2",
            &plain_headers("ACME", "US", &format!("<resumed-{}@acme>", now_nanos())),
            b"ISA~",
        );
        processed(&answer)
    });
    eprintln!("resume on node 3 after {took:?}");

    // A restart asked on node 2 restarts the listener on node 3 too.
    let before = sites[2].log().matches("listener restarted").count();
    sites[1].atom_ok(&["listeners", "restart", "acme"]);
    wait_until("node 3 to restart acme", Duration::from_secs(1), || {
        sites[2].log().matches("listener restarted").count() > before
    });

    // Every node sees the three of them.
    let nodes: Vec<Value> =
        serde_json::from_str(&sites[2].atom_ok(&["molecule", "--json"])).expect("JSON");
    let ids: BTreeSet<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["p1", "p2", "p3"]));
    drop(atoms);
}

#[test]
fn a_killed_nodes_execution_is_taken_over_once_its_lease_expires() {
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let sites: Vec<Site> = ["k1", "k2"].iter().map(|id| node(&pg, id)).collect();
    let process = format!(
        "{}steps:\n  - wasm: sleep.wat\n  - disk:\n      directory: out/slow\n      file_name: \"{{execution_id}}.edi\"\n",
        plain_start("SLOW", "US")
    );
    for site in &sites {
        site.deploy("slow", &process);
        site.deploy_file("slow", "sleep.wat", sleeping_guest(1500).as_bytes());
    }
    let first = start(&sites[0], &pg);
    let _second = start(&sites[1], &pg);
    let sent = post(
        first.http(),
        "/as2",
        &plain_headers("SLOW", "US", "<slow@x>"),
        b"ISA*00*slow~",
    );
    assert_eq!(sent.status, 200, "{}", sent.text());
    // SIGKILL the receiving node while its guest sleeps.
    drop(first);
    let killed = Instant::now();
    let took = wait_until(
        "node 2 to complete the execution",
        Duration::from_secs(30),
        || {
            executions(&sites[1])
                .iter()
                .any(|e| e["status"] == "COMPLETE")
        },
    );
    eprintln!("taken over and completed {took:?} after the kill (lease 3 s, guest 1.5 s)");
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before the lease ran out"
    );
    let done = executions(&sites[1]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["owner"], "k2", "{}", done[0]);
    let files: Vec<_> = std::fs::read_dir(sites[1].path().join("data/out/slow"))
        .expect("delivered on node 2")
        .collect();
    assert_eq!(files.len(), 1);
    let nodes: Vec<Value> =
        serde_json::from_str(&sites[1].atom_ok(&["molecule", "--json"])).expect("JSON");
    let k1 = nodes.iter().find(|n| n["node_id"] == "k1").expect("k1");
    assert_eq!(k1["status"], "lost", "{k1}");
}

/// A positive MDN (an unknown partner gets a negative one in a 200 too).
fn processed(response: &Response) -> bool {
    response.status == 200
        && response.text().contains("processed")
        && !response.text().contains("processed/error")
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A loopback MDN receiver: 503 while `up` is false, 200 after; counts
/// the receipts it accepted.
fn mdn_receiver(
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (refused, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, a) = (refused.clone(), accepted.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            read_request(&stream);
            let status = if up.load(Ordering::SeqCst) {
                a.fetch_add(1, Ordering::SeqCst);
                "200 OK"
            } else {
                r.fetch_add(1, Ordering::SeqCst);
                "503 Service Unavailable"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, refused, accepted)
}

#[test]
fn an_async_mdn_is_delivered_once_by_another_node_after_its_node_was_killed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let up = Arc::new(AtomicBool::new(false));
    let (port, refused, accepted) = mdn_receiver(up.clone());
    let url = format!("http://127.0.0.1:{port}/mdn");
    let sites: Vec<Site> = ["m1", "m2"].iter().map(|id| node(&pg, id)).collect();
    for site in &sites {
        site.deploy(
            "acme",
            &format!(
                "{}    async_mdn:\n      allowed_urls: [\"http://127.0.0.1:{port}/\"]\n",
                plain_start("ACME", "US")
            ),
        );
    }
    let first = start(&sites[0], &pg);
    let _second = start(&sites[1], &pg);
    let mut headers = plain_headers("ACME", "US", "<async@acme>");
    set_header(&mut headers, "Receipt-Delivery-Option", &url);
    assert_eq!(post(first.http(), "/as2", &headers, b"ISA~").status, 200);
    wait_until("node 1's first attempt", Duration::from_secs(10), || {
        refused.load(Ordering::SeqCst) >= 1
    });
    drop(first); // SIGKILL, the receipt still pending
    up.store(true, Ordering::SeqCst);
    let status = |site: &Site| {
        site.messages()
            .into_iter()
            .find(|m| m["message_id"] == "<async@acme>")
            .map(|m| (m["mdn_status"].clone(), m["mdn_owner"].clone()))
    };
    let took = wait_until("node 2 to deliver it", Duration::from_secs(30), || {
        status(&sites[1]).is_some_and(|(s, _)| s == "delivered")
    });
    eprintln!("delivered by node 2 {took:?} after node 1 was killed (lease 3 s)");
    assert_eq!(status(&sites[1]), Some(("delivered".into(), "m2".into())));
    // Nothing else is pending anywhere: no second delivery can follow.
    let pending = pg
        .psql_at(
            &pg.url(),
            "SELECT count(*) FROM messages WHERE mdn_mode = 'async' AND mdn_status = 'pending'",
        )
        .expect("psql");
    assert_eq!(pending.trim(), "0");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "delivered exactly once");
}

#[test]
fn postgres_stopped_for_10_s_under_load_gets_503s_and_nothing_acknowledged_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let site = node(&pg, "o1");
    site.deploy("acme", &plain_start("ACME", "US"));
    let atom = start(&site, &pg);
    let http = atom.http();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acknowledged, statuses, stop) = (acknowledged.clone(), statuses.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let id = format!("<load-{n}@acme>");
                let answer = try_post(http, "/as2", &plain_headers("ACME", "US", &id), b"ISA~");
                let status = answer.as_ref().map(|a| a.status).unwrap_or(0);
                if answer.as_ref().is_ok_and(processed) {
                    acknowledged.lock().expect("lock").push(id);
                }
                statuses.lock().expect("lock").push(status);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let acked = || acknowledged.lock().expect("lock").len();
    wait_until(
        "some messages acknowledged",
        Duration::from_secs(20),
        || acked() >= 10,
    );

    pg.stop();
    let down_at = Instant::now();
    let took = wait_until("/health to answer 503", Duration::from_secs(10), || {
        get(http, "/health", &[]).status == 503
    });
    let health = get(http, "/health", &[]);
    eprintln!(
        "/health 503 {took:?} after PostgreSQL stopped: {}",
        health.text()
    );
    assert!(health.text().contains("store"), "{}", health.text());
    let acked_while_down = acked();
    let mark = statuses.lock().expect("lock").len();
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed()));
    assert_eq!(
        acked(),
        acked_while_down,
        "no positive MDN while the store was down"
    );
    let refused: Vec<u16> = statuses.lock().expect("lock")[mark..].to_vec();
    assert!(
        !refused.is_empty() && refused.iter().all(|s| *s == 503),
        "503 while down: {refused:?}"
    );
    pg.start();
    let took = wait_until("acknowledgements again", Duration::from_secs(30), || {
        acked() > acked_while_down + 5
    });
    eprintln!("serving again {took:?} after PostgreSQL came back");
    stop.store(true, Ordering::SeqCst);
    sender.join().expect("sender");
    assert_eq!(get(http, "/health", &[]).status, 200);

    let stored: Vec<String> = site
        .messages()
        .into_iter()
        .filter_map(|m| m["message_id"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "nothing stored twice");
    for id in acknowledged.lock().expect("lock").iter() {
        assert!(unique.contains(id), "acknowledged {id} is stored");
    }
}

/// A node of the Molecule listening on a fixed HTTP port (so that it can
/// come back where the balancer expects it).
fn node_on_port(pg: &Postgres, id: &str, port: u16) -> Site {
    let site = node(pg, id);
    let config = std::fs::read_to_string(site.config())
        .expect("config")
        .replace("http_port: 0", &format!("http_port: {port}"));
    std::fs::write(site.config(), config).expect("config");
    site
}

/// A positive, signed MDN carrying the MIC pyas2lib computed.
fn signed_receipt_for(response: &Response, message: &Built) -> bool {
    processed(response)
        && response
            .header("content-type")
            .is_some_and(|t| t.starts_with("multipart/signed"))
        && response.text().contains(&message.mic)
}

#[test]
fn load_through_haproxy_while_a_node_is_killed_stores_and_runs_each_message_once() {
    use std::sync::{Arc, Mutex};
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let sites: Vec<Site> = ["h1", "h2", "h3"]
        .iter()
        .zip(&ports)
        .map(|(id, port)| node_on_port(&pg, id, *port))
        .collect();
    let peer = sites[0].path().join("peer");
    let start_step = share_keys(&sites, &peer);
    for site in &sites {
        site.deploy("acme", &format!("{start_step}{DISK_PROCESS}"));
    }
    const SENDERS: usize = 4;
    const EACH: usize = 30;
    let messages = pyas2lib_messages(&peer, "ha", SENDERS * EACH);
    let mut atoms: Vec<Option<Running>> = sites.iter().map(|s| Some(start(s, &pg))).collect();
    let backends: Vec<std::net::SocketAddr> = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let Some(haproxy) = common::haproxy::Haproxy::new(&backends) else {
        return;
    };
    for i in 0..3 {
        haproxy.wait_for_state(
            &common::haproxy::server_name(i),
            "UP",
            Duration::from_secs(20),
        );
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<Built>::new()));
    let address = haproxy.address();
    let senders: Vec<_> = messages
        .chunks(EACH)
        .map(|mine| {
            let mine = mine.to_vec();
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                for message in mine {
                    // An AS2 sender resends the same message until it gets a receipt.
                    let deadline = Instant::now() + Duration::from_secs(90);
                    loop {
                        let answer = try_post(address, "/as2", &message.headers, &message.body);
                        if answer
                            .as_ref()
                            .is_ok_and(|r| signed_receipt_for(r, &message))
                        {
                            acknowledged.lock().expect("lock").push(message.clone());
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "{} never acknowledged: {answer:?}",
                            message.message_id
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })
        })
        .collect();
    let acked = || acknowledged.lock().expect("lock").len();
    wait_until("a third of the load", Duration::from_secs(60), || {
        acked() >= SENDERS * EACH / 3
    });
    atoms[1] = None; // SIGKILL node 2 mid-stream
    let killed_at = acked();
    wait_until(
        "more load on the survivors",
        Duration::from_secs(60),
        || acked() >= killed_at + SENDERS * EACH / 4,
    );
    atoms[1] = Some(start(&sites[1], &pg)); // node 2 back, same port
    for sender in senders {
        sender.join().expect("sender");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert_eq!(acknowledged.len(), SENDERS * EACH);

    // Every acknowledged message stored once, with its bytes; nothing else.
    let messages = sites[0].messages();
    let ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["message_id"].as_str())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "nothing stored twice");
    assert_eq!(
        unique.len(),
        SENDERS * EACH,
        "nothing but what was acknowledged"
    );
    let stored_bodies: Vec<(String, Vec<u8>)> = pg
        .psql_at(
            &pg.url(),
            "SELECT m.message_id || ' ' || encode(string_agg(c.data, ''::bytea ORDER BY c.seq), 'hex')
             FROM messages m JOIN documents d ON m.payload_path = 'pg:' || d.id
             JOIN document_chunks c ON c.document_id = d.id GROUP BY m.message_id",
        )
        .expect("psql")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect();
            (id.to_string(), bytes)
        })
        .collect();
    let stored: std::collections::HashMap<String, Vec<u8>> = stored_bodies.into_iter().collect();
    for message in &acknowledged {
        assert_eq!(
            stored.get(&message.message_id),
            Some(&message.payload),
            "{} stored with its bytes",
            message.message_id
        );
    }
    // Any node serves any node's documents.
    for m in messages.iter().take(10) {
        let sent = acknowledged
            .iter()
            .find(|a| m["message_id"] == a.message_id.as_str())
            .expect("acknowledged");
        assert_eq!(sites[2].document(m, "payload"), sent.payload);
    }
    // Exactly one COMPLETE execution each, the killed node's taken over.
    let took = wait_until(
        "every execution to complete",
        Duration::from_secs(60),
        || {
            let all = executions(&sites[0]);
            all.len() == SENDERS * EACH && all.iter().all(|e| e["status"] == "COMPLETE")
        },
    );
    eprintln!(
        "{} signed+encrypted messages through HAProxy, node 2 killed after {killed_at} and restarted; all complete {took:?} after the senders finished",
        SENDERS * EACH
    );
}

/// A message larger than the in-memory limit, on a node of the Molecule:
/// its request and payload go into PostgreSQL chunk by chunk from the
/// spooled files, and its execution streams the payload back out of
/// PostgreSQL into a disk step, with the server's memory flat.
#[test]
fn a_large_message_is_streamed_into_postgresql_and_out_to_a_disk_step() {
    let _serial = serial();
    let Some(pg) = Postgres::new() else { return };
    let site = node(&pg, "big");
    let peer = site.path().join("peer");
    let start_step = share_keys(std::slice::from_ref(&site), &peer);
    site.deploy("acme", &format!("{start_step}{DISK_PROCESS}"));
    let payload = dense_edi(24 << 20);
    let payload_file = peer.join("large.edi");
    std::fs::write(&payload_file, &payload).expect("payload file");
    let message = pyas2lib_messages_with(
        &peer,
        "big",
        1,
        &Options {
            payload_file: Some(&payload_file),
            compress: true,
        },
    )
    .remove(0);
    assert!(
        message.body.len() > 8 << 20,
        "spooled: {} bytes",
        message.body.len()
    );
    let atom = start(&site, &pg);
    let before = peak_rss_kib(atom.child.id());
    let response = post(atom.http(), "/as2", &message.headers, &message.body);
    assert!(
        signed_receipt_for(&response, &message),
        "{}",
        response.text()
    );
    let executions = site.wait_for_executions(1);
    assert_eq!(executions[0]["status"], "COMPLETE", "{:?}", executions[0]);
    let after = peak_rss_kib(atom.child.id());
    let id = executions[0]["id"].as_str().expect("execution id");
    let written = std::fs::read(site.path().join(format!("data/out/acme/{id}.edi")))
        .expect("disk step output");
    assert!(
        written == payload,
        "the disk step wrote the payload byte for byte"
    );
    let stored = &site.messages()[0];
    assert!(
        site.document(stored, "payload") == payload,
        "payload in PostgreSQL"
    );
    assert!(
        site.document(stored, "raw").ends_with(&message.body),
        "raw request in PostgreSQL"
    );
    let growth_mib = after.saturating_sub(before) >> 10;
    eprintln!(
        "{} MiB payload through PostgreSQL: server peak RSS {} -> {} MiB",
        payload.len() >> 20,
        before >> 10,
        after >> 10
    );
    assert!(growth_mib < 24, "peak RSS grew by {growth_mib} MiB");
}
