//! Messages (Process Reporting for AS2): search the message log by its
//! tracked properties, a page at a time; one message with its security,
//! MIC and the MDN as sent; downloads of the payload, the raw request and
//! the MDN.

use std::fmt::Write;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::require;
use crate::console::html::{esc, or_dash, query_value, size, time};
use crate::console::{blocking, shared, ConsoleState};
use crate::store::{DispositionFilter, MessageRow, MessageSearch};

const PAGE_SIZE: u32 = 50;
/// The MDN shown on a message's page is cut here (the download is whole).
const MDN_SHOWN_BYTES: usize = 64 * 1024;

/// The search form's fields, as the query string carries them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    file_name: String,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<i64>,
}

fn filled(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

impl Query {
    fn search(&self) -> Result<MessageSearch, String> {
        let disposition = match self.disposition.as_str() {
            "" => None,
            "processed" => Some(DispositionFilter::Processed),
            "error" => Some(DispositionFilter::Error),
            other => return Err(format!("unknown disposition {other:?}")),
        };
        Ok(MessageSearch {
            as2_from: filled(&self.from),
            as2_to: filled(&self.to),
            message_id: filled(&self.message_id),
            subject: filled(&self.subject),
            file_name: filled(&self.file_name),
            mime_type: filled(&self.mime_type),
            disposition,
            received_from: filled(&self.since),
            received_to: filled(&self.until),
            before_id: self.before,
            limit: PAGE_SIZE,
        })
    }

    /// The query string of this search without the page position.
    fn without_page(&self) -> String {
        let fields = [
            ("from", &self.from),
            ("to", &self.to),
            ("message_id", &self.message_id),
            ("subject", &self.subject),
            ("file_name", &self.file_name),
            ("mime_type", &self.mime_type),
            ("disposition", &self.disposition),
            ("since", &self.since),
            ("until", &self.until),
        ];
        fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", query_value(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn form(&self) -> String {
        use super::{input, select};
        format!(
            r#"<form class="filters" method="get" action="/messages" role="search">{}{}{}{}{}{}{}{}{}<button class="primary" type="submit">Search</button> <a href="/messages">Clear</a></form>
<p class="muted">AS2-From, AS2-To, Message-ID and MIME type match exactly; Subject and File name match from their start. Dates: <code>YYYY-MM-DD</code> or <code>YYYY-MM-DDTHH:MM</code>, UTC.</p>"#,
            input("from", "AS2-From", &self.from, "text"),
            input("to", "AS2-To", &self.to, "text"),
            input("message_id", "Message-ID", &self.message_id, "text"),
            input("subject", "Subject", &self.subject, "text"),
            input("file_name", "File name", &self.file_name, "text"),
            input("mime_type", "MIME type", &self.mime_type, "text"),
            select(
                "disposition",
                "Disposition",
                &[("", "any"), ("processed", "processed"), ("error", "errors")],
                &self.disposition
            ),
            input("since", "Received from", &self.since, "text"),
            input("until", "Received before", &self.until, "text"),
        )
    }
}

/// Security used, in a few words.
fn security(row: &MessageRow) -> String {
    let r = &row.record;
    let mut parts = Vec::new();
    if let Some(e) = &r.encryption {
        parts.push(format!("encrypted {e}"));
    }
    if let Some(s) = &r.signature {
        parts.push(format!("signed {s}"));
    }
    if let Some(c) = &r.compression {
        parts.push(format!("compressed {c}"));
    }
    if parts.is_empty() {
        "plain".into()
    } else {
        parts.join(", ")
    }
}

fn disposition_class(disposition: &str) -> &'static str {
    if disposition == "processed" {
        "ok"
    } else {
        "bad"
    }
}

