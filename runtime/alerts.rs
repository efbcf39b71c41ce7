//! Alerts: a certificate nearing expiry (at each of
//! `alerts.expiry_warning_days`, 30, 14, 7 and 1 by default), a listener
//! that became errored, an outbound document that failed for good. Each
//! is logged, counted, and POSTed as JSON to `alerts.webhook_url` when one
//! is set, with retries. One thread looks every `check_interval` and also
//! keeps the certificate expiry gauge current.
//!
//! An alert is raised once per run of Atom: a restart warns again about a
//! certificate still inside a threshold and a listener still errored;
//! documents that failed before the start are not alerted again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::admin::metrics::Metrics;
use crate::config::AlertsConfig;
use crate::keystore::Keystore;
use crate::listeners::{ListenerState, Registry};
use crate::shutdown::Shutdown;
use crate::store::outbox::{state as outbox_state, OutboxFilter};
use crate::store::Store;

/// Webhook attempts per alert, and the first pause between them (doubling).
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Alerts waiting for the webhook; more are logged and dropped.
const QUEUE: usize = 1000;

/// What the webhook receives.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `certificate_expiring`, `certificate_expired`, `listener_errored`,
    /// `send_failed`.
    pub kind: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// The Atom's name (`atom.name`).
    pub atom: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// One line for a person.
    pub summary: String,
    /// The facts, for a machine.
    pub details: serde_json::Value,
}

