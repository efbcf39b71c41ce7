#![no_main]
//! Fuzz target `ber`: see `atom_fuzz::ber` (fuzz/src/lib.rs) for what it covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atom_fuzz::ber(data));
