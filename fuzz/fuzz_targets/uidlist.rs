//! Fuzz target: [`maildump::fuzzing::uidlist`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::uidlist(data));
