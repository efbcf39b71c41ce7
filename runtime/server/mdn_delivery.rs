//! Asynchronous MDN delivery (RFC 4130 section 7.3): the receipt is POSTed
//! to the partner's Receipt-Delivery-Option URL, retried with exponential
//! back-off until it is accepted or the give-up time passes. Receipts not
//! yet delivered are `pending` in the store and are queued again when the
//! runtime starts, so a restart does not lose them. At shutdown, delivery
//! stops between attempts: an attempt under way may finish (the drain
//! waits for it), no new one starts, and what is left stays `pending`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::mdn_target::MdnTargetPolicy;
use crate::admin::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// One receipt to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub record_id: i64,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The receiving listener's allowed targets, checked before each attempt.
    pub targets: Arc<MdnTargetPolicy>,
}

/// Retry policy (from `async_mdn` in atom.yaml).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
}

/// Hands receipts to the delivery task.
#[derive(Clone)]
pub struct MdnSender {
    queue: mpsc::UnboundedSender<Delivery>,
    /// Every delivery task, for the drain to wait on.
    tasks: TaskTracker,
}

impl MdnSender {
    /// Starts the delivery task on the current tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        shutdown: Shutdown,
    ) -> MdnSender {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Delivery>();
        let client = client_builder().build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "building the MDN HTTP client; using defaults");
            reqwest::Client::new()
        });
        let tasks = TaskTracker::new();
        let spawner = tasks.clone();
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    job = jobs.recv() => job,
                    _ = shutdown.triggered() => None,
                };
                let Some(job) = job else { return };
                let (client, store, metrics) = (client.clone(), store.clone(), metrics.clone());
                spawner.spawn(deliver(
                    client,
                    store,
                    metrics,
                    policy,
                    job,
                    shutdown.clone(),
                ));
            }
        });
        MdnSender { queue, tasks }
    }

    /// Waits (up to `deadline`) for deliveries under way to end; after a
    /// shutdown they end at their next pause between attempts.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        self.tasks.close();
        tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok()
    }

    pub fn send(&self, delivery: Delivery) {
        if self.queue.send(delivery).is_err() {
            tracing::error!("MDN delivery task has stopped; receipt stays pending until restart");
        }
    }
}

/// No redirects: a redirect could lead to a target nobody checked.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("atom/", env!("CARGO_PKG_VERSION")))
}

async fn deliver(
    client: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    job: Delivery,
    shutdown: Shutdown,
) {
    let started = std::time::Instant::now();
    let mut delay = policy.first_delay;
    let mut attempt = 1u32;
    loop {
        let target = match job.targets.resolve(&job.url).await {
            Ok(target) => target,
            Err(reason) => {
                metrics.async_mdns.with_label_values(&["refused"]).inc();
                tracing::warn!(record = job.record_id, url = %job.url, %reason, "asynchronous MDN target refused");
                update(&store, job.record_id, "refused").await;
                return;
            }
        };
        let pinned;
        let client = match &target.pin {
            // Connect to the address that was checked, not to a new lookup.
            Some((host, addr)) => match client_builder().resolve(host, *addr).build() {
                Ok(c) => {
                    pinned = c;
                    &pinned
                }
                Err(e) => {
                    tracing::error!(error = %e, "building a pinned MDN client");
                    &client
                }
            },
            None => &client,
        };
        let mut request = client.post(target.url.clone()).body(job.body.clone());
        for (name, value) in &job.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let outcome = match request.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("HTTP {}", resp.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                metrics.async_mdns.with_label_values(&["delivered"]).inc();
                tracing::info!(record = job.record_id, url = %job.url, attempt, "asynchronous MDN delivered");
                update(&store, job.record_id, "delivered").await;
                return;
            }
            Err(reason) => {
                metrics.async_mdns.with_label_values(&["retry"]).inc();
                if started.elapsed() + delay > policy.give_up_after {
                    metrics.async_mdns.with_label_values(&["failed"]).inc();
                    tracing::error!(record = job.record_id, url = %job.url, attempt, %reason, "giving up on asynchronous MDN");
                    update(&store, job.record_id, "failed").await;
                    return;
                }
                tracing::warn!(record = job.record_id, url = %job.url, attempt, %reason, retry_in = ?delay, "asynchronous MDN not delivered");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.triggered() => {
                        tracing::info!(record = job.record_id, "shutting down: asynchronous MDN stays pending for the next start");
                        return;
                    }
                }
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
        }
    }
}

async fn update(store: &Arc<dyn Store>, id: i64, status: &'static str) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.set_mdn_status(id, status)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(record = id, error = %e, "saving MDN status"),
        Err(e) => tracing::error!(record = id, error = %e, "saving MDN status"),
    }
}
