//! `logfence check`: read records from files, directories or stdin, run each through the
//! pipeline (in a sandboxed worker unless `--no-sandbox`), and report (docs/commands.md).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::config::Limits;
use crate::finding::{Finding, Rule, Severity};
use crate::line;
use crate::pipeline::{Outcome, Pipeline, Verdict};
use crate::sandbox::{Run, Sandbox, SandboxConfig, DEFAULT_ADDRESS_SPACE};

/// Exit status: every record `ok`.
pub const EXIT_OK: i32 = 0;
/// Exit status: a record was `rejected`, none crashed.
pub const EXIT_REJECTED: i32 = 1;
/// Exit status: a record `crashed`.
pub const EXIT_CRASHED: i32 = 2;
/// Exit status: usage error or unreadable input (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// Where one record came from: a path as given (or joined with its directory), or `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "-".to_string(),
            Source::File(p) => p.display().to_string(),
        }
    }

    fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            Source::Stdin => {
                let mut buf = Vec::new();
                io::stdin().lock().read_to_end(&mut buf)?;
                Ok(buf)
            }
            Source::File(p) => std::fs::read(p),
        }
    }
}

/// Expands the command line into sources: a directory means every regular file in it,
/// sorted by name.
pub fn expand_sources(args: &[PathBuf]) -> io::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            sources.push(Source::Stdin);
            continue;
        }
        let meta = std::fs::metadata(arg)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", arg.display())))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            let entries = std::fs::read_dir(arg)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", arg.display())))?;
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_file()
                    || (entry.file_type()?.is_symlink() && entry.path().is_file())
                {
                    files.push(entry.file_name());
                }
            }
            files.sort();
            sources.extend(files.into_iter().map(|f| Source::File(arg.join(f))));
        } else {
            sources.push(Source::File(arg.clone()));
        }
    }
    Ok(sources)
}

/// One line of the `--json` report (docs/commands.md).
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub source: &'a str,
    pub verdict: Verdict,
    pub message: Option<&'a str>,
    pub line: Option<&'a str>,
    pub findings: &'a [Finding],
    pub alloc_bytes: Option<u64>,
    pub elapsed_us: u64,
}

/// How one record was run: in the sandbox or in process.
enum Runner {
    InProcess(Pipeline),
    Sandboxed { sandbox: Sandbox },
}

impl Runner {
    /// The outcome of one record; a sandbox death becomes a `crashed` outcome.
    fn run(&mut self, body: &[u8]) -> io::Result<Outcome> {
        match self {
            Runner::InProcess(p) => Ok(p.process(body)),
            Runner::Sandboxed { sandbox } => run_sandboxed(sandbox, body),
        }
    }
}

/// The outcome of one record rendered in `sandbox`; a worker death is a `crashed` outcome.
/// An `Err` means no worker could be started or fed, whatever the record.
pub fn run_sandboxed(sandbox: &mut Sandbox, body: &[u8]) -> io::Result<Outcome> {
    let started = std::time::Instant::now();
    let run = sandbox.run(body)?;
    let elapsed_us = started.elapsed().as_micros() as u64;
    Ok(match run {
        Run::Finished(outcome) => outcome,
        Run::Crashed(detail) => crashed(Rule::Crash, detail, elapsed_us),
        Run::TimedOut(after) => crashed(
            Rule::Timeout,
            format!("rendering took longer than {}", fmt_duration(after)),
            elapsed_us,
        ),
    })
}

