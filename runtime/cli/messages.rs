//! `atom messages`: the AS2 message log with MDN status.

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
