//! One module per console page. Each handler checks the session first,
//! reads the model off the server thread, and writes escaped HTML.

pub mod audit;
pub mod certificates;
pub mod executions;
pub mod listeners;
pub mod messages;
pub mod outbox;
pub mod overview;
pub mod processes;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::html::{esc, page};
use super::html_response;
use super::sessions::Session;

/// A page that could not read what it shows.
pub(super) fn failed(session: &Session, title: &str, section: &str, why: &str) -> HttpResponse {
    tracing::error!(page = title, error = why, "console page failed");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(title, section, session, &crate::console::html::error(why)),
    )
}

/// A page with a status of 200.
pub(super) fn ok(title: &str, section: &str, session: &Session, body: &str) -> HttpResponse {
    html_response(StatusCode::OK, page(title, section, session, body))
}

/// A select box of `options` (value, label) with `current` chosen.
pub(super) fn select(name: &str, label: &str, options: &[(&str, &str)], current: &str) -> String {
    let mut html = format!(r#"<label>{label}<select name="{name}">"#);
    for (value, text) in options {
        let selected = if *value == current { " selected" } else { "" };
        html.push_str(&format!(
            r#"<option value="{}"{selected}>{}</option>"#,
            esc(value),
            esc(text)
        ));
    }
    html.push_str("</select></label>");
    html
}

/// A text input inside a label.
pub(super) fn input(name: &str, label: &str, value: &str, kind: &str) -> String {
    format!(
        r#"<label>{label}<input type="{kind}" name="{name}" value="{}"></label>"#,
        esc(value)
    )
}
