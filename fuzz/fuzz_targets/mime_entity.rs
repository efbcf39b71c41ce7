#![no_main]
//! Fuzz target `mime_entity`: see `atom_fuzz::mime_entity` (fuzz/src/lib.rs) for what it covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atom_fuzz::mime_entity(data));
