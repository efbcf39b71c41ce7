//! The browser harness (tests/common/webdriver.rs) checked on its own,
//! against a static page served from this process: if these fail, the
//! console's browser tests cannot be trusted either.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use webdriver::{require_browser, Browser, HEIGHT, WIDTH};

const FORM: &str = r#"<!doctype html>
<html><head><title>Harness form</title></head>
<body>
<h1 id="greeting">Nobody yet</h1>
<form onsubmit="return false">
  <input id="name" name="name" value="">
  <label><input type="checkbox" id="agree"> agree</label>
  <ul id="list"><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
  <button type="button" id="greet"
    onclick="document.getElementById('greeting').textContent = 'Hello, ' + document.getElementById('name').value">Greet</button>
  <button type="button" id="ask"
    onclick="document.getElementById('greeting').textContent = confirm('Really?') ? 'Confirmed' : 'Cancelled'">Ask</button>
  <a id="next" href="/next">next</a>
</form>
</body></html>"#;

const NEXT: &str =
    "<!doctype html><html><head><title>Next page</title></head><body><p>Second page</p></body></html>";

/// Serves the two pages on a free loopback port until the process ends,
/// one thread per connection: Chromium opens speculative connections that
/// send nothing, which would stall a one-at-a-time server.
fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let address = listener.local_addr().expect("page server address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    address
}

fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let response = match path {
        "/" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Set-Cookie: sid=abc123; Path=/; HttpOnly; SameSite=Strict\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{FORM}",
            FORM.len()
        ),
        "/next" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{NEXT}",
            NEXT.len()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = stream.write_all(response.as_bytes());
}

#[test]
fn drives_a_page() {
    if !require_browser() {
        return;
    }
    let site = serve();
    let browser = Browser::start();
    let home = format!("http://{site}/");
    browser.goto(&home);
    assert_eq!(browser.title(), "Harness form");
    assert_eq!(browser.url(), home);
    assert!(browser.source().contains("Nobody yet"));

    // Typing, clearing and clicking, seen through the page's own script.
    let name = browser.find("#name");
    name.send_keys("someone");
    name.clear();
    name.send_keys("Ana");
    assert_eq!(name.attr("value").as_deref(), Some("Ana"));
    assert_eq!(name.attr("name").as_deref(), Some("name"));
    assert_eq!(name.attr("data-missing"), None);
    browser.find("#greet").click();
    browser.wait_for_text("Hello, Ana");
    assert_eq!(browser.find("h1").text(), "Hello, Ana");

    let agree = browser.find("#agree");
    assert!(!agree.is_selected());
    assert_eq!(agree.attr("checked"), None);
    agree.click();
    assert!(agree.is_selected());
    assert_eq!(agree.attr("checked").as_deref(), Some("true"));

    // Lookups: several, within an element, absent.
    let list = browser.find("#list");
    assert_eq!(list.tag(), "ul");
    let items: Vec<String> = list.find_all("li.item").iter().map(|e| e.text()).collect();
    assert_eq!(items, ["one", "two", "three"]);
    assert_eq!(
        list.find("li:last-child").attr("class").as_deref(),
        Some("item")
    );
    assert_eq!(browser.find_all(".item").len(), 3);
    assert!(browser.try_find("#absent").is_none());
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        browser.find("#absent");
    }))
    .expect_err("find of an absent element panics");
    let message = missing
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert_eq!(
        message,
        &format!("no element matches \"#absent\" on {home}")
    );
    assert_eq!(
        browser.execute(
            "return arguments[0].children.length + arguments[1];",
            vec![list.reference(), 4.into()]
        ),
        7
    );

    // A confirm() dialog, accepted.
    browser.find("#ask").click();
    assert_eq!(browser.accept_alert(), "Really?");
    browser.wait_for_text("Confirmed");

    // The HttpOnly cookie: in WebDriver's view with its flags, not in the page's.
    let cookie = browser
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "sid")
        .expect("the sid cookie");
    assert_eq!(cookie["value"], "abc123", "{cookie}");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(browser.execute("return document.cookie;", vec![]), "");
    browser.delete_cookies();
    assert!(browser.cookies().is_empty());

    // Navigation and waiting for what the next page shows.
    browser.find("#next").click();
    assert_eq!(browser.wait_for("p").text(), "Second page");
    assert_eq!(browser.title(), "Next page");
    browser.back();
    browser.wait_for("#greet");
    assert_eq!(browser.url(), home);

    // A viewport screenshot of exactly 1280x800, parent directories made.
    let dir = tempfile::tempdir().expect("screenshot directory");
    let path = dir.path().join("nested/shots/form.png");
    browser.screenshot(&path);
    let png = std::fs::read(&path).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().expect("IHDR width"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("IHDR height"));
    assert_eq!((width, height), (WIDTH, HEIGHT));
}
