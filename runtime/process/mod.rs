//! What a bundle runs after its start step, and how it runs.
//!
//! - [`as2_step`]: the `as2` step, sending through the outbox.
//! - [`definition`]: `steps`, `mode`, `limits` and `settings` of process.yaml, validated.
//! - [`execution`]: one execution of a process on one received document.
//! - [`workers`]: the General pool and the Low_Latency_Debug workers with their quotas.
//! - [`history`]: writes execution states to the store off the workers' path.

pub mod as2_step;
pub mod definition;
pub mod execution;
pub mod history;
pub mod leases;
pub mod workers;
