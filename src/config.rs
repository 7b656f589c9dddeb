//! The limits of docs/rules.md. Every limit exists so that a hostile or broken record costs a
//! bounded, known amount of memory and time; each is checked before the memory is asked for.

use std::time::Duration;

/// Default `--max-body-bytes`: 1 MiB. Bigger bodies are not parsed at all.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default `--max-json-depth`: the top-level object counts as 1.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;
/// Default `--max-width`: the incident asked for 2,400,000,000.
pub const DEFAULT_MAX_WIDTH: u64 = 4096;
/// Default `--max-precision`.
pub const DEFAULT_MAX_PRECISION: u64 = 4096;
/// Default `--max-fields`: inclusive (256 pass, 257 do not).
pub const DEFAULT_MAX_FIELDS: usize = 256;
/// Default `--max-output-bytes`: 64 KiB per rendered message.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Default `--alloc-budget`: 8 MiB allocated in total while parsing and rendering one record.
pub const DEFAULT_ALLOC_BUDGET: u64 = 8 << 20;
/// Default `--format-timeout` for sandboxed runs.
pub const DEFAULT_FORMAT_TIMEOUT: Duration = Duration::from_millis(250);

/// The bounds one record is held to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bodies longer than this are `body-too-large` and never parsed.
    pub max_body_bytes: usize,
    /// JSON nested deeper than this is `json-too-deep` (top-level object = 1).
    pub max_json_depth: usize,
    /// A width (literal, `*` or nested field) above this is `width-too-large`.
    pub max_width: u64,
    /// A precision above this is `precision-too-large`, for every conversion.
    pub max_precision: u64,
    /// More specifiers / replacement fields than this is `too-many-fields`.
    pub max_fields: usize,
    /// A rendered message longer than this is `output-too-large`; verbatim ones too.
    pub max_output_bytes: usize,
    /// Bytes allocated (jemalloc's counter, not the peak) while parsing and rendering
    /// one record; above it the record is `alloc-budget`.
    pub alloc_budget: u64,
    /// Wall-clock bound of one sandboxed run (`timeout`).
    pub format_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_width: DEFAULT_MAX_WIDTH,
            max_precision: DEFAULT_MAX_PRECISION,
            max_fields: DEFAULT_MAX_FIELDS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            alloc_budget: DEFAULT_ALLOC_BUDGET,
            format_timeout: DEFAULT_FORMAT_TIMEOUT,
        }
    }
}
