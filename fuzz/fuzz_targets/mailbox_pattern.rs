//! Fuzz target: [`maildump::fuzzing::mailbox_pattern`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::mailbox_pattern(data));
