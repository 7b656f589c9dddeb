//! What the fuzz targets assert: for any input, the invariants docs/record.md and docs/rules.md
//! promise, not only "it does not crash".
//!
//! Each public function takes the raw fuzz bytes of one target and panics (a libFuzzer
//! crash) when an invariant breaks. The file is also compiled into the integration tests
//! (`tests/it/fuzz_regressions.rs`, by `#[path]`), so every input saved under
//! `fixtures/fuzz/` is replayed by `cargo test` through exactly this code, with the same
//! limits: the defaults of `src/config.rs`.
//!
//! Input shapes (the seed generator in `scripts/fuzz.sh` writes the same):
//! - `record`: a whole body, byte for byte as it would sit in the queue.
//! - `format_percent` / `format_brace` / `format_dollar`: `msg`, a NUL byte, then the JSON
//!   text of `args`; the target builds `{"msg": msg, "args": ARGS, "style": S}` from them.
//! - `detect`: NUL-separated strings; the first is `msg` (verbatim), the rest stand for the
//!   strings of args and fields.
//! - `line_escape`: NUL-separated parts `ts`, `level`, `logger`, `message` of one line.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use logfence::config::Limits;
use logfence::finding::{sort_findings, Finding, Rule, Severity};
use logfence::format::{self, Args, Reject, Style};
use logfence::line::{self, LineParts, LineTemplate, DEFAULT_LINE_FORMAT};
use logfence::pipeline::{Outcome, OutputFormat, Pipeline, Verdict};
use logfence::record;
use logfence::value::{Int, Value};
use logfence::{alloc, detect, json};

/// The target names, as `cargo fuzz` and `fixtures/fuzz/<target>-<n>.bin` spell them.
pub const TARGETS: [&str; 6] = [
    "record",
    "format_percent",
    "format_brace",
    "format_dollar",
    "detect",
    "line_escape",
];

/// Runs the target named `target` on `data`; `false` for an unknown name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "record" => record(data),
        "format_percent" => format_percent(data),
        "format_brace" => format_brace(data),
        "format_dollar" => format_dollar(data),
        "detect" => detect(data),
        "line_escape" => line_escape(data),
        _ => return false,
    }
    true
}

thread_local! {
    /// Built once per thread, as the consumer does: the lazily built tables and the template
    /// caches are then warm the way they are in production, and a record pays only for itself.
    static PIPELINES: (Pipeline, Pipeline) = (
        Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT).expect("default line format"),
        Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT)
            .expect("default line format")
            .with_output(OutputFormat::Json),
    );
}

// ---------------------------------------------------------------------------------------
// record
// ---------------------------------------------------------------------------------------

/// A whole body through `Pipeline::process`, in text and JSON output.
pub fn record(data: &[u8]) {
    check_body(data);
}

/// Processes `body` both ways and checks every invariant of the outcome; returns the text
/// outcome.
fn check_body(body: &[u8]) -> Outcome {
    let limits = Limits::default();
    let (text, json_out) = PIPELINES.with(|(t, j)| (t.process(body), j.process(body)));
    check_outcome(body, &text, &limits);
    check_json_line(&text, &json_out);
    text
}

