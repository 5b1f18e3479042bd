//! Fuzz target: [`maildump::fuzzing::mime_split`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::mime_split(data));
