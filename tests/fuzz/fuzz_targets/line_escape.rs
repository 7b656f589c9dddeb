//! The `line_escape` target: see `logfence_fuzz::line_escape` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logfence_fuzz::line_escape(data));