/// The promises of one outcome: one line, safe; the message within the output limit; at most
/// one reject; findings in order; offsets into `msg`; the allocation well within the
/// budget.
fn check_outcome(body: &[u8], o: &Outcome, limits: &Limits) {
    assert_ne!(o.verdict, Verdict::Crashed, "crashed: {o:?}");
    let line = o
        .line
        .as_deref()
        .expect("every processed record has a line");
    check_one_safe_line(line);

    let rejects: Vec<&Finding> = o
        .findings
        .iter()
        .filter(|f| f.rule.severity() == Severity::Reject)
        .collect();
    assert!(rejects.len() <= 1, "more than one reject: {:?}", o.findings);
    assert_eq!(o.verdict == Verdict::Rejected, rejects.len() == 1, "{o:?}");
    match o.verdict {
        Verdict::Ok => {
            let m = o.message.as_deref().expect("an ok record has a message");
            assert!(
                m.len() <= limits.max_output_bytes,
                "message of {} bytes > --max-output-bytes",
                m.len()
            );
        }
        _ => assert!(o.message.is_none(), "a rejected record has no message"),
    }

    check_findings_order(&o.findings);
    for once in [Rule::ControlChars, Rule::BidiControl, Rule::InvalidUtf8] {
        let n = o.findings.iter().filter(|f| f.rule == once).count();
        assert!(n <= 1, "{} reported {n} times", once.id());
    }
    if let Ok(r) = record::decode(body, limits) {
        for f in &o.findings {
            if let Some(at) = f.offset {
                assert!(
                    at < r.msg.len() && r.msg.is_char_boundary(at),
                    "{} offset {at} is not a character of msg ({} bytes)",
                    f.rule.id(),
                    r.msg.len()
                );
            }
        }
    }

    let allocated = o.alloc_bytes.expect("accounting is on");
    assert!(
        allocated <= limits.alloc_budget,
        "allocated {allocated} > --alloc-budget"
    );
    assert!(
        o.findings.iter().all(|f| f.rule != Rule::AllocBudget),
        "the alloc-budget safety net fired: {:?}",
        o.findings
    );
    let bound = alloc_bound(limits);
    assert!(allocated <= bound, "allocated {allocated} > bound {bound}");

    // Every part is bounded: the message (or the fallback's template and args repr, each
    // cut to the limit) and the level and logger (at most the body, or a `str()` cut to the
    // limit), escaped at most 4 bytes per byte.
    let line_bound = 4 * (2 * limits.max_output_bytes + 2 * body.len()) + 512;
    assert!(
        line.len() <= line_bound,
        "line of {} bytes > bound {line_bound}",
        line.len()
    );
}

/// What one record may allocate while parsing and rendering: half of `--alloc-budget`. The
/// budget is a safety net the formatter's own bounds should keep out of reach, so a record
/// that comes near it is a finding. (Not a multiple of the body as in
/// `tests/it/properties.rs`: `str()` of an int costs more than linear in its digits, as in
/// CPython, and one 4,300-digit int may be shown 15 times within the output limit.)
fn alloc_bound(limits: &Limits) -> u64 {
    limits.alloc_budget / 2
}

/// The `--output json` line says what the text outcome says, and is one safe line.
fn check_json_line(text: &Outcome, j: &Outcome) {
    assert_eq!(text.verdict, j.verdict);
    assert_eq!(text.message, j.message);
    let rules = |o: &Outcome| o.findings.iter().map(|f| f.rule).collect::<Vec<_>>();
    assert_eq!(rules(text), rules(j));
    let line = j.line.as_deref().expect("a json line");
    check_one_safe_line(line);
    let parsed = json::parse(line, json::HARD_MAX_DEPTH)
        .unwrap_or_else(|e| panic!("--output json line is not JSON ({e}): {line:?}"));
    let Value::Dict(obj) = parsed.value else {
        panic!("--output json line is not an object: {line:?}")
    };
    assert!(!parsed.lone_surrogate, "{line:?}");
    for key in ["ts", "level", "logger", "message"] {
        assert!(
            matches!(obj.get(key), Some(Value::Str(_))),
            "--output json line lacks a string {key}: {line:?}"
        );
    }
    if let (Some(m), Some(Value::Str(jm))) = (&text.message, obj.get("message")) {
        assert_eq!(m, jm, "the json line's message differs from the outcome's");
    }
}

/// A line holds no raw character the escaping exists for: no CR or LF (a forged second
/// line), no other control, no bidi control. Backslashes are the escapes themselves.
fn check_one_safe_line(line: &str) {
    if let Some(c) = line.chars().find(|&c| c != '\\' && line::needs_escape(c)) {
        panic!("raw U+{:04X} in the line: {line:?}", u32::from(c));
    }
}

fn check_findings_order(findings: &[Finding]) {
    let mut sorted = findings.to_vec();
    sort_findings(&mut sorted);
    assert_eq!(findings, &sorted[..], "findings out of order");
}

// ---------------------------------------------------------------------------------------
// format_*
// ---------------------------------------------------------------------------------------

/// `%`-style: see [`format_style`].
pub fn format_percent(data: &[u8]) {
    format_style(data, Style::Percent, "%");
}

/// `{`-style: see [`format_style`].
pub fn format_brace(data: &[u8]) {
    format_style(data, Style::Brace, "{");
}

/// `$`-style: see [`format_style`].
pub fn format_dollar(data: &[u8]) {
    format_style(data, Style::Dollar, "$");
}

