//! A real PostgreSQL for one test: Debian's server binaries (`initdb`,
//! `pg_ctl`, `psql`, from `pg_config --bindir` or the newest
//! `/usr/lib/postgresql/*/bin`) run a fresh cluster in a temporary
//! directory on a free loopback port.
//!
//! `initdb` and `pg_ctl` refuse to run as root, and CI runs the tests as
//! root, so they run as the `postgres` user (made by the Debian package)
//! through `runuser -u postgres --`, in a directory handed to that user.
//! Run as any other user, they run directly.
//!
//! The cluster listens on 127.0.0.1 only, with its unix socket in the
//! temporary directory, so it never meets the package's own cluster on
//! 5432 (which may or may not be running). `fsync` stays on: the tests
//! built on this measure durability. Host logins use scram-sha-256, so a
//! wrong password really is refused.
//!
//! Use [`Postgres::new`]: it returns `None` (after printing why) when
//! PostgreSQL is not installed and `CI` is not set; with `CI` set a missing
//! PostgreSQL fails the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a start (or a restart after a crash, which replays WAL) may take.
const START_LIMIT: Duration = Duration::from_secs(120);

/// A running (or stopped, between [`Postgres::stop`] and
/// [`Postgres::start`]) PostgreSQL cluster. Dropping it stops the server
/// and removes its directory.
pub struct Postgres {
    bin: PathBuf,
    /// `Some(user)` when the server tools run through `runuser -u user`.
    run_as: Option<String>,
    port: u16,
    superuser_password: String,
    password: String,
    /// Holds `data/`, the server log, `harness.conf` and the unix socket;
    /// owned by the user the server runs as.
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Initialises a fresh cluster and starts it, with a role `atom` (a
    /// random password) owning a database `atom`. `None` when PostgreSQL is
    /// missing and `CI` is unset (the reason is printed); panics when it is
    /// missing and `CI` is set, or when anything else goes wrong.
    pub fn new() -> Option<Postgres> {
        let (bin, run_as) = match tools() {
            Ok(found) => found,
            Err(why) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but PostgreSQL cannot be run: {why}. \
                     Install it with `apt-get install postgresql` (.ci/run does)"
                );
                eprintln!("SKIPPED: PostgreSQL cannot be run: {why} (apt-get install postgresql)");
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("atom-pg-")
            .tempdir()
            .expect("tempdir");
        if let Some(user) = &run_as {
            chown_to(dir.path(), user);
        }
        let mut pg = Postgres {
            bin,
            run_as,
            port: 0,
            superuser_password: random_password(),
            password: random_password(),
            dir,
        };
        pg.initdb();
        // The port is free when chosen but another process may take it
        // before the server binds it: then choose again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port = super::free_port();
            pg.write_config();
            match pg.try_start() {
                Ok(()) => break,
                Err(StartError::PortTaken) if attempt < 5 => continue,
                Err(e) => pg.fail_start(e),
            }
        }
        // The password is hex: nothing to quote.
        pg.psql(&format!(
            "CREATE ROLE atom LOGIN PASSWORD '{}'",
            pg.password
        ));
        pg.psql("CREATE DATABASE atom OWNER atom");
        Some(pg)
    }

    /// `postgres://atom:PASSWORD@127.0.0.1:PORT/atom`.
    pub fn url(&self) -> String {
        format!(
            "postgres://atom:{}@127.0.0.1:{}/atom",
            self.password, self.port
        )
    }

