//! A small blocking W3C WebDriver client for browser tests: Debian's
//! ChromeDriver (`/usr/bin/chromedriver`) driving Debian's headless Chromium
//! (`/usr/bin/chromium`). Never a downloaded browser: what the tests run is
//! what `apt-get install chromium chromium-driver` installs (.ci/run does).
//!
//! Plain HTTP/1.1 over `std::net::TcpStream` with one connection per
//! command: ChromeDriver answers on loopback with a `Content-Length` body,
//! so no async runtime, connection pool or HTTP crate is needed, and tests
//! stay ordinary `#[test]` functions.
//!
//! Include it with `#[path = "common/webdriver.rs"] mod webdriver;` (it
//! uses nothing from `common`), start a [`Browser`] after checking
//! [`require_browser`], and let it drop: that ends the session, the
//! browser, ChromeDriver and the profile directory.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Viewport size, so screenshots are comparable from run to run.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;

/// How long [`Browser::wait_for`] and friends poll before giving up.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The key W3C WebDriver uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// True when Debian's Chromium and ChromeDriver are installed.
pub fn browser_available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// Whether a browser test can run: true when Chromium and ChromeDriver are
/// installed. When they are missing it prints a skip line and returns
/// false, except under CI (`CI` set), where a missing browser would hide
/// untested code, so it panics.
pub fn require_browser() -> bool {
    if browser_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing; install them with \
         `apt-get install chromium chromium-driver` (.ci/run does)"
    );
    eprintln!(
        "SKIPPED: no {CHROMIUM} or {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
    );
    false
}

/// A WebDriver error response, kept apart from transport failures so that
/// callers can expect some (`no such element` while polling) and panic on
/// the rest.
#[derive(Debug)]
struct Failure {
    status: u16,
    error: String,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {}): {}", self.error, self.status, self.message)
    }
}

