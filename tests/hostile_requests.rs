//! What a stranger on the network can make Atom do, and what a careless
//! set-up exposes: asynchronous MDN targets (no SSRF), refused requests kept
//! only in part, private file modes, and Basic authentication's scheme.
//! Each test is named after the finding it pins.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A loopback port that counts the connections made to it.
fn capture_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

fn with_async(mut headers: Vec<(String, String)>, url: &str) -> Vec<(String, String)> {
    set_header(&mut headers, "Receipt-Delivery-Option", url);
    headers
}

#[test]
fn async_mdn_posted_to_internal_urls_for_any_sender_regression() {
    let site = Site::new("");
    site.import_interop_keys();
    let (port, connections) = capture_server();
    let (allowed_port, allowed_connections) = capture_server();
    // A partner that signs, one without checks, and one allowed to name a loopback target.
    site.deploy(
        "signing",
        &format!("{MENDELSON_BUNDLE}    security:\n      require_signed: true\n"),
    );
    site.deploy("open", &plain_start("OPEN", "US"));
    site.deploy(
        "internal",
        &format!(
            "{}    async_mdn:\n      allowed_urls: [\"http://127.0.0.1:{allowed_port}/mdn\"]\n",
            plain_start("INTERNAL", "US")
        ),
    );
    let atom = site.start();
    let http = atom.http();
    let capture = format!("http://127.0.0.1:{port}/mdn");
    let admin = format!("http://{}/listeners/signing/pause", atom.admin);

    // Junk under the signing partner's ID: refused, and its target never used.
    let junk = post(
        http,
        "/as2",
        &with_async(plain_headers("mecas2", "pyas2lib", "<junk@x>"), &capture),
        b"junk",
    );
    assert_eq!(junk.status, 200);
    assert!(
        junk.text().contains("insufficient-message-security")
            && junk.text().contains("not sent to"),
        "a synchronous answer explains it: {}",
        junk.text()
    );
    // An accepted message from a partner without checks may not name
    // internal targets either: loopback, the admin API, other schemes.
    for (i, target) in [
        capture.as_str(),
        admin.as_str(),
        "http://localhost:1/mdn",
        "http://169.254.169.254/latest",
        "file:///etc/passwd",
        "gopher://example.com/",
    ]
    .into_iter()
    .enumerate()
    {
        let r = post(
            http,
            "/as2",
            &with_async(
                plain_headers("OPEN", "US", &format!("<open-{i}@x>")),
                target,
            ),
            b"ISA*00~",
        );
        assert_eq!(r.status, 200, "{target}");
        assert!(
            r.text().contains("; processed\r\n") && r.text().contains("not sent to"),
            "{target}: processed, receipt returned in the response: {}",
            r.text()
        );
    }
    // The listener that allows its internal target gets its MDN there.
    let r = post(
        http,
        "/as2",
        &with_async(
            plain_headers("INTERNAL", "US", "<internal@x>"),
            &format!("http://127.0.0.1:{allowed_port}/mdn"),
        ),
        b"ISA*00~",
    );
    assert_eq!((r.status, r.body.len()), (200, 0), "async: empty 200");
    let deadline = Instant::now() + Duration::from_secs(10);
    while allowed_connections.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "allowed target never reached");
        std::thread::sleep(Duration::from_millis(20));
    }

    let messages = site.messages();
    let refused: Vec<_> = messages
        .iter()
        .filter(|m| m["mdn_status"] == "refused")
        .collect();
    assert_eq!(refused.len(), 7, "{messages:#?}");
    assert!(refused
        .iter()
        .all(|m| m["mdn_error"].as_str().is_some_and(|e| !e.is_empty())));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no request reached the internal capture server"
    );
    let paused = site.atom_ok(&["listeners"]);
    assert!(!paused.contains("paused"), "{paused}");
}

