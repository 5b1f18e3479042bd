//! Fuzz target: [`maildump::fuzzing::dbox_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| maildump::fuzzing::dbox_file(data));
