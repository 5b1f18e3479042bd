//! Fuzz target: [`maildump::fuzzing::attributes`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::attributes(data));
