//! One execution: a received document through the process's steps.
//!
//! ```text
//! payload ─▶ [wasm: 1 doc ─▶ n docs] ─▶ [disk: write each] ─▶ [http: POST each] ─▶ kept
//! ```
//!
//! Every step sees every document the previous one produced. The first
//! failing step ends the attempt. A transient failure (full disk,
//! unreachable endpoint) with retries left queues the execution again
//! (STARTED) to run after a doubling delay; any other failure ends it as
//! ERROR with the step, the document and the reason. The log keeps what
//! the guests wrote to stderr, over all attempts.
//!
//! A panic in a step or the engine ends the execution ERROR with the
//! panic's message; the worker that ran it carries on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::WorkerMode;
use crate::engine::{GuestLimits, Properties};
use crate::listeners::bundle::ListenerSpec;
use crate::process::history::HistoryWriter;
use crate::process::steps::{self, Content, Document, StepContext, StepFailure};
use crate::store::documents::Documents;
use crate::store::{status, ExecutionRecord, KeptDocument, Store};

/// How long an attempt waits for its INPROCESS state to be durable before
/// its first delivery step.
const ATTEMPT_RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// The log of one execution is cut here.
const MAX_LOG: usize = 256 * 1024;

/// The tracked properties of a received document, by template name.
pub type TrackedProperties = BTreeMap<String, String>;

/// Template and environment names of the tracked properties.
pub const TRACKED: [(&str, &str); 6] = [
    ("as2_from", "AS2_FROM"),
    ("as2_to", "AS2_TO"),
    ("subject", "AS2_SUBJECT"),
    ("message_id", "AS2_MESSAGE_ID"),
    ("file_name", "AS2_FILE_NAME"),
    ("mime_type", "AS2_MIME_TYPE"),
];

/// An execution handed to a worker, pinned to the bundle version that
/// received its document (hot reload never switches it mid-way).
pub struct Job {
    pub spec: Arc<ListenerSpec>,
    pub record: ExecutionRecord,
}

impl Job {
    fn tracked(&self) -> Result<TrackedProperties, String> {
        serde_json::from_str(&self.record.properties_json)
            .map_err(|e| format!("the stored tracked properties are unreadable: {e}"))
    }
}

/// How one attempt of an execution ended.
pub enum Ran {
    /// A final state (COMPLETE, COMPLETE_WARN or ERROR), handed to the
    /// history writer.
    Finished(ExecutionRecord),
    /// A transient failure with retries left: recorded back as STARTED
    /// (so a crash leaves it for recovery); run `job` again after `delay`.
    Retry {
        job: Job,
        delay: Duration,
        /// Transient failures so far, this one included.
        retries_done: u32,
    },
}

/// Test-only fault switches, read from the environment once at start.
/// Unset (as in production) they do nothing. They let end-to-end tests
/// provoke what is hard to provoke for real without root:
///
/// - `ATOM_TEST_PANIC_SUBJECT=<value>`: a step panics when the document's
///   tracked `subject` equals the value;
/// - `ATOM_TEST_TRANSIENT_FAILURES=<n>`: the first n disk-step writes of
///   this Atom process fail with an injected ENOSPC.
#[derive(Debug, Default)]
pub struct TestFaults {
    panic_subject: Option<String>,
    disk_failures_left: AtomicU64,
}

impl TestFaults {
    fn from_env() -> TestFaults {
        let panic_subject = std::env::var("ATOM_TEST_PANIC_SUBJECT")
            .ok()
            .filter(|v| !v.is_empty());
        let failures = std::env::var("ATOM_TEST_TRANSIENT_FAILURES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if panic_subject.is_some() || failures > 0 {
            tracing::warn!(panic_subject = ?panic_subject, transient_failures = failures, "test fault switches are set; never set them in production");
        }
        TestFaults {
            panic_subject,
            disk_failures_left: AtomicU64::new(failures),
        }
    }

    /// The injected ENOSPC, while some are left.
    pub fn disk_failure(&self) -> Option<std::io::Error> {
        self.disk_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| std::io::Error::from_raw_os_error(libc::ENOSPC))
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs executions; shared by all workers.
pub struct Runner {
    store: Arc<dyn Store>,
    documents: Arc<dyn Documents>,
    metrics: Arc<crate::admin::metrics::Metrics>,
    http: steps::http::SharedClient,
    history: HistoryWriter,
    faults: TestFaults,
}

impl Runner {
    pub fn new(
        store: Arc<dyn Store>,
        documents: Arc<dyn Documents>,
        history: HistoryWriter,
        metrics: Arc<crate::admin::metrics::Metrics>,
    ) -> Runner {
        Runner {
            store,
            documents,
            metrics,
            http: steps::http::SharedClient::default(),
            history,
            faults: TestFaults::from_env(),
        }
    }

