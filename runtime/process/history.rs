//! Execution history writes, off the workers' path: workers hand over
//! snapshots of their execution and go on; this thread passes them on in
//! batches to the group committer, whose transactions (and fsyncs) they
//! share with the receipts.
//!
//! A completion lost in a crash before it was written only means the
//! execution is recovered and run again at start; delivery steps are
//! idempotent for that reason (the disk step overwrites its own file).
//!
//! The INPROCESS state is written only for executions still running after
//! [`INPROCESS_DELAY`], or about to run their first delivery step (then the
//! runner flushes, so that a run which may have delivered is counted in
//! `attempts` after a crash): most finish sooner, and their final state
//! replaces it, which saves one durable write per execution.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::store::group_commit::GroupCommitter;
use crate::store::{status, ExecutionRecord};

const MAX_BATCH: usize = 256;
/// How long an execution runs before `atom executions` shows it INPROCESS.
pub const INPROCESS_DELAY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct HistoryWriter {
    queue: Sender<Update>,
    committer: GroupCommitter,
}

enum Update {
    // Boxed: a record is large next to the other variant.
    State(Box<ExecutionRecord>),
    /// Everything queued before it goes to the committer now (INPROCESS
    /// states included); answered once handed over.
    Flush(crossbeam_channel::Sender<()>),
}

impl HistoryWriter {
    /// States go into the group committer's transactions, sharing the
    /// receipts' fsyncs.
    pub fn start(committer: GroupCommitter) -> std::io::Result<HistoryWriter> {
        let (queue, updates) = crossbeam_channel::unbounded();
        let thread_committer = committer.clone();
        std::thread::Builder::new()
            .name("atom-history".into())
            .spawn(move || run(thread_committer, updates))?;
        Ok(HistoryWriter { queue, committer })
    }

    /// Makes every state recorded so far durable, waiting up to `timeout`
    /// (at shutdown: a completed execution must not run again at start).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        let (done, handed_over) = crossbeam_channel::bounded(1);
        self.queue
            .send(Update::Flush(done))
            .map_err(|_| "the history writer has stopped".to_string())?;
        handed_over
            .recv_timeout(timeout)
            .map_err(|_| "the history writer did not hand its states over in time".to_string())?;
        self.committer
            .flush(timeout.saturating_sub(started.elapsed()))
            .map_err(|e| e.to_string())
    }

    /// Queues the current state of an execution for writing.
    pub fn record(&self, execution: &ExecutionRecord) {
        if self
            .queue
            .send(Update::State(Box::new(execution.clone())))
            .is_err()
        {
            tracing::error!(execution = %execution.id, "history writer stopped; state not recorded");
        }
    }
}

fn run(committer: GroupCommitter, updates: Receiver<Update>) {
    // INPROCESS states waiting to see whether their execution ends first.
    let mut running: HashMap<String, (Instant, ExecutionRecord)> = HashMap::new();
    loop {
        let first = match updates.recv_timeout(INPROCESS_DELAY / 2) {
            Ok(update) => Some(update),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        for update in first.into_iter().chain(updates.try_iter().take(MAX_BATCH)) {
            match update {
                Update::State(update) if update.status == status::INPROCESS => {
                    running.insert(update.id.clone(), (Instant::now(), *update));
                }
                Update::State(update) => {
                    running.remove(&update.id);
                    batch.push(*update);
                }
                Update::Flush(done) => flushes.push(done),
            }
        }
        let flushing = !flushes.is_empty();
        let due: Vec<String> = running
            .iter()
            .filter(|(_, (since, _))| flushing || since.elapsed() >= INPROCESS_DELAY)
            .map(|(id, _)| id.clone())
            .collect();
        batch.extend(
            due.iter()
                .filter_map(|id| running.remove(id).map(|(_, r)| r)),
        );
        if !batch.is_empty() {
            if let Err(e) = committer.record_executions(batch) {
                tracing::error!(error = %e, "execution history not recorded");
                return;
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
