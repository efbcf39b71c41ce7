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
//! [`INPROCESS_DELAY`]: most finish sooner, and their final state replaces
//! it, which saves one durable write (an fsync) per execution.

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
    queue: Sender<ExecutionRecord>,
}

impl HistoryWriter {
    /// States go into the group committer's transactions, sharing the
    /// receipts' fsyncs.
    pub fn start(committer: GroupCommitter) -> std::io::Result<HistoryWriter> {
        let (queue, updates) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("atom-history".into())
            .spawn(move || run(committer, updates))?;
        Ok(HistoryWriter { queue })
    }

    /// Queues the current state of an execution for writing.
    pub fn record(&self, execution: &ExecutionRecord) {
        if self.queue.send(execution.clone()).is_err() {
            tracing::error!(execution = %execution.id, "history writer stopped; state not recorded");
        }
    }
}

fn run(committer: GroupCommitter, updates: Receiver<ExecutionRecord>) {
    // INPROCESS states waiting to see whether their execution ends first.
    let mut running: HashMap<String, (Instant, ExecutionRecord)> = HashMap::new();
    loop {
        let first = match updates.recv_timeout(INPROCESS_DELAY / 2) {
            Ok(update) => Some(update),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = Vec::new();
        for update in first.into_iter().chain(updates.try_iter().take(MAX_BATCH)) {
            if update.status == status::INPROCESS {
                running.insert(update.id.clone(), (Instant::now(), update));
            } else {
                running.remove(&update.id);
                batch.push(update);
            }
        }
        let due: Vec<String> = running
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= INPROCESS_DELAY)
            .map(|(id, _)| id.clone())
            .collect();
        batch.extend(
            due.iter()
                .filter_map(|id| running.remove(id).map(|(_, r)| r)),
        );
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = committer.record_executions(batch) {
            tracing::error!(error = %e, "execution history not recorded");
            return;
        }
    }
}
