//! The operator console, driven in Debian's headless Chromium through
//! ChromeDriver against the real `atom run`: log in, pause a listener and
//! see the CLI and the AS2 endpoint agree, find messages by Message-ID and
//! File name and download a payload byte-exact, read an execution's log;
//! viewers cannot change anything, forms without the CSRF token are
//! refused, password guessing is slowed down. Screenshots of every page
//! at 1280x800 go to `target/console-screenshots/` (or
//! `$ATOM_SCREENSHOT_DIR`).

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use webdriver::{require_browser, Browser};

const OPERATOR_PASSWORD: &str = "operator password 1";
const VIEWER_PASSWORD: &str = "viewer password 1";
const INVOICE: &[u8] = b"ISA*00*          *00*          *ZZ*PARTNER        *ZZ*US             *261129*0000*U*00401*000004711*0*P*>~\nBIG*20261129*INV-4711~\n";

/// A site with two partners: ORDERS (a guest that fails with a log line,
/// so that its executions have something to read) and NOTES (no steps).
fn console_site() -> Site {
    let site = Site::new("");
    site.deploy_file("orders", "guest.wat", FAILING_GUEST.as_bytes());
    site.deploy(
        "orders",
        &format!(
            "{}steps:\n  - wasm: guest.wat\n",
            plain_start("ORDERS", "US")
        ),
    );
    site.deploy("notes", &plain_start("NOTES", "US"));
    add_console_user(&site, "ana", "operator", OPERATOR_PASSWORD);
    add_console_user(&site, "vic", "viewer", VIEWER_PASSWORD);
    site
}

fn send(
    atom: &Running,
    from: &str,
    id: &str,
    file_name: &str,
    subject: &str,
    body: &[u8],
) -> Response {
    let mut headers = plain_headers(from, "US", id);
    headers.push((
        "Content-Disposition".into(),
        format!("attachment; filename=\"{file_name}\""),
    ));
    headers.push(("Subject".into(), subject.into()));
    post(atom.http(), "/as2", &headers, body)
}

fn screenshots() -> PathBuf {
    std::env::var_os("ATOM_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
        })
}

fn log_in(browser: &Browser, console: SocketAddr, user: &str, password: &str) {
    browser.goto(&format!("http://{console}/login"));
    browser.wait_for("form.login");
    browser.find("#user").clear();
    browser.find("#user").send_keys(user);
    browser.find("#password").send_keys(password);
    browser.find("form.login button[type=submit]").click();
    // The answer: a page with the user's name, or the form with its error
    // (a fresh log-in page has neither), before the test navigates on.
    browser.wait_for("#who, p.error");
}

/// The browser's session cookie, as a `Cookie:` header value.
fn session_cookie(browser: &Browser) -> String {
    let cookies = browser.cookies();
    let cookie = cookies
        .iter()
        .find(|c| c["name"] == "atom_console")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    format!(
        "atom_console={}",
        cookie["value"].as_str().expect("cookie value")
    )
}

/// The CSRF token in the page the browser shows.
fn csrf_token(browser: &Browser) -> String {
    browser
        .find("input[name=csrf]")
        .attr("value")
        .expect("csrf field has a value")
}

fn console_get(console: SocketAddr, path: &str, cookie: &str) -> Response {
    get(console, path, &[("Cookie".to_string(), cookie.to_string())])
}

fn console_post(
    console: SocketAddr,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    form: &str,
) -> Response {
    let mut headers = vec![
        ("Cookie".to_string(), cookie.to_string()),
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin".to_string(), origin.to_string()));
    }
    post(console, path, &headers, form.as_bytes())
}

/// `atom listeners`' state column for one listener.
fn cli_state(site: &Site, id: &str) -> String {
    let list = site.atom_ok(&["listeners"]);
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("{id} not in atom listeners:\n{list}"))
        .to_string()
}

