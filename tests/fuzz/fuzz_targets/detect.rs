//! The `detect` target: see `logfence_fuzz::detect` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logfence_fuzz::detect(data));
