//! The `format_dollar` target: see `logfence_fuzz::format_dollar` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logfence_fuzz::format_dollar(data));
