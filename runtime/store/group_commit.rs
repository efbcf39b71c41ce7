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

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use super::{files, Receipt, Result, Store, StoreError};

/// At most this many receipts per batch.
const MAX_BATCH: usize = 512;

struct Job {
    receipt: Receipt,
    reply: mpsc::SyncSender<Result<i64>>,
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
            .send(Job { receipt, reply })
            .map_err(|_| StoreError::new("committing", "the committer thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| StoreError::new("committing", "the committer thread has stopped"))?
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
        let receipts: Vec<Receipt> = batch.iter().map(|j| j.receipt.clone()).collect();
        let outcome =
            files::sync_filesystem(&data_dir).and_then(|()| store.insert_receipts(&receipts));
        tracing::trace!(batch = batch.len(), ok = outcome.is_ok(), "group commit");
        match outcome {
            Ok(ids) => {
                for (job, id) in batch.into_iter().zip(ids) {
                    let _ = job.reply.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = batch.len(), "group commit failed; nothing in the batch is acknowledged");
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::new("group commit", &e)));
                }
            }
        }
    }
}