#[test]
fn junk_requests_stored_in_full_regression() {
    let site = Site::new("");
    site.import_interop_keys();
    site.deploy(
        "signing",
        &format!("{MENDELSON_BUNDLE}    security:\n      require_signed: true\n"),
    );
    let atom = site.start();
    let junk = vec![b'J'; 15 << 20];
    let r = post(
        atom.http(),
        "/as2",
        &plain_headers("mecas2", "pyas2lib", "<big-junk@x>"),
        &junk,
    );
    assert!(r.text().contains("insufficient-message-security"));
    let messages = site.messages();
    let stored = &messages[0];
    assert_eq!(stored["request_size"], 15 << 20, "the size is recorded");
    let raw = site.document(stored, "raw");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers kept")
        + 4;
    assert!(String::from_utf8_lossy(&raw[..head_end]).contains("<big-junk@x>"));
    assert_eq!(raw.len() - head_end, 64 * 1024, "only the default prefix");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn documents_readable_by_every_local_user_regression() {
    let site = Site::new("");
    let data = site.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let token = data.join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    site.deploy(
        "private",
        &format!(
            "{}steps:\n  - disk:\n      directory: out/private\n      file_name: \"{{message_id}}.txt\"\n",
            plain_start("PRIVATE", "US")
        ),
    );
    let atom = site.start();
    assert_eq!(
        post(
            atom.http(),
            "/as2",
            &plain_headers("PRIVATE", "US", "<secret@x>"),
            b"INVOICE"
        )
        .status,
        200
    );
    // Past the size kept inside the database, documents are files.
    let large = b"INVOICE\n".repeat(40_000);
    assert_eq!(
        post(
            atom.http(),
            "/as2",
            &plain_headers("PRIVATE", "US", "<large-secret@x>"),
            &large
        )
        .status,
        200
    );
    let executions = site.wait_for_executions(2);
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&token), 0o600, "an existing token is narrowed");
    for database in ["atom.db", "atom.db-wal", "atom.db-shm"] {
        assert_eq!(mode(&data.join(database)), 0o600, "{database}");
    }
    let messages = site.messages();
    let small = messages
        .iter()
        .find(|m| m["message_id"] == "<secret@x>")
        .expect("small");
    assert!(
        small["payload_path"]
            .as_str()
            .is_some_and(|p| p.starts_with("db:")),
        "a small message's documents are in the database: {small}"
    );
    let large = messages
        .iter()
        .find(|m| m["message_id"] == "<large-secret@x>")
        .expect("large");
    for field in ["raw_path", "payload_path"] {
        let path = std::path::PathBuf::from(large[field].as_str().expect("path"));
        assert_eq!(mode(&path), 0o600, "{field}");
        assert_eq!(mode(path.parent().expect("dir")), 0o700, "{field} folder");
    }
    let delivered = executions[0]["documents"][0]["delivered"][0]
        .as_str()
        .expect("delivered");
    assert_eq!(mode(std::path::Path::new(delivered)), 0o600, "output");
}

#[test]
fn basic_scheme_in_lowercase_refused_regression() {
    use base64::Engine as _;
    let site = Site::new("");
    site.deploy(
        "authed",
        "start:\n  as2:\n    as2_from:\n      id: AUTHED\n      basic_auth: { username: acme, password: s3cret }\n    as2_to:\n      id: US\n",
    );
    let atom = site.start();
    let credentials = base64::engine::general_purpose::STANDARD.encode("acme:s3cret");
    for (scheme, expected) in [
        ("Basic", 200),
        ("basic", 200),
        ("BASIC", 200),
        ("Bearer", 401),
    ] {
        let mut headers = plain_headers("AUTHED", "US", &format!("<{scheme}@x>"));
        headers.push(("Authorization".into(), format!("{scheme} {credentials}")));
        assert_eq!(
            post(atom.http(), "/as2", &headers, b"ISA*00~").status,
            expected,
            "{scheme}"
        );
    }
    let mut wrong = plain_headers("AUTHED", "US", "<wrong@x>");
    wrong.push((
        "Authorization".into(),
        format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("acme:wrong")
        ),
    ));
    assert_eq!(post(atom.http(), "/as2", &wrong, b"ISA*00~").status, 401);
}