#[test]
fn console_operator_pauses_a_listener_finds_messages_and_reads_an_execution_log() {
    if !require_browser() {
        return;
    }
    let site = console_site();
    let atom = site.start();
    let console = atom.console.expect("console address");
    assert_eq!(
        send(
            &atom,
            "ORDERS",
            "<inv-4711@orders>",
            "INV-4711.edi",
            "Invoice 4711",
            INVOICE
        )
        .status,
        200
    );
    assert_eq!(
        send(
            &atom,
            "ORDERS",
            "<inv-4712@orders>",
            "INV-4712.edi",
            "Invoice 4712",
            b"ISA*other"
        )
        .status,
        200
    );
    assert_eq!(
        send(
            &atom,
            "NOTES",
            "<note-1@notes>",
            "note.txt",
            "A note",
            b"hello"
        )
        .status,
        200
    );
    site.wait_for_executions(2);
    let shots = screenshots();
    let browser = Browser::start();

    // Any page sends a stranger to the log-in page, then back.
    browser.goto(&format!("http://{console}/listeners"));
    browser.wait_for("form.login");
    browser.screenshot(&shots.join("login.png"));
    browser.find("#user").send_keys("ana");
    browser.find("#password").send_keys(OPERATOR_PASSWORD);
    browser.find("form.login button[type=submit]").click();
    browser.wait_for("table#listeners");
    assert!(browser.url().ends_with("/listeners"), "{}", browser.url());
    assert_eq!(browser.find("#who").text(), "ana · operator");
    let cookie = browser
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "atom_console")
        .expect("session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    browser.screenshot(&shots.join("listeners.png"));

    // Pause one listener from its row: the CLI sees it, the endpoint refuses.
    browser.find("button[aria-label='Pause orders']").click();
    browser.wait_for("tr[data-listener='orders'] td.state-paused");
    assert!(
        browser.find(".flash").text().contains("orders"),
        "{}",
        browser.source()
    );
    assert!(cli_state(&site, "orders").contains("paused"));
    assert!(cli_state(&site, "notes").contains("listening"));
    let refused = send(
        &atom,
        "ORDERS",
        "<inv-4713@orders>",
        "INV-4713.edi",
        "x",
        b"ISA",
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    // Filtered by state.
    browser.goto(&format!("http://{console}/listeners?state=paused"));
    let rows = browser.find_all("table#listeners tbody tr[data-listener]");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attr("data-listener").as_deref(), Some("orders"));
    // Resume a selection (the ticked box).
    browser.goto(&format!("http://{console}/listeners"));
    browser.find("input[type=checkbox][value='orders']").click();
    browser
        .find("button[formaction='/listeners/resume']:not([name])")
        .click();
    browser.wait_for("tr[data-listener='orders'] td.state-listening");
    assert!(cli_state(&site, "orders").contains("listening"));

    // Messages: by Message-ID, then by File name; the payload byte-exact.
    browser.goto(&format!("http://{console}/messages"));
    browser.wait_for("form.filters");
    browser.screenshot(&shots.join("messages.png"));
    browser
        .find("input[name=message_id]")
        .send_keys("<inv-4711@orders>");
    browser.find("form.filters button[type=submit]").click();
    browser.wait_for_text("1 message shown");
    let rows = browser.find_all("table#messages tbody tr");
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].text().contains("INV-4711.edi"),
        "{}",
        rows[0].text()
    );
    browser.goto(&format!(
        "http://{console}/messages?file_name={}",
        "INV-4712"
    ));
    browser.wait_for_text("1 message shown");
    let rows = browser.find_all("table#messages tbody tr");
    assert!(
        rows[0].text().contains("<inv-4712@orders>"),
        "{}",
        rows[0].text()
    );
    // Back to 4711's page.
    browser.goto(&format!("http://{console}/messages?file_name=INV-4711"));
    browser.wait_for_text("1 message shown");
    browser.find("table#messages tbody tr a").click();
    browser.wait_for("#message-props");
    let props = browser.find("#message-props").text();
    assert!(
        props.contains("ORDERS") && props.contains("Invoice 4711") && props.contains("processed"),
        "{props}"
    );
    assert!(
        browser.find("#mdn").text().contains("Disposition:"),
        "MDN as sent shown"
    );
    browser.screenshot(&shots.join("message.png"));
    let href = browser
        .find("#download-payload")
        .attr("href")
        .expect("payload link");
    let path = href
        .strip_prefix(&format!("http://{console}"))
        .unwrap_or(&href)
        .to_string();
    let download = console_get(console, &path, &session_cookie(&browser));
    assert_eq!(download.status, 200);
    assert_eq!(download.body, INVOICE, "payload byte-exact");
    assert!(download
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment")));
    // Without the session, nothing.
    assert_eq!(get(console, &path, &[]).status, 303);

    // Executions: filter, open one, read its log.
    browser.goto(&format!(
        "http://{console}/executions?process=orders&status=ERROR"
    ));
    browser.wait_for("table#executions");
    browser.screenshot(&shots.join("executions.png"));
    let links = browser.find_all("table#executions tbody a");
    assert_eq!(links.len(), 2, "{}", browser.source());
    links[0].click();
    browser.wait_for("#process-log");
    assert!(
        browser
            .find("#process-log")
            .text()
            .contains("bad input: no ISA segment"),
        "{}",
        browser.find("#process-log").text()
    );
    browser.screenshot(&shots.join("execution.png"));
    // Rerun it from its stored document: the same execution runs again.
    let execution = browser
        .url()
        .rsplit('/')
        .next()
        .expect("execution id in the URL")
        .to_string();
    browser.find("#rerun").click();
    browser.wait_for_text("Rerun queued");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let all = site.executions();
        let rerun = all
            .iter()
            .find(|e| e["id"] == execution.as_str())
            .expect("the rerun execution");
        if rerun["attempts"] == 2 && rerun["status"] == "ERROR" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rerun did not finish: {rerun}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    for (page, file) in [
        ("/", "overview.png"),
        ("/outbox", "outbox.png"),
        ("/processes", "processes.png"),
        ("/certificates", "certificates.png"),
        ("/audit", "audit.png"),
    ] {
        browser.goto(&format!("http://{console}{page}"));
        browser.wait_for("main h1");
        browser.screenshot(&shots.join(file));
    }
    // The audit log has who paused and resumed, and the rerun.
    browser.goto(&format!("http://{console}/audit"));
    let audit = browser.find("table#audit").text();
    for action in [
        "listener.pause",
        "listener.resume",
        "execution.rerun",
        "login",
    ] {
        assert!(audit.contains(action), "{action} missing:\n{audit}");
    }
    assert!(audit.contains("ana"), "{audit}");
    // The overview counts the three messages and charts them.
    browser.goto(&format!("http://{console}/"));
    let first_card = browser.find("#cards .card");
    assert_eq!(
        first_card.find(".value").text(),
        "3",
        "{}",
        first_card.text()
    );
    assert_eq!(first_card.find(".label").text(), "messages in 3 h");
    assert!(!browser.find_all("#activity-chart rect").is_empty());
}

