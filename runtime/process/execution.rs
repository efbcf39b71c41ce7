//! One execution: a received document through the process's steps.
//!
//! ```text
//! payload ─▶ [wasm: 1 doc ─▶ n docs] ─▶ [disk: write each] ─▶ [http: POST each] ─▶ kept
//! ```
//!
//! Every step sees every document the previous one produced. The first
//! failing step ends the execution as ERROR with the step, the document
//! and the reason; the log keeps what the guests wrote to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::WorkerMode;
use crate::engine::{GuestInput, GuestLimits, Properties};
use crate::listeners::bundle::ListenerSpec;
use crate::process::definition::Step;
use crate::process::history::HistoryWriter;
use crate::store::{status, ExecutionRecord, KeptDocument};

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

/// A guest log line whose first word is `warn` or `warning` (any case,
/// colon optional) marks the execution COMPLETE_WARN.
pub fn is_warning(line: &str) -> bool {
    let first = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(':')
        .to_ascii_lowercase();
    first == "warn" || first == "warning"
}

/// A document between steps.
struct Document {
    bytes: Vec<u8>,
    properties: Properties,
    delivered: Vec<String>,
}

/// Runs executions; shared by all workers.
pub struct Runner {
    data_dir: PathBuf,
    metrics: Arc<crate::admin::metrics::Metrics>,
    /// Built on first use, on a worker thread (the blocking client may not
    /// be created inside the async runtime).
    http: std::sync::OnceLock<Result<reqwest::blocking::Client, String>>,
    history: HistoryWriter,
}

impl Runner {
    pub fn new(
        data_dir: PathBuf,
        history: HistoryWriter,
        metrics: Arc<crate::admin::metrics::Metrics>,
    ) -> Runner {
        Runner {
            data_dir,
            metrics,
            http: std::sync::OnceLock::new(),
            history,
        }
    }