#[test]
fn slow_bodies_hold_connections_regression() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    const CONNECTIONS: usize = 300;
    // A short idle timeout keeps the test quick; the default is 30 s.
    let site = Site::new("  body_idle_timeout_seconds: 5\n  max_requests_per_address: 256\n");
    site.deploy("drip", &plain_start("DRIP", "US"));
    let atom = site.start();
    let http = atom.http();
    let started = Instant::now();
    let mut streams: Vec<(TcpStream, Vec<u8>, bool)> = (0..CONNECTIONS)
        .map(|i| {
            let mut stream = TcpStream::connect(http).expect("connect");
            let head = format!(
                "POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-From: DRIP\r\nAS2-To: US\r\nMessage-ID: <drip-{i}@x>\r\n\
                 Content-Type: application/edi-x12\r\nContent-Length: 1000000\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).expect("headers");
            stream.set_nonblocking(true).expect("nonblocking");
            (stream, Vec::new(), false)
        })
        .collect();
    let mut slowest_health = Duration::ZERO;
    let deadline = started + Duration::from_secs(60);
    loop {
        // One byte per connection per round: a drip.
        let mut open = 0;
        for (stream, answer, closed) in streams.iter_mut() {
            if *closed {
                continue;
            }
            let _ = stream.write(b"x");
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        *closed = true;
                        break;
                    }
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *closed = true;
                        break;
                    }
                }
            }
            if !*closed {
                open += 1;
            }
        }
        let asked = Instant::now();
        let health = get(http, "/health", &[]);
        slowest_health = slowest_health.max(asked.elapsed());
        assert_eq!(health.status, 200, "{}", health.text());
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} slow connections still open after 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = |answer: &[u8]| -> u16 {
        String::from_utf8_lossy(answer)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let cut = streams.iter().filter(|(_, a, _)| status(a) == 408).count();
    let over_cap = streams.iter().filter(|(_, a, _)| status(a) == 503).count();
    assert_eq!(
        (cut, over_cap),
        (256, CONNECTIONS - 256),
        "the address's 256 requests cut as too slow, the rest refused at once"
    );
    assert!(
        slowest_health < Duration::from_secs(1),
        "/health answered within a second throughout: slowest {slowest_health:?}"
    );
    eprintln!(
        "{CONNECTIONS} slow bodies closed in {:?}; slowest /health {slowest_health:?}",
        started.elapsed()
    );
    assert!(site.messages().is_empty(), "nothing stored");
}

