//! Execution history writes, off the workers' path: workers hand over
//! snapshots of their execution and go on; one thread writes whatever
//! queued up in one transaction.
//!
//! A completion lost in a crash before it was written only means the
//! execution is recovered and run again at start; delivery steps are
//! idempotent for that reason (the disk step overwrites its own file).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::store::{ExecutionRecord, Store};

const MAX_BATCH: usize = 256;

#[derive(Clone)]
pub struct HistoryWriter {
    queue: Sender<ExecutionRecord>,
}

impl HistoryWriter {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<HistoryWriter> {
        let (queue, updates) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("atom-history".into())
            .spawn(move || run(store, updates))?;
        Ok(HistoryWriter { queue })
    }

    /// Queues the current state of an execution for writing.
    pub fn record(&self, execution: &ExecutionRecord) {
        if self.queue.send(execution.clone()).is_err() {
            tracing::error!(execution = %execution.id, "history writer stopped; state not recorded");
        }
    }
}

fn run(store: Arc<dyn Store>, updates: Receiver<ExecutionRecord>) {
    while let Ok(first) = updates.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match updates.try_recv() {
                Ok(update) => batch.push(update),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
        while let Err(e) = store.update_executions(&batch) {
            tracing::error!(error = %e, batch = batch.len(), "writing execution history failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