    /// A runner whose first `n` disk-step writes fail with ENOSPC, for
    /// unit tests (which must not share the environment switch).
    #[cfg(test)]
    pub(crate) fn with_disk_failures(self, n: u64) -> Runner {
        Runner {
            faults: TestFaults {
                disk_failures_left: AtomicU64::new(n),
                ..TestFaults::default()
            },
            ..self
        }
    }

    /// Where received and kept documents are.
    pub fn documents(&self) -> &dyn Documents {
        self.documents.as_ref()
    }

    pub fn history(&self) -> &HistoryWriter {
        &self.history
    }

    /// Runs one attempt of an execution and records its state; `time_cap`
    /// lowers the guests' time limit (the Low_Latency_Debug quota), and
    /// `retries_done` counts the transient failures before this attempt.
    /// Never unwinds: a panic inside ends the execution ERROR, recorded.
    pub fn run(
        &self,
        job: Job,
        mode: WorkerMode,
        time_cap: Option<Duration>,
        retries_done: u32,
    ) -> Ran {
        let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.attempt(&job, mode, time_cap, retries_done)
        }));
        match attempt {
            Ok((record, None)) => Ran::Finished(record),
            Ok((record, Some(delay))) => Ran::Retry {
                job: Job {
                    spec: job.spec,
                    record,
                },
                delay,
                retries_done: retries_done + 1,
            },
            Err(payload) => Ran::Finished(self.panicked(&job, mode, &panic_message(&*payload))),
        }
    }

    /// Ends an execution whose attempt panicked: ERROR with the message.
    fn panicked(&self, job: &Job, mode: WorkerMode, message: &str) -> ExecutionRecord {
        let mut record = job.record.clone();
        record.attempts += 1;
        record.version = job.spec.version.clone();
        record.mode = mode.as_str().into();
        record.started_at = Some(crate::server::inbound::now_rfc3339());
        let reason =
            format!("the execution panicked: {message} (a bug in Atom; the worker carried on)");
        let mut log = Log::continuing(&record.log);
        log.line("ERROR", format_args!("{reason}"));
        tracing::error!(execution = %record.id, process = %record.process, panic = %message, "execution panicked; recorded as ERROR");
        record.status = status::ERROR.into();
        record.error = Some(reason);
        self.finish(record, log, mode == WorkerMode::LowLatencyDebug)
    }

    /// One attempt; `Some(delay)` when it failed transiently and was
    /// queued again.
    fn attempt(
        &self,
        job: &Job,
        mode: WorkerMode,
        time_cap: Option<Duration>,
        retries_done: u32,
    ) -> (ExecutionRecord, Option<Duration>) {
        let mut record = job.record.clone();
        record.status = status::INPROCESS.into();
        record.attempts += 1;
        record.version = job.spec.version.clone();
        record.mode = mode.as_str().into();
        record.started_at = Some(crate::server::inbound::now_rfc3339());
        self.history.record(&record);

        let debug = mode == WorkerMode::LowLatencyDebug;
        // The log goes on over retries (each says why it is one).
        let mut log = Log::continuing(&record.log);
        log.line(
            "INFO",
            format_args!(
                "execution {} of process {} version {} (attempt {}, {} mode)",
                record.id,
                job.spec.id,
                job.spec.version,
                record.attempts,
                mode.as_str()
            ),
        );
        let tracked = match job.tracked() {
            Ok(tracked) => tracked,
            Err(e) => {
                log.line("WARN", format_args!("{e}; running without them"));
                TrackedProperties::new()
            }
        };
        if debug {
            log.line("DEBUG", format_args!("tracked properties: {tracked:?}"));
        }
        let mut engine = Duration::ZERO;
        let mut instantiate = Duration::ZERO;
        let mut warned = false;
        let outcome = self.steps(
            job,
            &record,
            &tracked,
            &mut log,
            debug,
            time_cap,
            &mut engine,
            &mut instantiate,
            &mut warned,
        );
        record.engine_us = Some(engine.as_micros() as i64);
        record.instantiate_us = Some(instantiate.as_micros() as i64);
        match outcome {
            Ok(documents) => {
                record.output_documents = documents.len() as u32;
                record.output_bytes = documents.iter().map(Document::size).sum();
                record.documents = self.keep(&record, documents, &mut log);
                record.error = None;
                record.status = if warned {
                    status::COMPLETE_WARN
                } else {
                    status::COMPLETE
                }
                .into();
                log.line(
                    "INFO",
                    format_args!(
                        "{}: {} document(s), {} bytes",
                        record.status, record.output_documents, record.output_bytes
                    ),
                );
            }
            Err(failure) => {
                let limits = job.spec.process.limits;
                let attempt = retries_done + 1;
                if let (true, Some(delay)) = (failure.transient, failure.retry_in) {
                    // The step keeps its own count and give-up time.
                    log.line(
                        if failure.waiting { "INFO" } else { "WARN" },
                        format_args!(
                            "{}; execution queued again in {} s",
                            failure.reason,
                            delay.as_secs()
                        ),
                    );
                    if failure.waiting {
                        tracing::debug!(execution = %record.id, process = %record.process, retry_in_s = delay.as_secs(), reason = %failure.reason, "step waits; execution queued again");
                        record.error = None;
                    } else {
                        tracing::warn!(execution = %record.id, process = %record.process, retry_in_s = delay.as_secs(), error = %failure.reason, "step asked to be tried again later; execution queued again");
                        record.error = Some(failure.reason);
                    }
                    record.status = status::STARTED.into();
                    record.finished_at = None;
                    record.finished_at_us = None;
                    record.log = log.text;
                    self.history.record(&record);
                    return (record, Some(delay));
                }
                if failure.transient && retries_done < limits.retries {
                    let delay = limits.retry_delay_after(retries_done);
                    log.line(
                        "WARN",
                        format_args!(
                            "attempt {} of {} in {} s: {}",
                            attempt + 1,
                            limits.retries + 1,
                            delay.as_secs(),
                            failure.reason
                        ),
                    );
                    tracing::warn!(execution = %record.id, process = %record.process, attempt, retry_in_s = delay.as_secs(), error = %failure.reason, "transient step failure; execution queued again");
                    record.status = status::STARTED.into();
                    record.error = Some(failure.reason);
                    record.finished_at = None;
                    record.finished_at_us = None;
                    record.log = log.text;
                    self.history.record(&record);
                    return (record, Some(delay));
                }
                let plural = if attempt == 1 { "" } else { "s" };
                let reason = if failure.transient {
                    format!(
                        "{} (transient failure; gave up after {attempt} attempt{plural})",
                        failure.reason
                    )
                } else if attempt > 1 {
                    format!("{} (after {attempt} attempts)", failure.reason)
                } else {
                    failure.reason
                };
                log.line("ERROR", format_args!("{reason}"));
                record.status = status::ERROR.into();
                record.error = Some(reason);
            }
        }
        (self.finish(record, log, debug), None)
    }

    /// Records a final state, with its log, and counts it.
    fn finish(&self, mut record: ExecutionRecord, log: Log, debug: bool) -> ExecutionRecord {
        let now = time::OffsetDateTime::now_utc();
        record.finished_at = Some(crate::server::inbound::now_rfc3339());
        record.finished_at_us = Some((now.unix_timestamp_nanos() / 1000) as i64);
        record.log = log.text;
        if record.status == status::ERROR {
            tracing::warn!(execution = %record.id, process = %record.process, error = ?record.error, "execution failed");
        } else if debug {
            tracing::debug!(execution = %record.id, process = %record.process, status = %record.status, engine_us = ?record.engine_us, "execution finished");
        }
        self.history.record(&record);
        self.metrics
            .executions
            .with_label_values(&[&record.process, &record.mode, &record.status])
            .inc();
        if let Some(end) = record.finished_at_us {
            self.metrics
                .execution_seconds
                .with_label_values(&[&record.mode])
                .observe((end - record.queued_at_us).max(0) as f64 / 1e6);
        }
        record
    }

    #[allow(clippy::too_many_arguments)]
    fn steps(
        &self,
        job: &Job,
        record: &ExecutionRecord,
        tracked: &TrackedProperties,
        log: &mut Log,
        debug: bool,
        time_cap: Option<Duration>,
        engine: &mut Duration,
        instantiate: &mut Duration,
        warned: &mut bool,
    ) -> Result<Vec<Document>, StepFailure> {
        let size = self
            .documents
            .length(&record.payload_path)
            .map_err(|e| StepFailure::payload(&e))?;
        let mut documents = vec![Document {
            content: Content::Stored {
                reference: record.payload_path.clone(),
                size,
            },
            properties: Properties::new(),
            delivered: Vec::new(),
        }];
        let process = &job.spec.process;
        let limits = GuestLimits {
            max_time: time_cap
                .map(|cap| cap.min(process.limits.guest.max_time))
                .unwrap_or(process.limits.guest.max_time),
            ..process.limits.guest
        };
        let date = time::OffsetDateTime::now_utc();
        let date_text = format!(
            "{:04}{:02}{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        let mut attempt_recorded = false;
        for (index, step) in process.steps.iter().enumerate() {
            let name = format!("step {} ({})", index + 1, step.describe());
            if !attempt_recorded && step.has_effects() {
                self.record_attempt_durably()?;
                attempt_recorded = true;
            }
            let started = Instant::now();
            let count_in = documents.len();
            let mut next = Vec::with_capacity(documents.len());
            for (doc_index, document) in documents.into_iter().enumerate() {
                let where_ = format!("{name}, document {}", doc_index + 1);
                if let Some(subject) = &self.faults.panic_subject {
                    if tracked.get("subject") == Some(subject) {
                        panic!(
                            "injected test panic in {where_} (ATOM_TEST_PANIC_SUBJECT={subject})"
                        );
                    }
                }
                let mut cx = StepContext {
                    documents: self.documents.as_ref(),
                    store: self.store.as_ref(),
                    metrics: &self.metrics,
                    http: &self.http,
                    faults: &self.faults,
                    job,
                    record,
                    tracked,
                    date: &date_text,
                    log: &mut *log,
                    debug,
                    limits,
                    engine: &mut *engine,
                    instantiate: &mut *instantiate,
                    warned: &mut *warned,
                    step: index,
                    document: doc_index,
                    document_number: (doc_index + 1).to_string(),
                    where_: &where_,
                };
                next.extend(step.run(document, &mut cx)?);
            }
            documents = next;
            let level = if debug { "DEBUG" } else { "INFO" };
            log.line(
                level,
                format_args!(
                    "{name}: {count_in} document(s) in, {} out, {} µs",
                    documents.len(),
                    started.elapsed().as_micros()
                ),
            );
        }
        Ok(documents)
    }

    /// Makes this attempt (INPROCESS, its number) durable before anything
    /// leaves: after a crash, a run that may have delivered is counted in
    /// `attempts`. Guest steps before it have no effect outside, so a run
    /// cut off there left no trace to count. One shared commit, not an
    /// fsync of its own.
    fn record_attempt_durably(&self) -> Result<(), StepFailure> {
        self.history
            .flush(ATTEMPT_RECORD_TIMEOUT)
            .map_err(|e| StepFailure {
                reason: format!("the attempt could not be recorded before delivering: {e}"),
                transient: true,
                retry_in: None,
                waiting: false,
            })
    }

    /// Keeps the final documents with the execution, for `atom executions show`.
    fn keep(
        &self,
        record: &ExecutionRecord,
        documents: Vec<Document>,
        log: &mut Log,
    ) -> Vec<KeptDocument> {
        let mut kept = Vec::with_capacity(documents.len());
        for (i, document) in documents.into_iter().enumerate() {
            let size = document.size();
            let kept_as = match &document.content {
                Content::Memory(bytes) => self.documents.keep(&record.id, i, bytes),
                Content::Stored { reference, .. } => {
                    self.documents.keep_stored(&record.id, i, reference)
                }
            };
            let reference = match kept_as {
                Ok(reference) => reference,
                Err(e) => {
                    log.line("WARN", format_args!("document {} not kept: {e}", i + 1));
                    continue;
                }
            };
            kept.push(KeptDocument {
                path: reference,
                size,
                properties: document.properties,
                delivered: document.delivered,
            });
        }
        kept
    }
}

