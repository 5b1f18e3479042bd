//! Fuzz target: [`maildump::fuzzing::archive_index`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::archive_index(data));
