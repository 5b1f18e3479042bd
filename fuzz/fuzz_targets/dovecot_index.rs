//! Fuzz target: [`maildump::fuzzing::dovecot_index`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::dovecot_index(data));
