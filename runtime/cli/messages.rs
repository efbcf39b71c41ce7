//! `atom messages`: the AS2 message log with MDN status; `show ID` and
//! `download ID raw|payload|mdn`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use serde::Deserialize;

use super::admin_client::AdminClient;
use super::CliError;

#[derive(Debug, Deserialize)]
struct Row {
    id: i64,
    listener: Option<String>,
    as2_from: String,
    message_id: String,
    file_name: Option<String>,
    payload_size: Option<u64>,
    encryption: Option<String>,
    signature: Option<String>,
    compression: Option<String>,
    disposition: String,
    mdn_mode: String,
    mdn_status: String,
    received_at: String,
    error: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// One message: partner IDs, security, MIC, MDN, where its documents are.
    Show {
        /// The message's ID in the log (the ID column of `atom messages`).
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one of a message's documents to a file, or to standard output.
    Download {
        /// The message's ID in the log (the ID column of `atom messages`).
        id: i64,
        /// raw: the request as received (headers, a blank line, the body);
        /// payload: the unwrapped document; mdn: the receipt as sent.
        part: Part,
        /// Write it here instead of to standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// A stored part of a message.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Part {
    Raw,
    Payload,
    Mdn,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Raw => "raw",
            Part::Payload => "payload",
            Part::Mdn => "mdn",
        }
    }
}

/// `atom messages show ID`.
pub fn show(client: &AdminClient, id: i64, json: bool) -> Result<(), CliError> {
    let row: serde_json::Value = client.get(&format!("/api/messages/{id}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&row).unwrap_or_default());
        return Ok(());
    }
    let field = |name: &str| match &row[name] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (label, name) in [
        ("id", "id"),
        ("received", "received_at"),
        ("listener", "listener"),
        ("from", "as2_from"),
        ("to", "as2_to"),
        ("message-id", "message_id"),
        ("subject", "subject"),
        ("file name", "file_name"),
        ("mime type", "mime_type"),
        ("request bytes", "request_size"),
        ("payload bytes", "payload_size"),
        ("encryption", "encryption"),
        ("signature", "signature"),
        ("compression", "compression"),
        ("mic", "mic"),
        ("disposition", "disposition"),
        ("mdn", "mdn_mode"),
        ("mdn status", "mdn_status"),
        ("mdn url", "mdn_url"),
        ("mdn error", "mdn_error"),
        ("error", "error"),
    ] {
        println!("{label:<14} {}", field(name));
    }
    println!("documents      atom messages download {id} raw|payload|mdn [--out FILE]");
    Ok(())
}

/// `atom messages download ID PART [--out FILE]`.
pub fn download(
    client: &AdminClient,
    id: i64,
    part: Part,
    out: Option<&Path>,
) -> Result<(), CliError> {
    download_to(client, &format!("/api/messages/{id}/{}", part.name()), out)
}

/// Downloads `path` into the file `out` (written whole or not at all:
/// a temporary file renamed at the end), or to standard output.
pub(super) fn download_to(
    client: &AdminClient,
    path: &str,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let Some(target) = out else {
        return client.download(path, &mut std::io::stdout().lock());
    };
    let io = |source| CliError::Io {
        path: target.to_path_buf(),
        source,
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    client.download(path, &mut std::io::BufWriter::new(file.as_file_mut()))?;
    file.persist(target).map_err(|e| io(e.error))?;
    Ok(())
}

pub fn run(client: &AdminClient, limit: u32, json: bool) -> Result<(), CliError> {
    if json {
        let rows: serde_json::Value = client.get(&format!("/api/messages?limit={limit}"))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Row> = client.get(&format!("/api/messages?limit={limit}"))?;
    if rows.is_empty() {
        println!("no messages yet");
        return Ok(());
    }
    println!(
        "{:>6} {:<20} {:<16} {:<14} {:<28} {:>9} {:<22} {:<13} DISPOSITION",
        "ID", "RECEIVED", "LISTENER", "FROM", "FILE", "BYTES", "SECURITY", "MDN"
    );
    for r in rows {
        let security = [
            r.encryption,
            r.signature.map(|s| format!("signed/{s}")),
            r.compression.map(|c| format!("zlib/{c}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
        println!(
            "{:>6} {:<20} {:<16} {:<14} {:<28} {:>9} {:<22} {:<13} {}",
            r.id,
            r.received_at.get(..19).unwrap_or(&r.received_at),
            r.listener.unwrap_or_else(|| "-".into()),
            r.as2_from,
            r.file_name.unwrap_or_else(|| "-".into()),
            r.payload_size
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            if security.is_empty() {
                "none".into()
            } else {
                security
            },
            format!("{}/{}", r.mdn_mode, r.mdn_status),
            r.disposition
        );
        println!("       message-id {}", r.message_id);
        if let Some(e) = r.error {
            println!("       error: {e}");
        }
    }
    Ok(())
}
