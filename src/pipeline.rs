//! bytes -> outcome: the one synchronous path `check` and `consume` share.
//!
//! guard (size) -> parse (bounded JSON) -> detect -> render (bounded formatter) -> line,
//! with the allocation of the whole section measured by jemalloc's per-thread counter.
//! Nothing here awaits: that is what makes the measurement belong to this record alone.

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// What became of a record (SPEC §3 `verdict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Rendered; `message` holds it.
    Ok,
    /// A `reject` finding; `line` is the marked fallback.
    Rejected,
    /// The sandboxed run died; `findings` holds a `crash` (or `timeout`) finding.
    Crashed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Rejected => "rejected",
            Verdict::Crashed => "crashed",
        }
    }
}

/// The result of processing one record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The rendered message when `ok`.
    pub message: Option<String>,
    /// The exact line the consumer writes to its sink (no trailing newline).
    pub line: String,
    /// Sorted by offset (nulls last), then rule; at most one `reject`.
    pub findings: Vec<Finding>,
    /// Bytes allocated while parsing and rendering (jemalloc size classes).
    pub alloc_bytes: u64,
    /// Wall time of the same section, in microseconds.
    pub elapsed_us: u64,
}

impl Outcome {
    /// The `reject` finding, if any.
    pub fn reject(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.rule.severity() == crate::finding::Severity::Reject)
    }
}
