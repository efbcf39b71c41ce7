//! `atom molecule`: the nodes sharing this Atom's store, with their last
//! heartbeat; `lost` for a node silent longer than the lease.

use super::admin_client::AdminClient;
use super::CliError;
use crate::molecule::NodeView;

/// `atom molecule`.
pub fn run(client: &AdminClient, json: bool) -> Result<(), CliError> {
    if json {
        let rows: serde_json::Value = client.get("/api/molecule")?;
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    let nodes: Vec<NodeView> = client.get("/api/molecule")?;
    if nodes.is_empty() {
        println!("no node has reported yet");
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<8} {:<10} {:>9} {:>7} {:>5}  STARTED",
        "NODE", "ADDRESS", "VERSION", "STATUS", "HEARTBEAT", "RUNNING", "HELD"
    );
    for n in nodes {
        println!(
            "{:<20} {:<22} {:<8} {:<10} {:>8.1}s {:>7} {:>5}  {}",
            n.beat.node_id,
            n.beat.address,
            n.beat.version,
            n.status,
            n.heartbeat_age_seconds,
            n.beat.running,
            n.beat.held,
            n.beat.started_at
        );
    }
    Ok(())
}
