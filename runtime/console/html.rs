//! HTML for the console, written out by hand: every text from outside
//! (partner headers, file names, errors, user names) goes through
//! [`esc`], and pages carry no script and no inline style, so that the
//! Content-Security-Policy can forbid both.

use std::fmt::Write;

use super::sessions::Session;
use super::users::Role;

/// Escapes text for an HTML element or a quoted attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// An RFC 3339 UTC time as `2026-11-29 00:23:13 UTC`.
pub fn time(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(head) if rfc3339.ends_with('Z') => format!("{} UTC", head.replace('T', " ")),
        _ => rfc3339.to_string(),
    }
}

/// `optional` or an em dash.
pub fn or_dash(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => esc(t),
        _ => "—".into(),
    }
}

/// Byte counts for people.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A message the user must see, announced to screen readers.
pub fn error(text: &str) -> String {
    format!(r#"<p class="error" role="alert">{}</p>"#, esc(text))
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(session: &Session) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&session.csrf)
    )
}

/// The sections of the navigation bar: (path, label).
const SECTIONS: [(&str, &str); 8] = [
    ("/", "Overview"),
    ("/listeners", "Listeners"),
    ("/messages", "Messages"),
    ("/executions", "Executions"),
    ("/outbox", "Outbox"),
    ("/processes", "Processes"),
    ("/certificates", "Certificates"),
    ("/audit", "Audit log"),
];

/// A whole page for a logged-in user. `section` is the navigation entry
/// to mark current; `body` is HTML already escaped.
pub fn page(title: &str, section: &str, session: &Session, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in SECTIONS {
        let current = if path == section {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(nav, r#"<a href="{path}"{current}>{label}</a>"#);
    }
    let flash = session
        .flash
        .as_deref()
        .map(|text| format!(r#"<p class="flash" role="status">{}</p>"#, esc(text)))
        .unwrap_or_default();
    let role = match session.role {
        Role::Operator => "operator",
        Role::Viewer => "viewer",
    };
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Atom</title><link rel="stylesheet" href="/assets/console.css"></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><span class="brand">Atom</span><nav aria-label="Sections">{nav}</nav>
<form class="who" method="post" action="/logout"><span id="who">{user} · {role}</span>{csrf}<button type="submit">Log out</button></form></header>
<main id="main"><h1>{title}</h1>{flash}{body}</main>
<footer>Times are UTC · Atom {version}</footer></body></html>"##,
        title = esc(title),
        user = esc(&session.user),
        csrf = csrf_field(session),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// A page without the navigation: log-in and errors before log-in.
pub fn bare_page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Atom</title><link rel="stylesheet" href="/assets/console.css"></head>
<body class="bare"><main id="main"><h1>{title}</h1>{body}</main></body></html>"#,
        title = esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_partner_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(time("2026-11-29T00:23:13.123Z"), "2026-11-29 00:23:13 UTC");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(query_value("a b&c"), "a+b%26c");
    }
}
