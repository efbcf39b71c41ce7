//! `atom messages`: the AS2 message log with MDN status, searched by
//! partner, Message-ID, subject, file name, MIME type, outcome and date
//! (`--from`, `--file-name`, `--since`, ...); `show ID` and
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

/// What `atom messages` searches received messages for (each given filter
/// must match; newest first).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SearchArgs {
    /// Received from this AS2-From (exact).
    #[arg(long, value_name = "ID")]
    pub from: Option<String>,
    /// Received for this AS2-To (exact).
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    /// This Message-ID (with or without its angle brackets).
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,
    /// Subject starting with this (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub subject: Option<String>,
    /// File name starting with this (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub file_name: Option<String>,
    /// This MIME type (exact).
    #[arg(long, value_name = "TYPE")]
    pub mime_type: Option<String>,
    /// processed (disposition "processed") or error (any other).
    #[arg(long, value_enum)]
    pub disposition: Option<Outcome>,
    /// Received at or after: RFC 3339, YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Received before (same forms).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Only messages with a smaller ID: the next page after the last ID shown.
    #[arg(long, value_name = "N")]
    pub before_id: Option<i64>,
}

/// The outcome `--disposition` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    Processed,
    Error,
}

impl SearchArgs {
    /// True when any filter (or a page) is given.
    fn given(&self) -> bool {
        let texts = [
            &self.from,
            &self.to,
            &self.message_id,
            &self.subject,
            &self.file_name,
            &self.mime_type,
            &self.since,
            &self.until,
        ];
        texts.iter().any(|t| t.is_some()) || self.disposition.is_some() || self.before_id.is_some()
    }

    /// The query of `/api/messages` for a page of `limit` before `before_id`
    /// (dates checked here, so that the error names the option).
    fn query(&self, limit: u32, before_id: Option<i64>) -> Result<String, CliError> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("from", &self.from),
            ("to", &self.to),
            ("message_id", &self.message_id),
            ("subject", &self.subject),
            ("file_name", &self.file_name),
            ("mime_type", &self.mime_type),
        ] {
            if let Some(v) = value {
                query.append_pair(name, v);
            }
        }
        if let Some(d) = self.disposition {
            query.append_pair(
                "disposition",
                match d {
                    Outcome::Processed => "processed",
                    Outcome::Error => "error",
                },
            );
        }
        for (option, name, value) in [
            ("--since", "received_from", &self.since),
            ("--until", "received_to", &self.until),
        ] {
            if let Some(v) = value {
                crate::store::search::time_bound(option, v)
                    .map_err(|e| CliError::Usage(e.message))?;
                query.append_pair(name, v);
            }
        }
        if let Some(before) = before_id {
            query.append_pair("before_id", &before.to_string());
        }
        query.append_pair("limit", &limit.to_string());
        Ok(query.finish())
    }
}

/// Received messages matching `search`, newest first, up to `limit`:
/// pages of at most the store's 1,000, each after the last of the one before.
fn received(
    client: &AdminClient,
    search: &SearchArgs,
    limit: u32,
) -> Result<Vec<serde_json::Value>, CliError> {
    let page = crate::store::search::MAX_LIMIT;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut before = search.before_id;
    while rows.len() < limit as usize {
        let wanted = (limit - rows.len() as u32).min(page);
        let got: Vec<serde_json::Value> =
            client.get(&format!("/api/messages?{}", search.query(wanted, before)?))?;
        let full = got.len() == wanted as usize;
        before = got.last().and_then(|r| r["id"].as_i64());
        rows.extend(got);
        if !full || before.is_none() {
            break;
        }
    }
    Ok(rows)
}

/// Which messages `atom messages` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Received (the message log).
    In,
    /// Sent by `as2` steps (the outbox).
    Out,
    /// Both, newest first.
    All,
}

/// An outbound row as `atom messages` shows it.
#[derive(Debug, Deserialize)]
struct OutRow {
    id: i64,
    partner: String,
    as2_to: String,
    message_id: String,
    file_name: Option<String>,
    size: u64,
    status: String,
    attempts: u32,
    created_at: String,
    last_error: Option<String>,
    mdn_disposition: Option<String>,
}