fn crashed(rule: Rule, detail: String, elapsed_us: u64) -> Outcome {
    Outcome {
        verdict: Verdict::Crashed,
        message: None,
        line: None,
        msg: None,
        findings: vec![Finding::new(rule, None, detail)],
        alloc_bytes: None,
        elapsed_us,
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The worker's command line: the same limits and line format as ours.
pub fn worker_args(limits: &Limits, line_format: &str) -> Vec<OsString> {
    let pairs: [(&str, String); 9] = [
        ("--max-body-bytes", limits.max_body_bytes.to_string()),
        ("--max-json-depth", limits.max_json_depth.to_string()),
        ("--max-width", limits.max_width.to_string()),
        ("--max-precision", limits.max_precision.to_string()),
        ("--max-fields", limits.max_fields.to_string()),
        ("--max-output-bytes", limits.max_output_bytes.to_string()),
        ("--alloc-budget", limits.alloc_budget.to_string()),
        (
            "--format-timeout",
            format!("{}ms", limits.format_timeout.as_millis()),
        ),
        ("--line-format", line_format.to_string()),
    ];
    pairs
        .into_iter()
        .flat_map(|(k, v)| [OsString::from(k), OsString::from(v)])
        .collect()
}

/// The sandbox `check` and `consume` use: this binary, our limits.
pub fn sandbox_for(limits: &Limits, line_format: &str) -> io::Result<Sandbox> {
    let exe = std::env::current_exe()?;
    // The worker holds at most one body and its outcome; leave room for both.
    let address_space =
        DEFAULT_ADDRESS_SPACE.saturating_add((limits.max_body_bytes as u64).saturating_mul(4));
    Ok(Sandbox::new(SandboxConfig {
        exe,
        worker_args: worker_args(limits, line_format),
        address_space,
        timeout: limits.format_timeout,
    }))
}

/// Runs `check`; returns the exit status.
pub fn run(args: &CheckArgs, out: &mut impl Write, err: &mut impl Write) -> i32 {
    if args.ndjson {
        return crate::audit::run(args, out, err);
    }
    let limits = args.limits.limits();
    let pipeline = match Pipeline::new(limits.clone(), &args.line.line_format) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "logfence check: --line-format: {e}");
            return EXIT_USAGE;
        }
    };
    let sources = match expand_sources(&args.files) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "logfence check: {e}");
            return EXIT_USAGE;
        }
    };
    let mut runner = if args.no_sandbox {
        Runner::InProcess(pipeline)
    } else {
        match sandbox_for(&limits, &args.line.line_format) {
            Ok(sandbox) => Runner::Sandboxed { sandbox },
            Err(e) => {
                let _ = writeln!(err, "logfence check: cannot start the sandbox: {e}");
                return EXIT_USAGE;
            }
        }
    };

    let mut tally = Tally::default();
    for source in &sources {
        let name = source.name();
        let body = match source.read() {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "logfence check: {name}: {e}");
                tally.unreadable += 1;
                continue;
            }
        };
        let outcome = match runner.run(&body) {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(err, "logfence check: {name}: the sandbox failed: {e}");
                tally.unreadable += 1;
                continue;
            }
        };
        tally.add(outcome.verdict);
        let written = if args.json {
            write_json(out, &name, &outcome)
        } else {
            write_human(out, &name, &outcome)
        };
        if written.is_err() {
            return EXIT_USAGE;
        }
    }
    if !args.json {
        let _ = writeln!(out, "{}", tally.summary());
    }
    let _ = out.flush();
    tally.exit_status()
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    rejected: usize,
    crashed: usize,
    unreadable: usize,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Ok => self.ok += 1,
            Verdict::Rejected => self.rejected += 1,
            Verdict::Crashed => self.crashed += 1,
        }
    }

    fn summary(&self) -> String {
        let total = self.ok + self.rejected + self.crashed;
        let mut s = format!(
            "{total} record{}: {} ok, {} rejected, {} crashed",
            if total == 1 { "" } else { "s" },
            self.ok,
            self.rejected,
            self.crashed
        );
        if self.unreadable > 0 {
            s.push_str(&format!(", {} unreadable", self.unreadable));
        }
        s
    }

    fn exit_status(&self) -> i32 {
        if self.unreadable > 0 {
            EXIT_USAGE
        } else if self.crashed > 0 {
            EXIT_CRASHED
        } else if self.rejected > 0 {
            EXIT_REJECTED
        } else {
            EXIT_OK
        }
    }
}

/// One record's `--json` report line: every report `check` writes goes through here.
pub fn write_json(out: &mut impl Write, source: &str, o: &Outcome) -> io::Result<()> {
    let report = Report {
        source,
        verdict: o.verdict,
        message: o.message.as_deref(),
        line: o.line.as_deref(),
        findings: &o.findings,
        alloc_bytes: o.alloc_bytes,
        elapsed_us: o.elapsed_us,
    };
    write_json_line(out, &report)
}