pub async fn search(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    query: web::Query<Query>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let query = query.into_inner();
    let mut body = query.form();
    let search = match query.search() {
        Ok(search) => search,
        Err(e) => {
            body.push_str(&crate::console::html::error(&e));
            return super::ok("Messages", "/messages", &session, &body);
        }
    };
    let console = shared(&state);
    let started = std::time::Instant::now();
    let rows = blocking(move || {
        console
            .admin
            .store
            .search_messages(&search)
            .map_err(|e| e.to_string())
    })
    .await;
    let took = started.elapsed();
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // A bad date is the user's to fix: show it beside the form.
            body.push_str(&crate::console::html::error(&e));
            return super::ok("Messages", "/messages", &session, &body);
        }
    };
    let _ = write!(
        body,
        r#"<p class="muted" id="result-count">{} message{} shown, newest first ({} ms).</p>"#,
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        took.as_millis()
    );
    body.push_str(
        r#"<table id="messages"><thead><tr><th scope="col">ID</th><th scope="col">Received</th><th scope="col">AS2-From</th><th scope="col">AS2-To</th><th scope="col">Message-ID</th><th scope="col">Subject</th><th scope="col">File name</th><th scope="col" class="num">Size</th><th scope="col">Disposition</th><th scope="col">MDN</th></tr></thead><tbody>"#,
    );
    for row in &rows {
        let r = &row.record;
        let _ = write!(
            body,
            r#"<tr><td><a href="/messages/{id}">{id}</a></td><td>{received}</td><td>{from}</td><td>{to}</td><td class="mono">{mid}</td><td>{subject}</td><td>{file}</td><td class="num">{size}</td><td class="{class}">{disposition}</td><td>{mdn_mode} · {mdn_status}</td></tr>"#,
            id = row.id,
            received = esc(&time(&r.received_at)),
            from = esc(&r.as2_from),
            to = esc(&r.as2_to),
            mid = esc(&r.message_id),
            subject = or_dash(r.subject.as_deref()),
            file = or_dash(r.file_name.as_deref()),
            size = r.payload_size.map(size).unwrap_or_else(|| "—".into()),
            class = disposition_class(&r.disposition),
            disposition = esc(&r.disposition),
            mdn_mode = esc(&r.mdn_mode),
            mdn_status = esc(&r.mdn_status),
        );
    }
    if rows.is_empty() {
        body.push_str(r#"<tr><td colspan="10" class="muted">No message matches.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    let base = query.without_page();
    let joiner = if base.is_empty() { "" } else { "&" };
    body.push_str(r#"<nav class="pager" aria-label="Pages">"#);
    if query.before.is_some() {
        let _ = write!(body, r#"<a href="/messages?{base}">Newest</a>"#);
    }
    if rows.len() == PAGE_SIZE as usize {
        if let Some(last) = rows.last() {
            let _ = write!(
                body,
                r#"<a href="/messages?{base}{joiner}before={}" rel="next">Older →</a>"#,
                last.id
            );
        }
    }
    body.push_str("</nav>");
    super::ok("Messages", "/messages", &session, &body)
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    id: web::Path<i64>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let id = id.into_inner();
    let console = shared(&state);
    let row = blocking(move || console.admin.store.message(id).map_err(|e| e.to_string())).await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => {
            return super::failed(
                &session,
                "Message",
                "/messages",
                &format!("no message {id}"),
            )
        }
        Err(e) => return super::failed(&session, "Message", "/messages", &e),
    };
    let r = &row.record;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p><a href="/messages">← Messages</a></p><h2>Tracked properties</h2><dl class="props" id="message-props">
<dt>Received</dt><dd>{received}</dd><dt>Listener</dt><dd>{listener}</dd>
<dt>AS2-From</dt><dd>{from}</dd><dt>AS2-To</dt><dd>{to}</dd>
<dt>Message-ID</dt><dd class="mono">{mid}</dd><dt>Subject</dt><dd>{subject}</dd>
<dt>File name</dt><dd>{file}</dd><dt>MIME type</dt><dd>{mime}</dd>
<dt>Request size</dt><dd>{request_size}</dd><dt>Payload size</dt><dd>{payload_size}</dd>
<dt>Disposition</dt><dd class="{class}">{disposition}</dd><dt>Error</dt><dd>{error}</dd></dl>
<h2>Security</h2><dl class="props"><dt>Used</dt><dd>{security}</dd><dt>MIC</dt><dd class="mono">{mic}</dd></dl>
<h2>MDN</h2><dl class="props"><dt>Mode</dt><dd>{mdn_mode}</dd><dt>Status</dt><dd>{mdn_status}</dd><dt>Asynchronous URL</dt><dd>{mdn_url}</dd><dt>Delivery error</dt><dd>{mdn_error}</dd></dl>"#,
        received = esc(&time(&r.received_at)),
        listener = or_dash(r.listener.as_deref()),
        from = esc(&r.as2_from),
        to = esc(&r.as2_to),
        mid = esc(&r.message_id),
        subject = or_dash(r.subject.as_deref()),
        file = or_dash(r.file_name.as_deref()),
        mime = or_dash(r.mime_type.as_deref()),
        request_size = size(r.request_size),
        payload_size = r.payload_size.map(size).unwrap_or_else(|| "—".into()),
        class = disposition_class(&r.disposition),
        disposition = esc(&r.disposition),
        error = or_dash(r.error.as_deref()),
        security = esc(&security(&row)),
        mic = or_dash(r.mic.as_deref()),
        mdn_mode = esc(&r.mdn_mode),
        mdn_status = esc(&r.mdn_status),
        mdn_url = or_dash(r.mdn_url.as_deref()),
        mdn_error = or_dash(r.mdn_error.as_deref()),
    );
    body.push_str(r#"<h2>Downloads</h2><ul class="downloads">"#);
    let mut link = |part: &str, label: &str, present: bool| {
        if present {
            let _ = write!(
                body,
                r#"<li><a id="download-{part}" href="/messages/{}/download/{part}" download>{label}</a></li>"#,
                row.id
            );
        } else {
            let _ = write!(body, r#"<li class="muted">{label}: not kept</li>"#);
        }
    };
    link("payload", "Payload", r.payload_path.is_some());
    link(
        "raw",
        "Raw request (headers and body as received)",
        r.raw_path.is_some(),
    );
    link("mdn", "MDN as sent", !r.mdn_body.is_empty());
    body.push_str("</ul>");
    if !r.mdn_body.is_empty() {
        let mut shown = String::new();
        for (name, value) in &r.mdn_headers {
            let _ = writeln!(shown, "{name}: {value}");
        }
        shown.push('\n');
        let cut = r.mdn_body.len().min(MDN_SHOWN_BYTES);
        shown.push_str(&String::from_utf8_lossy(&r.mdn_body[..cut]));
        if cut < r.mdn_body.len() {
            shown.push_str("\n… (cut; download the MDN for all of it)");
        }
        let _ = write!(
            body,
            r#"<h2>The MDN as sent</h2><pre id="mdn">{}</pre>"#,
            esc(&shown)
        );
    }
    super::ok(&format!("Message {}", row.id), "/messages", &session, &body)
}

/// A message part, streamed from the store as the admin API serves it,
/// always as an attachment: a partner's payload never renders as a page
/// of the console.
pub async fn download(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    path: web::Path<(i64, String)>,
) -> HttpResponse {
    if let Err(r) = require(&req, &state) {
        return *r;
    }
    let (id, part) = path.into_inner();
    if !matches!(part.as_str(), "payload" | "raw" | "mdn") {
        return HttpResponse::NotFound().body("download payload, raw or mdn");
    }
    let mut response =
        crate::admin::documents::message_part_response(&state.admin, id, &part).await;
    attachment(&mut response, &format!("message-{id}-{part}"));
    response
}

/// Marks a download as an opaque attachment named `name`.
pub(crate) fn attachment(response: &mut HttpResponse, name: &str) {
    if !response.status().is_success() {
        return;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
}