/// What the checker reads.
pub struct Sources {
    pub atom_name: String,
    pub keystore: Keystore,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

/// Starts the checker thread (and the webhook sender when configured).
pub fn start(config: AlertsConfig, sources: Sources, shutdown: Shutdown) -> Result<(), String> {
    let webhook = match &config.webhook_url {
        Some(url) => Some(Webhook::start(url.clone(), sources.metrics.clone())?),
        None => None,
    };
    std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || {
            let mut checker = Checker {
                config,
                sources,
                webhook,
                warned: HashMap::new(),
                errored: HashSet::new(),
                failed: None,
            };
            loop {
                checker.check();
                if shutdown.wait_timeout(checker.config.check_interval) {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("starting the alerts thread: {e}"))
}

struct Checker {
    config: AlertsConfig,
    sources: Sources,
    webhook: Option<Webhook>,
    /// Per certificate in use: the smallest threshold (days) warned about.
    warned: HashMap<(String, &'static str, String), u32>,
    /// Listeners alerted as errored (until they recover).
    errored: HashSet<String>,
    /// Failed outbox rows already known; `None` before the first look.
    failed: Option<HashSet<i64>>,
}

impl Checker {
    fn check(&mut self) {
        self.certificates();
        self.listeners();
        self.sends();
    }

    fn raise(&self, alert: Alert) {
        match alert.severity {
            "critical" => {
                tracing::error!(kind = alert.kind, summary = %alert.summary, details = %alert.details, "alert")
            }
            _ => {
                tracing::warn!(kind = alert.kind, summary = %alert.summary, details = %alert.details, "alert")
            }
        }
        match &self.webhook {
            Some(webhook) => webhook.send(alert),
            None => {
                self.sources
                    .metrics
                    .alerts
                    .with_label_values(&[alert.kind, "logged"])
                    .inc();
            }
        }
    }

    fn alert(
        &self,
        kind: &'static str,
        severity: &'static str,
        summary: String,
        details: serde_json::Value,
    ) -> Alert {
        Alert {
            kind,
            severity,
            atom: self.sources.atom_name.clone(),
            at: crate::server::inbound::now_rfc3339(),
            summary,
            details,
        }
    }

    fn certificates(&mut self) {
        let all =
            match crate::certificates::inventory(&self.sources.keystore, &self.sources.registry) {
                Ok(all) => all,
                Err(e) => {
                    tracing::error!(error = %e, "alerts: reading the certificates failed");
                    return;
                }
            };
        let gauge = &self.sources.metrics.certificate_expiry;
        gauge.reset();
        for cert in &all {
            let Some(seconds) = cert.seconds_left else {
                continue;
            };
            gauge
                .with_label_values(&[cert.owner.as_str(), cert.role, cert.fingerprint.as_str()])
                .set(seconds);
            // The smallest threshold it is inside, if any.
            let inside = self
                .config
                .expiry_warning_days
                .iter()
                .copied()
                .filter(|days| seconds <= i64::from(*days) * 86_400)
                .min();
            let Some(threshold) = inside else {
                continue;
            };
            let key = (cert.owner.clone(), cert.role, cert.fingerprint.clone());
            if self
                .warned
                .get(&key)
                .is_some_and(|warned| *warned <= threshold)
            {
                continue;
            }
            self.warned.insert(key, threshold);
            let expired = seconds <= 0;
            let (kind, severity) = if expired {
                ("certificate_expired", "critical")
            } else if threshold <= 7 {
                ("certificate_expiring", "critical")
            } else {
                ("certificate_expiring", "warning")
            };
            let summary = if expired {
                format!(
                    "{} ({}) has expired: {}",
                    cert.owner, cert.role, cert.subject
                )
            } else {
                format!(
                    "{} ({}) expires in {} day(s), on {}: {}",
                    cert.owner,
                    cert.role,
                    seconds / 86_400,
                    cert.not_after,
                    cert.subject
                )
            };
            let details = serde_json::json!({
                "owner": cert.owner,
                "use": cert.role,
                "subject": cert.subject,
                "fingerprint": cert.fingerprint,
                "not_after": cert.not_after,
                "seconds_left": seconds,
                "threshold_days": threshold,
            });
            let alert = self.alert(kind, severity, summary, details);
            self.raise(alert);
        }
    }

    fn listeners(&mut self) {
        let mut now_errored = HashSet::new();
        for listener in self.sources.registry.list() {
            let ListenerState::Errored(error) = &listener.state else {
                continue;
            };
            now_errored.insert(listener.id.clone());
            if self.errored.contains(&listener.id) {
                continue;
            }
            let alert = self.alert(
                "listener_errored",
                "critical",
                format!("listener {} is errored: {error}", listener.id),
                serde_json::json!({
                    "listener": listener.id,
                    "as2_from": listener.as2_from,
                    "as2_to": listener.as2_to,
                    "error": error,
                }),
            );
            self.raise(alert);
        }
        // A listener that recovered is alerted again if it errors again.
        self.errored = now_errored;
    }

    fn sends(&mut self) {
        let filter = OutboxFilter {
            partner: None,
            status: Some(outbox_state::FAILED.into()),
            execution_id: None,
            limit: 500,
        };
        let rows = match self.sources.store.outbox_list(&filter) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: reading the outbox failed");
                return;
            }
        };
        let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let Some(known) = self.failed.replace(ids.clone()) else {
            return;
        };
        for row in rows.iter().filter(|r| !known.contains(&r.id)) {
            let alert = self.alert(
                "send_failed",
                "critical",
                format!(
                    "sending {} to {} failed for good after {} attempt(s): {}",
                    row.message_id,
                    row.partner,
                    row.attempts,
                    row.last_error.as_deref().unwrap_or("no error recorded")
                ),
                serde_json::json!({
                    "outbox_id": row.id,
                    "partner": row.partner,
                    "message_id": row.message_id,
                    "file_name": row.file_name,
                    "attempts": row.attempts,
                    "error": row.last_error,
                    "execution_id": row.execution_id,
                }),
            );
            self.raise(alert);
        }
    }
}

/// POSTs alerts from a bounded queue on its own thread, with retries.
struct Webhook {
    queue: crossbeam_channel::Sender<Alert>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    fn start(url: String, metrics: Arc<Metrics>) -> Result<Webhook, String> {
        let (queue, alerts) = crossbeam_channel::bounded::<Alert>(QUEUE);
        let counted = metrics.clone();
        std::thread::Builder::new()
            .name("alerts-webhook".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "alerts: no runtime for the webhook; alerts are logged only");
                        return;
                    }
                };
                let client = match reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::error!(error = %e, "alerts: no HTTP client for the webhook; alerts are logged only");
                        return;
                    }
                };
                for alert in alerts {
                    runtime.block_on(deliver(&client, &url, &alert, &counted));
                }
            })
            .map_err(|e| format!("starting the webhook thread: {e}"))?;
        Ok(Webhook { queue, metrics })
    }

    fn send(&self, alert: Alert) {
        let kind = alert.kind;
        if self.queue.try_send(alert).is_err() {
            tracing::error!(kind, "alerts: the webhook queue is full; alert logged only");
            self.metrics
                .alerts
                .with_label_values(&[kind, "dropped"])
                .inc();
        }
    }
}

/// One alert, tried until the receiver answers 2xx or the attempts run out.
async fn deliver(client: &reqwest::Client, url: &str, alert: &Alert, metrics: &Metrics) {
    let mut pause = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let outcome = client.post(url).json(alert).send().await;
        let failure = match outcome {
            Ok(response) if response.status().is_success() => {
                metrics
                    .alerts
                    .with_label_values(&[alert.kind, "delivered"])
                    .inc();
                return;
            }
            Ok(response) => format!("answered {}", response.status()),
            Err(e) => crate::client::describe_reqwest(&e),
        };
        if attempt == ATTEMPTS {
            tracing::error!(kind = alert.kind, url, attempts = ATTEMPTS, error = %failure, "alerts: the webhook did not take the alert");
            metrics
                .alerts
                .with_label_values(&[alert.kind, "failed"])
                .inc();
            return;
        }
        tracing::warn!(kind = alert.kind, url, attempt, error = %failure, retry_in_s = pause.as_secs(), "alerts: webhook attempt failed");
        metrics
            .alerts
            .with_label_values(&[alert.kind, "retried"])
            .inc();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}
