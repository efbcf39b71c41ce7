//! Overview: messages and errors per minute over the last hours (a chart
//! drawn as SVG on the server), executions by status, queue depths and
//! listener states.

use std::collections::HashMap;
use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::console::auth::require;
use crate::console::html::esc;
use crate::console::{blocking, shared, ConsoleState};
use crate::listeners::ListenerState;
use crate::store::Activity;

#[derive(serde::Deserialize)]
pub struct Query {
    hours: Option<u32>,
}

const CHART_WIDTH: f64 = 1200.0;
const CHART_HEIGHT: f64 = 180.0;
const AXIS: f64 = 22.0;

pub async fn show(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    query: web::Query<Query>,
) -> HttpResponse {
    let session = match require(&req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let hours = query.hours.unwrap_or(3).clamp(1, 48);
    let now = time::OffsetDateTime::now_utc();
    let start = now - time::Duration::hours(i64::from(hours));
    // Whole minutes: the chart's first slot starts on a minute.
    let start = start
        .replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(start);
    let since = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let console = shared(&state);
    let activity = match blocking(move || {
        console
            .admin
            .store
            .activity(&since)
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(activity) => activity,
        Err(e) => return super::failed(&session, "Overview", "/", &e),
    };
    let mut body = String::from(r#"<nav class="tabs" aria-label="Time span">"#);
    for h in [1, 3, 12, 24] {
        let current = if h == hours { "true" } else { "false" };
        let _ = write!(
            body,
            r#"<a href="/?hours={h}" aria-current="{current}">{h} h</a>"#
        );
    }
    body.push_str("</nav>");
    let (messages, errors) = activity
        .per_minute
        .iter()
        .fold((0u64, 0u64), |(m, e), c| (m + c.messages, e + c.errors));
    let listeners = state.admin.registry.list();
    let count_state = |wanted: &str| {
        listeners
            .iter()
            .filter(|l| {
                matches!(
                    (&l.state, wanted),
                    (ListenerState::Listening, "listening")
                        | (ListenerState::Paused, "paused")
                        | (ListenerState::Errored(_), "errored")
                )
            })
            .count()
    };
    let queued: u64 = activity
        .executions_by_status
        .iter()
        .filter(|(s, _)| s == crate::store::status::STARTED || s == crate::store::status::INPROCESS)
        .map(|(_, n)| n)
        .sum();
    let outbox_waiting: u64 = activity
        .outbox_by_state
        .iter()
        .filter(|(s, _)| !matches!(s.as_str(), "delivered" | "failed" | "cancelled" | "sent"))
        .map(|(_, n)| n)
        .sum();
    let card = |value: String, label: &str, class: &str| {
        format!(
            r#"<div class="card"><div class="value {class}">{value}</div><div class="label">{label}</div></div>"#
        )
    };
    body.push_str(r#"<div class="cards" id="cards">"#);
    body.push_str(&card(
        messages.to_string(),
        &format!("messages in {hours} h"),
        "",
    ));
    body.push_str(&card(
        errors.to_string(),
        &format!("errors in {hours} h"),
        if errors > 0 { "bad" } else { "ok" },
    ));
    body.push_str(&card(
        queued.to_string(),
        "executions queued or running",
        "",
    ));
    body.push_str(&card(
        activity.pending_async_mdns.to_string(),
        "async MDNs pending",
        "",
    ));
    body.push_str(&card(
        outbox_waiting.to_string(),
        "outbound messages waiting",
        "",
    ));
    body.push_str(&card(
        format!(
            "{} / {} / {}",
            count_state("listening"),
            count_state("paused"),
            count_state("errored")
        ),
        "listeners listening / paused / errored",
        if count_state("errored") > 0 {
            "bad"
        } else {
            ""
        },
    ));
    body.push_str("</div>");
    body.push_str(&chart(&activity, start, hours));
    body.push_str(r#"<h2>Executions by status</h2><table id="executions-by-status"><thead><tr><th scope="col">Status</th><th scope="col" class="num">Executions</th></tr></thead><tbody>"#);
    for (status, n) in &activity.executions_by_status {
        let _ = write!(
            body,
            r#"<tr><td><a href="/executions?status={s}">{s}</a></td><td class="num">{n}</td></tr>"#,
            s = esc(status)
        );
    }
    body.push_str("</tbody></table>");
    if !activity.outbox_by_state.is_empty() {
        body.push_str(r#"<h2>Outbox</h2><table id="outbox-by-state"><thead><tr><th scope="col">State</th><th scope="col" class="num">Messages</th></tr></thead><tbody>"#);
        for (state, n) in &activity.outbox_by_state {
            let _ = write!(
                body,
                r#"<tr><td>{}</td><td class="num">{n}</td></tr>"#,
                esc(state)
            );
        }
        body.push_str("</tbody></table>");
    }
    super::ok("Overview", "/", &session, &body)
}

/// Bars per minute: all messages, and the errors among them in front.
fn chart(activity: &Activity, start: time::OffsetDateTime, hours: u32) -> String {
    // The current minute is the last slot.
    let slots = (hours * 60) as usize + 1;
    let by_minute: HashMap<&str, (u64, u64)> = activity
        .per_minute
        .iter()
        .map(|c| (c.minute.as_str(), (c.messages, c.errors)))
        .collect();
    let minute_key = |t: time::OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    };
    let counts: Vec<(u64, u64)> = (0..slots)
        .map(|i| {
            let t = start + time::Duration::minutes(i as i64);
            by_minute
                .get(minute_key(t).as_str())
                .copied()
                .unwrap_or((0, 0))
        })
        .collect();
    let peak = counts.iter().map(|c| c.0).max().unwrap_or(0).max(1);
    let slot = CHART_WIDTH / slots as f64;
    let scale = (CHART_HEIGHT - 10.0) / peak as f64;
    let mut svg = format!(
        r#"<svg class="chart" id="activity-chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="chart-title chart-desc"><title id="chart-title">Messages and errors per minute, last {hours} h</title><desc id="chart-desc">Busiest minute: {peak} messages. Blue bars: messages; red: errors. Times UTC.</desc>"#,
        w = CHART_WIDTH,
        h = CHART_HEIGHT + AXIS,
    );
    let _ = write!(
        svg,
        r##"<line x1="0" y1="{y}" x2="{CHART_WIDTH}" y2="{y}" stroke="#9aa5b1"/>"##,
        y = CHART_HEIGHT
    );
    for (i, (messages, errors)) in counts.iter().enumerate() {
        let x = i as f64 * slot;
        if *messages > 0 {
            let h = *messages as f64 * scale;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#3b7dd8"/>"##,
                CHART_HEIGHT - h,
                (slot - 0.5).max(0.5)
            );
        }
        if *errors > 0 {
            let h = *errors as f64 * scale;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#c0392b"/>"##,
                CHART_HEIGHT - h,
                (slot - 0.5).max(0.5)
            );
        }
    }
    // A time label every hour (every 15 minutes for one hour).
    let every = if hours == 1 {
        15
    } else {
        60 * hours.div_ceil(8) as usize
    };
    for i in (0..=slots).step_by(every) {
        let t = start + time::Duration::minutes(i as i64);
        let x = (i as f64 * slot).min(CHART_WIDTH - 40.0);
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{}" font-size="12" fill="#5b6570">{:02}:{:02}</text>"##,
            CHART_HEIGHT + 16.0,
            t.hour(),
            t.minute()
        );
    }
    let _ = write!(
        svg,
        r##"<text x="4" y="12" font-size="12" fill="#5b6570">{peak}/min</text></svg>"##
    );
    svg
}
