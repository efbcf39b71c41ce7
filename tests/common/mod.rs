//! Shared by the end-to-end tests: start the real `atom` binary on loopback
//! ports in a temporary directory, talk raw HTTP to it, run CLI commands.
#![allow(dead_code)]

pub mod guests;
pub mod haproxy;
pub mod postgres;
pub mod pyas2lib;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `shared/interop/<name>` beside the checkout (or `$ATOM_SHARED_DIR`).
pub fn interop(name: &str) -> PathBuf {
    let shared = std::env::var_os("ATOM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let path = shared.join("interop").join(name);
    assert!(
        path.exists(),
        "interop vector {} missing (set ATOM_SHARED_DIR)",
        path.display()
    );
    path
}

/// A loopback port free right now (for the admin API, whose address the CLI must know).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A test installation: a directory with atom.yaml, data/ and processes/.
pub struct Site {
    pub dir: tempfile::TempDir,
    /// Changes when a restart finds the port taken (see `start_with_env`).
    admin_port: std::cell::Cell<u16>,
}

impl Site {
    /// `extra_web` is YAML added under shared_web_server (indented two spaces).
    pub fn new(extra_web: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin_port = free_port();
        let config = format!(
            "atom:\n  name: test-atom\n  account_id: acme\n  instance_suffix: prod\ndata_dir: data\nprocesses_dir: processes\n\
             shared_web_server:\n  bind_address: 127.0.0.1\n  http_port: 0\n  https:\n    port: 0\n    keystore_name: atom-https\n    self_signed_if_missing: true\n{extra_web}\
             admin:\n  address: 127.0.0.1:{admin_port}\nconsole:\n  address: 127.0.0.1:0\n"
        );
        std::fs::write(dir.path().join("atom.yaml"), config).expect("write atom.yaml");
        std::fs::create_dir_all(dir.path().join("processes")).expect("processes dir");
        Site {
            dir,
            admin_port: std::cell::Cell::new(admin_port),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The admin API's port in atom.yaml.
    pub fn admin_port(&self) -> u16 {
        self.admin_port.get()
    }

    /// Moves the admin API to another free port: a restarted Atom can find
    /// its old (ephemeral) port taken by another test's connection.
    fn move_admin_port(&self) {
        let old = self.admin_port.get();
        let new = free_port();
        let config = std::fs::read_to_string(self.config()).expect("atom.yaml");
        let moved = config.replace(
            &format!("address: 127.0.0.1:{old}\n"),
            &format!("address: 127.0.0.1:{new}\n"),
        );
        std::fs::write(self.config(), moved).expect("write atom.yaml");
        self.admin_port.set(new);
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("atom.yaml")
    }

    /// Runs `atom -c atom.yaml ARGS` and returns its output.
    pub fn atom(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_atom"))
            .arg("-c")
            .arg(self.config())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("atom runs")
    }

    /// Like [`Site::atom`] but asserts success and returns stdout.
    pub fn atom_ok(&self, args: &[&str]) -> String {
        let out = self.atom(args);
        assert!(
            out.status.success(),
            "atom {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `processes/<name>/process.yaml`.
    pub fn deploy(&self, name: &str, process_yaml: &str) {
        let dir = self.path().join("processes").join(name);
        std::fs::create_dir_all(&dir).expect("bundle dir");
        std::fs::write(dir.join("process.yaml"), process_yaml).expect("write process.yaml");
    }

    /// Imports the interop receiver key (`receiver`) and the Mendelson certificate (`mecas2`).
    pub fn import_interop_keys(&self) {
        self.atom_ok(&[
            "certs",
            "import",
            "receiver",
            interop("cert_test.p12").to_str().expect("utf-8"),
            "--password",
            "test",
        ]);
        self.atom_ok(&[
            "certs",
            "import",
            "mecas2",
            interop("cert_mecas2_public.pem").to_str().expect("utf-8"),
        ]);
    }

    /// Starts `atom run` and waits for its ready line.
    pub fn start(&self) -> Running {
        self.start_with_env(&[])
    }

    /// Like [`Site::start`], with extra environment variables for `atom run`
    /// (the test-only fault switches, for example).
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Running {
        for _ in 0..3 {
            let log_before = self.log().len();
            match self.try_start(env) {
                Some(running) => return running,
                None => {
                    let log = self.log();
                    let this_run = &log[log_before.min(log.len())..];
                    if this_run.contains("binding the admin API") && this_run.contains("in use") {
                        self.move_admin_port();
                        continue;
                    }
                    panic!("atom exited before it was ready; log:\n{log}");
                }
            }
        }
        panic!(
            "atom could not bind an admin port three times; log:\n{}",
            self.log()
        );
    }

    /// Starts `atom run`; `None` when it exits before it is ready.
    fn try_start(&self, env: &[(&str, &str)]) -> Option<Running> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_atom"))
            .arg("-c")
            .arg(self.config())
            .arg("run")
            .env("RUST_LOG", "info,actix_server=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                // Appended: a restarted Atom keeps the earlier runs' log.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path().join("atom.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("atom run starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "atom did not become ready; log:\n{}",
                self.log()
            );
            match lines.next() {
                Some(Ok(line)) if line.starts_with("atom ready:") => {
                    let field = |name: &str| -> Option<SocketAddr> {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(&format!("{name}=")))
                            .and_then(|v| v.parse().ok())
                    };
                    return Some(Running {
                        child,
                        http: field("http"),
                        https: field("https"),
                        admin: field("admin").expect("admin address"),
                        console: field("console"),
                    });
                }
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("atom.log")).unwrap_or_default()
    }

    /// The execution history as JSON, newest first.
    pub fn executions(&self) -> Vec<serde_json::Value> {
        let out = self.atom_ok(&["executions", "--json", "--limit", "1000000"]);
        serde_json::from_str(&out).expect("executions JSON")
    }

    /// Waits until `count` executions have a final status; returns them all.
    pub fn wait_for_executions(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let all = self.executions();
            let done = all
                .iter()
                .filter(|e| {
                    matches!(
                        e["status"].as_str(),
                        Some("COMPLETE" | "COMPLETE_WARN" | "ERROR" | "ABORTED")
                    )
                })
                .count();
            if done >= count {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "{done} of {count} executions finished; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a module file into a bundle folder.
    pub fn deploy_file(&self, name: &str, file: &str, content: &[u8]) {
        let dir = self.path().join("processes").join(name);
        std::fs::create_dir_all(&dir).expect("bundle dir");
        std::fs::write(dir.join(file), content).expect("write module");
    }

    /// One stored part (`raw`, `payload` or `mdn`) of the message with log
    /// row `m["id"]`, downloaded through `atom messages download`.
    pub fn document(&self, m: &serde_json::Value, part: &str) -> Vec<u8> {
        let id = m["id"].as_i64().expect("message id").to_string();
        let out = self.atom(&["messages", "download", &id, part]);
        assert!(
            out.status.success(),
            "atom messages download {id} {part} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Removes a stored document behind the running Atom's back, as a
    /// purge would: a file, or (`db:<id>`) a row of the SQLite store.
    pub fn remove_document(&self, reference: &str) {
        match reference.strip_prefix("db:") {
            Some(key) => {
                let db =
                    rusqlite::Connection::open(self.path().join("data/atom.db")).expect("atom.db");
                db.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                let removed = db
                    .execute("DELETE FROM documents WHERE id = ?1", [key])
                    .expect("delete document");
                assert_eq!(removed, 1, "{reference} was stored");
            }
            None => std::fs::remove_file(reference).expect("remove document file"),
        }
    }

    /// The message log as JSON, newest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let out = self.atom_ok(&["messages", "--json", "--limit", "1000000"]);
        serde_json::from_str(&out).expect("messages JSON")
    }
}

/// A running `atom run`; killed when dropped.
pub struct Running {
    pub child: Child,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The operator console, when enabled.
    pub console: Option<SocketAddr>,
}

impl Running {
    pub fn http(&self) -> SocketAddr {
        self.http.expect("HTTP enabled")
    }

    /// SIGTERM, then wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "atom did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, read raw.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs raw bytes with the given headers over plain HTTP/1.1.
pub fn post(addr: SocketAddr, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    try_post(addr, path, headers, body).unwrap_or_else(|e| panic!("POST {path} to {addr}: {e}"))
}

/// Like [`post`], but a refused connection or a cut answer is an error,
/// as a sender sees it while the server is down.
pub fn try_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    exchange(stream, addr, path, headers, body)
}

/// A connection from `source` (any 127.x address on Linux) to `to`.
pub fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let source: SocketAddr = format!("{source}:0")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    socket.bind(&source.into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// Like [`post`], from the loopback address `source`.
pub fn post_from(
    source: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    connect_from(source, addr)
        .map_err(|e| format!("connect: {e}"))
        .and_then(|stream| exchange(stream, addr, path, headers, body))
        .unwrap_or_else(|e| panic!("POST {path} to {addr} from {source}: {e}"))
}

fn exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    // A server may answer (413, 401) before reading the body; ignore a reset here.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err("connection closed without a complete answer".into());
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
    out
}

/// A captured request from shared/interop: (headers without transport ones, body).
pub fn capture(name: &str) -> (Vec<(String, String)>, Vec<u8>) {
    capture_file(&interop(name))
}

/// A captured request (HTTP headers, a blank line, the body) in `path`:
/// (headers without transport ones, body).
pub fn capture_file(path: &Path) -> (Vec<(String, String)>, Vec<u8>) {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let nl = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("header line")
            + pos;
        let line = String::from_utf8_lossy(&raw[pos..nl])
            .trim_end_matches('\r')
            .to_string();
        pos = nl + 1;
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1 = format!("{} {}", last.1, line.trim());
            }
            continue;
        }
        let (n, v) = line.split_once(':').expect("header");
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let transport = [
        "content-length",
        "host",
        "expect",
        "connection",
        "transfer-encoding",
    ];
    headers.retain(|(n, _)| !transport.contains(&n.to_ascii_lowercase().as_str()));
    (headers, raw[pos..].to_vec())
}

/// Sets (replacing) a header in a list.
pub fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_string()));
}

/// The bundle for the Mendelson vectors (AS2-From mecas2, AS2-To pyas2lib).
pub const MENDELSON_BUNDLE: &str = "start:\n  as2:\n    as2_from:\n      id: mecas2\n      signing_certificate: keystore:mecas2\n    as2_to:\n      id: pyas2lib\n      decryption_key: keystore:receiver\n      mdn_signing_key: keystore:receiver\n";

/// Asks for a signed synchronous receipt with sha256.
pub fn request_signed_mdn(headers: &mut Vec<(String, String)>) {
    set_header(headers, "Disposition-Notification-To", "edi@example.com");
    set_header(
        headers,
        "Disposition-Notification-Options",
        "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha256",
    );
}

/// GET over plain HTTP with optional headers.
pub fn get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// The Python of the pyas2lib peer venv made by `.ci/setup-peers`.
pub fn peer_python() -> PathBuf {
    let venv = std::env::var_os("ATOM_PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peer-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "pyas2lib peer venv not found at {}: run `bash .ci/setup-peers` from the repository root first \
         (it creates the venv with pyas2lib 1.4.4; set ATOM_PEER_VENV to use another location)",
        venv.display()
    );
    python
}

/// Headers of an unsigned, unencrypted AS2 message asking for a sync MDN.
pub fn plain_headers(from: &str, to: &str, message_id: &str) -> Vec<(String, String)> {
    [
        ("AS2-Version", "1.2"),
        ("AS2-From", from),
        ("AS2-To", to),
        ("Message-ID", message_id),
        ("Content-Type", "application/edi-x12"),
        ("Disposition-Notification-To", "edi@example.com"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

/// A bundle's start step for an unsecured partner `from` sending to `to`.
pub fn plain_start(from: &str, to: &str) -> String {
    format!("start:\n  as2:\n    as2_from:\n      id: {from}\n    as2_to:\n      id: {to}\n")
}

/// A guest that logs a reason and exits 3.
pub const FAILING_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "bad input: no ISA segment\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 26))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 3))))"#;

/// A guest that sleeps (WASI poll_oneoff on the monotonic clock) for
/// `millis`, then writes "done".
pub fn sleeping_guest(millis: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "done")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {nanos}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 108)))))"#,
        nanos = millis * 1_000_000
    )
}

