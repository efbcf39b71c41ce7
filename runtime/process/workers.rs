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
//!
//! An execution that failed transiently waits in the retry timer (one
//! thread, no sleeping worker) and then runs on the general workers, as
//! recovered executions do. [`Executor::drain`] stops every worker from
//! starting anything new and waits for the running executions to end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::execution::{Job, Ran, Runner};
use super::leases::Leases;
use crate::config::{QuotasConfig, WorkerMode};
use crate::listeners::bundle::ListenerSpec;
use crate::listeners::Registry;
use crate::store::{status, Claim, ExecutionRecord, Store};

/// Executions claimed at most in one go (recovery claims again until done).
const CLAIM_BATCH: u32 = 1000;

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
    #[error("the Atom is shutting down and starts no new executions; retry later")]
    ShuttingDown,
}

/// What [`Executor::drain`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Executions running when the drain began that ended (their final
    /// state handed to the history writer) before the deadline.
    pub finished: usize,
    /// Executions still running at the deadline; they stay INPROCESS in
    /// the store and are recovered at the next start.
    pub cut_off: usize,
}

/// Why `atom executions rerun` was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerunRefusal {
    #[error("no execution {0}; `atom executions` lists them")]
    Unknown(String),
    #[error("execution {id} is {status}, not finished; rerun it once it has ended")]
    NotFinished { id: String, status: String },
    #[error("the stored document of execution {id} ({path}) is gone, purged by retention or removed; it cannot be rerun")]
    DocumentGone { id: String, path: String },
    #[error("process {process} of execution {id} is not deployed (or has no steps); deploy it, then rerun")]
    NotDeployed { id: String, process: String },
    #[error("the Atom is shutting down; rerun after it has started again")]
    ShuttingDown,
    #[error("{0}")]
    Store(String),
}

impl RerunRefusal {
    /// The admin API's answer.
    pub fn http_status(&self) -> u16 {
        match self {
            RerunRefusal::Unknown(_) => 404,
            RerunRefusal::NotFinished { .. } | RerunRefusal::NotDeployed { .. } => 409,
            RerunRefusal::DocumentGone { .. } => 410,
            RerunRefusal::ShuttingDown => 503,
            RerunRefusal::Store(_) => 500,
        }
    }
}

/// A General job with the transient failures it has had so far.
struct Queued {
    job: Job,
    retries_done: u32,
}

/// Whether workers may start executions, and how many run.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    draining: bool,
    running: usize,
}

