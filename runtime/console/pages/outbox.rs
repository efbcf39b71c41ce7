//! Outbox: what `as2` steps sent or are sending, by partner and status;
//! operators retry a failed or cancelled document, or cancel one still
//! being sent, through the same calls as `atom outbox retry|cancel`.

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::admin::outbox::{cancel_row, retry_row};
use crate::console::auth::{client_address, require, require_change, Form};
use crate::console::html::{csrf_field, esc, or_dash, size, time};
use crate::console::users::Role;
use crate::console::{blocking, see_other, shared, ConsoleState};
use crate::store::outbox::{state as outbox_state, OutboxFilter};

const SHOWN: u32 = 100;

#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    #[serde(default)]
    partner: String,
    #[serde(default)]
    status: String,
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
    let mut statuses: Vec<(&str, &str)> = vec![("", "any")];
    statuses.extend(outbox_state::ALL.iter().map(|s| (*s, *s)));
    let mut body = format!(
        r#"<form class="filters" method="get" action="/outbox" role="search">{}{}<button class="primary" type="submit">Filter</button> <a href="/outbox">Clear</a></form>"#,
        super::input("partner", "Partner", &query.partner, "text"),
        super::select("status", "Status", &statuses, &query.status),
    );
    if !query.status.is_empty() && !outbox_state::ALL.contains(&query.status.as_str()) {
        let _ = write!(
            body,
            r#"<p class="error" role="alert">unknown status {}</p>"#,
            esc(&query.status)
        );
        return super::ok("Outbox", "/outbox", &session, &body);
    }
    let filter = OutboxFilter {
        partner: (!query.partner.trim().is_empty()).then(|| query.partner.trim().to_string()),
        status: (!query.status.is_empty()).then(|| query.status.clone()),
        execution_id: None,
        limit: SHOWN,
    };
    let console = shared(&state);
    let rows = match blocking(move || {
        console
            .admin
            .store
            .outbox_list(&filter)
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(rows) => rows,
        Err(e) => return super::failed(&session, "Outbox", "/outbox", &e),
    };
    let disabled = if session.role == Role::Operator {
        ""
    } else {
        " disabled"
    };
    body.push_str(r#"<table id="outbox"><thead><tr><th scope="col">ID</th><th scope="col">Created</th><th scope="col">Partner</th><th scope="col">Message-ID</th><th scope="col">File name</th><th scope="col" class="num">Size</th><th scope="col">Status</th><th scope="col" class="num">Attempts</th><th scope="col">Last error / receipt</th><th scope="col">Actions</th></tr></thead><tbody>"#);
    for row in &rows {
        let delivered = outbox_state::is_delivered(&row.status);
        let class = if delivered {
            "ok"
        } else if row.status == outbox_state::FAILED {
            "bad"
        } else {
            "warn"
        };
        let mut actions = String::new();
        if matches!(
            row.status.as_str(),
            outbox_state::FAILED | outbox_state::CANCELLED
        ) {
            let _ = write!(
                actions,
                r#"<form method="post" action="/outbox/{id}/retry">{csrf}<button type="submit" aria-label="Retry {id}"{disabled}>Retry</button></form> "#,
                id = row.id,
                csrf = csrf_field(&session)
            );
        }
        if !delivered && row.status != outbox_state::CANCELLED {
            let _ = write!(
                actions,
                r#"<form method="post" action="/outbox/{id}/cancel">{csrf}<button type="submit" aria-label="Cancel {id}"{disabled}>Cancel</button></form>"#,
                id = row.id,
                csrf = csrf_field(&session)
            );
        }
        let _ = write!(
            body,
            r#"<tr data-outbox="{id}"><td>{id}</td><td>{created}</td><td>{partner}</td><td class="mono">{mid}</td><td>{file}</td><td class="num">{size}</td><td class="{class}">{status}</td><td class="num">{attempts}</td><td>{detail}</td><td>{actions}</td></tr>"#,
            id = row.id,
            created = esc(&time(&row.created_at)),
            partner = esc(&row.partner),
            mid = esc(&row.message_id),
            file = or_dash(row.file_name.as_deref()),
            size = size(row.size),
            status = esc(&row.status),
            attempts = row.attempts,
            detail = or_dash(row.last_error.as_deref().or(row.mdn_disposition.as_deref())),
        );
    }
    if rows.is_empty() {
        body.push_str(r#"<tr><td colspan="10" class="muted">Nothing sent yet.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    super::ok("Outbox", "/outbox", &session, &body)
}

/// `retry` or `cancel` one outbound document.
pub async fn act(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    path: web::Path<(i64, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    let form = Form::parse(&body);
    let audit_action = format!("outbox.{action}");
    let session = match require_change(
        &req,
        &state,
        &form,
        Role::Operator,
        &audit_action,
        &id.to_string(),
    ) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let outcome = match action.as_str() {
        "retry" => retry_row(&state.admin, id, false).await,
        "cancel" => cancel_row(&state.admin, id).await,
        _ => return HttpResponse::NotFound().body("use retry or cancel"),
    };
    let (audited, notice) = match outcome {
        Ok(row) => (
            "ok".to_string(),
            format!("Outbound document {id}: {}.", row.status),
        ),
        Err(refusal) => (
            format!("refused: {}", refusal.reason),
            format!("Outbound document {id}: {}", refusal.reason),
        ),
    };
    state.audit.record(
        &session.user,
        &audit_action,
        &id.to_string(),
        &audited,
        Some(client_address(&req)),
    );
    state.sessions.set_flash(&session.id, notice);
    see_other("/outbox")
}