/// The ChromeDriver process, killed when dropped, so that a panic anywhere
/// (even half-way through [`Browser::start`]) leaves no driver behind.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    session: String,
    port: u16,
    // Fields drop in order: the driver goes before the directory holding
    // the profile and the driver's log.
    driver: Driver,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a session in a
    /// fresh profile, with a 1280x800 viewport.
    pub fn start() -> Browser {
        assert!(
            browser_available(),
            "{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver); \
             call require_browser() first"
        );
        let dir = tempfile::Builder::new()
            .prefix("atom-browser-")
            .tempdir()
            .expect("temporary directory for the browser profile");
        let log = dir.path().join("chromedriver.log");
        let (driver, port) = start_driver(&log);
        let profile = dir.path().join("profile");
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Bounded waits: a hung page fails its test instead of
                    // blocking it for ChromeDriver's default five minutes.
                    "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            // Tests run as root in CI, where the sandbox refuses to start.
                            "--no-sandbox",
                            "--disable-gpu",
                            "--no-first-run",
                            // No traffic but the test's own: no updates, sync or QUIC probes.
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-quic",
                            // Containers often have a 64 MB /dev/shm, too small for
                            // Chromium; Debian's launcher means to add this flag then,
                            // but its check breaks when findmnt prints two lines.
                            "--disable-dev-shm-usage",
                            // Screenshot pixels are CSS pixels.
                            "--force-device-scale-factor=1",
                            format!("--window-size={WIDTH},{HEIGHT}"),
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                },
            },
        });
        // Starting Chromium takes a second or two; a minute means it hangs.
        let timeout = Duration::from_secs(60);
        let created = match command(port, "POST", "/session", Some(&capabilities), timeout) {
            Ok(Ok(value)) => value,
            Ok(Err(failure)) => panic!(
                "{CHROMEDRIVER} could not start {CHROMIUM}: {failure}\n{}",
                log_tail(&log)
            ),
            Err(e) => panic!(
                "{CHROMEDRIVER} did not answer POST /session: {e}\n{}",
                log_tail(&log)
            ),
        };
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("POST /session answered without a sessionId: {created}"))
            .to_string();
        let browser = Browser {
            session,
            port,
            driver,
            dir,
        };
        browser.size_viewport();
        browser
    }

    /// New headless Chromium (the only headless mode since the old one was
    /// split out) counts `--window-size` and the window rect as the outer
    /// window, browser UI included: 1280x800 gives a 1280x657 viewport. So
    /// measure the UI and grow the window by it, then check.
    fn size_viewport(&self) {
        self.set_window_size(WIDTH, HEIGHT);
        let ui = self.execute(
            "return [outerWidth - innerWidth, outerHeight - innerHeight];",
            vec![],
        );
        let extra = |i: usize| {
            ui[i]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("browser UI size is not a pair of sizes: {ui}"))
        };
        self.set_window_size(WIDTH + extra(0), HEIGHT + extra(1));
        let viewport = self.execute(
            "return [innerWidth, innerHeight, devicePixelRatio];",
            vec![],
        );
        assert_eq!(
            viewport,
            json!([WIDTH, HEIGHT, 1]),
            "viewport [width, height, devicePixelRatio] after resizing the window"
        );
    }

    fn set_window_size(&self, width: u32, height: u32) {
        self.send(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// One command of this session (`tail` after `/session/{id}`); a
    /// WebDriver error comes back as `Err`, a transport failure panics.
    fn try_send(&self, method: &str, tail: &str, body: Option<Value>) -> Result<Value, Failure> {
        let path = format!("/session/{}{tail}", self.session);
        // Above the session's 30 s page-load and script timeouts, so that
        // ChromeDriver reports those itself.
        match command(
            self.port,
            method,
            &path,
            body.as_ref(),
            Duration::from_secs(90),
        ) {
            Ok(answer) => answer,
            Err(e) => panic!(
                "WebDriver {method} {tail}: no answer from {CHROMEDRIVER}: {e}\n{}",
                log_tail(&self.driver_log())
            ),
        }
    }

    /// One command of this session that must succeed.
    fn send(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        self.try_send(method, tail, body)
            .unwrap_or_else(|failure| panic!("WebDriver {method} {tail} failed: {failure}"))
    }

    /// Loads `url` and waits for its load event (up to the 30 s page-load timeout).
    pub fn goto(&self, url: &str) {
        self.send("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        string(self.send("GET", "/url", None), "GET /url")
    }

    pub fn title(&self) -> String {
        string(self.send("GET", "/title", None), "GET /title")
    }

    /// The DOM serialized now (not the bytes the server sent).
    pub fn source(&self) -> String {
        string(self.send("GET", "/source", None), "GET /source")
    }

    pub fn back(&self) {
        self.send("POST", "/back", Some(json!({})));
    }

    pub fn refresh(&self) {
        self.send("POST", "/refresh", Some(json!({})));
    }

    /// The first element matching `css`; panics with the selector and the
    /// page's URL if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?} on {}", self.url()))
    }

    /// The first element matching `css`, or `None`.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_all(css).into_iter().next()
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.send("POST", "/elements", Some(by_css(css)));
        self.elements(found, "/elements")
    }

    fn elements(&self, found: Value, tail: &str) -> Vec<Element<'_>> {
        let Value::Array(found) = found else {
            panic!("WebDriver POST {tail} answered {found}, not a list of elements");
        };
        found
            .iter()
            .map(|reference| Element {
                browser: self,
                id: element_id(reference, tail),
            })
            .collect()
    }

    /// Polls until `check` returns `Some`, and returns that; panics after
    /// [`WAIT`] with `what`, the URL and the start of the page source.
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            if Instant::now() >= deadline {
                let source = self.source();
                let snippet: String = source.chars().take(2000).collect();
                panic!(
                    "timed out after {WAIT:?} waiting for {what} on {}\n\
                     --- page source (start) ---\n{snippet}",
                    self.url()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls until an element matches `css`, and returns the first.
    pub fn wait_for(&self, css: &str) -> Element<'_> {
        let id = self.wait_until(&format!("an element matching {css:?}"), |browser| {
            match browser.try_send("POST", "/elements", Some(by_css(css))) {
                Ok(Value::Array(found)) => found.first().map(|e| element_id(e, "/elements")),
                Ok(other) => panic!("WebDriver POST /elements answered {other}, not a list"),
                // A typo in the selector never comes right: say so now
                // rather than after the whole wait.
                Err(failure) if failure.error == "invalid selector" => {
                    panic!("WebDriver POST /elements failed for {css:?}: {failure}")
                }
                // Anything else is a page in the middle of being replaced.
                Err(_) => None,
            }
        });
        Element { browser: self, id }
    }

    /// Polls until the body's rendered text contains `text`.
    pub fn wait_for_text(&self, text: &str) {
        self.wait_until(&format!("the text {text:?}"), |browser| {
            let body = browser.try_send(
                "POST",
                "/execute/sync",
                Some(json!({
                    "script": "return document.body ? document.body.innerText : '';",
                    "args": [],
                })),
            );
            // An error is a page in the middle of being replaced: not yet.
            match body {
                Ok(Value::String(body)) if body.contains(text) => Some(()),
                _ => None,
            }
        });
    }

    /// Runs `script` as the body of a function with `arguments` = `args`
    /// and returns what it returns (elements come back as references; pass
    /// one in with [`Element::reference`]).
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.send(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The cookies visible to the current page, with `name`, `value`,
    /// `httpOnly`, `secure`, `sameSite`, `path`, `domain`, `expiry`.
    pub fn cookies(&self) -> Vec<Value> {
        match self.send("GET", "/cookie", None) {
            Value::Array(cookies) => cookies,
            other => panic!("WebDriver GET /cookie answered {other}, not a list"),
        }
    }

    pub fn delete_cookies(&self) {
        self.send("DELETE", "/cookie", None);
    }

    /// The text of the open `alert`/`confirm`/`prompt`, then accepts it.
    /// Call it right after the action that opens the dialog: any other
    /// command dismisses an open dialog and fails ("unexpected alert open").
    pub fn accept_alert(&self) -> String {
        let text = string(self.send("GET", "/alert/text", None), "GET /alert/text");
        self.send("POST", "/alert/accept", Some(json!({})));
        text
    }

    /// The text of the open dialog, then dismisses it (Cancel).
    pub fn dismiss_alert(&self) -> String {
        let text = string(self.send("GET", "/alert/text", None), "GET /alert/text");
        self.send("POST", "/alert/dismiss", Some(json!({})));
        text
    }

    /// Saves a PNG of the viewport (1280x800) to `path`, creating its
    /// parent directories.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let encoded = string(self.send("GET", "/screenshot", None), "GET /screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("GET /screenshot answered invalid base64");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Where ChromeDriver's output goes, for a test's own failure messages.
    pub fn driver_log(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }
}

impl Drop for Browser {
    /// Ends the session, which quits Chromium (killing ChromeDriver alone
    /// would leave the browser running). Never panics: this also runs
    /// while a failed test unwinds.
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = command(self.port, "DELETE", &path, None, Duration::from_secs(10));
    }
}

