//! Certificates: the keystore, and the certificates each listener pins or
//! uses, with subject, fingerprint and expiry; those expiring within 30
//! days are flagged.

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::certificates::InUse;
use crate::console::auth::require;
use crate::console::html::esc;
use crate::console::{blocking, shared, ConsoleState};

/// Certificates expiring within this many days are flagged.
pub const EXPIRING_DAYS: i64 = 30;

fn collect(state: &ConsoleState) -> Result<Vec<InUse>, String> {
    crate::certificates::inventory(&state.keystore, &state.admin.registry)
}

pub async fn show(req: HttpRequest, state: web::Data<ConsoleState>) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let console = shared(&state);
    let all = match blocking(move || collect(&console)).await {
        Ok(all) => all,
        Err(e) => return super::failed(&session, "Certificates", "/certificates", &e),
    };
    let expiring = all
        .iter()
        .filter(|c| c.days_left().is_some_and(|d| d < EXPIRING_DAYS))
        .count();
    let mut body = format!(
        r#"<p id="expiring-count" class="{}">{expiring} certificate(s) expired or expiring within {EXPIRING_DAYS} days.</p>"#,
        if expiring > 0 { "bad" } else { "ok" }
    );
    body.push_str(r#"<table id="certificates"><thead><tr><th scope="col">Where</th><th scope="col">Use</th><th scope="col">Subject</th><th scope="col">Expires</th><th scope="col" class="num">Days left</th><th scope="col">SHA-256 fingerprint</th></tr></thead><tbody>"#);
    for c in &all {
        let (class, flag) = match c.days_left() {
            Some(d) if d < 0 => ("bad", " (EXPIRED)"),
            Some(d) if d < EXPIRING_DAYS => ("bad", " (expiring)"),
            _ => ("", ""),
        };
        let _ = write!(
            body,
            r#"<tr class="{class}"><td>{owner}</td><td>{role}</td><td>{subject}</td><td>{not_after}{flag}</td><td class="num">{days}</td><td class="mono">{fingerprint}</td></tr>"#,
            owner = esc(&c.owner),
            role = c.role,
            subject = esc(&c.subject),
            not_after = esc(&c.not_after),
            days = c
                .days_left()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "?".into()),
            fingerprint = esc(&c.fingerprint),
        );
    }
    if all.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="muted">The keystore is empty and no listener pins a certificate.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    super::ok("Certificates", "/certificates", &session, &body)
}
