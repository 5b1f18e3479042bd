//! Fuzz target: [`maildump::fuzzing::keywords`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::keywords(data));
