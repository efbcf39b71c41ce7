//! `atom executions [--process P] [--status S]`, `atom executions show ID`
//! and `atom executions rerun ID`.

use clap::Subcommand;
use serde::Deserialize;

use super::admin_client::AdminClient;
use super::CliError;

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// One execution: timings, documents, process log.
    Show {
        /// `execution-<uuid>-YYYY.MM.DD`.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a finished execution again from its stored document, as a new attempt of the same ID.
    ///
    /// Finished means COMPLETE, COMPLETE_WARN, ERROR or ABORTED. It runs on
    /// the process's currently deployed version, on the general workers,
    /// with a fresh log; its status goes back to STARTED, then to its new
    /// final state. Refused (exit code 1) when the ID is unknown, the
    /// execution has not finished, its stored document was purged, or its
    /// process is not deployed.
    Rerun {
        /// `execution-<uuid>-YYYY.MM.DD`.
        id: String,
    },
    /// Write a document the execution kept (1 = its first) to a file, or to standard output.
    Download {
        /// `execution-<uuid>-YYYY.MM.DD`.
        id: String,
        /// Which kept document, from 1 (see `atom executions show ID`).
        n: usize,
        /// Write it here instead of to standard output.
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
    },
}

/// `atom executions download ID N [--out FILE]`.
pub fn download(
    client: &AdminClient,
    id: &str,
    n: usize,
    out: Option<&std::path::Path>,
) -> Result<(), CliError> {
    super::messages::download_to(client, &format!("/api/executions/{id}/documents/{n}"), out)
}

#[derive(Debug, Deserialize)]
struct Document {
    path: String,
    size: u64,
    properties: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    delivered: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    message_row: i64,
    process: String,
    version: String,
    mode: String,
    status: String,
    attempts: u32,
    queued_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    queued_at_us: i64,
    finished_at_us: Option<i64>,
    engine_us: Option<i64>,
    input_documents: u32,
    input_bytes: u64,
    output_documents: u32,
    output_bytes: u64,
    error: Option<String>,
    log: String,
    documents: Vec<Document>,
}

impl Row {
    fn duration(&self) -> String {
        self.finished_at_us
            .map(|f| format!("{:.1} ms", (f - self.queued_at_us) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    }
}

/// `atom executions`.
pub fn list(
    client: &AdminClient,
    search: &crate::store::execution_query::ExecutionQuery,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    // Checked here too, so that a typo is named before any request.
    search.filter(limit).map_err(CliError::Usage)?;
    let path = super::admin_client::query_path(
        "/api/executions",
        limit,
        &[
            ("process", search.process.as_deref()),
            ("status", search.status.as_deref()),
            ("mode", search.mode.as_deref()),
            ("since", search.since.as_deref()),
            ("until", search.until.as_deref()),
        ],
    );
    if json {
        let rows: serde_json::Value = client.get(&path)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Row> = client.get(&path)?;
    if rows.is_empty() {
        println!("no executions");
        return Ok(());
    }
    println!(
        "{:<56} {:<20} {:<14} {:<18} {:>4} {:>10} {:>7} RECEIVED",
        "ID", "PROCESS", "STATUS", "MODE", "DOCS", "BYTES", "TIME"
    );
    for r in &rows {
        println!(
            "{:<56} {:<20} {:<14} {:<18} {:>4} {:>10} {:>7} {}",
            r.id,
            r.process,
            r.status,
            r.mode,
            r.output_documents,
            r.output_bytes,
            r.duration(),
            r.queued_at.get(..19).unwrap_or(&r.queued_at)
        );
        if let Some(e) = &r.error {
            println!("    error: {e}");
        }
    }
    Ok(())
}

/// `atom executions show ID`.
pub fn show(client: &AdminClient, id: &str, json: bool) -> Result<(), CliError> {
    let path = format!("/api/executions/{id}");
    if json {
        let row: serde_json::Value = client.get(&path)?;
        println!("{}", serde_json::to_string_pretty(&row).unwrap_or_default());
        return Ok(());
    }
    let r: Row = client.get(&path)?;
    println!("execution   {}", r.id);
    println!(
        "process     {} version {} ({})",
        r.process, r.version, r.mode
    );
    println!("status      {} (attempts: {})", r.status, r.attempts);
    println!("message     #{} in `atom messages`", r.message_row);
    println!("queued      {}", r.queued_at);
    println!("started     {}", r.started_at.as_deref().unwrap_or("-"));
    println!("finished    {}", r.finished_at.as_deref().unwrap_or("-"));
    println!(
        "timings     receipt to end {}, in the engine {}",
        r.duration(),
        r.engine_us
            .map(|u| format!("{u} µs"))
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "documents   {} in ({} bytes), {} out ({} bytes)",
        r.input_documents, r.input_bytes, r.output_documents, r.output_bytes
    );
    if let Some(e) = &r.error {
        println!("error       {e}");
    }
    for (i, d) in r.documents.iter().enumerate() {
        println!(
            "document {}  {} bytes, stored as {} (atom executions download {} {})",
            i + 1,
            d.size,
            d.path,
            r.id,
            i + 1
        );
        for (k, v) in &d.properties {
            println!("    property {k} = {v}");
        }
        for place in &d.delivered {
            println!("    delivered to {place}");
        }
    }
    println!("--- process log ---");
    print!("{}", r.log);
    Ok(())
}

/// `atom executions rerun ID`.
pub fn rerun(client: &AdminClient, id: &str) -> Result<(), CliError> {
    let r: Row = client.post(&format!("/api/executions/{id}/rerun"), &())?;
    println!(
        "execution {} queued again on process {} version {} (attempt {}); `atom executions show {}` follows it",
        r.id,
        r.process,
        r.version,
        r.attempts + 1,
        r.id
    );
    Ok(())
}