/// One JSON object and its newline: the one place `check` (and its `--ndjson` audit)
/// turns a report into a line.
pub fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    // One line per record for every line reader: see `line::JsonSafe`.
    serde_json::to_writer(line::JsonSafe::new(&mut *out), value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

fn write_human(out: &mut impl Write, source: &str, o: &Outcome) -> io::Result<()> {
    writeln!(out, "{source}: {}", o.verdict.as_str().to_uppercase())?;
    for f in &o.findings {
        let sev = match f.severity {
            Severity::Reject => "reject",
            Severity::Warn => "warn  ",
        };
        let at = f
            .offset
            .map(|o| format!(" at byte {o}"))
            .unwrap_or_default();
        writeln!(out, "  {sev} {}{at}: {}", f.rule, f.detail)?;
        if let (Some(offset), Some(msg)) = (f.offset, o.msg.as_deref()) {
            if let Some((text, col, width)) = caret_context(msg, offset) {
                writeln!(out, "      {text}")?;
                writeln!(out, "      {}{}", " ".repeat(col), "^".repeat(width.max(1)))?;
            }
        }
    }
    if let Some(line) = &o.line {
        writeln!(out, "  line: {line}")?;
    } else {
        writeln!(
            out,
            "  line: (none: the consumer would dead-letter this message)"
        )?;
    }
    let alloc = o
        .alloc_bytes
        .map(|b| format!("{b} bytes allocated"))
        .unwrap_or_else(|| "allocation unknown (the run did not finish)".to_string());
    writeln!(out, "  cost: {alloc}, {} µs", o.elapsed_us)?;
    Ok(())
}

/// The escaped line of `msg` holding `offset`, with the caret's column and width in
/// escaped characters, cut to a window around the offset.
pub fn caret_context(msg: &str, offset: usize) -> Option<(String, usize, usize)> {
    if offset > msg.len() || !msg.is_char_boundary(offset) {
        return None;
    }
    let start = msg[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = msg[offset..].find('\n').map_or(msg.len(), |i| offset + i);
    let span_end = (offset + span_len(&msg[offset..end])).min(end);
    let before = line::escape(&msg[start..offset]);
    let span = line::escape(&msg[offset..span_end]);
    let after = line::escape(&msg[span_end..end]);
    // Keep the window readable: at most 40 characters before and 60 after the span.
    let before: String = {
        let n = before.chars().count();
        if n > 40 {
            format!("…{}", before.chars().skip(n - 39).collect::<String>())
        } else {
            before.into_owned()
        }
    };
    let span_chars = span.chars().count().min(80);
    let span: String = span.chars().take(80).collect();
    let after: String = if after.chars().count() > 60 {
        format!("{}…", after.chars().take(59).collect::<String>())
    } else {
        after.into_owned()
    };
    let col = before.chars().count();
    Some((format!("{before}{span}{after}"), col, span_chars))
}

/// The length in bytes of the spec starting `s` (`%-08.3f`, `{0:>10}`, `${jndi:...}`), or
/// of its first character.
fn span_len(s: &str) -> usize {
    let b = s.as_bytes();
    let first = s.chars().next().map_or(0, char::len_utf8);
    match b.first() {
        Some(b'%') => {
            let mut i = 1;
            if b.get(i) == Some(&b'(') {
                match s[i..].find(')') {
                    Some(j) => i += j + 1,
                    None => return s.len(),
                }
            }
            while i < b.len() && (b"-#0 +*.hlL".contains(&b[i]) || b[i].is_ascii_digit()) {
                i += 1;
            }
            let conv = s[i.min(s.len())..].chars().next().map_or(0, char::len_utf8);
            (i + conv).min(s.len())
        }
        Some(b'{') | Some(b'$') => {
            let mut depth = 0usize;
            for (i, c) in s.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ if depth == 0
                        && i > 0
                        && b[0] == b'$'
                        && !(c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        return i;
                    }
                    _ => {}
                }
            }
            s.len()
        }
        _ => first,
    }
}

/// True when `path` names stdin.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_context_underlines_the_whole_percent_spec() {
        let (text, col, width) = caret_context("Over %2400000000d now", 5).unwrap_or_default();
        assert_eq!(text, "Over %2400000000d now");
        assert_eq!((col, width), (5, 12));
    }

    #[test]
    fn caret_context_underlines_a_brace_field_and_a_lookup() {
        let (_, col, width) = caret_context("x {0:>{1}} y", 2).unwrap_or_default();
        assert_eq!((col, width), (2, 8));
        let (_, col, width) = caret_context("a ${jndi:ldap://x} b", 2).unwrap_or_default();
        assert_eq!((col, width), (2, 16));
    }

    #[test]
    fn caret_context_counts_escaped_columns() {
        let (text, col, _) = caret_context("a\tb %9999d", 5).unwrap_or_default();
        assert_eq!(text, "a\\tb %9999d");
        assert_eq!(col, 6);
    }

    #[test]
    fn exit_status_prefers_usage_then_crash_then_reject() {
        let mut t = Tally::default();
        assert_eq!(t.exit_status(), EXIT_OK);
        t.add(Verdict::Rejected);
        assert_eq!(t.exit_status(), EXIT_REJECTED);
        t.add(Verdict::Crashed);
        assert_eq!(t.exit_status(), EXIT_CRASHED);
        t.unreadable = 1;
        assert_eq!(t.exit_status(), EXIT_USAGE);
    }
}
