//! bytes -> outcome: the one synchronous path `check` and `consume` share.
//!
//! guard (size) -> parse (bounded JSON) -> detect -> render (bounded formatter) -> line.
//! The allocation of guard to render is measured by jemalloc's per-thread counter: that
//! is "parsing and rendering" (docs/rules.md), what `--alloc-budget` caps and `alloc_bytes`
//! reports. The line is laid out after, outside the measurement: it is bounded by
//! construction (the message, or its fallback with the template and the args' repr each
//! cut to `--max-output-bytes`, the exception and stack text each cut the same way, around
//! parts the body already holds), so it says nothing
//! about what a record made the parser or the formatter ask for.
//! Nothing here awaits: that is what makes the measurement belong to this record alone.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::finding::{sort_findings, Finding, Rule};
use crate::format::{self, Reject};
use crate::line::{self, LineFormatError, LineParts, LineTemplate};
use crate::record::{self, DecodeReject, Record};
use crate::{alloc, detect, faults, json};

/// What became of a record (`verdict` in docs/commands.md).
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
    /// The exact line the consumer writes to its sink (no trailing newline); `None` when
    /// it writes none (a crashed record goes to the dead-letter queue instead).
    pub line: Option<String>,
    /// The record's template (`msg`), cut to the output limit: what finding offsets point
    /// into, for reports. Not part of the JSON report.
    pub msg: Option<String>,
    /// Sorted by offset (nulls last), then rule; at most one `reject`.
    pub findings: Vec<Finding>,
    /// Bytes allocated while parsing and rendering (jemalloc size classes), the line's
    /// layout not included; `None` when the run did not finish.
    pub alloc_bytes: Option<u64>,
    /// Wall time of the same section, in microseconds.
    pub elapsed_us: u64,
}

impl Outcome {
    /// The `reject` finding, if any.
    pub fn reject(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.rule.severity() == crate::finding::Severity::Reject)
    }
}

/// How each line is written (`--output`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// The `--line-format` template, escaped.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The configured path from bytes to outcome. Cheap to share: it holds the limits and the
/// parsed line template, nothing per message.
#[derive(Debug)]
pub struct Pipeline {
    limits: Limits,
    line: LineTemplate,
    output: OutputFormat,
    /// Read jemalloc's per-thread counter around each record (always, but for the
    /// benchmark that measures what the reading costs).
    account_alloc: bool,
    /// Measure each record as the first one a new thread sees: the thread's template
    /// caches and parser scratch are put back as new before it, so `alloc_bytes` is the
    /// record's own whatever came before it on this thread.
    isolated: bool,
}

/// A body too large to be held whole (a line of a capture over `--max-body-bytes`): what
/// its report needs without it.
#[derive(Clone, Copy, Debug)]
pub struct Unheld<'a> {
    /// Its first bytes: at least the first `--max-output-bytes` + 4, or all of it.
    pub head: &'a [u8],
    /// Its length in bytes.
    pub len: usize,
    /// Its length once decoded lossily (each invalid sequence a 3-byte U+FFFD).
    pub decoded_len: usize,
}

/// The bytes of a body that the line needs: all of it, or a head and two lengths.
#[derive(Clone, Copy, Debug)]
enum BodyView<'a> {
    Whole(&'a [u8]),
    Head(Unheld<'a>),
}

/// What the measured section produced, before the line is laid out.
struct Evaluated<'a> {
    /// The decoded record, or why the body was not decoded.
    record: Result<Record<'a>, DecodeReject>,
    /// The rendered (or verbatim) message, or the one reject finding.
    message: Result<String, Finding>,
    /// Warn findings (the reject, if any, is added later).
    warnings: Vec<Finding>,
}

impl Pipeline {
    /// A pipeline with these limits and line template; the template is checked here,
    /// once, so a bad `--line-format` is a start-up error, never a per-message one.
    pub fn new(limits: Limits, line_format: &str) -> Result<Pipeline, LineFormatError> {
        detect::warm_up();
        json::warm_up();
        Ok(Pipeline {
            limits,
            line: LineTemplate::new(line_format)?,
            output: OutputFormat::Text,
            account_alloc: true,
            isolated: false,
        })
    }

    pub fn with_output(mut self, output: OutputFormat) -> Pipeline {
        self.output = output;
        self
    }

    /// Turns allocation accounting off: only for measuring its cost. Without it
    /// `alloc_bytes` is `None` and `--alloc-budget` is not enforced.
    pub fn with_alloc_accounting(mut self, on: bool) -> Pipeline {
        self.account_alloc = on;
        self
    }

    /// Measures every record as if it were the first on a new thread (see the field). The
    /// price is a template parse per record; what it buys is an `alloc_bytes` that does not
    /// depend on which records a thread happened to see before, so it is the same in a
    /// one-record `check`, a sandbox worker's hundredth record and a parallel audit.
    pub fn with_isolation(mut self, on: bool) -> Pipeline {
        self.isolated = on;
        self
    }

