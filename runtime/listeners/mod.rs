//! AS2 listeners: one per deployed bundle with an AS2 start step, routed by
//! (AS2-To, AS2-From).
//!
//! - [`bundle`]: reads a bundle's start step into a [`bundle::ListenerSpec`].
//! - [`bundle_sync`]: bundles shared through the store by a Molecule's nodes.
//! - [`follower`]: pauses, resumes and restarts asked on other nodes.
//! - [`ip_filter`]: the per-partner IP filter.
//! - [`registry`]: the routing table and the listener states.
//! - [`swap`]: a bundle folder's new version put in place atomically.
//! - [`watcher`]: hot reload of the processes folder.

pub mod bundle;
pub mod bundle_sync;
pub mod follower;
pub mod ip_filter;
pub mod registry;
pub mod swap;
pub mod watcher;

pub use registry::{ListenerInfo, ListenerState, Registry};
