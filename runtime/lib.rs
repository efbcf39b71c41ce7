//! Atom: a self-hosted B2B integration runtime.
//!
//! This crate is the `atom` command and the runtime library behind it. The
//! AS2 protocol itself lives in `atom-connectors`, which knows nothing of
//! this crate.
//!
//! # Layout
//! - [`cli`]: the command line, one module per command group.
//! - [`config`]: `atom.yaml`, parsed raw then validated.
//! - [`keystore`]: keys and certificates kept in the data directory.
//!
//! # Status
//! The shared web server, listeners, store and process engine are tracked
//! as separate work items; see ARCHITECTURE.md for what exists today.

pub mod cli;
pub mod config;
pub mod keystore;