    fn http_client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.http
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .user_agent(concat!("atom/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("building the HTTP client of http steps: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn history(&self) -> &HistoryWriter {
        &self.history
    }

    /// Runs one execution to its end and records it; `time_cap` lowers the
    /// guests' time limit (the Low_Latency_Debug quota).
    pub fn run(&self, job: Job, mode: WorkerMode, time_cap: Option<Duration>) -> ExecutionRecord {
        let mut record = job.record.clone();
        record.status = status::INPROCESS.into();
        record.attempts += 1;
        record.version = job.spec.version.clone();
        record.mode = mode.as_str().into();
        record.started_at = Some(crate::server::inbound::now_rfc3339());
        self.history.record(&record);

        let debug = mode == WorkerMode::LowLatencyDebug;
        let mut log = Log::default();
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
            &job,
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
                record.output_bytes = documents.iter().map(|d| d.bytes.len() as u64).sum();
                record.documents = self.keep(&record, documents, &mut log);
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
            Err(reason) => {
                log.line("ERROR", format_args!("{reason}"));
                record.status = status::ERROR.into();
                record.error = Some(reason);
            }
        }
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
    ) -> Result<Vec<Document>, String> {
        let payload = std::fs::read(&record.payload_path)
            .map_err(|e| format!("reading the received document {}: {e}", record.payload_path))?;
        let mut documents = vec![Document {
            bytes: payload,
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
        for (index, step) in process.steps.iter().enumerate() {
            let name = format!("step {} ({})", index + 1, step.describe());
            let started = Instant::now();
            let count_in = documents.len();
            let mut next = Vec::with_capacity(documents.len());
            for (doc_index, mut document) in documents.into_iter().enumerate() {
                let where_ = format!("{name}, document {}", doc_index + 1);
                let index_text = (doc_index + 1).to_string();
                let lookup = |key: &str| -> Option<&str> {
                    match key {
                        "process" => Some(job.spec.id.as_str()),
                        "execution_id" => Some(record.id.as_str()),
                        "date" => Some(date_text.as_str()),
                        "document_index" => Some(index_text.as_str()),
                        _ => tracked
                            .get(key)
                            .or_else(|| document.properties.get(key))
                            .map(String::as_str),
                    }
                };
                match step {
                    Step::Wasm { module, .. } => {
                        let env = environment(job, record, tracked, &process.settings, &document);
                        let run = module.run(GuestInput {
                            document: &document.bytes,
                            env: &env,
                            properties: &document.properties,
                            limits,
                        });
                        *engine += run.total;
                        *instantiate += run.instantiate;
                        for line in String::from_utf8_lossy(&run.stderr).lines() {
                            if is_warning(line) {
                                *warned = true;
                            }
                            log.line("GUEST", format_args!("{line}"));
                        }
                        if debug {
                            log.line(
                                "DEBUG",
                                format_args!(
                                    "{where_}: instantiate {} µs, total {} µs",
                                    run.instantiate.as_micros(),
                                    run.total.as_micros()
                                ),
                            );
                        }
                        let produced = run.outcome.map_err(|e| format!("{where_}: {e}"))?;
                        next.extend(produced.into_iter().map(|d| Document {
                            bytes: d.bytes,
                            properties: d.properties,
                            delivered: Vec::new(),
                        }));
                    }
                    Step::Disk(target) => {
                        let path = target
                            .write(&document.bytes, lookup)
                            .map_err(|e| format!("{where_}: {e}"))?;
                        log.line("INFO", format_args!("{where_}: wrote {}", path.display()));
                        document.delivered.push(path.display().to_string());
                        next.push(document);
                    }
                    Step::Http(target) => {
                        let client = self.http_client()?;
                        let delivered = target
                            .post(client, &document.bytes, lookup)
                            .map_err(|e| format!("{where_}: {e}"))?;
                        if delivered.attempts > 1 {
                            *warned = true;
                            log.line(
                                "WARN",
                                format_args!(
                                    "{where_}: delivered after {} attempts",
                                    delivered.attempts
                                ),
                            );
                        }
                        log.line(
                            "INFO",
                            format_args!(
                                "{where_}: POST {} -> HTTP {}",
                                delivered.url, delivered.status
                            ),
                        );
                        document.delivered.push(delivered.url);
                        next.push(document);
                    }
                }
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

    /// Keeps the final documents with the execution, for `atom executions show`.
    fn keep(
        &self,
        record: &ExecutionRecord,
        documents: Vec<Document>,
        log: &mut Log,
    ) -> Vec<KeptDocument> {
        let dir = execution_dir(&self.data_dir, &record.id);
        if !documents.is_empty() {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                log.line(
                    "WARN",
                    format_args!("documents not kept: {}: {e}", dir.display()),
                );
                return Vec::new();
            }
        }
        let mut kept = Vec::with_capacity(documents.len());
        for (i, document) in documents.into_iter().enumerate() {
            let path = dir.join(format!("document-{}", i + 1));
            if let Err(e) = std::fs::write(&path, &document.bytes) {
                log.line("WARN", format_args!("document {} not kept: {e}", i + 1));
                continue;
            }
            kept.push(KeptDocument {
                path: path.display().to_string(),
                size: document.bytes.len() as u64,
                properties: document.properties,
                delivered: document.delivered,
            });
        }
        kept
    }
}

/// Where an execution keeps its documents: `data/executions/<id>/`.
pub fn execution_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("executions").join(id)
}

/// The guest's environment: tracked properties, runtime names, the
/// process settings, and the dynamic properties as `DDP_<name>`.
fn environment(
    job: &Job,
    record: &ExecutionRecord,
    tracked: &TrackedProperties,
    settings: &[(String, String)],
    document: &Document,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = TRACKED
        .iter()
        .filter_map(|(key, var)| tracked.get(*key).map(|v| (var.to_string(), v.clone())))
        .collect();
    env.push(("ATOM_PROCESS".into(), job.spec.id.clone()));
    env.push(("ATOM_PROCESS_VERSION".into(), job.spec.version.clone()));
    env.push(("ATOM_EXECUTION_ID".into(), record.id.clone()));
    env.extend(settings.iter().cloned());
    env.extend(
        document
            .properties
            .iter()
            .map(|(k, v)| (format!("DDP_{k}"), v.clone())),
    );
    env
}

/// The process log, with a size cap.
#[derive(Default)]
struct Log {
    text: String,
    cut: bool,
}

impl Log {
    fn line(&mut self, level: &str, message: std::fmt::Arguments<'_>) {
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
