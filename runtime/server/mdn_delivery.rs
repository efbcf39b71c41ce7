//! Asynchronous MDN delivery (RFC 4130 section 7.3): the receipt is POSTed
//! to the partner's Receipt-Delivery-Option URL, retried with exponential
//! back-off until it is accepted or the give-up time passes. Receipts not
//! yet delivered are `pending` in the store under this node's lease
//! ([`crate::process::leases`]): queued again when the node restarts, taken
//! over by another node when this one dies, so that each is delivered by
//! one node and none is lost. At shutdown, delivery stops between
//! attempts: an attempt under way may finish (the drain waits for it), no
//! new one starts, and what is left stays `pending`, its lease given up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::mdn_target::MdnTargetPolicy;
use crate::admin::metrics::Metrics;
use crate::listeners::Registry;
use crate::process::leases::{now_us, Leases};
use crate::shutdown::Shutdown;
use crate::store::{Claim, Store};

/// Pending MDNs claimed at most in one go.
const CLAIM_BATCH: u32 = 1000;

/// One receipt to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub record_id: i64,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The receiving listener's allowed targets, checked before each attempt.
    pub targets: Arc<MdnTargetPolicy>,
    /// The epoch of this node's lease on the pending receipt; `None` for a
    /// receipt sent again to a partner that resent its message.
    pub epoch: Option<i64>,
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
    /// The pending receipts this node holds, by message row.
    leases: Arc<Leases<i64>>,
}

impl MdnSender {
    /// Starts the delivery task on the current tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        shutdown: Shutdown,
        leases: Arc<Leases<i64>>,
    ) -> MdnSender {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Delivery>();
        let client = client_builder().build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "building the MDN HTTP client; using defaults");
            reqwest::Client::new()
        });
        let tasks = TaskTracker::new();
        let spawner = tasks.clone();
        let held = leases.clone();
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    job = jobs.recv() => job,
                    _ = shutdown.triggered() => None,
                };
                let Some(job) = job else { return };
                let (client, store, metrics) = (client.clone(), store.clone(), metrics.clone());
                let held = held.clone();
                let shutdown = shutdown.clone();
                spawner.spawn(async move {
                    let (row, epoch) = (job.record_id, job.epoch);
                    let ended = deliver(client, store, metrics, policy, job, shutdown).await;
                    // Delivered, failed or refused: this node is done with it.
                    if ended && epoch.is_some() {
                        held.release(&row);
                    }
                });
            }
        });
        MdnSender {
            queue,
            tasks,
            leases,
        }
    }

    /// This node's leases on pending receipts.
    pub fn leases(&self) -> &Arc<Leases<i64>> {
        &self.leases
    }

    /// Claims pending receipts and queues them: this node's own from
    /// before it restarted (`own_earlier`, at start) and other nodes' whose
    /// lease expired.
    pub fn take_over(
        &self,
        store: &dyn Store,
        registry: &Registry,
        own_earlier: bool,
    ) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let except = self.leases.held_ids();
            let claimed = store
                .claim_async_mdns(&Claim {
                    node: &self.leases.node,
                    until_us: self.leases.until_us(),
                    now_us: now_us(),
                    own_earlier,
                    except: &except,
                    limit: CLAIM_BATCH,
                })
                .map_err(|e| e.to_string())?;
            let count = claimed.len();
            total += count;
            for pending in claimed {
                let receipt = pending.receipt;
                let Some(url) = receipt.mdn_url else { continue };
                tracing::info!(record = receipt.record_id, %url, node = %self.leases.node,
                    "queueing undelivered asynchronous MDN again");
                // The listener's allowed targets; only public ones if it is gone.
                let targets = receipt
                    .listener
                    .as_deref()
                    .and_then(|l| registry.spec(l))
                    .map(|spec| spec.mdn_targets.clone())
                    .unwrap_or_default();
                self.send(Delivery {
                    record_id: receipt.record_id,
                    url,
                    headers: receipt.headers,
                    body: receipt.body,
                    targets,
                    epoch: Some(pending.epoch),
                });
            }
            if count < CLAIM_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Gives up the leases on receipts still pending here (at the end of a
    /// drain), so that another node delivers them at once.
    pub fn release_pending(&self, store: &dyn Store) {
        let held = self.leases.held();
        if held.is_empty() {
            return;
        }
        match store.release_mdn_leases(&self.leases.node, &held) {
            Ok(()) => tracing::info!(
                receipts = held.len(),
                "leases of pending asynchronous MDNs given up"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "giving up MDN leases failed; they expire by themselves")
            }
        }
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
        if let Some(epoch) = delivery.epoch {
            self.leases.hold(delivery.record_id, epoch);
        }
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

/// Delivers one receipt; false when cut off by a shutdown (still pending).
async fn deliver(
    client: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    job: Delivery,
    shutdown: Shutdown,
) -> bool {
    let started = std::time::Instant::now();
    let mut delay = policy.first_delay;
    let mut attempt = 1u32;
    loop {
        let target = match job.targets.resolve(&job.url).await {
            Ok(target) => target,
            Err(reason) => {
                metrics.async_mdns.with_label_values(&["refused"]).inc();
                tracing::warn!(record = job.record_id, url = %job.url, %reason, "asynchronous MDN target refused");
                update(&store, &job, "refused").await;
                return true;
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
                update(&store, &job, "delivered").await;
                return true;
            }
            Err(reason) => {
                metrics.async_mdns.with_label_values(&["retry"]).inc();
                if started.elapsed() + delay > policy.give_up_after {
                    metrics.async_mdns.with_label_values(&["failed"]).inc();
                    tracing::error!(record = job.record_id, url = %job.url, attempt, %reason, "giving up on asynchronous MDN");
                    update(&store, &job, "failed").await;
                    return true;
                }
                tracing::warn!(record = job.record_id, url = %job.url, attempt, %reason, retry_in = ?delay, "asynchronous MDN not delivered");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.triggered() => {
                        tracing::info!(record = job.record_id, "shutting down: asynchronous MDN stays pending for the next start");
                        return false;
                    }
                }
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
        }
    }
}

async fn update(store: &Arc<dyn Store>, job: &Delivery, status: &'static str) {
    let (store, id, epoch) = (store.clone(), job.record_id, job.epoch);
    match tokio::task::spawn_blocking(move || store.set_mdn_status(id, status, epoch)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::warn!(
            record = id,
            status,
            "MDN status not recorded: another node took this receipt over"
        ),
        Ok(Err(e)) => tracing::error!(record = id, error = %e, "saving MDN status"),
        Err(e) => tracing::error!(record = id, error = %e, "saving MDN status"),
    }
}
