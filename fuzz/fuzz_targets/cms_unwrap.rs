#![no_main]
//! Fuzz target `cms_unwrap`: see `atom_fuzz::cms_unwrap` (fuzz/src/lib.rs) for what it covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atom_fuzz::cms_unwrap(data));
