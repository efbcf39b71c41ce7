//! The steps a process runs after its start step, one module each.
//!
//! - [`as2`]: the `as2` step, sending through the outbox.

pub mod as2;
