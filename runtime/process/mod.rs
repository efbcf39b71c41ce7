//! What a bundle runs after its start step, and how it runs.
//!
//! - [`definition`]: `steps`, `mode`, `limits` and `settings` of process.yaml, validated.
//! - [`steps`]: the steps, one module each behind the [`steps::ProcessStep`] trait:
//!   [`steps::wasm`], [`steps::disk`], [`steps::http`], [`steps::as2`].
//! - [`execution`]: one execution of a process on one received document.
//! - [`workers`]: the General pool and the Low_Latency_Debug workers with their quotas.
//! - [`history`]: writes execution states to the store off the workers' path.
//! - [`leases`]: this node's leases on executions and pending asynchronous MDNs.

pub mod definition;
pub mod execution;
pub mod history;
pub mod leases;
pub mod steps;
pub mod workers;