/// An element of the page, valid until the page replaces it (then commands
/// on it fail with "stale element reference").
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl<'a> Element<'a> {
    fn send(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        self.browser
            .send(method, &format!("/element/{}{tail}", self.id), body)
    }

    /// This element as an argument for [`Browser::execute`].
    pub fn reference(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Scrolls the element into view and clicks its centre, as a user would
    /// (fails if something else covers it).
    pub fn click(&self) {
        self.send("POST", "/click", Some(json!({})));
    }

    /// Types `text` into the element, after what it already holds.
    pub fn send_keys(&self, text: &str) {
        self.send("POST", "/value", Some(json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.send("POST", "/clear", Some(json!({})));
    }

    /// The rendered text, as a user sees it (hidden parts excluded).
    pub fn text(&self) -> String {
        string(self.send("GET", "/text", None), "GET element text")
    }

    /// The DOM property `name` if it is a string, a number or true (so
    /// `value` is what is typed now and `href` is absolute), otherwise the
    /// attribute `name` (so `class`, `data-*` and an absent boolean like
    /// `disabled` read as in the markup: `None` when absent).
    pub fn attr(&self, name: &str) -> Option<String> {
        match self.send("GET", &format!("/property/{name}"), None) {
            Value::String(s) => return Some(s),
            Value::Number(n) => return Some(n.to_string()),
            Value::Bool(true) => return Some("true".to_string()),
            _ => {}
        }
        match self.send("GET", &format!("/attribute/{name}"), None) {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    /// The tag name, lower case (`input`, `button`).
    pub fn tag(&self) -> String {
        string(self.send("GET", "/name", None), "GET element name")
    }

    /// Whether a checkbox or radio button is checked, or an option selected.
    pub fn is_selected(&self) -> bool {
        match self.send("GET", "/selected", None) {
            Value::Bool(selected) => selected,
            other => panic!("WebDriver GET element selected answered {other}, not a boolean"),
        }
    }

    /// The first element matching `css` within this one; panics with the
    /// selector and the page's URL if there is none.
    pub fn find(&self, css: &str) -> Element<'a> {
        self.find_all(css).into_iter().next().unwrap_or_else(|| {
            panic!(
                "no element matches {css:?} within a <{}> on {}",
                self.tag(),
                self.browser.url()
            )
        })
    }

    /// Every element matching `css` within this one, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'a>> {
        let found = self.send("POST", "/elements", Some(by_css(css)));
        self.browser.elements(found, "element/elements")
    }
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

fn element_id(reference: &Value, command: &str) -> String {
    reference[ELEMENT_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("WebDriver {command} answered {reference}, not an element"))
        .to_string()
}

fn string(value: Value, command: &str) -> String {
    match value {
        Value::String(s) => s,
        other => panic!("WebDriver {command} answered {other}, not a string"),
    }
}

/// Starts ChromeDriver on a free port and waits until `/status` says ready.
/// A port free when chosen can be taken before ChromeDriver binds it (then
/// it exits saying so): choose again.
fn start_driver(log: &Path) -> (Driver, u16) {
    let deadline = Duration::from_secs(20);
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port for chromedriver");
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("reopen {}: {e}", log.display()));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Chromium's own stderr into the log: when it fails to start,
            // ChromeDriver only says "Chrome instance exited", and the
            // reason (say, running as root without --no-sandbox) is there.
            .arg("--enable-chrome-logs")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let mut driver = Driver(child);
        let started = Instant::now();
        loop {
            if let Some(status) = driver.0.try_wait().expect("chromedriver status") {
                let output = log_tail(log);
                if output.contains("Address already in use") {
                    break;
                }
                panic!("{CHROMEDRIVER} exited ({status}) before it was ready:\n{output}");
            }
            if let Ok(Ok(status)) = command(port, "GET", "/status", None, Duration::from_secs(2)) {
                if status["ready"] == true {
                    return (driver, port);
                }
            }
            if started.elapsed() > deadline {
                panic!(
                    "{CHROMEDRIVER} on port {port} not ready after {deadline:?}:\n{}",
                    log_tail(log)
                );
            }
            std::thread::sleep(POLL);
        }
    }
    panic!(
        "{CHROMEDRIVER} found its port taken five times:\n{}",
        log_tail(log)
    )
}

/// The end of ChromeDriver's output (Chromium's included), for failure
/// messages: the reason a browser died is in its last lines.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("--- end of {} ---\n{tail}", log.display())
}

/// One WebDriver command: `Ok(Ok(value))` on success, `Ok(Err(..))` for a
/// WebDriver error response, `Err` when ChromeDriver did not answer (or
/// answered something that is not WebDriver).
fn command(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<Result<Value, Failure>> {
    let (status, bytes) = http(port, method, path, body, timeout)?;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "HTTP {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            ),
        )
    })?;
    let value = answer["value"].take();
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        // The stacktrace field is ChromeDriver's own C++ frames: noise in a
        // test failure, so only the error and its message are kept.
        return Ok(Err(Failure {
            status,
            error: error.to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        }));
    }
    if !(200..300).contains(&status) {
        return Ok(Err(Failure {
            status,
            error: "unexpected HTTP status".to_string(),
            message: value.to_string(),
        }));
    }
    Ok(Ok(value))
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`): no
/// keep-alive state to go stale between commands, and ChromeDriver always
/// sends a `Content-Length`.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // ChromeDriver checks the Host header against DNS rebinding: an IP
    // literal or localhost passes.
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    let body = body.map(Value::to_string);
    if let Some(body) = &body {
        request.push_str("Content-Type: application/json; charset=utf-8\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    if let Some(body) = &body {
        request.push_str(body);
    }
    stream.write_all(request.as_bytes())?;

    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
            );
        } else if name == "transfer-encoding" && !value.eq_ignore_ascii_case("identity") {
            return Err(invalid(format!("unsupported Transfer-Encoding {value}")));
        }
    }
    let mut bytes = Vec::new();
    match length {
        Some(length) => {
            bytes.resize(length, 0);
            reader.read_exact(&mut bytes)?;
        }
        None => {
            reader.read_to_end(&mut bytes)?;
        }
    }
    Ok((status, bytes))
}
