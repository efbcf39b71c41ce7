//! Executions: filter by process, status, mode and date; one execution
//! with its timings, documents and process log; rerun from its stored
//! document (operators).

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::{client_address, require, require_change, Form};
use crate::console::html::{csrf_field, esc, or_dash, query_value, size, time};
use crate::console::users::Role;
use crate::console::{blocking, see_other, shared, ConsoleState};
use crate::store::execution_query::ExecutionQuery;
use crate::store::{status, ExecutionFilter, ExecutionRecord};

const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    #[serde(default)]
    process: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Keyset paging: `<queued_at_us>:<id>` of the last row shown.
    #[serde(default)]
    before: String,
}

impl Query {
    fn filter(&self) -> Result<ExecutionFilter, String> {
        let text = |t: &str| Some(t.to_string());
        ExecutionQuery {
            process: text(&self.process),
            status: text(&self.status),
            mode: text(&self.mode),
            since: text(&self.since),
            until: text(&self.until),
            before: text(&self.before),
        }
        .filter(PAGE_SIZE)
    }

    fn without_page(&self) -> String {
        [
            ("process", &self.process),
            ("status", &self.status),
            ("mode", &self.mode),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
    }

    fn form(&self, processes: &[String]) -> String {
        use super::{input, select};
        let mut process_options: Vec<(&str, &str)> = vec![("", "any")];
        process_options.extend(processes.iter().map(|p| (p.as_str(), p.as_str())));
        let mut status_options: Vec<(&str, &str)> = vec![("", "any")];
        status_options.extend(status::ALL.iter().map(|s| (*s, *s)));
        format!(
            r#"<form class="filters" method="get" action="/executions" role="search">{}{}{}{}{}<button class="primary" type="submit">Filter</button> <a href="/executions">Clear</a></form>"#,
            select("process", "Process", &process_options, &self.process),
            select(
                "status",
                "Status",
                &status_options,
                &self.status.to_ascii_uppercase()
            ),
            select(
                "mode",
                "Mode",
                &[
                    ("", "any"),
                    ("general", "General"),
                    ("low_latency_debug", "Low_Latency_Debug")
                ],
                &self.mode
            ),
            input("since", "Queued from", &self.since, "text"),
            input("until", "Queued before", &self.until, "text"),
        )
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        status::COMPLETE => "ok",
        status::COMPLETE_WARN | status::STARTED | status::INPROCESS => "warn",
        _ => "bad",
    }
}

fn ms(us: Option<i64>) -> String {
    us.map(|us| format!("{:.2} ms", us as f64 / 1000.0))
        .unwrap_or_else(|| "—".into())
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    query: web::Query<Query>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let query = query.into_inner();
    let mut processes: Vec<String> = state
        .admin
        .registry
        .processes()
        .into_iter()
        .map(|p| p.name)
        .collect();
    processes.sort();
    let mut body = query.form(&processes);
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(e) => {
            body.push_str(&crate::console::html::error(&e));
            return super::ok("Executions", "/executions", &session, &body);
        }
    };
    let console = shared(&state);
    let rows = blocking(move || {
        console
            .admin
            .store
            .list_executions(&filter)
            .map_err(|e| e.to_string())
    })
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return super::failed(&session, "Executions", "/executions", &e),
    };
    body.push_str(
        r#"<table id="executions"><thead><tr><th scope="col">Execution</th><th scope="col">Process</th><th scope="col">Status</th><th scope="col">Mode</th><th scope="col">Queued</th><th scope="col" class="num">Engine</th><th scope="col" class="num">Documents in / out</th><th scope="col">Error</th></tr></thead><tbody>"#,
    );
    for e in &rows {
        let _ = write!(
            body,
            r#"<tr><td class="mono"><a href="/executions/{link}">{id}</a></td><td>{process}</td><td class="{class}">{status}</td><td>{mode}</td><td>{queued}</td><td class="num">{engine}</td><td class="num">{input} / {output}</td><td>{error}</td></tr>"#,
            link = query_value(&e.id),
            id = esc(&e.id),
            process = esc(&e.process),
            class = status_class(&e.status),
            status = esc(&e.status),
            mode = esc(&e.mode),
            queued = esc(&time(&e.queued_at)),
            engine = ms(e.engine_us),
            input = e.input_documents,
            output = e.output_documents,
            error = or_dash(e.error.as_deref()),
        );
    }
    if rows.is_empty() {
        body.push_str(r#"<tr><td colspan="8" class="muted">No execution matches.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    let base = query.without_page();
    let joiner = if base.is_empty() { "" } else { "&" };
    body.push_str(r#"<nav class="pager" aria-label="Pages">"#);
    if !query.before.is_empty() {
        let _ = write!(body, r#"<a href="/executions?{base}">Newest</a>"#);
    }
    if rows.len() == PAGE_SIZE as usize {
        if let Some(last) = rows.last() {
            let _ = write!(
                body,
                r#"<a href="/executions?{base}{joiner}before={}" rel="next">Older →</a>"#,
                query_value(&format!("{}:{}", last.queued_at_us, last.id))
            );
        }
    }
    body.push_str("</nav>");
    super::ok("Executions", "/executions", &session, &body)
}

async fn load(
    state: &web::Data<ConsoleState>,
    id: String,
) -> Result<Option<ExecutionRecord>, String> {
    let console = shared(state);
    blocking(move || {
        console
            .admin
            .store
            .execution(&id)
            .map_err(|e| e.to_string())
    })
    .await
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    id: web::Path<String>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let id = id.into_inner();
    let e = match load(&state, id.clone()).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return super::failed(
                &session,
                "Execution",
                "/executions",
                &format!("no execution {id}"),
            )
        }
        Err(why) => return super::failed(&session, "Execution", "/executions", &why),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p><a href="/executions">← Executions</a></p><dl class="props" id="execution-props">
<dt>Process</dt><dd>{process} (version {version})</dd><dt>Status</dt><dd class="{class}">{status}</dd>
<dt>Mode</dt><dd>{mode}</dd><dt>Attempts</dt><dd>{attempts}</dd>
<dt>Message</dt><dd><a href="/messages/{row}">{row}</a></dd>
<dt>Queued</dt><dd>{queued}</dd><dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd>
<dt>Engine time</dt><dd>{engine} (instantiation {instantiate})</dd>
<dt>Input</dt><dd>{in_docs} document(s), {in_bytes}</dd><dt>Output</dt><dd>{out_docs} document(s), {out_bytes}</dd>
<dt>Node</dt><dd>{owner}</dd><dt>Error</dt><dd>{error}</dd></dl>"#,
        process = esc(&e.process),
        version = esc(&e.version),
        class = status_class(&e.status),
        status = esc(&e.status),
        mode = esc(&e.mode),
        attempts = e.attempts,
        row = e.message_row,
        queued = esc(&time(&e.queued_at)),
        started = e
            .started_at
            .as_deref()
            .map(time)
            .map(|t| esc(&t))
            .unwrap_or_else(|| "—".into()),
        finished = e
            .finished_at
            .as_deref()
            .map(time)
            .map(|t| esc(&t))
            .unwrap_or_else(|| "—".into()),
        engine = ms(e.engine_us),
        instantiate = ms(e.instantiate_us),
        in_docs = e.input_documents,
        in_bytes = size(e.input_bytes),
        out_docs = e.output_documents,
        out_bytes = size(e.output_bytes),
        owner = or_dash(e.owner.as_deref()),
        error = or_dash(e.error.as_deref()),
    );
    if status::is_final(&e.status) {
        let disabled = if session.role == Role::Operator {
            ""
        } else {
            " disabled"
        };
        let _ = write!(
            body,
            r#"<form method="post" action="/executions/{link}/rerun" class="actions">{csrf}<button type="submit" id="rerun"{disabled}>Rerun from the stored document</button></form>"#,
            link = query_value(&e.id),
            csrf = csrf_field(&session),
        );
    }
    body.push_str(r#"<h2>Documents kept</h2>"#);
    if e.documents.is_empty() {
        body.push_str(r#"<p class="muted">None.</p>"#);
    } else {
        body.push_str(r#"<table id="documents"><thead><tr><th scope="col">#</th><th scope="col" class="num">Size</th><th scope="col">Properties</th><th scope="col">Download</th></tr></thead><tbody>"#);
        for (n, doc) in e.documents.iter().enumerate() {
            let properties = doc
                .properties
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                body,
                r#"<tr><td>{n}</td><td class="num">{size}</td><td class="mono">{properties}</td><td><a href="/executions/{link}/documents/{n}" download>Download</a></td></tr>"#,
                n = n + 1,
                size = size(doc.size),
                link = query_value(&e.id),
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        r#"<h2>Process log</h2><pre id="process-log">{}</pre>"#,
        if e.log.is_empty() {
            "(empty)".to_string()
        } else {
            esc(&e.log)
        }
    );
    super::ok(
        &format!("Execution {}", e.id),
        "/executions",
        &session,
        &body,
    )
}

pub async fn download(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    path: web::Path<(String, usize)>,
) -> HttpResponse {
    if let Err(r) = require(&req, &state) {
        return *r;
    }
    let (id, n) = path.into_inner();
    let mut response =
        crate::admin::documents::execution_document_response(&state.admin, id.clone(), n).await;
    super::messages::attachment(&mut response, &format!("{id}-document-{n}"));
    response
}

pub async fn rerun(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = id.into_inner();
    let form = Form::parse(&body);
    let session = match require_change(&req, &state, &form, Role::Operator, "execution.rerun", &id)
    {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let console = shared(&state);
    let wanted = id.clone();
    let outcome = blocking(move || {
        let admin = &console.admin;
        admin
            .executor
            .rerun(&wanted, admin.store.as_ref(), &admin.registry)
            .map_err(|refusal| refusal.to_string())
    })
    .await;
    let address = Some(client_address(&req));
    match outcome {
        Ok(record) => {
            state.audit.record(
                &session.user,
                "execution.rerun",
                &id,
                &format!("ok: {}", record.id),
                address,
            );
            let notice = if record.id == id {
                "Rerun queued: the execution runs again from its stored document.".to_string()
            } else {
                format!("Rerun queued as {} (from {id}).", record.id)
            };
            state.sessions.set_flash(&session.id, notice);
            see_other(&format!("/executions/{}", query_value(&record.id)))
        }
        Err(why) => {
            state.audit.record(
                &session.user,
                "execution.rerun",
                &id,
                &format!("refused: {why}"),
                address,
            );
            state
                .sessions
                .set_flash(&session.id, format!("Rerun refused: {why}"));
            see_other(&format!("/executions/{}", query_value(&id)))
        }
    }
}