    /// The password of the role `atom` (hex: no URL escaping needed).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log so far (all starts of this cluster).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `pg_ctl stop -m fast`: sessions are disconnected, a shutdown
    /// checkpoint is written; returns once the server is gone.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Starts the server again on the same data directory and port (after
    /// [`Postgres::stop`] or [`Postgres::kill`]); returns once it answers
    /// queries over TCP.
    pub fn start(&self) {
        // The port was ours a moment ago; if something took it meanwhile
        // (an outgoing connection's ephemeral port), it is usually gone soon.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(StartError::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => self.fail_start(e),
            }
        }
    }

    /// SIGKILL to the postmaster and every backend (its process group), as
    /// a crash would; returns once the postmaster is gone. [`Postgres::start`]
    /// then runs crash recovery.
    pub fn kill(&self) {
        let Some(pid) = self.postmaster_pid().filter(|&pid| process_alive(pid)) else {
            panic!("kill: no postmaster runs in {}", self.data_dir().display());
        };
        kill_cluster(pid);
        // The postmaster was re-parented when pg_ctl exited; if nothing
        // reaps it (PID 1 of some containers does not), it stays a zombie,
        // and a zombie's pid in the lock files would make the next
        // postmaster believe it still runs. It is dead: its lock files go.
        let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port)));
    }

    /// True while a postmaster runs on this data directory.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// Runs `sql` as the superuser in database `postgres` over TCP, with
    /// `psql -At` (unaligned, tuples only); returns stdout without the last
    /// newline. Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// Like [`Postgres::psql`], an error instead of a panic.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let conninfo = format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.superuser_password, self.port
        );
        self.psql_at(&conninfo, sql)
    }

    /// Runs `sql` with `psql -At` against a connection URL (for example
    /// [`Postgres::url`], to act as the `atom` role).
    pub fn psql_at(&self, url: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql does not run: {e}"))?;
        if out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.ends_with('\n') {
                text.pop();
            }
            Ok(text)
        } else {
            Err(format!(
                "{} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A server tool from the bin dir, as the server's user.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser());
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The server's user may not be allowed into the test's directory.
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("pg_ctl runs")
    }

    fn initdb(&self) {
        let pwfile = self.dir.path().join("superuser.pw");
        std::fs::write(&pwfile, &self.superuser_password).expect("write password file");
        if let Some(user) = &self.run_as {
            chown_to(&pwfile, user);
        }
        // --no-sync: a fresh cluster in a temporary directory need not
        // survive an OS crash; the server itself runs with fsync on.
        let out = self
            .tool("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb runs");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Only loopback TCP with scram-sha-256, and the unix socket (in a
        // directory only the server's user and root can enter).
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        self.write_owned(&self.data_dir().join("pg_hba.conf"), hba);
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&format!(
            "\ninclude '{}'\n",
            self.dir.path().join("harness.conf").display()
        ));
        self.write_owned(&conf, &text);
    }

    /// The settings of this harness, included at the end of postgresql.conf.
    fn write_config(&self) {
        let conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             max_connections = 100\n\
             shared_buffers = 16MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            port = self.port,
            dir = self.dir.path().display()
        );
        self.write_owned(&self.dir.path().join("harness.conf"), &conf);
    }

    fn write_owned(&self, path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        if let Some(user) = &self.run_as {
            chown_to(path, user);
        }
    }

    /// `pg_ctl start -w` (it polls until the postmaster reports ready, and
    /// notices a postmaster that died), then polls `SELECT 1` over TCP as
    /// the superuser until it answers.
    fn try_start(&self) -> Result<(), StartError> {
        let log_before = self.log().len();
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &START_LIMIT.as_secs().to_string(), "start"])
            .output()
            .expect("pg_ctl runs");
        if !out.status.success() {
            let this_start = self.log().get(log_before..).unwrap_or_default().to_string();
            if this_start.contains("could not create any TCP/IP sockets")
                || this_start.contains("Address already in use")
            {
                return Err(StartError::PortTaken);
            }
            return Err(StartError::Failed(format!(
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.try_psql("SELECT 1") {
                Ok(one) if one == "1" => return Ok(()),
                Ok(other) => return Err(StartError::Failed(format!("SELECT 1 gave {other:?}"))),
                Err(e) if Instant::now() >= deadline => {
                    return Err(StartError::Failed(format!(
                        "no answer to SELECT 1 within {START_LIMIT:?}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn fail_start(&self, error: StartError) -> ! {
        let why = match error {
            StartError::PortTaken => format!("port {} stayed taken", self.port),
            StartError::Failed(why) => why,
        };
        panic!(
            "PostgreSQL did not start in {} on port {}: {why}\nlast lines of the server log:\n{}",
            self.dir.path().display(),
            self.port,
            self.log_tail()
        )
    }

    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.is_running() {
            // Immediate: the cluster is thrown away, no checkpoint needed.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
        if let Some(pid) = self.postmaster_pid().filter(|&pid| process_alive(pid)) {
            kill_cluster(pid);
        }
        // Then the TempDir removes the directory (root may remove the
        // files of the postgres user; a non-root user owns them).
    }
}

enum StartError {
    /// The postmaster could not bind its port.
    PortTaken,
    Failed(String),
}

/// The bin dir holding initdb, pg_ctl and psql, and the user to run the
/// server tools as (when the tests run as root).
fn tools() -> Result<(PathBuf, Option<String>), String> {
    let bin = bin_dir().ok_or_else(|| {
        "no PostgreSQL server binaries (initdb) found via $ATOM_PG_BINDIR, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin or PATH"
            .to_string()
    })?;
    for tool in ["initdb", "pg_ctl", "psql", "postgres"] {
        if !bin.join(tool).is_file() {
            return Err(format!("{} has no {tool}", bin.display()));
        }
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok((bin, None));
    }
    let user = std::env::var("ATOM_PG_USER").unwrap_or_else(|_| "postgres".to_string());
    if user_ids(&user).is_none() {
        return Err(format!(
            "running as root, initdb needs an unprivileged user, and there is no user {user:?}"
        ));
    }
    if !Path::new(&runuser()).is_file() && which("runuser").is_none() {
        return Err("running as root, and there is no runuser (util-linux)".into());
    }
    Ok((bin, Some(user)))
}

fn bin_dir() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("ATOM_PG_BINDIR").map(PathBuf::from) {
        return Some(dir);
    }
    // Debian's pg_config may belong to libpq-dev of another version than
    // the server installed, hence the check for initdb beside it.
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    which("initdb")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn runuser() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/runuser");
    if sbin.is_file() {
        sbin
    } else {
        which("runuser").unwrap_or_else(|| PathBuf::from("runuser"))
    }
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam with a valid C string; the fields are read before
    // any other call could overwrite the static result.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

fn chown_to(path: &Path, user: &str) {
    let (uid, gid) = user_ids(user).unwrap_or_else(|| panic!("no user {user}"));
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
}

/// SIGKILL to a postmaster and all its children at once, as a crash of
/// the machine would; returns when none of them runs.
///
/// Not `kill(-pid)`: pg_ctl does start the postmaster in its own session,
/// but every child calls setsid() too, so each is its own process group.
/// The postmaster is stopped first, so it forks nothing (and restarts no
/// one) while its children are listed and killed.
fn kill_cluster(postmaster: i32) {
    // SAFETY (all three): signals to processes this harness started.
    unsafe { libc::kill(postmaster, libc::SIGSTOP) };
    let children = children_of(postmaster);
    unsafe { libc::kill(postmaster, libc::SIGKILL) };
    for &child in &children {
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(&alive) = std::iter::once(&postmaster)
        .chain(&children)
        .find(|&&pid| process_alive(pid))
    {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL process {alive} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the parenthesised command name: state, then ppid.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Alive and not a zombie (an orphaned postmaster may stay a zombie when
/// nothing reaps it).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// 32 hex digits from /dev/urandom.
fn random_password() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
