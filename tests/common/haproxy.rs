//! A real HAProxy (Debian's 2.6, `/usr/sbin/haproxy`) in front of Atom
//! nodes for one test: run in the foreground (`-db`) with the
//! configuration of [`config_text`] in a temporary directory, on a free
//! loopback port, with its runtime API on a unix socket there.
//!
//! Use [`Haproxy::new`]: it returns `None` (after printing why) when
//! HAProxy is not installed and `CI` is not set; with `CI` set a missing
//! HAProxy fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The backend's name in [`config_text`].
pub const BACKEND: &str = "atoms";

/// The name [`config_text`] gives the server for `backends[index]`:
/// `atom1`, `atom2`, ...
pub fn server_name(index: usize) -> String {
    format!("atom{}", index + 1)
}

/// The HAProxy configuration for Atom nodes `backends` behind one HTTP
/// frontend on `frontend`; the runtime API socket is `dir/admin.sock`.
pub fn config_text(frontend: SocketAddr, backends: &[SocketAddr], dir: &Path) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server {} {addr} check\n", server_name(i)))
        .collect();
    format!(
        "\
global
    # The runtime API: `show stat`, `show servers state`, `disable server`...
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 info
    maxconn 2000

defaults
    mode http
    log global
    option httplog
    # The Atom sees the sender's address in X-Forwarded-For (it trusts it
    # only from its `trusted_proxies`).
    option forwardfor
    # Never replay a request on another node. An AS2 POST that reached a
    # node may already be stored and acknowledged there; sent again, it
    # would be a second delivery, and a multi-megabyte body would have to
    # be buffered to be replayable at all. A failed POST goes back to the
    # sender as an error, and the sender resends under the same Message-ID,
    # which the Atom's duplicate detection answers. (Retrying only
    # `conn-failure`, before any byte reached a node, would be safe too;
    # the tests want the plain rule.)
    retries 0
    retry-on none
    # Timeouts are inactivity timeouts, not limits on a whole transfer, so
    # a 1 GiB upload takes as long as it needs as long as bytes flow.
    # client: above the Atom's own body_idle_timeout_seconds (30 s), so the
    # Atom, not the balancer, cuts a stalled body (with its 408).
    # server: the silence while a node receives the last bytes, then
    # decrypts, verifies, stores and commits a 1 GiB message before it
    # answers (store.commit_timeout_seconds alone is 30 s).
    timeout connect 5s
    timeout client 60s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 2s

frontend as2
    bind {frontend}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    # A draining node answers /health with 503 and is taken out after two
    # checks; it keeps the requests it already has (no
    # on-marked-down shutdown-sessions), which it finishes before exiting.
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
{servers}",
        socket = dir.join("admin.sock").display(),
    )
}

/// A running HAProxy; killed when dropped.
pub struct Haproxy {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `backends` and waits until its frontend
    /// accepts connections and its runtime API answers. `None` when HAProxy
    /// is missing and `CI` is unset (the reason is printed); panics when it
    /// is missing and `CI` is set.
    pub fn new(backends: &[SocketAddr]) -> Option<Haproxy> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but HAProxy is not installed (no $ATOM_HAPROXY, /usr/sbin/haproxy \
                 or haproxy on PATH); install it with `apt-get install haproxy` (.ci/run does)"
            );
            eprintln!("SKIPPED: HAProxy is not installed (apt-get install haproxy)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("atom-haproxy-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        // The port is free when chosen but may be taken before HAProxy
        // binds it: then choose again.
        for _attempt in 0..5 {
            let address = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
            std::fs::write(&config, config_text(address, backends, dir.path()))
                .expect("write haproxy.cfg");
            let check = Command::new(&binary)
                .arg("-c")
                .arg("-f")
                .arg(&config)
                .output()
                .expect("haproxy -c runs");
            assert!(
                check.status.success(),
                "haproxy -c refused the configuration: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            let log_file = std::fs::File::create(&log).expect("haproxy.log");
            let mut child = Command::new(&binary)
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log fd"))
                .stderr(log_file)
                .spawn()
                .expect("haproxy starts");
            match wait_ready(&mut child, address, dir.path()) {
                Ok(()) => {
                    return Some(Haproxy {
                        child,
                        address,
                        dir,
                    })
                }
                Err(output) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(
                        output.contains("cannot bind socket"),
                        "HAProxy did not start: {output}"
                    );
                }
            }
        }
        panic!("HAProxy found no free port in 5 attempts");
    }

    /// The frontend: send AS2 messages here.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// HAProxy's output: alerts, server state changes, one line a request.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// One runtime API command (`show stat`, `disable server atoms/atom1`,
    /// ...) through `admin.sock`; returns the answer.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("HAProxy runtime API {command:?}: {e}"))
    }

    fn try_command(&self, command: &str) -> Result<String, String> {
        runtime_api(self.dir.path(), command)
    }

    /// `show stat` rows of the backend's servers as (column name, value)
    /// pairs, in the order of [`config_text`].
    pub fn server_stats(&self) -> Vec<Vec<(String, String)>> {
        let answer = self.command("show stat");
        let mut lines = answer.lines();
        let header: Vec<String> = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .unwrap_or_else(|| panic!("show stat has no header: {answer:?}"))
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .filter(|row| {
                let get = |name: &str| row.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                get("pxname").is_some_and(|p| p == BACKEND)
                    && get("svname").is_some_and(|s| s != "BACKEND")
            })
            .collect()
    }

    /// (server name, status) of each server: `UP`, `DOWN`, `UP 1/2` (going
    /// down), `DOWN 1/2` (coming up), `MAINT`, `NOLB`...
    pub fn server_states(&self) -> Vec<(String, String)> {
        self.server_stats()
            .into_iter()
            .map(|row| {
                let get = |name: &str| {
                    row.iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                (get("svname"), get("status"))
            })
            .collect()
    }

    /// Polls [`Haproxy::server_states`] until server `name` has `status`.
    pub fn wait_for_state(&self, name: &str, status: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let states = self.server_states();
            if states.iter().any(|(n, s)| n == name && s == status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not mark {name} {status} within {limit:?}: {states:?}\nits log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$ATOM_HAPROXY`, `/usr/sbin/haproxy` or `haproxy` on PATH.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ATOM_HAPROXY") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// One command to the runtime API socket `dir/admin.sock`.
fn runtime_api(dir: &Path, command: &str) -> Result<String, String> {
    let socket = dir.join("admin.sock");
    let mut stream = UnixStream::connect(&socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // Not in interactive mode: one command, then HAProxy closes.
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

/// Polls until the frontend accepts connections and the runtime API
/// answers; an error carries HAProxy's output.
fn wait_ready(child: &mut Child, address: SocketAddr, dir: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}); its output:\n{}", log()));
        }
        if TcpStream::connect(address).is_ok() && runtime_api(dir, "show info").is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within 30 s; its output:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
