//! Listener states shared by the nodes of a Molecule: a pause, resume or
//! restart asked on any node is in the store, and every node applies it
//! within half a second by comparing the store's states with its own.
//! Comparing states rather than replaying events means a node that missed
//! some (down, or cut off from the store) still ends up right.

use std::sync::Arc;
use std::time::Duration;

use super::Registry;
use crate::shutdown::Shutdown;

/// How often the shared states are read.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// Follows the shared listener states until shutdown.
pub fn start(registry: Arc<Registry>, shutdown: Shutdown) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("atom-listener-follower".into())
        .spawn(move || {
            let mut failing = false;
            while !shutdown.is_triggered() {
                std::thread::sleep(FOLLOW_INTERVAL);
                match registry.follow() {
                    Ok(()) => failing = false,
                    // Once per outage: the store's health reports it too.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "reading shared listener states failed; retrying");
                    }
                    Err(_) => {}
                }
            }
        })?;
    Ok(())
}