/// Splits `data` at its first NUL: `(before, after)`; all of it is `before` when it has none.
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The record `{"msg": msg, "args": ARGS, "style": S}` through the pipeline (every
/// [`record`] invariant), then the formatter directly: uncached, cached and cached again
/// agree with each other and with the pipeline; an `Ok` fits the output limit; a limit's
/// reject names a value over that limit; the render's own allocation is bounded.
fn format_style(data: &[u8], style: Style, style_field: &str) {
    let (msg, args) = split_nul(data);
    let msg = String::from_utf8_lossy(msg);
    let args = String::from_utf8_lossy(args);
    let args = if args.trim().is_empty() {
        "null"
    } else {
        &args
    };
    let body = format!(
        "{{\"msg\":{},\"args\":{args},\"style\":\"{style_field}\"}}",
        serde_json::to_string(&msg).expect("a str serialises")
    );
    let outcome = check_body(body.as_bytes());

    let limits = Limits::default();
    let Ok(r) = record::decode(body.as_bytes(), &limits) else {
        return;
    };
    let (Some(args), Some(true)) = (r.args(), r.style.known().map(|s| s == style)) else {
        return;
    };
    let (direct, allocated) = alloc::measure(|| format::render(&r.msg, args, style, &limits));
    let cached = format::render_cached(&r.msg, args, style, &limits);
    let again = format::render_cached(&r.msg, args, style, &limits);
    assert_eq!(direct, cached, "cached render differs from render");
    assert_eq!(cached, again, "a cache hit renders differently");
    let bound = alloc_bound(&limits);
    assert!(allocated <= bound, "render allocated {allocated} > {bound}");

    match &direct {
        Ok(m) => {
            assert!(m.len() <= limits.max_output_bytes, "{} bytes", m.len());
            assert_eq!(outcome.message.as_deref(), Some(m.as_str()));
        }
        Err(reject) => {
            check_reject(reject, &r.msg, &limits);
            let got = outcome.reject().expect("the pipeline rejects it too");
            assert_eq!(got.rule, reject.rule());
            assert_eq!(got.offset, reject.offset());
        }
    }
}

/// A limit's reject names a value over that very limit, at a place inside `msg`.
fn check_reject(reject: &Reject, msg: &str, limits: &Limits) {
    match *reject {
        Reject::WidthTooLarge { width, limit, .. } => {
            assert_eq!(limit, limits.max_width);
            assert!(width > limit, "{reject:?}");
        }
        Reject::PrecisionTooLarge {
            precision, limit, ..
        } => {
            assert_eq!(limit, limits.max_precision);
            assert!(precision > limit, "{reject:?}");
        }
        Reject::TooManyFields { count, limit } => {
            assert_eq!(limit, limits.max_fields);
            assert!(count > limit, "{reject:?}");
        }
        Reject::OutputTooLarge { at_least, limit } => {
            assert_eq!(limit, limits.max_output_bytes);
            assert!(at_least > limit, "{reject:?}");
        }
        Reject::AttributeAccess { .. } | Reject::FormatError { .. } => {}
    }
    if let Some(at) = reject.offset() {
        assert!(at < msg.len() && msg.is_char_boundary(at), "{reject:?}");
    }
}

// ---------------------------------------------------------------------------------------
// detect
// ---------------------------------------------------------------------------------------

/// The detector on `msg` (verbatim) and other strings: findings in order, the
/// once-per-record rules once, offsets at the character they name; `control-chars` and
/// `bidi-control` exactly when the line escapes such a character; and where the renderer
/// refuses a literal width or precision of `msg` as a template, the verbatim `msg` is
/// `format-like-text` at that spec (docs/rules.md: a width or precision of 4 or more digits).
pub fn detect(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let invalid = matches!(text, std::borrow::Cow::Owned(_));
    let mut parts = text.split('\0');
    let msg = parts.next().unwrap_or("");
    let others: Vec<&str> = parts.collect();
    let findings = detect::detect(msg, true, others.iter().copied(), invalid);
    check_findings_order(&findings);

    for once in [Rule::ControlChars, Rule::BidiControl, Rule::InvalidUtf8] {
        let n = findings.iter().filter(|f| f.rule == once).count();
        assert!(n <= 1, "{} reported {n} times", once.id());
    }
    for f in &findings {
        assert_eq!(f.rule.severity(), Severity::Warn, "{f:?}");
        let Some(at) = f.offset else { continue };
        assert!(at < msg.len() && msg.is_char_boundary(at), "{f:?}");
        let c = msg[at..].chars().next().unwrap_or('\0');
        let expected: &[char] = match f.rule {
            Rule::FormatLikeText => &['%', '{'],
            Rule::LookupSyntax => &['$'],
            Rule::InvalidUtf8 => &['\u{FFFD}'],
            _ => &[],
        };
        assert!(
            expected.is_empty() || expected.contains(&c),
            "{} at {at} points at {c:?}",
            f.rule.id()
        );
    }

    // control-chars / bidi-control agree with the escaper: reported exactly when a
    // character the line escapes (other than `\`) is present, at the first one in msg.
    let is_bidi = |c: char| matches!(u32::from(c), 0x202a..=0x202e | 0x2066..=0x2069);
    let is_control = |c: char| c != '\\' && line::needs_escape(c) && !is_bidi(c);
    for (rule, pred) in [
        (Rule::ControlChars, &is_control as &dyn Fn(char) -> bool),
        (Rule::BidiControl, &is_bidi),
    ] {
        let in_msg = msg.char_indices().find(|&(_, c)| pred(c)).map(|(i, _)| i);
        let anywhere = in_msg.is_some() || others.iter().any(|s| s.chars().any(pred));
        let found: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
        assert_eq!(
            !found.is_empty(),
            anywhere,
            "{} disagrees with the escaper",
            rule.id()
        );
        if let Some(f) = found.first() {
            assert_eq!(f.offset, in_msg, "{} offset", rule.id());
        }
    }
    assert_eq!(
        findings.iter().any(|f| f.rule == Rule::InvalidUtf8),
        invalid
    );

    // Not verbatim: `format-like-text` never fires.
    let templated = detect::detect(msg, false, others.iter().copied(), invalid);
    assert!(
        templated.iter().all(|f| f.rule != Rule::FormatLikeText),
        "format-like-text on a template with args: {templated:?}"
    );

    // Where the renderer refuses a width or precision written in `msg`, and `msg` is
    // otherwise a template CPython renders, the verbatim `msg` is format-like-text at
    // that spec. (A spec CPython refuses anyway, `%240000\x01`, is no danger as a template.)
    for style in [Style::Percent, Style::Brace] {
        if let Some(offset) = literal_limit_offset(msg, style) {
            assert!(
                findings
                    .iter()
                    .any(|f| f.rule == Rule::FormatLikeText && f.offset == Some(offset)),
                "{style:?} renderer refuses a literal width/precision at {offset} that the \
                 detector does not call format-like-text: {findings:?}"
            );
        }
    }
}

/// The offset of a width or precision over the default limits that `msg` itself writes,
/// when `msg` with some args renders in full under unbounded widths and precisions (the
/// output stays bounded, and padding is counted before it is written). The args
/// carry no digits into a spec: ints 1 for `%` (a `*` takes 1; tried with 0 to 8 of them, as
/// `%` wants exactly its count), strings `"x"` for `{}` (a nested field then adds no digit).
fn literal_limit_offset(msg: &str, style: Style) -> Option<usize> {
    let strict = Limits::default();
    let loose = Limits {
        max_width: u64::MAX,
        max_precision: u64::MAX,
        ..Limits::default()
    };
    let tuples: Vec<Vec<Value>> = match style {
        Style::Percent => (0..=8)
            .map(|n| vec![Value::Int(Int::Small(1)); n])
            .collect(),
        _ => vec![vec![Value::Str("x".to_owned()); 8]],
    };
    for xs in &tuples {
        let (Err(Reject::WidthTooLarge { offset, .. })
        | Err(Reject::PrecisionTooLarge { offset, .. })) =
            format::render(msg, Args::Tuple(xs), style, &strict)
        else {
            continue;
        };
        // Only a full render counts: `output-too-large` outranks a CPython error, so it
        // would hide one (`%99999999999\u{FFFD}` is no spec to CPython).
        if format::render(msg, Args::Tuple(xs), style, &loose).is_ok() {
            return Some(offset);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// line_escape
// ---------------------------------------------------------------------------------------

/// The escaper and the line: escaping leaves no character it exists for, can be undone
/// exactly, and counts what it writes; the default line is the parts escaped and laid out
/// as the template says, the same through the direct plan and through the formatter; the
/// JSON line decodes to the parts; a fallback message is cut as docs/record.md says.
pub fn line_escape(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (ts, level, logger, message) = (next(), next(), next(), next());

    for s in [ts, level, logger, message] {
        let e = line::escape(s);
        check_one_safe_line(&e);
        assert_eq!(
            unescape(&e).as_deref(),
            Some(s),
            "escaping is not undone: {e:?}"
        );
        assert_eq!(line::escaped_chars(s), e.chars().count(), "escaped_chars");
        let mut into = String::from("prefix");
        line::escape_into(s, &mut into);
        assert_eq!(&into["prefix".len()..], &*e, "escape_into");
    }

    let p = LineParts {
        ts,
        level,
        logger,
        message,
        fields: None,
        exc: None,
        stack: None,
    };
    let level_e = line::escape(&line::upper(level)).into_owned();
    let pad = 5usize.saturating_sub(level_e.chars().count());
    let expected = format!(
        "{} {level_e}{} {}: {}",
        line::escape(ts),
        " ".repeat(pad),
        line::escape(logger),
        line::escape(message)
    );
    let planned = LineTemplate::new(DEFAULT_LINE_FORMAT).expect("default");
    assert_eq!(planned.render(&p), expected, "default line");
    // A conversion keeps the template off the direct plan: the formatter's line.
    let formatted =
        LineTemplate::new("{ts!s} {level!s:<5} {logger!s}: {message!s}").expect("a valid template");
    assert_eq!(formatted.render(&p), expected, "formatted line");

    let j = line::json_line(&p, &[]);
    check_one_safe_line(&j);
    let parsed = json::parse(&j, 4).unwrap_or_else(|e| panic!("{e}: {j:?}"));
    let Value::Dict(obj) = parsed.value else {
        panic!("not an object: {j:?}")
    };
    let upper = line::upper(level);
    for (key, want) in [
        ("ts", ts),
        ("level", &*upper),
        ("logger", logger),
        ("message", message),
    ] {
        assert_eq!(
            obj.get(key),
            Some(&Value::Str(want.to_owned())),
            "json {key}: {j:?}"
        );
    }

    // The fallback: the template cut to the limit at a character boundary, and the marker.
    let limit = data.len() / 2;
    let fb = line::fallback_message(Rule::FormatError, message, None, limit);
    let mut kept = limit.min(message.len());
    while !message.is_char_boundary(kept) {
        kept -= 1;
    }
    let mut want = format!("[logfence rejected: format-error] {}", &message[..kept]);
    if kept < message.len() {
        want.push_str(&format!("…[truncated {} bytes]", message.len() - kept));
    }
    assert_eq!(fb, want, "fallback message");
    let args = vec![Value::Str(logger.to_owned()); 3];
    let fb = line::fallback_message(Rule::FormatError, message, Some(Args::Tuple(&args)), limit);
    let marker = "…[truncated 18446744073709551615 bytes]".len();
    let bound = "[logfence rejected: format-error] ".len() + 2 * (limit + marker) + 1;
    assert!(fb.len() <= bound, "fallback of {} > {bound}", fb.len());
}

/// Undoes the line's escaping, accepting only the forms docs/record.md writes (so it also
/// checks that each escape is the one asked for): `None` when `e` is not such a string.
pub fn unescape(e: &str) -> Option<String> {
    let mut out = String::with_capacity(e.len());
    let mut chars = e.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let d = match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            k @ ('x' | 'u') => {
                let n = if k == 'x' { 2 } else { 4 };
                let hex: String = chars.by_ref().take(n).collect();
                let lower = hex.chars().all(|h| matches!(h, '0'..='9' | 'a'..='f'));
                if hex.len() != n || !lower {
                    return None;
                }
                let d = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                // `\x` for controls up to U+00FF, `\u` for the rest; never for TAB/LF/CR or
                // for a character that needs no escape.
                let fits = (k == 'x') == (u32::from(d) <= 0xff);
                if !fits || !line::needs_escape(d) || matches!(d, '\t' | '\n' | '\r' | '\\') {
                    return None;
                }
                d
            }
            _ => return None,
        };
        out.push(d);
    }
    Some(out)
}