    /// Sets up the calling thread's lazily built state (parser scratch, the detector's
    /// regex cache) so its one-time cost is never charged to a record. `new` does it for
    /// the thread that builds the pipeline; a thread that processes records with a shared
    /// pipeline calls it once first.
    pub fn warm_up_thread() {
        detect::warm_up();
        json::warm_up();
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Processes one body received now.
    pub fn process(&self, body: &[u8]) -> Outcome {
        self.process_at(body, Utc::now())
    }

    /// Processes one body; `received` stands in for a missing or unparseable `ts`.
    pub fn process_at(&self, body: &[u8], received: DateTime<Utc>) -> Outcome {
        if self.isolated {
            format::reset_thread_caches();
            json::reset_scratch();
        }
        let started = Instant::now();
        let (evaluated, alloc_bytes) = if self.account_alloc {
            let (e, bytes) = alloc::measure(|| self.evaluate(body));
            (e, Some(bytes))
        } else {
            (self.evaluate(body), None)
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        self.finish(
            evaluated,
            alloc_bytes,
            elapsed_us,
            BodyView::Whole(body),
            received,
        )
    }

    /// The outcome of a body that was too large to hold: exactly what [`Pipeline::process`]
    /// gives for the whole body (a `body-too-large` record whose fallback line shows its
    /// head), from its head and lengths.
    pub fn process_unheld(&self, body: Unheld<'_>) -> Outcome {
        let started = Instant::now();
        let limit = self.limits.max_body_bytes;
        let evaluate = || {
            let reject = DecodeReject::BodyTooLarge {
                len: body.len,
                limit,
            };
            Evaluated {
                message: Err(reject.to_finding()),
                record: Err(reject),
                warnings: Vec::new(),
            }
        };
        let (evaluated, alloc_bytes) = if self.account_alloc {
            let (e, bytes) = alloc::measure(evaluate);
            (e, Some(bytes))
        } else {
            (evaluate(), None)
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        self.finish(
            evaluated,
            alloc_bytes,
            elapsed_us,
            BodyView::Head(body),
            Utc::now(),
        )
    }

    /// The budget's safety net, the line, and the outcome of an evaluated record.
    fn finish(
        &self,
        mut evaluated: Evaluated<'_>,
        alloc_bytes: Option<u64>,
        elapsed_us: u64,
        body: BodyView<'_>,
        received: DateTime<Utc>,
    ) -> Outcome {
        if evaluated.message.is_ok() && alloc_bytes.is_some_and(|b| b > self.limits.alloc_budget) {
            // The safety net: the formatter's own bounds should make this unreachable.
            evaluated.message = Err(Finding::new(
                Rule::AllocBudget,
                None,
                format!(
                    "allocated {} bytes > budget {} while parsing and rendering",
                    alloc_bytes.unwrap_or(0),
                    self.limits.alloc_budget
                ),
            ));
        }
        let line = self.line_for(&evaluated, body, received);
        let Evaluated {
            record,
            message,
            mut warnings,
        } = evaluated;
        let msg = record
            .as_ref()
            .ok()
            .map(|r| cut(&r.msg, self.limits.max_output_bytes));
        let (verdict, message) = match message {
            Ok(m) => (Verdict::Ok, Some(m)),
            Err(reject) => {
                warnings.push(reject);
                (Verdict::Rejected, None)
            }
        };
        sort_findings(&mut warnings);
        Outcome {
            verdict,
            message,
            line: Some(line),
            msg,
            findings: warnings,
            alloc_bytes,
            elapsed_us,
        }
    }

    /// guard, parse, detect, render: everything whose allocation is the record's own.
    fn evaluate<'a>(&self, body: &'a [u8]) -> Evaluated<'a> {
        let record = match record::decode(body, &self.limits) {
            Ok(r) => r,
            Err(reject) => {
                return Evaluated {
                    message: Err(reject.to_finding()),
                    record: Err(reject),
                    warnings: Vec::new(),
                }
            }
        };
        let args = record.args();
        let others = record.args.iter().flat_map(detect::value_strings).chain(
            record
                .fields
                .iter()
                .flat_map(|f| f.values().flat_map(detect::value_strings)),
        );
        let warnings = detect::detect(&record.msg, args.is_none(), others, record.invalid_utf8);
        let message = self.render(&record).map_err(|r| r.to_finding());
        Evaluated {
            record: Ok(record),
            message,
            warnings,
        }
    }

    /// The message of a decoded record: verbatim without args, else rendered.
    fn render(&self, record: &Record<'_>) -> Result<String, Reject> {
        let Some(args) = record.args() else {
            if record.msg.len() > self.limits.max_output_bytes {
                return Err(Reject::OutputTooLarge {
                    at_least: record.msg.len(),
                    limit: self.limits.max_output_bytes,
                });
            }
            return Ok(record.msg.to_string());
        };
        let Some(style) = record.style.known() else {
            return Err(Reject::format_error(
                "ValueError",
                "Style must be one of: %,{,$",
            ));
        };
        faults::before_render(&record.msg);
        format::render_cached(&record.msg, args, style, &self.limits)
    }

    /// The line for an evaluated record: its message, or its marked fallback.
    fn line_for(&self, e: &Evaluated<'_>, body: BodyView<'_>, received: DateTime<Utc>) -> String {
        let limit = self.limits.max_output_bytes;
        let (record, fallback) = match (&e.record, &e.message) {
            (Ok(r), Ok(_)) => (Some(r), None),
            (Ok(r), Err(reject)) => (
                Some(r),
                Some(line::fallback_message(reject.rule, &r.msg, r.args(), limit)),
            ),
            (Err(reject), _) => (None, Some(unparsed_fallback(reject.rule(), body, limit))),
        };
        let ts = record.and_then(|r| r.ts).unwrap_or(received);
        let ts = record::format_ts(&ts);
        let message = match (&fallback, &e.message) {
            (Some(fb), _) => fb.as_str(),
            (None, Ok(m)) => m.as_str(),
            (None, Err(_)) => "",
        };
        // Exception and stack text: each cut to the output limit on its own, for an ok
        // record and a fallback alike.
        let exc = record
            .and_then(|r| r.exc.as_deref())
            .map(|t| line::cut_marked(t, limit));
        let stack = record
            .and_then(|r| r.stack.as_deref())
            .map(|t| line::cut_marked(t, limit));
        let parts = LineParts {
            ts: &ts,
            level: record.map_or(record::DEFAULT_LEVEL, |r| r.level.as_str()),
            logger: record.map_or(record::DEFAULT_LOGGER, |r| r.logger.as_str()),
            message,
            fields: record.and_then(|r| r.fields.as_ref()),
            exc: exc.as_deref(),
            stack: stack.as_deref(),
        };
        match self.output {
            OutputFormat::Text => self.line.render(&parts),
            OutputFormat::Json => {
                let mut findings = e.warnings.clone();
                if let Err(reject) = &e.message {
                    findings.push(reject.clone());
                }
                sort_findings(&mut findings);
                line::json_line(&parts, &findings)
            }
        }
    }
}

/// The fallback message of a body that was not parsed: the body, decoded lossily, stands
/// in for the template. Only the part that can appear is decoded, so a 1 GiB body costs
/// what its first `limit` bytes cost; the cut is still counted in decoded bytes.
fn unparsed_fallback(rule: Rule, body: BodyView<'_>, limit: usize) -> String {
    let (bytes, len) = match body {
        BodyView::Whole(b) => (b, b.len()),
        BodyView::Head(u) => (u.head, u.len),
    };
    let head = &bytes[..bytes.len().min(len).min(limit.saturating_add(4))];
    let text = String::from_utf8_lossy(head);
    if head.len() == len {
        return line::fallback_message(rule, &text, None, limit);
    }
    // Each raw byte decodes to at least one byte, so the first `limit` decoded bytes of
    // the head are the first `limit` decoded bytes of the whole body.
    let kept = cut(&text, limit);
    let total = match body {
        BodyView::Whole(b) => lossy_len(b),
        BodyView::Head(u) => u.decoded_len,
    };
    let mut message = line::fallback_message(rule, &kept, None, usize::MAX);
    message.push_str(&format!("…[truncated {} bytes]", total - kept.len()));
    message
}

/// The length of `body` decoded lossily: each invalid sequence becomes one U+FFFD.
pub fn lossy_len(body: &[u8]) -> usize {
    body.utf8_chunks()
        .map(|c| {
            c.valid().len()
                + if c.invalid().is_empty() {
                    0
                } else {
                    '\u{FFFD}'.len_utf8()
                }
        })
        .sum()
}

/// The first `limit` bytes of `s`, at a character boundary.
fn cut(s: &str, limit: usize) -> String {
    let mut i = limit.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    s[..i].to_string()
}

/// Processes `body` with `limits` and the default line format: the one-call form.
pub fn process(body: &[u8], limits: &Limits) -> Outcome {
    match Pipeline::new(limits.clone(), line::DEFAULT_LINE_FORMAT) {
        Ok(p) => p.process(body),
        // The default template is a constant that the tests parse; this cannot happen.
        Err(e) => Outcome {
            verdict: Verdict::Crashed,
            message: None,
            line: None,
            msg: None,
            findings: vec![Finding::new(Rule::Crash, None, e.to_string())],
            alloc_bytes: None,
            elapsed_us: 0,
        },
    }
}
