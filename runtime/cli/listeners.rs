//! `atom listeners`: list, pause, resume, restart.

use clap::Subcommand;
use serde::Deserialize;

use super::admin_client::AdminClient;
use super::CliError;

#[derive(Debug, Subcommand)]
pub enum ListenersCommand {
    /// Stop accepting for these listeners (senders get 503 and retry); in-flight work finishes.
    Pause(Targets),
    /// Accept again.
    Resume(Targets),
    /// Re-create from the bundle (re-reads keys, clears errors); paused listeners stay paused.
    Restart(Targets),
}

#[derive(Debug, clap::Args)]
pub struct Targets {
    /// Listener IDs (process names).
    #[arg(required_unless_present = "all")]
    pub ids: Vec<String>,
    /// Every listener.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

#[derive(Debug, Deserialize)]
struct Listener {
    id: String,
    state: String,
    error: Option<String>,
    as2_from: Option<String>,
    as2_to: Option<String>,
    received: u64,
    refused: u64,
    pending_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ActionResult {
    id: String,
    ok: bool,
    message: String,
}

pub fn run(client: &AdminClient, command: Option<ListenersCommand>) -> Result<(), CliError> {
    let (action, targets) = match command {
        None => return list(client),
        Some(ListenersCommand::Pause(t)) => ("pause", t),
        Some(ListenersCommand::Resume(t)) => ("resume", t),
        Some(ListenersCommand::Restart(t)) => ("restart", t),
    };
    let body = serde_json::json!({ "ids": targets.ids, "all": targets.all });
    let results: Vec<ActionResult> = client.post(&format!("/api/listeners/{action}"), &body)?;
    let mut failed = 0;
    for r in &results {
        println!(
            "{:<24} {:<4} {}",
            r.id,
            if r.ok { "ok" } else { "FAIL" },
            r.message
        );
        if !r.ok {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(CliError::Remote(format!(
            "{failed} of {} listeners could not be {action}d",
            results.len()
        )));
    }
    Ok(())
}

fn list(client: &AdminClient) -> Result<(), CliError> {
    let listeners: Vec<Listener> = client.get("/api/listeners")?;
    if listeners.is_empty() {
        println!("no listeners: deploy a bundle with an AS2 start step into the processes folder");
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:<20} {:<20} {:>9} {:>8}",
        "ID", "STATE", "AS2-FROM (PARTNER)", "AS2-TO (US)", "RECEIVED", "REFUSED"
    );
    for l in listeners {
        println!(
            "{:<24} {:<10} {:<20} {:<20} {:>9} {:>8}",
            l.id,
            l.state,
            l.as2_from.unwrap_or_else(|| "-".into()),
            l.as2_to.unwrap_or_else(|| "-".into()),
            l.received,
            l.refused
        );
        if let Some(error) = l.error {
            println!("    error: {error}");
        }
        if let Some(error) = l.pending_error {
            println!("    new version refused (previous version serving): {error}");
        }
    }
    Ok(())
}
