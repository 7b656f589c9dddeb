//! The `format_brace` target: see `logfence_fuzz::format_brace` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logfence_fuzz::format_brace(data));
