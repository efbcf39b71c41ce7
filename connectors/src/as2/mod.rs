//! AS2 (RFC 4130): both the receiving and the sending side.

pub mod ber;
pub mod build;
pub mod cms;
pub mod compress;
pub mod error;
pub mod headers;
pub mod mdn;
pub mod mic;
pub mod mime;
pub mod payload;
pub mod signed;
pub mod stream;
pub mod unwrap;

pub use error::{As2Error, ErrorKind};
