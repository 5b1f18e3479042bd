//! Fuzz target: [`maildump::fuzzing::subscriptions`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::subscriptions(data));
