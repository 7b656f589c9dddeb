//! What an audit counts, per batch and in total, and the summary it ends with.
//!
//! Every figure is bounded in memory whatever the capture: counts are integers, the worst
//! records are a short list, and rejections per logger are kept for at most
//! [`MAX_LOGGERS`] loggers (past that, the Space-Saving scheme keeps the heaviest, and the
//! summary says the counts are estimates).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use crate::finding::Rule;
use crate::line;
use crate::pipeline::{Outcome, Verdict};

/// Loggers whose rejections are counted.
pub const MAX_LOGGERS: usize = 1024;
/// Loggers shown in the summary.
pub const TOP_LOGGERS: usize = 10;
/// Costliest records shown in the summary.
pub const WORST: usize = 5;
/// A logger name is kept to this many bytes (at a character boundary).
const MAX_LOGGER_BYTES: usize = 200;

/// One record among the costliest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Costly {
    pub source: String,
    pub alloc_bytes: u64,
    pub verdict: Verdict,
}

/// The counts of one batch, or of the whole audit.
#[derive(Debug, Default)]
pub struct Stats {
    pub records: u64,
    pub bytes: u64,
    pub empty_lines: u64,
    pub ok: u64,
    pub rejected: u64,
    pub crashed: u64,
    /// Records rendered in the sandbox (suspicious, or a panic in process).
    pub sandboxed: u64,
    /// Records that could not be checked (the sandbox could not be started).
    pub unchecked: u64,
    /// Findings per rule, indexed like [`Rule::ALL`].
    pub findings: [u64; Rule::ALL.len()],
    /// Rejected or crashed records per logger (a batch's are exact).
    pub loggers: HashMap<String, u64>,
    /// The costliest records by `alloc_bytes`, most first (input order breaks ties).
    pub worst: Vec<Costly>,
}

impl Stats {
    /// Counts one record; `logger` is asked for only when it was refused, and `source`
    /// only when it is among the costliest.
    pub fn add(
        &mut self,
        outcome: &Outcome,
        logger: impl FnOnce() -> String,
        source: impl FnOnce() -> String,
    ) {
        self.records += 1;
        match outcome.verdict {
            Verdict::Ok => self.ok += 1,
            Verdict::Rejected => self.rejected += 1,
            Verdict::Crashed => self.crashed += 1,
        }
        for f in &outcome.findings {
            self.findings[rule_index(f.rule)] += 1;
        }
        if outcome.verdict != Verdict::Ok {
            *self.loggers.entry(logger()).or_insert(0) += 1;
        }
        if let Some(bytes) = outcome.alloc_bytes {
            let beats = self.worst.len() < WORST
                || self.worst.last().is_some_and(|w| bytes > w.alloc_bytes);
            if beats {
                let at = self.worst.partition_point(|w| w.alloc_bytes >= bytes);
                self.worst.insert(
                    at,
                    Costly {
                        source: source(),
                        alloc_bytes: bytes,
                        verdict: outcome.verdict,
                    },
                );
                self.worst.truncate(WORST);
            }
        }
    }
}

fn rule_index(rule: Rule) -> usize {
    Rule::ALL.iter().position(|r| *r == rule).unwrap_or(0)
}

/// The name a logger is counted under: cut, so a hostile name cannot take memory.
pub fn logger_key(name: &str) -> String {
    if name.len() <= MAX_LOGGER_BYTES {
        return name.to_string();
    }
    let mut i = MAX_LOGGER_BYTES;
    while !name.is_char_boundary(i) {
        i -= 1;
    }
    format!("{}…", &name[..i])
}

/// The audit's totals: batches merged in input order.
#[derive(Debug, Default)]
pub struct Summary {
    pub total: Stats,
    /// Rejections per logger, at most [`MAX_LOGGERS`]: (count, possible overcount).
    loggers: HashMap<String, (u64, u64)>,
    /// True once a logger had to be evicted: the counts are then estimates.
    pub loggers_estimated: bool,
    /// Inputs that could not be read.
    pub unreadable: u64,
}

impl Summary {
    pub fn merge(&mut self, batch: Stats) {
        // Sorted, so that which logger is evicted does not depend on hash order.
        let mut loggers: Vec<(String, u64)> = batch.loggers.into_iter().collect();
        loggers.sort();
        for (name, n) in loggers {
            self.count_logger(name, n);
        }
        let t = &mut self.total;
        t.records += batch.records;
        t.bytes += batch.bytes;
        t.empty_lines += batch.empty_lines;
        t.ok += batch.ok;
        t.rejected += batch.rejected;
        t.crashed += batch.crashed;
        t.sandboxed += batch.sandboxed;
        t.unchecked += batch.unchecked;
        for (sum, n) in t.findings.iter_mut().zip(batch.findings) {
            *sum += n;
        }
        for w in batch.worst {
            // Earlier batches win ties: they came first in the input.
            if t.worst.len() < WORST
                || t.worst
                    .last()
                    .is_some_and(|l| w.alloc_bytes > l.alloc_bytes)
            {
                let at = t.worst.partition_point(|l| l.alloc_bytes >= w.alloc_bytes);
                t.worst.insert(at, w);
                t.worst.truncate(WORST);
            }
        }
    }

