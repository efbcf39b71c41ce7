//! Group commit: receipts arriving together share one filesystem sync and
//! one SQLite transaction instead of paying for their own.
//!
//! ```text
//! request threads:  stage documents ─┐                             ┌─▶ MDN
//!                   commit(row) ──────┴▶ committer: documents made ─┘
//!                                        durable, one transaction
//! ```
//!
//! A request thread blocks in [`GroupCommitter::commit`] until its row is
//! committed, or until the commit deadline passes (then the sender gets a
//! 503, never a positive MDN for something not stored); the committer
//! takes whatever queued up while it was syncing, so batches grow with
//! load and a lone request waits for nothing. Execution states
//! ([`GroupCommitter::record_executions`]) ride in the same transactions
//! without waiting, so they share the receipts' fsyncs; when a commit
//! fails they are kept and go with the next one.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::documents::Documents;
use super::health::StoreHealth;
use super::{Committed, ExecutionRecord, Receipt, Result, Store, StoreError, StoreErrorKind};

/// At most this many receipts per batch.
const MAX_BATCH: usize = 512;
/// Execution states that failed to commit are tried again this often
/// while no other work arrives.
const EXECUTION_RETRY: Duration = Duration::from_millis(500);

enum Job {
    Receipt {
        // Boxed: a receipt is large next to the other variants.
        receipt: Box<Receipt>,
        reply: mpsc::SyncSender<Result<Committed>>,
    },
    Executions(Vec<ExecutionRecord>),
    /// Answered once everything queued before it is committed (or failed).
    Flush(mpsc::SyncSender<Result<()>>),
}

/// Called with the execution of a receipt that was committed after its
/// sender stopped waiting (the deadline passed): nobody else will hand it
/// to the workers.
pub type LateExecutionHandler = Box<dyn Fn(ExecutionRecord) + Send + Sync>;

/// Hands message rows to the committer thread.
#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
    deadline: Duration,
    late: Arc<OnceLock<LateExecutionHandler>>,
}

impl GroupCommitter {
    /// Starts the committer thread for a store and its data directory;
    /// [`GroupCommitter::commit`] waits at most `deadline`.
    pub fn start(
        store: Arc<dyn Store>,
        documents: Arc<dyn Documents>,
        health: Arc<StoreHealth>,
        deadline: Duration,
    ) -> std::io::Result<GroupCommitter> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let late: Arc<OnceLock<LateExecutionHandler>> = Arc::default();
        let committer = Committer {
            store,
            documents,
            health,
            late: late.clone(),
            unwritten: Vec::new(),
        };
        std::thread::Builder::new()
            .name("atom-group-commit".into())
            .spawn(move || committer.run(jobs))?;
        Ok(GroupCommitter {
            queue,
            deadline,
            late,
        })
    }

    /// Sets who runs executions committed after their sender gave up.
    pub fn on_late_execution(&self, handler: LateExecutionHandler) {
        if self.late.set(handler).is_err() {
            tracing::warn!("late execution handler set twice; keeping the first");
        }
    }

    /// Makes the files written so far and `receipt` (message row and
    /// queued execution) durable, or finds it a duplicate.
    pub fn commit(&self, receipt: Receipt) -> Result<Committed> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::Receipt {
                receipt: Box::new(receipt),
                reply,
            })
            .map_err(|_| StoreError::new("committing", "the committer thread has stopped"))?;
        match answer.recv_timeout(self.deadline) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::new(
                "committing",
                format!(
                    "not durable within {} s (the store is too slow or stuck)",
                    self.deadline.as_secs()
                ),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::new(
                "committing",
                "the committer thread has stopped",
            )),
        }
    }

    /// Queues execution states for the next transaction; does not wait.
    pub fn record_executions(&self, executions: Vec<ExecutionRecord>) -> Result<()> {
        self.queue.send(Job::Executions(executions)).map_err(|_| {
            StoreError::new("recording executions", "the committer thread has stopped")
        })
    }

    /// Waits until everything queued so far is committed, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::Flush(reply))
            .map_err(|_| StoreError::new("flushing", "the committer thread has stopped"))?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| StoreError::new("flushing", "not committed in time"))?
    }
}

