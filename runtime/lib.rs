//! Atom: a self-hosted B2B integration runtime.
//!
//! This crate is the `atom` command and the runtime library behind it. The
//! AS2 protocol itself lives in `atom-connectors`, which knows nothing of
//! this crate.
//!
//! # Layout
//! - [`app`]: the running Atom: wires everything, shuts down gracefully.
//! - [`admin`]: the admin API (token) and Prometheus metrics.
//! - [`server`]: the shared web server and the AS2 receive path.
//! - [`cli`]: the command line, one module per command group.
//! - [`config`]: `atom.yaml`, parsed raw then validated.
//! - [`keystore`]: keys and certificates kept in the data directory.
//! - [`listeners`]: AS2 listeners from process bundles, their routing and states.
//! - [`store`]: the message log, duplicate index and listener states (trait + SQLite).
//!
//! # Data flow
//! HTTP request -> listener routing -> AS2 unwrap -> durable store -> MDN.

pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod keystore;
pub mod listeners;
pub mod server;
pub mod store;
