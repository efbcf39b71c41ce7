//! This node's leases on executions. Every execution queued or running
//! here is held under a lease in the store (owner, end, epoch): the
//! receiving node takes it in the receipt's transaction, a recovering or
//! surviving node by claiming it. A keeper thread renews what is held every
//! third of the lease and claims, every second, executions whose lease
//! expired (their node died); states written under an epoch that is no
//! longer the row's are refused by the store, so work taken over from a
//! node that was only slow is not recorded twice.
//!
//! On one node with SQLite the keeper finds nothing to claim: the node's
//! own earlier work is claimed at start ([`super::workers::Executor::recover`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::listeners::Registry;
use crate::shutdown::Shutdown;
use crate::store::Store;

use super::workers::Executor;

/// How often expired leases of other nodes are looked for.
const CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// The executions this node holds, with the epoch of each lease.
pub struct Leases {
    pub node: String,
    pub lease: Duration,
    held: Mutex<HashMap<String, i64>>,
}

/// Now, in µs since the epoch (the unit of lease ends in the store).
pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

impl Leases {
    pub fn new(node: &str, lease: Duration) -> Leases {
        Leases {
            node: node.to_string(),
            lease,
            held: Mutex::default(),
        }
    }

    /// The end of a lease taken now.
    pub fn until_us(&self) -> i64 {
        now_us() + self.lease.as_micros() as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, id: &str, epoch: i64) {
        self.lock().insert(id.to_string(), epoch);
    }

    pub fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn held(&self) -> Vec<(String, i64)> {
        self.lock().iter().map(|(id, e)| (id.clone(), *e)).collect()
    }

    pub fn held_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// Renews this node's leases and takes over expired ones, until shutdown.
pub fn start_keeper(
    executor: Arc<Executor>,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let leases = executor.leases().clone();
    let renew_every = leases.lease / 3;
    std::thread::Builder::new()
        .name("atom-leases".into())
        .spawn(move || {
            let mut since_renewal = Duration::ZERO;
            while !shutdown.is_triggered() {
                std::thread::sleep(CLAIM_INTERVAL);
                since_renewal += CLAIM_INTERVAL;
                if since_renewal >= renew_every {
                    since_renewal = Duration::ZERO;
                    renew(&leases, store.as_ref());
                }
                if shutdown.is_triggered() {
                    break;
                }
                if let Err(e) = executor.take_over(store.as_ref(), &registry) {
                    tracing::warn!(error = %e, "looking for executions to take over failed; trying again");
                }
            }
        })?;
    Ok(())
}

fn renew(leases: &Leases, store: &dyn Store) {
    let held = leases.held();
    if held.is_empty() {
        return;
    }
    match store.renew_execution_leases(&leases.node, &held, leases.until_us()) {
        Ok(lost) => {
            for id in lost {
                // Its states will be refused. It stays held until it ends
                // here, so that this node never claims it a second time.
                tracing::warn!(execution = %id, node = %leases.node,
                    "lease lost: another node took this execution over");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, held = held.len(), "renewing leases failed; trying again")
        }
    }
}