/// The committer thread's state.
struct Committer {
    store: Arc<dyn Store>,
    documents: Arc<dyn Documents>,
    health: Arc<StoreHealth>,
    late: Arc<OnceLock<LateExecutionHandler>>,
    /// Execution states whose commit failed: never dropped (a lost final
    /// state would make its execution run again at start), tried again
    /// with the next batch.
    unwritten: Vec<ExecutionRecord>,
}

impl Committer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let first = if self.unwritten.is_empty() {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            } else {
                match jobs.recv_timeout(EXECUTION_RETRY) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Last chance at exit.
                        let _ = self.commit(Vec::new(), Vec::new(), Vec::new());
                        return;
                    }
                }
            };
            let mut batch: Vec<Job> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut receipts = Vec::new();
            let mut replies = Vec::new();
            let mut flushes = Vec::new();
            for job in batch {
                match job {
                    Job::Receipt { receipt, reply } => {
                        receipts.push(*receipt);
                        replies.push(reply);
                    }
                    Job::Executions(states) => self.unwritten.extend(states),
                    Job::Flush(reply) => flushes.push(reply),
                }
            }
            let executions = std::mem::take(&mut self.unwritten);
            let flushed = self.commit(receipts, replies, executions);
            for reply in flushes {
                let _ = reply.send(
                    flushed
                        .clone()
                        .map_err(|(kind, e)| StoreError::of_kind(kind, "flushing", e)),
                );
            }
        }
    }

    /// Commits one batch and answers its senders; `Err` with the kind and
    /// the reason when the batch failed.
    fn commit(
        &mut self,
        receipts: Vec<Receipt>,
        replies: Vec<mpsc::SyncSender<Result<Committed>>>,
        executions: Vec<ExecutionRecord>,
    ) -> std::result::Result<(), (StoreErrorKind, String)> {
        if receipts.is_empty() && executions.is_empty() {
            return Ok(());
        }
        // Documents need making durable when the batch's rows reference new
        // ones: receipts, and executions that kept documents.
        let new_documents =
            !receipts.is_empty() || executions.iter().any(|e| !e.documents.is_empty());
        let synced = if new_documents {
            self.documents.make_durable()
        } else {
            Ok(())
        };
        let outcome = synced.and_then(|()| self.store.commit_batch(&receipts, &executions));
        tracing::trace!(
            receipts = receipts.len(),
            executions = executions.len(),
            ok = outcome.is_ok(),
            "group commit"
        );
        self.health.report(outcome.as_ref().map(|_| ()));
        match outcome {
            Ok(outcomes) => {
                for ((reply, receipt), committed) in replies.into_iter().zip(receipts).zip(outcomes)
                {
                    // A failed send hands the value back: the sender gave up.
                    if let Err(mpsc::SendError(Ok(committed))) = reply.send(Ok(committed)) {
                        self.committed_late(receipt, committed);
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, batch = replies.len(), executions = executions.len(),
                    "group commit failed; nothing in the batch is acknowledged, execution states are kept for the next one");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::of_kind(e.kind, "group commit", &e)));
                }
                self.unwritten = executions;
                Err((e.kind, e.to_string()))
            }
        }
    }

    /// A receipt stored after its sender gave up waiting: the sender got a
    /// 503 and will resend (then gets this receipt's MDN as a duplicate);
    /// its execution is queued in the store and must still run.
    fn committed_late(&self, receipt: Receipt, committed: Committed) {
        let (Committed::Stored(id), Some(mut execution)) = (committed, receipt.execution) else {
            return;
        };
        execution.message_row = id;
        tracing::warn!(record = id, execution = %execution.id, "receipt committed after its deadline; running its execution");
        match self.late.get() {
            Some(handler) => handler(execution),
            None => {
                tracing::error!(execution = %execution.id, "no handler for late executions; it runs at the next start")
            }
        }
    }
}
