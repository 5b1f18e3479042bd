//! Fuzz target: [`maildump::fuzzing::mail_location`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::mail_location(data));
