//! Group commit: receipts arriving together share one filesystem sync and
//! one SQLite transaction instead of paying for their own.
//!
//! ```text
//! request threads:  write files ─┐                        ┌─▶ MDN
//!                   commit(row) ─┴▶ committer: syncfs, one ┘
//!                                   transaction for the batch
//! ```
//!
//! A request thread blocks in [`GroupCommitter::commit`] until its row is
//! committed; the committer takes whatever queued up while it was syncing,
//! so batches grow with load and a lone request waits for nothing.
//! Execution states ([`GroupCommitter::record_executions`]) ride in the same
//! transactions without waiting, so they share the receipts' fsyncs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use super::{files, ExecutionRecord, Receipt, Result, Store, StoreError};

/// At most this many receipts per batch.
const MAX_BATCH: usize = 512;

enum Job {
    Receipt {
        // Boxed: a receipt is large next to the other variant.
        receipt: Box<Receipt>,
        reply: mpsc::SyncSender<Result<i64>>,
    },
    Executions(Vec<ExecutionRecord>),
}

/// Hands message rows to the committer thread.
#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the committer thread for a store and its data directory.
    pub fn start(store: Arc<dyn Store>, data_dir: PathBuf) -> std::io::Result<GroupCommitter> {
        let (queue, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("atom-group-commit".into())
            .spawn(move || run(store, data_dir, jobs))?;
        Ok(GroupCommitter { queue })
    }

    /// Makes the files written so far and `receipt` (message row and
    /// queued execution) durable; returns the message row id.
    pub fn commit(&self, receipt: Receipt) -> Result<i64> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::Receipt {
                receipt: Box::new(receipt),
                reply,
            })
            .map_err(|_| StoreError::new("committing", "the committer thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| StoreError::new("committing", "the committer thread has stopped"))?
    }
}

impl GroupCommitter {
    /// Queues execution states for the next transaction; does not wait.
    pub fn record_executions(&self, executions: Vec<ExecutionRecord>) -> Result<()> {
        self.queue.send(Job::Executions(executions)).map_err(|_| {
            StoreError::new("recording executions", "the committer thread has stopped")
        })
    }
}

fn run(store: Arc<dyn Store>, data_dir: PathBuf, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut receipts = Vec::new();
        let mut replies = Vec::new();
        let mut executions = Vec::new();
        for job in batch {
            match job {
                Job::Receipt { receipt, reply } => {
                    receipts.push(*receipt);
                    replies.push(reply);
                }
                Job::Executions(states) => executions.extend(states),
            }
        }
        // Files need the filesystem sync only when receipts are in the batch.
        let synced = if receipts.is_empty() {
            Ok(())
        } else {
            files::sync_filesystem(&data_dir)
        };
        let outcome = synced.and_then(|()| store.commit_batch(&receipts, &executions));
        tracing::trace!(
            receipts = receipts.len(),
            executions = executions.len(),
            ok = outcome.is_ok(),
            "group commit"
        );
        match outcome {
            Ok(ids) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = replies.len(), "group commit failed; nothing in the batch is acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::new("group commit", &e)));
                }
                // Execution states are not lost with the receipts: on their own, retried.
                retry_executions(store.as_ref(), &executions);
            }
        }
    }
}

/// Writes execution states alone, retrying with back-off until it works
/// (a lost final state would make its execution run again at start).
fn retry_executions(store: &dyn Store, executions: &[ExecutionRecord]) {
    if executions.is_empty() {
        return;
    }
    let mut delay = std::time::Duration::from_millis(50);
    while let Err(e) = store.update_executions(executions) {
        tracing::error!(error = %e, executions = executions.len(), "writing execution history failed; retrying");
        std::thread::sleep(delay);
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}
