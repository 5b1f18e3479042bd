//! Fuzz target: [`maildump::fuzzing::mutf7`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::mutf7(data));