/// `atom messages`: received messages and what `as2` steps sent, newest
/// first. JSON keeps its shape (received messages only) unless a
/// direction is given; then every row has a `direction` field. Filters
/// (`search`) select received messages, so they imply `--direction in`.
pub fn run(
    client: &AdminClient,
    limit: u32,
    json: bool,
    direction: Option<Direction>,
    search: &SearchArgs,
) -> Result<(), CliError> {
    let filtered = search.given();
    if filtered && matches!(direction, Some(Direction::Out | Direction::All)) {
        return Err(CliError::Usage(
            "--from, --to, --message-id, --subject, --file-name, --mime-type, --disposition, \
             --since, --until and --before-id search received messages: use --direction in, \
             or leave --direction out"
                .into(),
        ));
    }
    let wanted = direction.unwrap_or(if json || filtered {
        Direction::In
    } else {
        Direction::All
    });
    let (with_in, with_out) = (wanted != Direction::Out, wanted != Direction::In);
    if json {
        let mut rows = Vec::new();
        for (include, name) in [(with_in, "in"), (with_out, "out")] {
            if !include {
                continue;
            }
            let got: Vec<serde_json::Value> = if name == "in" {
                received(client, search, limit)?
            } else {
                client.get(&format!("/api/outbox?limit={limit}"))?
            };
            for mut row in got {
                if direction.is_some() {
                    row["direction"] = name.into();
                }
                rows.push(row);
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    let received: Vec<Row> = if with_in {
        received(client, search, limit)?
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::Remote(format!("reading the message log: {e}")))?
    } else {
        Vec::new()
    };
    let sent: Vec<OutRow> = if with_out {
        client.get(&format!("/api/outbox?limit={limit}"))?
    } else {
        Vec::new()
    };
    if received.is_empty() && sent.is_empty() {
        println!(
            "{}",
            if filtered {
                "no messages match"
            } else {
                "no messages yet"
            }
        );
        return Ok(());
    }
    // A full page of received messages only: say how to see older ones.
    let older = (!with_out && received.len() == limit as usize)
        .then(|| received.last().map(|r| r.id))
        .flatten();
    println!(
        "{:<3} {:>6} {:<20} {:<16} {:<14} {:<28} {:>9} {:<22} {:<13} DISPOSITION",
        "DIR",
        "ID",
        "TIME",
        "LISTENER/PARTNER",
        "FROM/TO",
        "FILE",
        "BYTES",
        "SECURITY",
        "MDN/STATUS"
    );
    // Newest first across both (RFC 3339 UTC times sort as text).
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for r in received {
        let security = [
            r.encryption,
            r.signature.map(|s| format!("signed/{s}")),
            r.compression.map(|c| format!("zlib/{c}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
        let mut out = vec![format!(
            "{:<3} {:>6} {:<20} {:<16} {:<14} {:<28} {:>9} {:<22} {:<13} {}",
            "in",
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
        )];
        out.push(format!("           message-id {}", r.message_id));
        if let Some(e) = r.error {
            out.push(format!("           error: {e}"));
        }
        lines.push((r.received_at, out));
    }
    for r in sent {
        let mut out = vec![format!(
            "{:<3} {:>6} {:<20} {:<16} {:<14} {:<28} {:>9} {:<22} {:<13} {}",
            "out",
            r.id,
            r.created_at.get(..19).unwrap_or(&r.created_at),
            r.partner,
            r.as2_to,
            r.file_name.unwrap_or_else(|| "-".into()),
            r.size,
            "(profile)",
            format!("{} x{}", r.status, r.attempts),
            r.mdn_disposition.unwrap_or_else(|| "-".into())
        )];
        out.push(format!(
            "           message-id {} (atom outbox show {})",
            r.message_id, r.id
        ));
        if let Some(e) = r.last_error {
            out.push(format!("           last error: {e}"));
        }
        lines.push((r.created_at, out));
    }
    lines.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, out) in lines.into_iter().take(limit as usize) {
        for line in out {
            println!("{line}");
        }
    }
    if let Some(last) = older {
        println!("older: the same command with --before-id {last}");
    }
    Ok(())
}
