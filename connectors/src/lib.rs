//! `atom-connectors`: the protocol and delivery connectors of the Atom runtime.
//!
//! This crate knows AS2 (RFC 4130), delivery targets, and nothing of the runtime: no HTTP server,
//! no store, no process engine. The runtime hands it bytes and keys and gets
//! back payloads, MICs, MDNs and typed errors. Cargo enforces that direction:
//! this crate never depends on `atom`.
//!
//! # Layout
//! - [`as2::headers`]: AS2 HTTP headers, AS2 IDs, Disposition-Notification-Options, MIC algorithms.
//! - [`as2::mime`]: MIME entities and multipart bodies, parsed without copying, byte-exact.
//! - [`as2::ber`]: a small BER reader, only to name the algorithms a CMS structure uses.
//! - [`as2::cms`]: CMS EnvelopedData/AuthEnvelopedData/SignedData through OpenSSL.
//! - [`as2::compress`]: CMS CompressedData (RFC 3274 / RFC 5402), zlib with an expansion limit.
//! - [`as2::mic`]: the Message Integrity Check of RFC 4130 section 7.3.1.
//! - [`as2::unwrap`]: decrypt, verify, decompress: the receiving side.
//! - [`as2::mdn`]: build, sign, parse and verify MDNs (RFC 3798, RFC 4130 section 7.4).
//! - [`as2::build`]: the sending side: compress, sign, encrypt.
//! - [`as2::error`]: errors whose kinds are the MDN disposition modifiers.
//! - [`keys`]: PEM, DER and PKCS#12 loading, key and certificate generation.
//! - [`delivery`]: the disk and http delivery connectors and their property templates.
//! - [`crypto_init`]: loads OpenSSL's legacy provider once (RC2, RC2-40 PKCS#12).

pub mod as2;
pub mod crypto_init;
pub mod delivery;
pub mod keys;

pub use as2::error::{As2Error, ErrorKind};
