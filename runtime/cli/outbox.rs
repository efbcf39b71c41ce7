//! `atom outbox`: what `as2` steps sent or are sending to partners, and
//! an operator's retry and cancel.

use clap::Subcommand;
use serde::Deserialize;

use super::admin_client::AdminClient;
use super::CliError;

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// One outbound document: its attempts, last error, MIC and receipt.
    Show {
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a failed or cancelled document again, with its Message-ID.
    ///
    /// Its execution is rerun: documents the partner has already are not
    /// sent again. A document the partner acknowledged is only sent again
    /// with --new-id (then it is a new message to the partner).
    Retry {
        id: i64,
        /// Send it with a new Message-ID.
        #[arg(long)]
        new_id: bool,
    },
    /// Stop sending a queued, retrying or failed document; its execution ends ERROR.
    Cancel { id: i64 },
    /// Write the document as queued (`payload`) or the receipt as received (`mdn`).
    Download {
        id: i64,
        /// payload or mdn.
        #[arg(value_parser = ["payload", "mdn"])]
        part: String,
        /// Write it here instead of to standard output.
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Deserialize)]
struct Row {
    id: i64,
    execution_id: String,
    process: String,
    partner: String,
    as2_from: String,
    as2_to: String,
    message_id: String,
    subject: String,
    file_name: Option<String>,
    size: u64,
    status: String,
    attempts: u32,
    created_at: String,
    last_attempt_at: Option<String>,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    mic: Option<String>,
    mdn_disposition: Option<String>,
}

/// `atom outbox [--partner P] [--status S]`.
pub fn list(
    client: &AdminClient,
    partner: Option<&str>,
    status: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    let path = super::admin_client::query_path(
        "/api/outbox",
        limit,
        &[("partner", partner), ("status", status)],
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
        println!("the outbox is empty");
        return Ok(());
    }
    println!(
        "{:>6} {:<16} {:<13} {:>3} {:>9} {:<20} MESSAGE-ID",
        "ID", "PARTNER", "STATUS", "TRY", "BYTES", "QUEUED"
    );
    for r in &rows {
        println!(
            "{:>6} {:<16} {:<13} {:>3} {:>9} {:<20} {}",
            r.id,
            r.partner,
            r.status,
            r.attempts,
            r.size,
            r.created_at.get(..19).unwrap_or(&r.created_at),
            r.message_id
        );
        if let Some(e) = &r.last_error {
            println!("    last error: {e}");
        }
    }
    Ok(())
}

fn print_row(r: &Row) {
    println!("outbox      {}", r.id);
    println!("partner     {} ({} -> {})", r.partner, r.as2_from, r.as2_to);
    println!("message-id  {}", r.message_id);
    println!("subject     {}", r.subject);
    if let Some(name) = &r.file_name {
        println!("file name   {name}");
    }
    println!("bytes       {}", r.size);
    println!("status      {} (attempts: {})", r.status, r.attempts);
    println!("queued      {}", r.created_at);
    println!(
        "last try    {}",
        r.last_attempt_at.as_deref().unwrap_or("-")
    );
    if let Some(next) = &r.next_attempt_at {
        println!("next try    {next}");
    }
    if let Some(e) = &r.last_error {
        println!("last error  {e}");
    }
    if let Some(mic) = &r.mic {
        println!("MIC         {mic}");
    }
    if let Some(d) = &r.mdn_disposition {
        println!("receipt     {d}");
    }
    println!(
        "execution   {} of process {} (atom executions show {})",
        r.execution_id, r.process, r.execution_id
    );
}

/// `atom outbox show ID`.
pub fn show(client: &AdminClient, id: i64, json: bool) -> Result<(), CliError> {
    let path = format!("/api/outbox/{id}");
    if json {
        let row: serde_json::Value = client.get(&path)?;
        println!("{}", serde_json::to_string_pretty(&row).unwrap_or_default());
        return Ok(());
    }
    print_row(&client.get(&path)?);
    Ok(())
}

/// `atom outbox retry ID [--new-id]`.
pub fn retry(client: &AdminClient, id: i64, new_id: bool) -> Result<(), CliError> {
    let r: Row = client.post(
        &format!("/api/outbox/{id}/retry"),
        &serde_json::json!({ "new_id": new_id }),
    )?;
    println!(
        "outbox {} queued again as {} to {}; execution {} rerun (`atom outbox show {}` follows it)",
        r.id, r.message_id, r.partner, r.execution_id, r.id
    );
    Ok(())
}

/// `atom outbox cancel ID`.
pub fn cancel(client: &AdminClient, id: i64) -> Result<(), CliError> {
    let r: Row = client.post(&format!("/api/outbox/{id}/cancel"), &())?;
    println!(
        "outbox {} ({} to {}) cancelled",
        r.id, r.message_id, r.partner
    );
    Ok(())
}

/// `atom outbox download ID payload|mdn [--out FILE]`.
pub fn download(
    client: &AdminClient,
    id: i64,
    part: &str,
    out: Option<&std::path::Path>,
) -> Result<(), CliError> {
    super::messages::download_to(client, &format!("/api/outbox/{id}/{part}"), out)
}
