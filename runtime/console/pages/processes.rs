//! Processes: the deployed bundles, the version serving, the mode they run
//! in, their steps, and the error of a newer version that was refused.

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::require;
use crate::console::html::{esc, or_dash};
use crate::console::ConsoleState;
use crate::listeners::ListenerState;

pub async fn show(req: HttpRequest, state: web::Data<ConsoleState>) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut processes = state.admin.registry.processes();
    processes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut body = String::from(
        r#"<table id="processes"><thead><tr><th scope="col">Process</th><th scope="col">Version</th><th scope="col">Mode</th><th scope="col">Steps</th><th scope="col">Most at once</th><th scope="col">State</th><th scope="col">Refused version</th></tr></thead><tbody>"#,
    );
    for p in &processes {
        let mode = p.mode.unwrap_or(state.admin.default_mode);
        let (state_name, error) = match &p.state {
            ListenerState::Listening => ("listening", None),
            ListenerState::Paused => ("paused", None),
            ListenerState::Errored(e) => ("errored", Some(e.as_str())),
        };
        let steps = p
            .steps
            .iter()
            .map(|s| esc(s))
            .collect::<Vec<_>>()
            .join("<br>");
        let refused = error.or(p.pending_error.as_deref());
        let _ = write!(
            body,
            r#"<tr><td>{name}</td><td class="mono">{version}</td><td>{mode}{own}</td><td class="mono">{steps}</td><td class="num">{most}</td><td class="state state-{state_name}">{state_name}</td><td>{refused}</td></tr>"#,
            name = esc(&p.name),
            version = or_dash(p.version.as_deref()),
            mode = mode.as_str(),
            own = if p.mode.is_some() {
                ""
            } else {
                r#" <span class="muted">(default)</span>"#
            },
            most = p
                .max_concurrent_executions
                .map(|n| n.to_string())
                .unwrap_or_else(|| "—".into()),
            refused = or_dash(refused),
        );
    }
    if processes.is_empty() {
        body.push_str(r#"<tr><td colspan="7" class="muted">No bundles deployed: put one in the processes folder.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    super::ok("Processes", "/processes", &session, &body)
}