/// Sends a request head asking `Expect: 100-continue` and returns what the
/// server says before any body byte is sent.
fn ask_to_continue(
    http: std::net::SocketAddr,
    message_id: &str,
    length: usize,
) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /as2 HTTP/1.1\r\nHost: x\r\nAS2-Version: 1.2\r\nAS2-From: BIG\r\nAS2-To: US\r\n\
         Message-ID: {message_id}\r\nContent-Type: application/edi-x12\r\n\
         Disposition-Notification-To: edi@example.com\r\nExpect: 100-continue\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer before the body");
    answer.truncate(n);
    (stream, String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn expect_continue_invited_an_oversize_body_regression() {
    use std::io::{Read, Write};
    let site = Site::new("");
    site.deploy(
        "big",
        "start:\n  as2:\n    as2_from:\n      id: BIG\n    as2_to:\n      id: US\n    max_request_size: 1000\n",
    );
    let atom = site.start();

    // Over the listener's limit: the final answer comes instead of 100.
    let (_, refused) = ask_to_continue(atom.http(), "<too-big@x>", 5000);
    assert!(
        refused.starts_with("HTTP/1.1 413"),
        "413 before any body byte, no 100 Continue: {refused}"
    );
    assert!(
        refused.to_ascii_lowercase().contains("connection: close"),
        "{refused}"
    );
    assert!(
        refused.contains("exceeds the limit of 1000 bytes"),
        "{refused}"
    );

    // Within the limit: invited, then answered with a positive MDN.
    let body = b"ISA*00*small~";
    let (mut stream, invited) = ask_to_continue(atom.http(), "<small@x>", body.len());
    assert_eq!(invited, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).expect("body");
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&answer).contains("processed") {
        let n = stream.read(&mut buf).expect("the MDN");
        assert!(
            n > 0,
            "closed before the MDN: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let messages = site.messages();
    assert_eq!(
        messages.len(),
        1,
        "only the small message is stored: {messages:?}"
    );
    assert_eq!(messages[0]["message_id"], "<small@x>");
}

#[test]
fn x_forwarded_for_believed_only_from_trusted_proxies() {
    let start = "start:\n  as2:\n    as2_from:\n      id: FILTERED\n      allowed_ips: [\"203.0.113.7\"]\n    as2_to:\n      id: US\n";
    let send = |atom: &Running, id: &str, forwarded: &[&str]| {
        let mut headers = plain_headers("FILTERED", "US", id);
        for value in forwarded {
            headers.push(("X-Forwarded-For".into(), value.to_string()));
        }
        post(atom.http(), "/as2", &headers, b"ISA*00~")
    };

    // Behind a trusted balancer (here: loopback), the client it names counts.
    let behind = Site::new("  trusted_proxies: [\"127.0.0.1\"]\n");
    behind.deploy("filtered", start);
    let atom = behind.start();
    assert_eq!(send(&atom, "<ok@x>", &["203.0.113.7"]).status, 200);
    let other = send(&atom, "<other@x>", &["198.51.100.1"]);
    assert_eq!(other.status, 403);
    assert!(
        other.text().contains("address 198.51.100.1 may not send"),
        "{}",
        other.text()
    );
    // What the client wrote left of the balancer's entry is not believed.
    let forged = send(&atom, "<forged@x>", &["203.0.113.7, 198.51.100.1"]);
    assert_eq!(forged.status, 403, "{}", forged.text());
    // Several header lines are one list; a trusted inner proxy is skipped.
    assert_eq!(
        send(&atom, "<lines@x>", &["203.0.113.7", "127.0.0.1"]).status,
        200
    );
    let garbage = send(&atom, "<garbage@x>", &["unknown"]);
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.text().contains("X-Forwarded-For"),
        "{}",
        garbage.text()
    );
    let stored: Vec<String> = behind
        .messages()
        .iter()
        .filter_map(|m| m["message_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.contains(&"<ok@x>".to_string()) && stored.contains(&"<lines@x>".to_string()));

    // Without trusted_proxies the header is ignored: the peer is the client.
    let direct = Site::new("");
    direct.deploy("filtered", start);
    let atom = direct.start();
    assert_eq!(send(&atom, "<spoof@x>", &["203.0.113.7"]).status, 403);
}

/// Idle connections (no request at all) used to count only against the
/// shared total: one address holding them all kept every partner, and
/// `/health`, out until they timed out.
#[test]
fn idle_connections_from_one_address_fill_the_server_regression() {
    use std::io::Read;
    const FLOOD: usize = 100;
    let site = Site::new("  max_connections: 64\n  max_connections_per_address: 20\n");
    site.deploy("plain", &plain_start("PLAIN", "US"));
    let atom = site.start();
    let http = atom.http();
    // Open them all first: idle connections are cut after 5 s, so the
    // check must be quick.
    let mut streams: Vec<(std::net::TcpStream, bool)> = (0..FLOOD)
        .map(|_| {
            let stream = connect_from("127.0.0.2", http).expect("connect");
            stream.set_nonblocking(true).expect("nonblocking");
            (stream, false)
        })
        .collect();
    // A connection over the limit is closed at accept: EOF or reset.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        for (stream, closed) in streams.iter_mut().filter(|(_, c)| !*c) {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => *closed = true,
            }
        }
        let closed = streams.iter().filter(|(_, c)| *c).count();
        if closed >= FLOOD - 20 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed = streams.iter().filter(|(_, c)| *c).count();
    assert_eq!(
        (FLOOD - closed, closed),
        (20, FLOOD - 20),
        "20 held open, the rest closed at once; log:\n{}",
        site.log()
    );
    // Everyone else is served at once.
    let asked = Instant::now();
    let health = get(http, "/health", &[]);
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        asked.elapsed()
    );
    let sent = post(
        http,
        "/as2",
        &plain_headers("PLAIN", "US", "<p@x>"),
        b"ISA~",
    );
    assert_eq!(sent.status, 200, "{}", sent.text());
}