/// The process log, with a size cap.
#[derive(Default)]
pub struct Log {
    text: String,
    cut: bool,
}

impl Log {
    /// A log that goes on from an earlier attempt's.
    fn continuing(previous: &str) -> Log {
        Log {
            text: previous.to_string(),
            cut: previous.len() >= MAX_LOG,
        }
    }

    pub fn line(&mut self, level: &str, message: std::fmt::Arguments<'_>) {
        if self.text.len() >= MAX_LOG {
            if !self.cut {
                self.cut = true;
                self.text.push_str("... log cut at 256 KiB\n");
            }
            return;
        }
        let _ = writeln!(
            self.text,
            "{} {level} {message}",
            crate::server::inbound::now_rfc3339()
        );
    }
}

/// A new execution ID: `execution-<uuid>-YYYY.MM.DD`.
pub fn new_execution_id() -> String {
    let today = time::OffsetDateTime::now_utc();
    format!(
        "execution-{}-{:04}.{:02}.{:02}",
        uuid::Uuid::new_v4(),
        today.year(),
        u8::from(today.month()),
        today.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_faults_are_inert_unless_set_and_panic_messages_are_kept() {
        let none = TestFaults::default();
        assert!(none.panic_subject.is_none());
        assert!(none.disk_failure().is_none());
        let two = TestFaults {
            panic_subject: None,
            disk_failures_left: AtomicU64::new(2),
        };
        let injected: Vec<bool> = (0..3).map(|_| two.disk_failure().is_some()).collect();
        assert_eq!(injected, [true, true, false]);
        let e = TestFaults {
            disk_failures_left: AtomicU64::new(1),
            ..TestFaults::default()
        }
        .disk_failure()
        .expect("one");
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);

        let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).expect_err("panics");
        assert_eq!(panic_message(&*payload), "boom 7");
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).expect_err("panics");
        assert_eq!(panic_message(&*payload), "a panic without a message");
    }
}