/// Reads one HTTP/1.1 request from `stream`: its head (request line and
/// headers) and its body (by Content-Length).
pub fn read_request(stream: &TcpStream) -> (String, Vec<u8>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (head, body)
}

/// Answers POSTs on a loopback port: the first `failures` with 503, then
/// 200; returns the port and a receiver of (headers, body) of each request.
pub fn http_receiver(failures: usize) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let (head, body) = read_request(&stream);
            let status = if n < failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if n >= failures {
                let _ = tx.send((head, body));
            }
        }
    });
    (port, rx)
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// `atom users add NAME --role ROLE`, the password on standard input.
pub fn add_console_user(site: &Site, name: &str, role: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atom"))
        .arg("-c")
        .arg(site.config())
        .args(["users", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("atom users add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    let out = child.wait_with_output().expect("atom users add ends");
    assert!(
        out.status.success(),
        "atom users add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A console session over raw HTTP: its cookie and CSRF token.
pub struct ConsoleSession {
    pub address: SocketAddr,
    pub cookie: String,
    pub csrf: String,
}

impl ConsoleSession {
    /// Logs in (asserting it works) and reads the CSRF token off a page.
    pub fn log_in(address: SocketAddr, user: &str, password: &str) -> ConsoleSession {
        let form = format!(
            "user={}&password={}",
            form_value(user),
            form_value(password)
        );
        let answer = post(
            address,
            "/login",
            &[(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            form.as_bytes(),
        );
        assert_eq!(answer.status, 303, "log-in as {user}: {}", answer.text());
        let cookie = answer
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("session cookie")
            .to_string();
        let mut session = ConsoleSession {
            address,
            cookie,
            csrf: String::new(),
        };
        let page = session.get("/").text();
        let marker = r#"name="csrf" value=""#;
        let start = page.find(marker).expect("a CSRF field on the page") + marker.len();
        session.csrf = page[start..]
            .split('"')
            .next()
            .expect("CSRF value")
            .to_string();
        session
    }

    pub fn get(&self, path: &str) -> Response {
        get(
            self.address,
            path,
            &[("Cookie".into(), self.cookie.clone())],
        )
    }

    /// POSTs a form with the session's CSRF token, from the console's origin.
    pub fn post(&self, path: &str, form: &str) -> Response {
        let body = if form.is_empty() {
            format!("csrf={}", self.csrf)
        } else {
            format!("{form}&csrf={}", self.csrf)
        };
        post(
            self.address,
            path,
            &[
                ("Cookie".into(), self.cookie.clone()),
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("Origin".into(), format!("http://{}", self.address)),
            ],
            body.as_bytes(),
        )
    }
}

/// Form-encodes a value (spaces and the few characters tests use).
pub fn form_value(text: &str) -> String {
    text.replace('%', "%25")
        .replace('&', "%26")
        .replace('+', "%2B")
        .replace('=', "%3D")
        .replace(' ', "+")
}