    /// Space-Saving: a new logger when the table is full replaces the one with the
    /// fewest, inheriting its count as a possible overcount.
    fn count_logger(&mut self, name: String, n: u64) {
        if let Some((count, _)) = self.loggers.get_mut(&name) {
            *count += n;
            return;
        }
        if self.loggers.len() < MAX_LOGGERS {
            self.loggers.insert(name, (n, 0));
            return;
        }
        self.loggers_estimated = true;
        let Some((min_name, min_count)) = self
            .loggers
            .iter()
            .min_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(a.0)))
            .map(|(k, v)| (k.clone(), v.0))
        else {
            return;
        };
        self.loggers.remove(&min_name);
        self.loggers.insert(name, (min_count + n, min_count));
    }

    /// The loggers with the most refused records, most first (then by name).
    pub fn top_loggers(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .loggers
            .iter()
            .map(|(k, (n, _))| (k.as_str(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(TOP_LOGGERS);
        v
    }

    /// The summary as one JSON object (`{"summary": {...}}`).
    pub fn to_json(&self, elapsed: Duration) -> SummaryLine<'_> {
        let t = &self.total;
        let secs = elapsed.as_secs_f64().max(1e-9);
        SummaryLine {
            summary: SummaryJson {
                records: t.records,
                bytes: t.bytes,
                empty_lines: t.empty_lines,
                verdicts: Verdicts {
                    ok: t.ok,
                    rejected: t.rejected,
                    crashed: t.crashed,
                },
                findings: Rule::ALL
                    .iter()
                    .zip(t.findings)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (r.id(), n))
                    .collect(),
                top_loggers: self
                    .top_loggers()
                    .into_iter()
                    .map(|(logger, rejections)| LoggerCount { logger, rejections })
                    .collect(),
                loggers_estimated: self.loggers_estimated,
                worst_alloc: &t.worst,
                sandboxed: t.sandboxed,
                unchecked: t.unchecked,
                unreadable_inputs: self.unreadable,
                elapsed_ms: elapsed.as_millis() as u64,
                records_per_s: (t.records as f64 / secs).round() as u64,
                bytes_per_s: (t.bytes as f64 / secs).round() as u64,
            },
        }
    }

    /// The summary as a table for people.
    pub fn write_table(&self, out: &mut impl Write, elapsed: Duration) -> io::Result<()> {
        let t = &self.total;
        let secs = elapsed.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "{} records ({}) in {:.2} s: {} records/s, {}/s",
            group(t.records),
            size(t.bytes),
            secs,
            group((t.records as f64 / secs).round() as u64),
            size((t.bytes as f64 / secs).round() as u64),
        )?;
        writeln!(
            out,
            "  verdicts    ok {}, rejected {}, crashed {}",
            group(t.ok),
            group(t.rejected),
            group(t.crashed)
        )?;
        let mut also = vec![format!("{} empty lines skipped", group(t.empty_lines))];
        also.push(format!("{} rendered in the sandbox", group(t.sandboxed)));
        if t.unchecked > 0 {
            also.push(format!(
                "{} not checked (sandbox failed)",
                group(t.unchecked)
            ));
        }
        if self.unreadable > 0 {
            also.push(format!("{} inputs unreadable", group(self.unreadable)));
        }
        writeln!(out, "  input       {}", also.join(", "))?;
        writeln!(out, "  findings")?;
        let found: Vec<(Rule, u64)> = Rule::ALL
            .iter()
            .copied()
            .zip(t.findings)
            .filter(|(_, n)| *n > 0)
            .collect();
        if found.is_empty() {
            writeln!(out, "    (none)")?;
        }
        for (rule, n) in found {
            writeln!(
                out,
                "    {:<20} {:>6} {:>12}",
                rule.id(),
                rule.severity().as_str(),
                group(n)
            )?;
        }
        let est = if self.loggers_estimated {
            " (estimated: many loggers)"
        } else {
            ""
        };
        writeln!(out, "  loggers with the most rejections{est}")?;
        let top = self.top_loggers();
        if top.is_empty() {
            writeln!(out, "    (none)")?;
        }
        for (name, n) in top {
            writeln!(out, "    {:<32} {:>12}", line::escape(name), group(n))?;
        }
        writeln!(out, "  largest alloc_bytes")?;
        if t.worst.is_empty() {
            writeln!(out, "    (none)")?;
        }
        for w in &t.worst {
            writeln!(
                out,
                "    {:>12}  {:<8}  {}",
                group(w.alloc_bytes),
                w.verdict.as_str(),
                line::escape(&w.source)
            )?;
        }
        Ok(())
    }
}

