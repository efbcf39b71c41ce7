//! This node among the others sharing its store: its heartbeat (every
//! 2 s: address, version, work running and held, state), the check that
//! no live node already uses its `molecule.node_id`, and the view of all
//! nodes that `atom molecule` shows. A node whose heartbeat is older than
//! the lease is shown `lost`: its leases have expired or are about to, and
//! the others take its work over.

use std::sync::Arc;
use std::time::Duration;

use crate::process::leases::now_us;
use crate::process::workers::Executor;
use crate::server::mdn_delivery::MdnSender;
use crate::shutdown::Shutdown;
use crate::store::{NodeBeat, Store};

/// How often a node beats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// What a node says about itself.
pub struct Node {
    pub id: String,
    pub incarnation: String,
    pub address: String,
    pub started_at: String,
}

impl Node {
    pub fn new(id: &str, address: String) -> Node {
        Node {
            id: id.to_string(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            address,
            started_at: crate::server::inbound::now_rfc3339(),
        }
    }

    fn beat(&self, running: usize, held: usize, state: &str) -> NodeBeat {
        NodeBeat {
            node_id: self.id.clone(),
            incarnation: self.incarnation.clone(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at.clone(),
            heartbeat_at: crate::server::inbound::now_rfc3339(),
            heartbeat_at_us: now_us(),
            running: running as u32,
            held: held as u32,
            state: state.to_string(),
        }
    }
}

/// Refuses to start when a live node (its heartbeat still moving) already
/// uses this node ID: both would take each other's work as their own. A
/// recent heartbeat that does not move is this node's own from before a
/// crash, and is no obstacle.
pub fn check_unique(store: &dyn Store, node_id: &str, lease: Duration) -> Result<(), String> {
    let find = || -> Result<Option<NodeBeat>, String> {
        Ok(store
            .nodes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|n| n.node_id == node_id))
    };
    let Some(seen) = find()? else { return Ok(()) };
    let fresh = now_us() - seen.heartbeat_at_us < lease.as_micros() as i64;
    if !fresh || seen.state == "stopped" {
        return Ok(());
    }
    // Long enough for a live namesake to beat at least once.
    std::thread::sleep(HEARTBEAT_INTERVAL + Duration::from_millis(500));
    match find()? {
        Some(now) if now.heartbeat_at_us != seen.heartbeat_at_us && now.state != "stopped" => Err(format!(
            "molecule.node_id {node_id:?} is in use by a running node at {} (started {}); give each node its own molecule.node_id",
            now.address, now.started_at
        )),
        _ => Ok(()),
    }
}

/// Beats every [`HEARTBEAT_INTERVAL`] until shutdown, then once more as
/// `stopped` (after the drain, from [`final_beat`]).
pub fn start_heartbeat(
    node: Arc<Node>,
    store: Arc<dyn Store>,
    executor: Arc<Executor>,
    mdns: MdnSender,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("atom-heartbeat".into())
        .spawn(move || loop {
            let state = if shutdown.is_triggered() {
                "draining"
            } else {
                "serving"
            };
            let held = executor.leases().len() + mdns.leases().len();
            if let Err(e) = store.heartbeat(&node.beat(executor.running(), held, state)) {
                tracing::debug!(error = %e, "heartbeat not recorded");
            }
            std::thread::sleep(HEARTBEAT_INTERVAL);
        })?;
    Ok(())
}

/// The last heartbeat, at exit: other nodes see this one stopped.
pub fn final_beat(node: &Node, store: &dyn Store) {
    if let Err(e) = store.heartbeat(&node.beat(0, 0, "stopped")) {
        tracing::warn!(error = %e, "last heartbeat not recorded");
    }
}

/// A node as `atom molecule` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub beat: NodeBeat,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// Its state, or `lost` when its heartbeat is older than the lease.
    pub status: String,
}

/// Every node, with `lost` for those whose heartbeat is older than `lease`.
pub fn view(store: &dyn Store, lease: Duration) -> Result<Vec<NodeView>, String> {
    let now = now_us();
    Ok(store
        .nodes()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|beat| {
            let age = (now - beat.heartbeat_at_us).max(0);
            let status = if beat.state != "stopped" && age > lease.as_micros() as i64 {
                "lost".to_string()
            } else {
                beat.state.clone()
            };
            NodeView {
                heartbeat_age_seconds: age as f64 / 1e6,
                status,
                beat,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn beat_of(node: &Node, at_us: i64) -> NodeBeat {
        NodeBeat {
            heartbeat_at_us: at_us,
            ..node.beat(0, 0, "serving")
        }
    }

    #[test]
    fn a_live_namesake_is_refused_a_crashed_self_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let lease = Duration::from_secs(30);
        assert!(
            check_unique(store.as_ref(), "n1", lease).is_ok(),
            "unknown ID"
        );

        // A recent heartbeat that does not move: this node before a crash.
        let crashed = Node::new("n1", "127.0.0.1:1".into());
        store.heartbeat(&beat_of(&crashed, now_us())).expect("beat");
        assert!(check_unique(store.as_ref(), "n1", lease).is_ok());

        // A namesake that keeps beating.
        let live = Arc::new(Node::new("n1", "127.0.0.1:2".into()));
        let (beating, stop) = (
            store.clone(),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let stopped = stop.clone();
        let namesake = live.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                beating
                    .heartbeat(&beat_of(&namesake, now_us()))
                    .expect("beat");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let refused = check_unique(store.as_ref(), "n1", lease);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        thread.join().expect("thread");
        let error = refused.expect_err("a live namesake");
        assert!(
            error.contains("127.0.0.1:2") && error.contains("molecule.node_id"),
            "{error}"
        );

        // Stopped cleanly: free at once.
        final_beat(&live, store.as_ref());
        assert!(check_unique(store.as_ref(), "n1", lease).is_ok());
        let shown = view(store.as_ref(), lease).expect("view");
        assert_eq!(shown[0].status, "stopped");
    }
}
