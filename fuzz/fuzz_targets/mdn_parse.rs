#![no_main]
//! Fuzz target `mdn_parse`: see `atom_fuzz::mdn_parse` (fuzz/src/lib.rs) for what it covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atom_fuzz::mdn_parse(data));
