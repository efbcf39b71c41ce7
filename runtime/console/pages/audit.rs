//! The audit log: who changed what, from where, when; newest first.

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::require;
use crate::console::html::{esc, or_dash, time};
use crate::console::{blocking, shared, ConsoleState};

const SHOWN: usize = 500;

pub async fn show(req: HttpRequest, state: web::Data<ConsoleState>) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let console = shared(&state);
    let entries = match blocking(move || console.audit.newest(SHOWN)).await {
        Ok(entries) => entries,
        Err(e) => return super::failed(&session, "Audit log", "/audit", &e),
    };
    let mut body = format!(
        r#"<p class="muted">The newest {SHOWN} entries; all of them are in <code>{}</code>.</p>"#,
        crate::console::audit::AUDIT_FILE
    );
    body.push_str(r#"<table id="audit"><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">On</th><th scope="col">Outcome</th><th scope="col">From</th></tr></thead><tbody>"#);
    for e in &entries {
        let class = if e.outcome == "ok" || e.outcome.starts_with("ok:") {
            "ok"
        } else {
            "bad"
        };
        let _ = write!(
            body,
            r#"<tr><td>{at}</td><td>{user}</td><td>{action}</td><td class="mono">{target}</td><td class="{class}">{outcome}</td><td>{address}</td></tr>"#,
            at = esc(&time(&e.at)),
            user = esc(&e.user),
            action = esc(&e.action),
            target = esc(&e.target),
            outcome = esc(&e.outcome),
            address = or_dash(e.address.as_deref()),
        );
    }
    if entries.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="muted">Nothing recorded yet.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    super::ok("Audit log", "/audit", &session, &body)
}