#[test]
fn console_viewers_read_only_forms_need_the_csrf_token_and_guessing_is_slowed() {
    if !require_browser() {
        return;
    }
    let site = console_site();
    let atom = site.start();
    let console = atom.console.expect("console address");
    let origin = format!("http://{console}");
    // A partner's Subject with markup is shown as text, never run.
    assert_eq!(
        send(
            &atom,
            "NOTES",
            "<x@notes>",
            "x.txt",
            "<script>window.pwned=1</script>",
            b"hi"
        )
        .status,
        200
    );
    let browser = Browser::start();

    // A viewer sees the buttons disabled, and a forced POST is refused.
    log_in(&browser, console, "vic", VIEWER_PASSWORD);
    browser.goto(&format!("{origin}/listeners"));
    browser.wait_for("table#listeners");
    assert!(browser
        .find("button[aria-label='Pause orders']")
        .attr("disabled")
        .is_some());
    let viewer_cookie = session_cookie(&browser);
    let viewer_csrf = csrf_token(&browser);
    let forced = console_post(
        console,
        "/listeners/pause",
        &viewer_cookie,
        Some(&origin),
        &format!("one=orders&csrf={viewer_csrf}"),
    );
    assert_eq!(forced.status, 403, "{}", forced.text());
    assert!(forced.text().contains("viewer"), "{}", forced.text());
    assert!(cli_state(&site, "orders").contains("listening"));
    browser.goto(&format!("{origin}/messages"));
    browser.wait_for("table#messages");
    assert!(browser
        .source()
        .contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
    assert_eq!(
        browser.execute("return window.pwned === undefined;", vec![]),
        serde_json::Value::Bool(true)
    );
    // A password change ends the viewer's sessions.
    let mut child = Command::new(env!("CARGO_BIN_EXE_atom"))
        .arg("-c")
        .arg(site.config())
        .args(["users", "passwd", "vic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("atom users passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"viewer password 2\n")
        .expect("password");
    assert!(child.wait().expect("passwd ends").success());
    browser.goto(&format!("{origin}/listeners"));
    browser.wait_for("form.login");

    // An operator's change needs the token, from the console's own origin.
    log_in(&browser, console, "ana", OPERATOR_PASSWORD);
    browser.goto(&format!("{origin}/listeners"));
    browser.wait_for("table#listeners");
    let cookie = session_cookie(&browser);
    let csrf = csrf_token(&browser);
    let without = console_post(
        console,
        "/listeners/pause",
        &cookie,
        Some(&origin),
        "one=orders",
    );
    assert_eq!(without.status, 403, "{}", without.text());
    assert!(
        without.text().contains("security token"),
        "{}",
        without.text()
    );
    let wrong = console_post(
        console,
        "/listeners/pause",
        &cookie,
        Some(&origin),
        "one=orders&csrf=0000",
    );
    assert_eq!(wrong.status, 403);
    let elsewhere = console_post(
        console,
        "/listeners/pause",
        &cookie,
        Some("http://evil.example"),
        &format!("one=orders&csrf={csrf}"),
    );
    assert_eq!(elsewhere.status, 403);
    assert!(cli_state(&site, "orders").contains("listening"));
    let allowed = console_post(
        console,
        "/listeners/pause",
        &cookie,
        Some(&origin),
        &format!("one=orders&csrf={csrf}"),
    );
    assert_eq!(allowed.status, 303, "{}", allowed.text());
    assert!(cli_state(&site, "orders").contains("paused"));
    browser.goto(&format!("{origin}/audit"));
    let audit = browser.find("table#audit").text();
    assert!(
        audit.contains("refused: the form's security token"),
        "{audit}"
    );
    assert!(audit.contains("refused: your role (viewer)"), "{audit}");

    // Five wrong passwords, then even the right one waits.
    browser.find("header form.who button").click();
    browser.wait_for("form.login");
    for _ in 0..5 {
        log_in(&browser, console, "ana", "not the password");
        browser.wait_for_text("Wrong user name or password.");
    }
    log_in(&browser, console, "ana", OPERATOR_PASSWORD);
    browser.wait_for_text("Too many failed log-ins");
    assert!(browser.try_find("table#listeners").is_none());
    let raw = post(
        console,
        "/login",
        &[(
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )],
        format!("user=ana&password={}", OPERATOR_PASSWORD.replace(' ', "+")).as_bytes(),
    );
    assert_eq!(raw.status, 429);
    let retry: u64 = raw
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=30).contains(&retry), "{retry}");
}

#[test]
fn console_over_https_marks_its_session_cookie_secure() {
    let site = Site::new("");
    let config = std::fs::read_to_string(site.config()).expect("atom.yaml");
    let config = config.replace(
        "console:\n  address: 127.0.0.1:0\n",
        "console:\n  address: 127.0.0.1:0\n  https_keystore_name: atom-https\n",
    );
    std::fs::write(site.config(), config).expect("atom.yaml");
    add_console_user(&site, "ana", "operator", OPERATOR_PASSWORD);
    let atom = site.start();
    let console = atom.console.expect("console address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            // The self-signed pair made for the first run.
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let answer = client
            .post(format!("https://{console}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "user=ana&password={}",
                OPERATOR_PASSWORD.replace(' ', "+")
            ))
            .send()
            .await
            .expect("log-in over HTTPS");
        assert_eq!(answer.status().as_u16(), 303);
        let cookie = answer
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("session cookie")
            .to_string();
        for attribute in ["Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
        }
        // Plain HTTP on the console's port gets no page.
        let plain = client.get(format!("http://{console}/login")).send().await;
        assert!(
            plain.map(|r| !r.status().is_success()).unwrap_or(true),
            "the HTTPS console answered plain HTTP"
        );
    });
}
