//! Fuzz target: [`maildump::fuzzing::tar_header`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::tar_header(data));
