//! Delivery connectors: where a process sends its documents.
//!
//! - [`template`]: `{property}` templates over document properties.
//! - [`disk`]: atomic writes into a directory, never outside it.
//! - [`http`]: POST with headers from properties, retried with back-off.

pub mod disk;
pub mod http;
pub mod template;
