//! The two worker modes.
//!
//! - **General**: executions are queued durably (with the receipt) and run
//!   by a pool of general workers fed by a crossbeam channel.
//! - **Low_Latency_Debug**: a request is admitted against the Atom Worker
//!   quotas *before* its receipt is stored (so a refusal is a plain 503 the
//!   sender retries, and nothing acknowledged is ever dropped); its
//!   execution then goes straight to a pre-started worker with no queueing.
//!
//! In both modes a listener runs at most its Maximum Concurrent Executions
//! at once ("Allow Simultaneous Executions" does not apply to listeners).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::execution::{Job, Runner};
use crate::config::{QuotasConfig, WorkerMode};
use crate::listeners::bundle::ListenerSpec;
use crate::listeners::Registry;
use crate::store::{status, Store};

/// Slots a Low_Latency_Debug execution holds from admission to its end.
pub struct Admission {
    _running: OwnedSemaphorePermit,
    _listener: OwnedSemaphorePermit,
}

/// Why a Low_Latency_Debug request was refused (HTTP 503, retry later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaRefusal {
    #[error("Atom Worker quota reached: {running} executions running and {queued} queued (maximum queued {max_queued}); retry later")]
    QueueFull {
        running: usize,
        queued: usize,
        max_queued: usize,
    },
    #[error("Atom Worker quota: queued execution timeout of {0} s passed before a worker was free; retry later")]
    QueueTimeout(u64),
}

pub struct Executor {
    quotas: QuotasConfig,
    general: Sender<Job>,
    low_latency: Sender<(Job, Admission)>,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Low_Latency_Debug per-listener limits: (limit, semaphore).
    listener_limits: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    runner: Arc<Runner>,
}

/// General mode per-listener accounting: running count and the jobs
/// waiting for one of the listener's slots.
#[derive(Default)]
struct Slots {
    by_process: Mutex<HashMap<String, (usize, VecDeque<Job>)>>,
}

impl Slots {
    /// Takes a slot for the job, or parks it behind the running ones.
    fn acquire(&self, job: Job) -> Option<Job> {
        let limit = job.spec.process.limits.max_concurrent_executions;
        let mut map = self.by_process.lock().unwrap_or_else(|p| p.into_inner());
        let (running, waiting) = map.entry(job.spec.id.clone()).or_default();
        if *running < limit {
            *running += 1;
            Some(job)
        } else {
            waiting.push_back(job);
            None
        }
    }

    /// Hands the slot to the next parked job of the process, or frees it.
    fn release(&self, process: &str) -> Option<Job> {
        let mut map = self.by_process.lock().unwrap_or_else(|p| p.into_inner());
        let (running, waiting) = map.get_mut(process)?;
        match waiting.pop_front() {
            Some(next) => Some(next),
            None => {
                *running = running.saturating_sub(1);
                None
            }
        }
    }
}

impl Executor {
    /// Starts the general pool and the Low_Latency_Debug workers.
    pub fn start(runner: Arc<Runner>, quotas: QuotasConfig) -> std::io::Result<Arc<Executor>> {
        let (general, general_jobs) = crossbeam_channel::unbounded::<Job>();
        let slots = Arc::new(Slots::default());
        for n in 0..quotas.general_workers {
            let jobs = general_jobs.clone();
            let runner = runner.clone();
            let slots = slots.clone();
            std::thread::Builder::new()
                .name(format!("atom-general-{n}"))
                .spawn(move || general_worker(jobs, runner, slots))?;
        }
        let (low_latency, lld_jobs) = crossbeam_channel::unbounded::<(Job, Admission)>();
        // Pre-started: as many as may run, so an admitted execution never waits.
        for n in 0..quotas.low_latency.max_running_executions {
            let jobs = lld_jobs.clone();
            let runner = runner.clone();
            let cap = quotas.low_latency.max_execution_time;
            std::thread::Builder::new()
                .name(format!("atom-worker-{n}"))
                .spawn(move || {
                    for (job, admission) in jobs.iter() {
                        runner.run(job, WorkerMode::LowLatencyDebug, Some(cap));
                        drop(admission);
                    }
                })?;
        }
        Ok(Arc::new(Executor {
            quotas,
            general,
            low_latency,
            running: Arc::new(Semaphore::new(quotas.low_latency.max_running_executions)),
            queued: AtomicUsize::new(0),
            listener_limits: Mutex::new(HashMap::new()),
            runner,
        }))
    }

