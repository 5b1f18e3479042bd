//! Fuzz target: [`maildump::fuzzing::headers`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::headers(data));