/// `--json --summary`'s last line.
#[derive(Debug, Serialize)]
pub struct SummaryLine<'a> {
    pub summary: SummaryJson<'a>,
}

#[derive(Debug, Serialize)]
pub struct SummaryJson<'a> {
    pub records: u64,
    pub bytes: u64,
    pub empty_lines: u64,
    pub verdicts: Verdicts,
    /// Rule id -> findings, rules with none left out.
    pub findings: std::collections::BTreeMap<&'static str, u64>,
    pub top_loggers: Vec<LoggerCount<'a>>,
    pub loggers_estimated: bool,
    pub worst_alloc: &'a [Costly],
    pub sandboxed: u64,
    pub unchecked: u64,
    pub unreadable_inputs: u64,
    pub elapsed_ms: u64,
    pub records_per_s: u64,
    pub bytes_per_s: u64,
}

#[derive(Debug, Serialize)]
pub struct Verdicts {
    pub ok: u64,
    pub rejected: u64,
    pub crashed: u64,
}

#[derive(Debug, Serialize)]
pub struct LoggerCount<'a> {
    pub logger: &'a str,
    pub rejections: u64,
}

/// `1234567` -> `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units, as a person reads a file size.
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    fn outcome(verdict: Verdict, alloc: u64, rules: &[Rule]) -> Outcome {
        Outcome {
            verdict,
            message: None,
            line: None,
            msg: None,
            findings: rules.iter().map(|r| Finding::new(*r, None, "")).collect(),
            alloc_bytes: Some(alloc),
            elapsed_us: 0,
        }
    }

    #[test]
    fn batches_merge_into_the_same_counts_as_one_pass() {
        let records = [
            (Verdict::Ok, 100, vec![Rule::ControlChars], "a"),
            (Verdict::Rejected, 900, vec![Rule::WidthTooLarge], "chat"),
            (
                Verdict::Rejected,
                50,
                vec![Rule::FormatError, Rule::LookupSyntax],
                "chat",
            ),
            (Verdict::Crashed, 0, vec![Rule::Crash], "x"),
            (Verdict::Ok, 900, vec![], "a"),
            (Verdict::Ok, 7000, vec![], "a"),
        ];
        let mut one = Stats::default();
        let mut parts = [Stats::default(), Stats::default()];
        for (i, (v, a, rules, logger)) in records.iter().enumerate() {
            let o = outcome(*v, *a, rules);
            one.add(&o, || logger.to_string(), || format!("f:{i}"));
            parts[i / 3].add(&o, || logger.to_string(), || format!("f:{i}"));
        }
        let mut merged = Summary::default();
        for p in parts {
            merged.merge(p);
        }
        assert_eq!(merged.total.records, 6);
        assert_eq!(
            (merged.total.ok, merged.total.rejected, merged.total.crashed),
            (3, 2, 1)
        );
        assert_eq!(merged.total.findings, one.findings);
        assert_eq!(merged.top_loggers(), vec![("chat", 2), ("x", 1)]);
        let worst: Vec<&str> = merged
            .total
            .worst
            .iter()
            .map(|w| w.source.as_str())
            .collect();
        assert_eq!(
            worst,
            ["f:5", "f:1", "f:4", "f:0", "f:2"],
            "ties keep input order"
        );
    }

    #[test]
    fn loggers_stay_bounded_and_the_heavy_ones_survive() {
        let mut s = Summary::default();
        let mut batch = Stats::default();
        batch.loggers.insert("heavy".into(), 1000);
        s.merge(batch);
        for i in 0..(MAX_LOGGERS * 3) {
            let mut b = Stats::default();
            b.loggers.insert(format!("one-off-{i}"), 1);
            s.merge(b);
        }
        assert!(s.loggers.len() <= MAX_LOGGERS);
        assert!(s.loggers_estimated);
        assert_eq!(s.top_loggers()[0], ("heavy", 1000));
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(size(88_500_000), "88.5 MB");
        assert_eq!(logger_key(&"é".repeat(150)).len(), 200 + '…'.len_utf8());
    }
}