/// Held while an execution runs; ending it (even by unwinding) counts it out.
struct Running<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an execution in, unless the Atom is draining. Checked and
    /// counted under one lock, so a drain never misses one that starts.
    fn enter(&self) -> Option<Running<'_>> {
        let mut state = self.lock();
        if state.draining {
            return None;
        }
        state.running += 1;
        Some(Running(self))
    }

    fn draining(&self) -> bool {
        self.lock().draining
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running = state.running.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

pub struct Executor {
    quotas: QuotasConfig,
    general: Sender<Queued>,
    low_latency: Sender<(Job, Admission)>,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Low_Latency_Debug per-listener limits: (limit, semaphore).
    listener_limits: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    runner: Arc<Runner>,
    gate: Arc<Gate>,
    /// Reruns check and queue one at a time, so one execution is never
    /// queued twice by two quick reruns.
    reruns: Mutex<()>,
    /// The executions queued or running here, under this node's leases.
    leases: Arc<Leases>,
    /// The retry timer, to wake an execution waiting there.
    timer: Sender<Timer>,
}

/// General mode per-listener accounting: running count and the jobs
/// waiting for one of the listener's slots.
#[derive(Default)]
struct Slots {
    by_process: Mutex<HashMap<String, (usize, VecDeque<Queued>)>>,
}

impl Slots {
    /// Takes a slot for the job, or parks it behind the running ones.
    fn acquire(&self, job: Queued) -> Option<Queued> {
        let limit = job.job.spec.process.limits.max_concurrent_executions;
        let mut map = self.by_process.lock().unwrap_or_else(|p| p.into_inner());
        let (running, waiting) = map.entry(job.job.spec.id.clone()).or_default();
        if *running < limit {
            *running += 1;
            Some(job)
        } else {
            waiting.push_back(job);
            None
        }
    }

    /// Hands the slot to the next parked job of the process, or frees it.
    fn release(&self, process: &str) -> Option<Queued> {
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
    /// Runs an execution waiting in the retry timer now (what it waits for
    /// has happened); one not held here yet runs as soon as it is, and one
    /// held by another node of a Molecule finds out at its next look.
    pub fn wake(&self, execution_id: &str) {
        let _ = self.timer.send(Timer::Wake(execution_id.to_string()));
    }

    /// Starts the general pool, the Low_Latency_Debug workers and the
    /// retry timer.
    pub fn start(
        runner: Arc<Runner>,
        quotas: QuotasConfig,
        leases: Arc<Leases>,
    ) -> std::io::Result<Arc<Executor>> {
        let (general, general_jobs) = crossbeam_channel::unbounded::<Queued>();
        let (retry, retries) = crossbeam_channel::unbounded::<Timer>();
        let gate = Arc::new(Gate::default());
        {
            let general = general.clone();
            let gate = gate.clone();
            std::thread::Builder::new()
                .name("atom-retry-timer".into())
                .spawn(move || retry_timer(retries, general, gate))?;
        }
        let slots = Arc::new(Slots::default());
        for n in 0..quotas.general_workers {
            let worker = GeneralWorker {
                jobs: general_jobs.clone(),
                runner: runner.clone(),
                slots: slots.clone(),
                gate: gate.clone(),
                retry: retry.clone(),
                leases: leases.clone(),
            };
            std::thread::Builder::new()
                .name(format!("atom-general-{n}"))
                .spawn(move || worker.run())?;
        }
        let (low_latency, lld_jobs) = crossbeam_channel::unbounded::<(Job, Admission)>();
        // Pre-started: as many as may run, so an admitted execution never waits.
        for n in 0..quotas.low_latency.max_running_executions {
            let jobs = lld_jobs.clone();
            let runner = runner.clone();
            let gate = gate.clone();
            let retry = retry.clone();
            let leases = leases.clone();
            let cap = quotas.low_latency.max_execution_time;
            std::thread::Builder::new()
                .name(format!("atom-worker-{n}"))
                .spawn(move || {
                    for (job, admission) in jobs.iter() {
                        let Some(running) = gate.enter() else {
                            // Draining: it stays STARTED in the store for recovery.
                            tracing::info!(execution = %job.record.id, "draining; execution left for recovery at the next start");
                            continue;
                        };
                        let ran = runner.run(job, WorkerMode::LowLatencyDebug, Some(cap), 0);
                        drop(admission);
                        settle(ran, &retry, &leases);
                        drop(running);
                        crate::engine::finish_thread_work();
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
            gate,
            reruns: Mutex::new(()),
            leases,
            timer: retry,
        }))
    }

    /// Stops every worker from starting another execution, then waits
    /// until the executions running now have ended and their final state
    /// is with the history writer, or until `deadline`. Jobs still queued
    /// (in the channels, behind a listener's slots, in the retry timer)
    /// are neither run nor marked: they stay STARTED in the store and are
    /// recovered at the next start. Low_Latency_Debug admission refuses
    /// from now on. Not undone: the Atom is stopping.
    pub fn drain(&self, deadline: Instant) -> DrainReport {
        let mut state = self.gate.lock();
        state.draining = true;
        let at_start = state.running;
        tracing::info!(running = at_start, "draining: no new executions start");
        while state.running > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .gate
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let report = DrainReport {
            finished: at_start.saturating_sub(state.running),
            cut_off: state.running,
        };
        if report.cut_off > 0 {
            tracing::warn!(
                finished = report.finished,
                cut_off = report.cut_off,
                "drain deadline passed; executions still running are recovered at the next start"
            );
        } else {
            tracing::info!(finished = report.finished, "drained: no execution running");
        }
        report
    }

    /// Executions running right now (both modes).
    pub fn running(&self) -> usize {
        self.gate.lock().running
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
        if self.gate.draining() {
            return Err(QuotaRefusal::ShuttingDown);
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
        if self.gate.draining() {
            // Admitted too late: nothing is stored yet, so the sender retries.
            return Err(QuotaRefusal::ShuttingDown);
        }
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
        self.leases.hold(id.clone(), job.record.lease_epoch);
        let sent = match admission {
            Some(admission) => self
                .low_latency
                .send((job, admission))
                .map_err(|e| e.into_inner().0),
            None => self
                .general
                .send(Queued {
                    job,
                    retries_done: 0,
                })
                .map_err(|e| e.into_inner().job),
        };
        if sent.is_err() {
            // Only at shutdown; the execution stays queued in the store and is recovered at start.
            tracing::error!(execution = %id, "workers stopped; execution left for recovery");
        }
    }

    /// Runs a finished execution again from its stored document, on the
    /// process's deployed version, as a new attempt of the same execution
    /// (on the general workers, fresh log, retries counted afresh). The
    /// STARTED state is committed before it is queued, so a crash
    /// meanwhile leaves it for recovery.
    pub fn rerun(
        &self,
        id: &str,
        store: &dyn Store,
        registry: &Registry,
    ) -> Result<ExecutionRecord, RerunRefusal> {
        let _one_at_a_time = self.reruns.lock().unwrap_or_else(|p| p.into_inner());
        if self.gate.draining() {
            return Err(RerunRefusal::ShuttingDown);
        }
        let mut record = store
            .execution(id)
            .map_err(|e| RerunRefusal::Store(e.to_string()))?
            .ok_or_else(|| RerunRefusal::Unknown(id.to_string()))?;
        if !status::is_final(&record.status) {
            return Err(RerunRefusal::NotFinished {
                id: record.id,
                status: record.status,
            });
        }
        let spec = registry
            .spec(&record.process)
            .filter(|spec| !spec.process.steps.is_empty())
            .ok_or_else(|| RerunRefusal::NotDeployed {
                id: record.id.clone(),
                process: record.process.clone(),
            })?;
        if !self.runner.documents().exists(&record.payload_path) {
            return Err(RerunRefusal::DocumentGone {
                id: record.id,
                path: record.payload_path,
            });
        }
        record.status = status::STARTED.into();
        record.version = spec.version.clone();
        record.started_at = None;
        record.finished_at = None;
        record.finished_at_us = None;
        record.engine_us = None;
        record.instantiate_us = None;
        record.output_documents = 0;
        record.output_bytes = 0;
        record.error = None;
        record.log = String::new();
        record.documents = Vec::new();
        let until = self.leases.until_us();
        let epoch = store
            .requeue_finished(&record, &self.leases.node, until)
            .map_err(|e| RerunRefusal::Store(e.to_string()))?
            .ok_or_else(|| RerunRefusal::NotFinished {
                id: record.id.clone(),
                status: "queued again already (another rerun)".into(),
            })?;
        record.owner = Some(self.leases.node.clone());
        record.lease_until_us = Some(until);
        record.lease_epoch = epoch;
        tracing::info!(execution = %record.id, process = %record.process, version = %record.version, attempts = record.attempts, "execution queued to run again");
        self.submit(
            Job {
                spec,
                record: record.clone(),
            },
            None,
        );
        Ok(record)
    }

    /// Claims and queues every execution a crash or stop interrupted: this
    /// node's own from before it restarted, and any whose lease expired.
    /// See [`Executor::run_claimed`].
    pub fn recover(&self, store: &dyn Store, registry: &Registry) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let claimed = self.claim_and_run(store, registry, true)?;
            total += claimed;
            if claimed < CLAIM_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Claims and queues executions whose node's lease expired (the node
    /// died or lost the store); called every second by the lease keeper.
    pub fn take_over(&self, store: &dyn Store, registry: &Registry) -> Result<usize, String> {
        if self.gate.draining() {
            return Ok(0);
        }
        self.claim_and_run(store, registry, false)
    }

    fn claim_and_run(
        &self,
        store: &dyn Store,
        registry: &Registry,
        own_earlier: bool,
    ) -> Result<usize, String> {
        let except = self.leases.held_ids();
        let claimed = store
            .claim_executions(&Claim {
                node: &self.leases.node,
                until_us: self.leases.until_us(),
                now_us: super::leases::now_us(),
                own_earlier,
                except: &except,
                limit: CLAIM_BATCH,
            })
            .map_err(|e| e.to_string())?;
        let count = claimed.len();
        for record in claimed {
            self.run_claimed(record, registry);
        }
        Ok(count)
    }

    /// Queues a claimed execution on the general workers (it was
    /// acknowledged already, so no quota may refuse it). One whose process
    /// is gone is ABORTED, its document kept in the message store.
    fn run_claimed(&self, mut record: ExecutionRecord, registry: &Registry) {
        {
            match registry.spec(&record.process) {
                Some(spec) if !spec.process.steps.is_empty() => {
                    tracing::info!(execution = %record.id, process = %record.process, status = %record.status,
                        attempts = record.attempts, node = %self.leases.node, "recovering interrupted execution");
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
    }

    /// This node's leases.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// Gives up the leases on executions still queued here (at the end of
    /// a drain with nothing running), so that another node takes them at
    /// once instead of after the lease.
    pub fn release_queued(&self, store: &dyn Store) {
        let held = self.leases.held();
        if held.is_empty() || self.running() > 0 {
            return;
        }
        match store.release_execution_leases(&self.leases.node, &held) {
            Ok(()) => tracing::info!(
                executions = held.len(),
                "leases of queued executions given up"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "giving up leases failed; they expire by themselves")
            }
        }
    }
}

/// After a run: a finished execution's lease is let go (its final state
/// is with the history writer); a transiently failed one goes to the retry
/// timer, still held.
fn settle(ran: Ran, retry: &Sender<Timer>, leases: &Leases) {
    if let Ran::Finished(record) = &ran {
        leases.release(&record.id);
    }
    if let Ran::Retry {
        job,
        delay,
        retries_done,
    } = ran
    {
        let id = job.record.id.clone();
        if retry
            .send(Timer::Hold(
                Instant::now() + delay,
                Box::new(Queued { job, retries_done }),
            ))
            .is_err()
        {
            tracing::error!(execution = %id, "retry timer stopped; execution left STARTED for recovery");
        }
    }
}

/// What the retry timer is told.
enum Timer {
    /// Run this execution again at that instant (boxed: a job is large).
    Hold(Instant, Box<Queued>),
    /// What this execution waits for has happened (an asynchronous
    /// receipt was filed): run it now, or as soon as it is held.
    Wake(String),
}

/// A wake for an execution not held yet counts this long: its run may
/// still be settling.
const WAKE_MEMORY: Duration = Duration::from_secs(10);

/// Holds executions until their retry is due, then queues them on the
/// general workers. One thread for all of them; while draining, due ones
/// are kept (they are STARTED in the store, recovered at the next start).
fn retry_timer(incoming: Receiver<Timer>, general: Sender<Queued>, gate: Arc<Gate>) {
    // Keyed by (due, arrival) so that equal instants do not collide.
    let mut waiting: BTreeMap<(Instant, u64), Queued> = BTreeMap::new();
    let mut arrivals = 0u64;
    // Wakes that found nothing held yet, by execution.
    let mut woken: HashMap<String, Instant> = HashMap::new();
    loop {
        // While draining nothing is due: block until the process exits
        // rather than spin on instants already past.
        let next_due = if gate.draining() {
            None
        } else {
            waiting.keys().next().map(|(due, _)| *due)
        };
        let received = match next_due {
            Some(due) => incoming.recv_deadline(due),
            None => incoming.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(Timer::Hold(due, queued)) => {
                arrivals += 1;
                let now = Instant::now();
                woken.retain(|_, at| now.duration_since(*at) < WAKE_MEMORY);
                let due = match woken.remove(&queued.job.record.id) {
                    Some(_) => now,
                    None => due,
                };
                waiting.insert((due, arrivals), *queued);
            }
            Ok(Timer::Wake(id)) => {
                let held = waiting
                    .iter()
                    .find(|(_, q)| q.job.record.id == id)
                    .map(|(key, _)| *key);
                match held {
                    Some(key) => {
                        if let Some(queued) = waiting.remove(&key) {
                            arrivals += 1;
                            waiting.insert((Instant::now(), arrivals), queued);
                        }
                    }
                    None => {
                        woken.insert(id, Instant::now());
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if gate.draining() {
            continue;
        }
        let now = Instant::now();
        while let Some(entry) = waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let queued = entry.remove();
            tracing::info!(execution = %queued.job.record.id, retry = queued.retries_done, "retrying execution");
            if general.send(queued).is_err() {
                return;
            }
        }
    }
}

/// One thread of the general pool.
struct GeneralWorker {
    jobs: Receiver<Queued>,
    runner: Arc<Runner>,
    slots: Arc<Slots>,
    gate: Arc<Gate>,
    retry: Sender<Timer>,
    leases: Arc<Leases>,
}

impl GeneralWorker {
    fn run(self) {
        for queued in self.jobs.iter() {
            let Some(mut queued) = self.slots.acquire(queued) else {
                continue;
            };
            loop {
                let process = queued.job.spec.id.clone();
                match self.gate.enter() {
                    Some(running) => {
                        let ran = self.runner.run(
                            queued.job,
                            WorkerMode::General,
                            None,
                            queued.retries_done,
                        );
                        settle(ran, &self.retry, &self.leases);
                        drop(running);
                        // The result is recorded: now reset the guest's slot
                        // and instantiate ahead for the next execution.
                        crate::engine::finish_thread_work();
                    }
                    None => {
                        tracing::info!(execution = %queued.job.record.id, "draining; execution left for recovery at the next start");
                    }
                }
                match self.slots.release(&process) {
                    Some(next) => queued = next,
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};
    use crate::listeners::bundle::{self, BundleContext};
    use crate::process::history::HistoryWriter;
    use crate::store::group_commit::GroupCommitter;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{MessageRecord, Receipt};
    use std::time::Duration;

    /// Sleeps `millis` in a WASI poll, then writes "done".
    fn sleeping_guest(millis: u64) -> String {
        format!(
            r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "done")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {nanos}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 108)))))"#,
            nanos = millis * 1_000_000
        )
    }

    /// A store, one general worker, one Low_Latency_Debug worker, and a
    /// bundle whose guest sleeps `millis`.
    struct Rig {
        _dir: tempfile::TempDir,
        store: Arc<SqliteStore>,
        executor: Arc<Executor>,
        spec: Arc<ListenerSpec>,
    }

    fn rig(mode: &str, millis: u64) -> Rig {
        rig_with(
            &format!("mode: {mode}\nlimits:\n  max_concurrent_executions: 1\nsteps:\n  - wasm: guest.wat\n"),
            0,
            millis,
        )
    }

    /// `process_keys` after the start step; the first `disk_failures`
    /// disk writes fail with ENOSPC.
    fn rig_with(process_keys: &str, disk_failures: u64, millis: u64) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let store = Arc::new(SqliteStore::open(&data).expect("store"));
        let documents: Arc<dyn crate::store::documents::Documents> =
            Arc::new(crate::store::files::FileDocuments::new(&data));
        let committer = GroupCommitter::start(
            store.clone(),
            documents.clone(),
            std::sync::Arc::default(),
            std::time::Duration::from_secs(30),
        )
        .expect("committer");
        let history = HistoryWriter::start(committer).expect("history");
        let metrics = Arc::new(crate::admin::metrics::Metrics::new().expect("metrics"));
        let runner = Arc::new(
            Runner::new(store.clone(), documents, history, metrics)
                .with_disk_failures(disk_failures),
        );
        let engine = WasmtimeEngine::new(EngineSettings {
            max_instances: 4,
            max_memory: 64 << 20,
            cache_dir: None,
        })
        .expect("engine");
        let bundle_dir = dir.path().join("processes/sleepy");
        std::fs::create_dir_all(&bundle_dir).expect("bundle dir");
        std::fs::write(bundle_dir.join("guest.wat"), sleeping_guest(millis)).expect("guest");
        std::fs::write(
            bundle_dir.join("process.yaml"),
            format!(
                "start:\n  as2:\n    as2_from:\n      id: P\n    as2_to:\n      id: US\n{process_keys}"
            ),
        )
        .expect("process.yaml");
        let keystore = crate::keystore::Keystore::open(&data);
        let spec = bundle::load(
            &bundle_dir,
            BundleContext {
                keystore: &keystore,
                engine: engine.as_ref(),
                data_dir: &data,
                allowed_directories: &[],
                partners_dir: &dir.path().join("partners"),
            },
        )
        .expect("bundle loads");
        let quotas = QuotasConfig {
            default_as2_workload: WorkerMode::General,
            general_workers: 1,
            low_latency: crate::config::LowLatencyQuotas {
                max_running_executions: 1,
                max_queued_executions: 1,
                queued_execution_timeout: Duration::from_secs(1),
                max_execution_time: Duration::from_secs(60),
            },
        };
        let executor = Executor::start(
            runner,
            quotas,
            Arc::new(Leases::new("test-node", Duration::from_secs(30))),
        )
        .expect("executor");
        Rig {
            _dir: dir,
            store,
            executor,
            spec: Arc::new(spec),
        }
    }

    impl Rig {
        /// Commits `count` received documents with queued executions; their jobs.
        fn receive(&self, count: usize) -> Vec<Job> {
            let payload = self._dir.path().join("payload");
            std::fs::write(&payload, b"ISA*00~").expect("payload");
            let records: Vec<ExecutionRecord> = (0..count)
                .map(|i| ExecutionRecord {
                    id: crate::process::execution::new_execution_id(),
                    process: self.spec.id.clone(),
                    version: self.spec.version.clone(),
                    mode: "general".into(),
                    status: status::STARTED.into(),
                    properties_json: "{}".into(),
                    payload_path: payload.display().to_string(),
                    queued_at: "2026-11-28T00:00:00Z".into(),
                    queued_at_us: i as i64,
                    ..ExecutionRecord::default()
                })
                .collect();
            let receipts: Vec<Receipt> = records
                .iter()
                .enumerate()
                .map(|(i, e)| Receipt {
                    message: MessageRecord {
                        as2_from: "P".into(),
                        as2_to: "US".into(),
                        message_id: format!("<{i}@p>"),
                        disposition: "processed".into(),
                        mdn_mode: "sync".into(),
                        mdn_status: "sent".into(),
                        received_at: "2026-11-28T00:00:00Z".into(),
                        ..MessageRecord::default()
                    },
                    execution: Some(e.clone()),
                })
                .collect();
            self.store.insert_receipts(&receipts).expect("receipts");
            records
                .into_iter()
                .map(|record| Job {
                    spec: self.spec.clone(),
                    record,
                })
                .collect()
        }

        fn status_of(&self, id: &str) -> (String, u32) {
            let e = self.store.execution(id).expect("read").expect("exists");
            (e.status, e.attempts)
        }

        /// Polls until `check` holds (the history writer commits in batches).
        fn wait_until(&self, what: &str, check: impl Fn() -> bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !check() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    #[test]
    fn drain_finishes_the_running_execution_and_leaves_queued_ones_for_recovery() {
        let rig = rig("general", 1000);
        let jobs = rig.receive(3);
        let ids: Vec<String> = jobs.iter().map(|j| j.record.id.clone()).collect();
        for job in jobs {
            rig.executor.submit(job, None);
        }
        rig.wait_until("the first execution to run", || rig.executor.running() == 1);
        let started = Instant::now();
        let report = rig.executor.drain(Instant::now() + Duration::from_secs(30));
        assert_eq!(
            report,
            DrainReport {
                finished: 1,
                cut_off: 0
            }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(rig.executor.running(), 0);
        rig.wait_until("the first execution's final state", || {
            rig.status_of(&ids[0]) == ("COMPLETE".to_string(), 1)
        });
        // The others were queued (the listener allows one at a time): they
        // never ran and were not marked; recovery takes them at the next start.
        std::thread::sleep(Duration::from_millis(300));
        for id in &ids[1..] {
            assert_eq!(rig.status_of(id), ("STARTED".to_string(), 0), "{id}");
        }
        assert_eq!(rig.store.unfinished_executions().expect("read").len(), 2);
        // Submitted after the drain: not run either.
        let late = rig.receive(1).remove(0);
        let late_id = late.record.id.clone();
        rig.executor.submit(late, None);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rig.status_of(&late_id), ("STARTED".to_string(), 0));
        assert_eq!(rig.executor.running(), 0);
    }

    #[test]
    fn drain_reports_executions_cut_off_at_the_deadline_and_admission_refuses() {
        let rig = rig("low_latency_debug", 3000);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let admission = runtime
            .block_on(rig.executor.admit(&rig.spec))
            .expect("admitted")
            .expect("a Low_Latency_Debug admission");
        let job = rig.receive(1).remove(0);
        let id = job.record.id.clone();
        rig.executor.submit(job, Some(admission));
        rig.wait_until("the execution to run", || rig.executor.running() == 1);
        let report = rig
            .executor
            .drain(Instant::now() + Duration::from_millis(200));
        assert_eq!(
            report,
            DrainReport {
                finished: 0,
                cut_off: 1
            }
        );
        let refused = runtime.block_on(rig.executor.admit(&rig.spec));
        assert_eq!(refused.err(), Some(QuotaRefusal::ShuttingDown));
        assert!(QuotaRefusal::ShuttingDown
            .to_string()
            .contains("shutting down"));
        // The cut-off one still ends (the process would have exited); a
        // second drain sees it finish.
        let again = rig.executor.drain(Instant::now() + Duration::from_secs(30));
        assert_eq!(
            again,
            DrainReport {
                finished: 1,
                cut_off: 0
            }
        );
        rig.wait_until("its final state", || rig.status_of(&id).0 == "COMPLETE");
    }

    #[test]
    fn drain_leaves_executions_waiting_for_a_retry_queued() {
        let rig = rig_with(
            "limits:\n  retries: 3\n  retry_delay_seconds: 1\nsteps:\n  - disk:\n      directory: out\n      file_name: \"{execution_id}\"\n",
            1,
            0,
        );
        let job = rig.receive(1).remove(0);
        let id = job.record.id.clone();
        rig.executor.submit(job, None);
        rig.wait_until("the first attempt to fail transiently", || {
            rig.status_of(&id) == ("STARTED".to_string(), 1)
        });
        let record = rig.store.execution(&id).expect("read").expect("exists");
        assert!(
            record
                .error
                .as_deref()
                .is_some_and(|e| e.contains("No space left on device")),
            "{record:?}"
        );
        assert!(
            record
                .log
                .contains("WARN attempt 2 of 4 in 1 s: step 1 (disk"),
            "{}",
            record.log
        );
        let report = rig.executor.drain(Instant::now() + Duration::from_secs(5));
        assert_eq!(report, DrainReport::default());
        // Past its retry delay, it is still waiting: recovered at the next start.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(rig.status_of(&id), ("STARTED".to_string(), 1));
        assert_eq!(rig.executor.running(), 0);
    }

    #[test]
    fn a_retried_execution_completes_once_the_disk_has_room() {
        let rig = rig_with(
            "limits:\n  retries: 3\n  retry_delay_seconds: 1\nsteps:\n  - disk:\n      directory: out\n      file_name: \"{execution_id}\"\n",
            1,
            0,
        );
        let job = rig.receive(1).remove(0);
        let id = job.record.id.clone();
        rig.executor.submit(job, None);
        rig.wait_until("the retry to complete", || {
            rig.status_of(&id) == ("COMPLETE".to_string(), 2)
        });
        let record = rig.store.execution(&id).expect("read").expect("exists");
        assert_eq!(record.error, None);
        assert_eq!(record.documents.len(), 1);
    }
}
