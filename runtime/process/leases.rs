//! This node's leases on work: executions, and asynchronous MDNs waiting
//! for delivery. Everything queued or running here is held under a lease
//! in the store (owner, end, epoch): the receiving node takes it in the
//! receipt's transaction, a recovering or surviving node by claiming it. A keeper thread renews what is held every
//! third of the lease and claims, every second, executions whose lease
//! expired (their node died); states written under an epoch that is no
//! longer the row's are refused by the store, so work taken over from a
//! node that was only slow is not recorded twice.
//!
//! On one node with SQLite the keeper finds nothing to claim: the node's
//! own earlier work is claimed at start ([`super::workers::Executor::recover`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::listeners::Registry;
use crate::shutdown::Shutdown;
use crate::store::Store;

use super::workers::Executor;
use crate::server::mdn_delivery::MdnSender;

/// How often expired leases of other nodes are looked for.
const CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// The work this node holds (executions by ID, MDNs by message row), with
/// the epoch of each lease.
pub struct Leases<K = String> {
    pub node: String,
    pub lease: Duration,
    held: Mutex<HashMap<K, i64>>,
}

/// Now, in µs since the epoch (the unit of lease ends in the store).
pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

impl<K: Clone + Eq + Hash> Leases<K> {
    pub fn new(node: &str, lease: Duration) -> Leases<K> {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, id: K, epoch: i64) {
        self.lock().insert(id, epoch);
    }

    pub fn release(&self, id: &K) {
        self.lock().remove(id);
    }

    pub fn held(&self) -> Vec<(K, i64)> {
        self.lock().iter().map(|(id, e)| (id.clone(), *e)).collect()
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn held_ids(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }
}

/// Renews this node's leases and takes over expired ones, until shutdown.
pub fn start_keeper(
    executor: Arc<Executor>,
    mdns: MdnSender,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let leases = executor.leases().clone();
    let mdn_leases = mdns.leases().clone();
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
                    renew(&leases, |node, held, until| {
                        store.renew_execution_leases(node, held, until)
                    });
                    renew(&mdn_leases, |node, held, until| {
                        store.renew_mdn_leases(node, held, until)
                    });
                }
                if shutdown.is_triggered() {
                    break;
                }
                if let Err(e) = executor.take_over(store.as_ref(), &registry) {
                    tracing::warn!(error = %e, "looking for executions to take over failed; trying again");
                }
                if let Err(e) = mdns.take_over(store.as_ref(), &registry, false) {
                    tracing::warn!(error = %e, "looking for asynchronous MDNs to take over failed; trying again");
                }
            }
        })?;
    Ok(())
}

fn renew<K: Clone + Eq + Hash + std::fmt::Display>(
    leases: &Leases<K>,
    renew_in_store: impl Fn(&str, &[(K, i64)], i64) -> crate::store::Result<Vec<K>>,
) {
    let held = leases.held();
    if held.is_empty() {
        return;
    }
    match renew_in_store(&leases.node, &held, leases.until_us()) {
        Ok(lost) => {
            for id in lost {
                // Its states will be refused. It stays held until it ends
                // here, so that this node never claims it a second time.
                tracing::warn!(work = %id, node = %leases.node,
                    "lease lost: another node took this work over");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, held = held.len(), "renewing leases failed; trying again")
        }
    }
}
