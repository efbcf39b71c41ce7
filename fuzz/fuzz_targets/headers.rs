#![no_main]
//! Fuzz target `headers`: see `atom_fuzz::headers` (fuzz/src/lib.rs) for what it covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atom_fuzz::headers(data));
