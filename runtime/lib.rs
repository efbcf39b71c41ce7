//! Atom: a self-hosted B2B integration runtime.
//!
//! This crate is the `atom` command and the runtime library behind it. The
//! AS2 protocol itself lives in `atom-connectors`, which knows nothing of
//! this crate.
//!
//! # Layout
//! - [`app`]: the running Atom: wires everything, shuts down gracefully.
//! - [`admin`]: the admin API (token) and Prometheus metrics.
//! - [`console`]: the operator console in the browser (users, sessions, pages).
//! - [`alerts`], [`certificates`]: expiry warnings, errored listeners and failed sends, told to a webhook.
//! - [`server`]: the shared web server and the AS2 receive path.
//! - [`cli`]: the command line, one module per command group.
//! - [`config`]: `atom.yaml`, parsed raw then validated.
//! - [`engine`]: the process engine (wasmtime) behind a small trait, and the guest ABI.
//! - [`process`]: process steps, executions, the General and Low_Latency_Debug workers, history.
//! - [`keystore`]: keys and certificates kept in the data directory.
//! - [`listeners`]: AS2 listeners from process bundles, their routing and states.
//! - [`store`]: the message log, duplicate index and listener states (trait + SQLite), store health.
//! - [`shutdown`]: the one shutdown signal every part holds, and SIGTERM/SIGINT.
//!
//! # Data flow
//! HTTP request -> listener routing -> (Low_Latency_Debug quota) -> AS2 unwrap
//! -> durable store (message + queued execution) -> MDN -> workers -> steps -> history.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod certificates;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod engine;
pub mod keystore;
pub mod listeners;
pub mod molecule;
pub mod partners;
pub mod process;
pub mod server;
pub mod shutdown;
pub mod store;