    /// The mode a listener's executions run in.
    pub fn mode_of(&self, spec: &ListenerSpec) -> WorkerMode {
        spec.process
            .mode
            .unwrap_or(self.quotas.default_as2_workload)
    }

    /// For a Low_Latency_Debug listener with steps: waits (up to the queued
    /// execution timeout) for a worker and a listener slot, or refuses.
    /// `None` for General listeners and listeners without steps.
    pub async fn admit(&self, spec: &ListenerSpec) -> Result<Option<Admission>, QuotaRefusal> {
        if spec.process.steps.is_empty() || self.mode_of(spec) != WorkerMode::LowLatencyDebug {
            return Ok(None);
        }
        let listener = self.listener_semaphore(spec);
        if let (Ok(running), Ok(slot)) = (
            self.running.clone().try_acquire_owned(),
            listener.clone().try_acquire_owned(),
        ) {
            return Ok(Some(Admission {
                _running: running,
                _listener: slot,
            }));
        }
        let quotas = &self.quotas.low_latency;
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= quotas.max_queued_executions {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(QuotaRefusal::QueueFull {
                running: quotas.max_running_executions - self.running.available_permits(),
                queued,
                max_queued: quotas.max_queued_executions,
            });
        }
        let running = self.running.clone();
        let waited = tokio::time::timeout(quotas.queued_execution_timeout, async move {
            // Listener slot first: a listener at its own limit must not hold a worker.
            let slot = listener.acquire_owned().await;
            let worker = running.acquire_owned().await;
            (slot, worker)
        })
        .await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok((Ok(slot), Ok(worker))) => Ok(Some(Admission {
                _running: worker,
                _listener: slot,
            })),
            _ => Err(QuotaRefusal::QueueTimeout(
                quotas.queued_execution_timeout.as_secs(),
            )),
        }
    }

    fn listener_semaphore(&self, spec: &ListenerSpec) -> Arc<Semaphore> {
        let limit = spec.process.limits.max_concurrent_executions;
        let mut map = self
            .listener_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(spec.id.clone())
            .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
        if entry.0 != limit {
            // A new bundle version changed the limit; running executions keep their old permits.
            *entry = (limit, Arc::new(Semaphore::new(limit)));
        }
        entry.1.clone()
    }

    /// Hands a committed execution to its workers.
    pub fn submit(&self, job: Job, admission: Option<Admission>) {
        let id = job.record.id.clone();
        let sent = match admission {
            Some(admission) => self
                .low_latency
                .send((job, admission))
                .map_err(|e| e.into_inner().0),
            None => self.general.send(job).map_err(|e| e.into_inner()),
        };
        if sent.is_err() {
            // Only at shutdown; the execution stays queued in the store and is recovered at start.
            tracing::error!(execution = %id, "workers stopped; execution left for recovery");
        }
    }

    /// Queues every execution a crash or stop interrupted, on the general
    /// workers (they were acknowledged already, so no quota may refuse
    /// them). An execution whose process is gone is ABORTED, its document
    /// kept in the message store.
    pub fn recover(&self, store: &dyn Store, registry: &Registry) -> Result<usize, String> {
        let unfinished = store.unfinished_executions().map_err(|e| e.to_string())?;
        let count = unfinished.len();
        for mut record in unfinished {
            match registry.spec(&record.process) {
                Some(spec) if !spec.process.steps.is_empty() => {
                    tracing::info!(execution = %record.id, process = %record.process, status = %record.status, "recovering interrupted execution");
                    self.submit(Job { spec, record }, None);
                }
                _ => {
                    record.status = status::ABORTED.into();
                    record.error = Some(format!(
                        "process {} is not deployed (or has no steps) any more; the received document is kept at {}",
                        record.process, record.payload_path
                    ));
                    record.finished_at = Some(crate::server::inbound::now_rfc3339());
                    tracing::warn!(execution = %record.id, error = ?record.error, "execution aborted at recovery");
                    self.runner.history().record(&record);
                }
            }
        }
        Ok(count)
    }
}

fn general_worker(jobs: Receiver<Job>, runner: Arc<Runner>, slots: Arc<Slots>) {
    for job in jobs.iter() {
        let Some(mut job) = slots.acquire(job) else {
            continue;
        };
        loop {
            let process = job.spec.id.clone();
            runner.run(job, WorkerMode::General, None);
            match slots.release(&process) {
                Some(next) => job = next,
                None => break,
            }
        }
    }
}
