//! Listeners: state, partner IDs, counts and the last error of each;
//! filter by state; pause, resume or restart one, a selection, or all.

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::{client_address, require, require_change, Form};
use crate::console::html::{csrf_field, esc, or_dash};
use crate::console::users::Role;
use crate::console::{see_other, ConsoleState};
use crate::listeners::ListenerState;

#[derive(serde::Deserialize)]
pub struct Filter {
    state: Option<String>,
}

fn state_name(state: &ListenerState) -> &'static str {
    match state {
        ListenerState::Listening => "listening",
        ListenerState::Paused => "paused",
        ListenerState::Errored(_) => "errored",
    }
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    filter: web::Query<Filter>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let wanted = filter.state.as_deref().unwrap_or("all");
    let mut listeners = state.admin.registry.list();
    listeners.sort_by(|a, b| a.id.cmp(&b.id));
    let count = |name: &str| {
        listeners
            .iter()
            .filter(|l| name == "all" || state_name(&l.state) == name)
            .count()
    };
    let mut body = String::from(r#"<nav class="tabs" aria-label="Filter by state">"#);
    for name in ["all", "listening", "paused", "errored"] {
        let current = if name == wanted { "true" } else { "false" };
        let _ = write!(
            body,
            r#"<a href="/listeners?state={name}" aria-current="{current}">{} ({})</a>"#,
            capitalised(name),
            count(name)
        );
    }
    body.push_str("</nav>");
    let operator = session.role == Role::Operator;
    let disabled = if operator { "" } else { " disabled" };
    // One form for the selection and the "all" buttons; each row's own
    // buttons name their listener through the button's value.
    let _ = write!(
        body,
        r#"<form method="post" id="listeners-form">{csrf}<div class="actions">
<span class="muted">Selected:</span>
<button type="submit" formaction="/listeners/pause"{disabled}>Pause</button>
<button type="submit" formaction="/listeners/resume"{disabled}>Resume</button>
<button type="submit" formaction="/listeners/restart"{disabled}>Restart</button>
<span class="muted">All:</span>
<button type="submit" name="all" value="1" formaction="/listeners/pause"{disabled}>Pause all</button>
<button type="submit" name="all" value="1" formaction="/listeners/resume"{disabled}>Resume all</button>
<button type="submit" name="all" value="1" formaction="/listeners/restart"{disabled}>Restart all</button>
{viewer}</div>"#,
        csrf = csrf_field(&session),
        viewer = if operator {
            ""
        } else {
            r#"<span class="muted">(viewers cannot change listeners)</span>"#
        }
    );
    body.push_str(
        r#"<table id="listeners"><thead><tr><th scope="col"><span class="muted">Select</span></th><th scope="col">Listener</th><th scope="col">State</th><th scope="col">AS2-From (partner)</th><th scope="col">AS2-To (us)</th><th scope="col" class="num">Received</th><th scope="col" class="num">Refused</th><th scope="col">Last error</th><th scope="col">Actions</th></tr></thead><tbody>"#,
    );
    let mut shown = 0;
    for listener in &listeners {
        let name = state_name(&listener.state);
        if wanted != "all" && wanted != name {
            continue;
        }
        shown += 1;
        let error = match &listener.state {
            ListenerState::Errored(e) => Some(e.clone()),
            _ => listener.pending_error.clone(),
        };
        let id = esc(&listener.id);
        let _ = write!(
            body,
            r#"<tr data-listener="{id}"><td><input type="checkbox" name="id" value="{id}" aria-label="Select {id}"></td><td>{id}</td><td class="state state-{name}">{name}</td><td>{from}</td><td>{to}</td><td class="num">{received}</td><td class="num">{refused}</td><td>{error}</td>
<td><button type="submit" name="one" value="{id}" formaction="/listeners/pause"{disabled} aria-label="Pause {id}">Pause</button> <button type="submit" name="one" value="{id}" formaction="/listeners/resume"{disabled} aria-label="Resume {id}">Resume</button> <button type="submit" name="one" value="{id}" formaction="/listeners/restart"{disabled} aria-label="Restart {id}">Restart</button></td></tr>"#,
            from = or_dash(listener.as2_from.as_deref()),
            to = or_dash(listener.as2_to.as_deref()),
            received = listener.received,
            refused = listener.refused,
            error = or_dash(error.as_deref()),
        );
    }
    if shown == 0 {
        body.push_str(r#"<tr><td colspan="9" class="muted">No listeners in this state.</td></tr>"#);
    }
    body.push_str("</tbody></table></form>");
    super::ok("Listeners", "/listeners", &session, &body)
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Pause, resume or restart: a row's button (`one`), the ticked boxes
/// (`id`), or `all`.
pub async fn act(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    action: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let action = action.into_inner();
    let all = form.get("all") == Some("1");
    let named = match form.get("one") {
        Some(one) => vec![one.to_string()],
        None => form.all("id"),
    };
    let target = if all {
        "all".to_string()
    } else {
        named.join(",")
    };
    let audit_action = format!("listener.{action}");
    let session = match require_change(&req, &state, &form, Role::Operator, &audit_action, &target)
    {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let registry = state.admin.registry.clone();
    let ids = registry.resolve_ids(&named, all);
    let outcome = if ids.is_empty() {
        Err("select one or more listeners, or use the \"all\" buttons".to_string())
    } else {
        let act = action.clone();
        crate::console::blocking(move || registry.act(&act, &ids)).await
    };
    let notice = match &outcome {
        Ok(results) => results
            .iter()
            .map(|r| format!("{}: {}", r.id, r.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => e.clone(),
    };
    let audited = match &outcome {
        Ok(results) if results.iter().all(|r| r.ok) => "ok".to_string(),
        _ => notice.clone(),
    };
    state.audit.record(
        &session.user,
        &audit_action,
        &target,
        &audited,
        Some(client_address(&req)),
    );
    state.sessions.set_flash(&session.id, notice);
    see_other("/listeners")
}
