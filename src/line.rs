//! The output line (docs/record.md "The output line"): the line template around the message,
//! every part escaped first, so one record is exactly one line that cannot forge a second
//! one or repaint a terminal; the JSON line of `--output json` and the escaping rule every
//! JSON line logfence writes follows (`json_safe`); and the fallback message of a rejected
//! record.
//!
//! # Escaping
//!
//! `\` → `\\`; TAB, LF, CR → `\t`, `\n`, `\r`; every other C0 control, DEL and every C1
//! control → `\xhh`; U+2028, U+2029, U+202A–U+202E and U+2066–U+2069 → `\uhhhh`; hex is
//! lower-case. Each escape starts with a backslash and every backslash is escaped, so the
//! escaping can be undone. Parts are escaped before they enter the template, so padding
//! such as `{level:<5}` counts escaped characters.
//!
//! # The line template
//!
//! `{`-style over `ts`, `level` (upper-case), `logger`, `message` and the record's fields
//! (`{k}`). It is parsed and validated once, at start-up ([`LineTemplate::new`]). A field
//! the template names and a record lacks renders as an empty string; a record field named
//! like a built-in part (`message`, …) is shadowed by the part. Non-string field values
//! appear as Python's `str()`.
//!
//! # Exception and stack text
//!
//! A record's `exc` and `stack` follow the rendered template as CPython's
//! `logging.Formatter.format` appends them: a line feed (only when the line does not already
//! end with one) and `exc`, then a line feed (same rule) and `stack`; escaped like every
//! part, so the traceback stays on the record's one line. Each is cut to
//! `--max-output-bytes` with the truncation marker first ([`cut_marked`]).

use std::borrow::Cow;
use std::fmt::Write as _;

use indexmap::IndexMap;

use crate::finding::{Finding, Rule};
use crate::format::{number, Args, Counter, Out, Reject};
use crate::value::{self, Int, Value};

mod json_safe;
mod plan;
mod template;

pub use json_safe::{needs_json_escape, JsonSafe};
pub use template::{LineFormatError, LineTemplate};

/// `--line-format` when none is given.
pub const DEFAULT_LINE_FORMAT: &str = "{ts} {level:<5} {logger}: {message}";

/// The marker after a part of a fallback message that was cut.
const TRUNCATED: &str = "…[truncated ";

/// What one line is made of, unescaped.
#[derive(Clone, Copy, Debug)]
pub struct LineParts<'a> {
    /// RFC 3339, UTC, milliseconds (`2026-11-22T10:00:00.000Z`).
    pub ts: &'a str,
    /// The record's level as it came (`info`); the line upper-cases it.
    pub level: &'a str,
    pub logger: &'a str,
    /// The rendered message, the verbatim message, or the fallback message.
    pub message: &'a str,
    /// The record's `fields`, if it had any.
    pub fields: Option<&'a IndexMap<String, Value>>,
    /// The exception text, already cut ([`cut_marked`]), if the record had one.
    pub exc: Option<&'a str>,
    /// The stack text, already cut ([`cut_marked`]), if the record had one.
    pub stack: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------------------

/// `s` escaped for the line; borrowed when nothing needs escaping (the common case).
pub fn escape(s: &str) -> Cow<'_, str> {
    match first_escape(s.as_bytes()) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let mut out = String::with_capacity(s.len() + 16);
            escape_into(s, &mut out);
            Cow::Owned(out)
        }
    }
}

/// Appends `s`, escaped, to `out`.
pub fn escape_into(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut done = 0;
    while let Some(p) = first_escape(&b[done..]) {
        let at = done + p;
        // `at` starts a character: every byte that can begin an escape is ASCII or a
        // UTF-8 lead byte.
        out.push_str(&s[done..at]);
        let (c, len) = match s[at..].chars().next() {
            Some(c) => (c, c.len_utf8()),
            None => break,
        };
        if needs_escape(c) {
            push_escape(c, out);
        } else {
            out.push(c);
        }
        done = at + len;
    }
    out.push_str(&s[done..]);
}

/// The length of `s` escaped, in characters (what padding counts), without building it.
pub fn escaped_chars(s: &str) -> usize {
    s.chars().count() + escapes(s).map(|c| escape_len(c) - 1).sum::<usize>()
}

/// The characters of `s` the line escapes, found by the fast scan.
fn escapes(s: &str) -> impl Iterator<Item = char> + '_ {
    let b = s.as_bytes();
    let mut done = 0;
    std::iter::from_fn(move || {
        let at = done + first_escape(&b[done..])?;
        let c = s[at..].chars().next()?;
        done = at + c.len_utf8();
        Some(c)
    })
}

/// The length of the escape [`push_escape`] writes for `c` (all ASCII).
fn escape_len(c: char) -> usize {
    match c {
        '\\' | '\t' | '\n' | '\r' => 2,
        _ if u32::from(c) <= 0xff => 4,
        _ => 6,
    }
}

/// Whether the line escapes `c`.
pub fn needs_escape(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00..=0x1f
            | 0x5c
            | 0x7f..=0x9f
            | 0x2028
            | 0x2029
            | 0x202a..=0x202e
            | 0x2066..=0x2069
    )
}

fn push_escape(c: char, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let cp = u32::from(c);
    match c {
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        _ if cp <= 0xff => {
            out.push_str("\\x");
            out.push(char::from(HEX[(cp >> 4) as usize]));
            out.push(char::from(HEX[(cp & 0xf) as usize]));
        }
        _ => {
            out.push_str("\\u");
            for shift in [12, 8, 4, 0] {
                out.push(char::from(HEX[((cp >> shift) & 0xf) as usize]));
            }
        }
    }
}

/// The offset of the first byte that may start an escape: a backslash, a C0 control or
/// DEL, or the lead byte of a C1 control (0xC2) or of U+2028–U+2069 (0xE2). A hit on a lead
/// byte is confirmed by [`needs_escape`]. Branch-free over fixed chunks so it vectorises.
#[inline]
fn first_escape(b: &[u8]) -> Option<usize> {
    #[inline(always)]
    fn candidate(x: u8) -> bool {
        (x < 0x20) | (x == b'\\') | (x == 0x7f) | (x == 0xc2) | (x == 0xe2)
    }
    let mut base = 0;
    for chunk in b.chunks(32) {
        let mut any = false;
        for &x in chunk {
            any |= candidate(x);
        }
        if any {
            for (i, &x) in chunk.iter().enumerate() {
                if candidate(x) && lead_needs_escape(&b[base + i..]) {
                    return Some(base + i);
                }
            }
        }
        base += chunk.len();
    }
    None
}

/// Whether the character starting at `b[0]` (a candidate byte) is escaped.
fn lead_needs_escape(b: &[u8]) -> bool {
    match b {
        [0xc2, y, ..] => (0x80..=0x9f).contains(y),
        [0xe2, 0x80, z, ..] => matches!(z, 0xa8..=0xae),
        [0xe2, 0x81, z, ..] => matches!(z, 0xa6..=0xa9),
        [0xc2 | 0xe2, ..] => false,
        _ => true,
    }
}

/// Appends the exception and stack text to a rendered text line, as CPython's
/// `Formatter.format` appends `exc_text` and `stack_info` to the formatted message: each
/// preceded by a line feed unless the line already ends with one, escaped (so the feed is
/// written `\n`); an empty one adds nothing, not even the feed (CPython tests them for
/// truth). Whether the line ends with a line feed is read from its escaped form: a
/// raw one (from the template's own text) or an `\n` escape (an `n` after an odd run of
/// backslashes: escaped parts double every backslash of their own).
pub fn push_exc_stack(line: &mut String, exc: Option<&str>, stack: Option<&str>) {
    for text in [exc, stack].into_iter().flatten().filter(|t| !t.is_empty()) {
        if !ends_with_line_feed(line) {
            line.push_str("\\n");
        }
        escape_into(text, line);
    }
}

/// The escaped length [`push_exc_stack`] adds at most, when nothing needs escaping.
pub fn exc_stack_len(exc: Option<&str>, stack: Option<&str>) -> usize {
    [exc, stack]
        .into_iter()
        .flatten()
        .map(|t| t.len() + 2)
        .sum()
}

/// Whether an escaped line stands for text that ends with a line feed.
fn ends_with_line_feed(line: &str) -> bool {
    if line.ends_with('\n') {
        return true;
    }
    let Some(rest) = line.strip_suffix('n') else {
        return false;
    };
    let run = rest.bytes().rev().take_while(|&b| b == b'\\').count();
    run % 2 == 1
}

/// `s` cut to its first `limit` bytes at a character boundary and, when anything was cut,
/// followed by `…[truncated N bytes]` (N = the bytes cut; the marker is outside the limit).
/// Borrowed when it fits.
pub fn cut_marked(s: &str, limit: usize) -> Cow<'_, str> {
    let kept = floor_char_boundary(s, limit);
    if kept == s.len() {
        return Cow::Borrowed(s);
    }
    let cut = s.len() - kept;
    let mut out = String::with_capacity(kept + truncated_len(cut));
    out.push_str(&s[..kept]);
    push_truncated(cut, &mut out);
    Cow::Owned(out)
}

/// `level` upper-cased (`str.upper()`), borrowed when it already is.
pub fn upper(level: &str) -> Cow<'_, str> {
    if level
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_lowercase())
    {
        Cow::Borrowed(level)
    } else {
        Cow::Owned(level.to_uppercase())
    }
}

/// Python's `str(v)` of a field value; an int too long for CPython's `str()` is written
/// in full rather than failing the line.
pub fn field_str(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Str(s) => Cow::Borrowed(s),
        _ => {
            // Unbounded: a carried value is bounded by the body.
            let mut text = String::new();
            write_str_lenient(v, &mut Prefix::new(&mut text, usize::MAX));
            Cow::Owned(text)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The JSON line
// ---------------------------------------------------------------------------------------

/// The `--output json` line of one record, without the newline: `ts`, `level`, `logger`,
/// `message`, then `fields` (when the record has any: an empty `fields` object is
/// omitted, like an absent one), `exc` and `stack` (when the record has them, already
/// cut) and `findings` (when there are any). Values are unescaped
/// (JSON escapes them); strings follow the rule of every JSON line (see [`json_str`]), so
/// the JSON line is as safe on a terminal as the text line and decodes to the same strings.
pub fn json_line(parts: &LineParts<'_>, findings: &[Finding]) -> String {
    let mut out =
        String::with_capacity(64 + parts.message.len() + exc_stack_len(parts.exc, parts.stack));
    out.push_str("{\"ts\":");
    json_str(parts.ts, &mut out);
    out.push_str(",\"level\":");
    json_str(&upper(parts.level), &mut out);
    out.push_str(",\"logger\":");
    json_str(parts.logger, &mut out);
    out.push_str(",\"message\":");
    json_str(parts.message, &mut out);
    if let Some(fields) = parts.fields.filter(|f| !f.is_empty()) {
        out.push_str(",\"fields\":");
        json_object(fields, &mut out);
    }
    if let Some(exc) = parts.exc {
        out.push_str(",\"exc\":");
        json_str(exc, &mut out);
    }
    if let Some(stack) = parts.stack {
        out.push_str(",\"stack\":");
        json_str(stack, &mut out);
    }
    if !findings.is_empty() {
        out.push_str(",\"findings\":[");
        for (i, f) in findings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_finding(f, &mut out);
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// One finding as JSON: `{"rule":…,"severity":…,"offset":…,"detail":…}`.
pub fn json_finding(f: &Finding, out: &mut String) {
    out.push_str("{\"rule\":\"");
    out.push_str(f.rule.id());
    out.push_str("\",\"severity\":\"");
    out.push_str(f.severity.as_str());
    out.push_str("\",\"offset\":");
    match f.offset {
        Some(o) => {
            let _ = write!(out, "{o}");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"detail\":");
    json_str(&f.detail, out);
    out.push('}');
}

/// A value as JSON, as Python's `json.dumps` would write it (compact separators): ints
/// exact at any size, floats as their repr, non-finite floats as `NaN` / `Infinity` /
/// `-Infinity`.
pub fn json_value(v: &Value, out: &mut String) {
    match v {
        Value::None => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(n) => push_int_exact(n, out),
        Value::Float(x) if x.is_nan() => out.push_str("NaN"),
        Value::Float(x) if x.is_infinite() => {
            out.push_str(if *x > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Float(x) => out.push_str(&crate::format::number::float_repr(*x)),
        Value::Str(s) => json_str(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(item, out);
            }
            out.push(']');
        }
        Value::Dict(map) => json_object(map, out),
    }
}

fn json_object(map: &IndexMap<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(k, out);
        out.push(':');
        json_value(v, out);
    }
    out.push('}');
}

/// A JSON string literal: `"` and `\` escaped, TAB/LF/CR as `\t \n \r`, every other C0
/// control and every character [`needs_json_escape`] picks (DEL, C1, U+2028/U+2029, the
/// bidi controls) as `\uhhhh` (lower-case hex): the rule of every JSON line logfence writes.
pub fn json_str(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut done = 0;
    for (i, c) in s.char_indices() {
        if !matches!(c, '"' | '\\' | '\0'..='\x1f') && !needs_json_escape(c) {
            continue;
        }
        out.push_str(&s[done..i]);
        done = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => json_safe::push_u_escape(c, out),
        }
    }
    out.push_str(&s[done..]);
    out.push('"');
}

/// An int's decimal digits, exact at any size (no 4,300-digit rule: this is a carried
/// value, not a rendered one).
fn push_int_exact(n: &Int, out: &mut String) {
    match n {
        Int::Small(v) => {
            let _ = write!(out, "{v}");
        }
        Int::Big(b) => {
            let _ = write!(out, "{b}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fallback message of a rejected record
// ---------------------------------------------------------------------------------------

/// The message of a rejected record: `[logfence rejected: RULE] ` + the template + (with
/// args) a space and the Python repr of the args: a tuple for an array, a dict for an
/// object, the value itself for a scalar. The template and the repr are each cut to their
/// first `max_output_bytes` bytes at a character boundary, a cut part followed by
/// `…[truncated N bytes]`. For a body that was not parsed, pass the lossily decoded body as
/// `template` and no args.
///
/// Memory stays bounded by `max_output_bytes` whatever the size of the args: the repr is
/// measured first (written to a counter), then written through a sink that keeps its
/// first `max_output_bytes` bytes and only counts the rest, which gives `N` exactly; the
/// message is one allocation of the size it ends up.
pub fn fallback_message(
    rule: Rule,
    template: &str,
    args: Option<Args<'_>>,
    max_output_bytes: usize,
) -> String {
    let mut out = String::new();
    push_fallback(rule, template, args, max_output_bytes, &mut out);
    out
}

/// [`fallback_message`] appended to `out`, which is grown once, to fit.
pub fn push_fallback(
    rule: Rule,
    template: &str,
    args: Option<Args<'_>>,
    max_output_bytes: usize,
    out: &mut String,
) {
    const HEAD: &str = "[logfence rejected: ";
    let kept = floor_char_boundary(template, max_output_bytes);
    let repr_total = args.map(|a| {
        let mut c = Counter::new(usize::MAX);
        write_args_repr(a, &mut c);
        c.len()
    });
    // The repr's cut falls at most 3 bytes before the limit (a character boundary).
    let repr_room = repr_total.map_or(0, |t| {
        let shown = t.min(max_output_bytes);
        let cut = if t > shown { t - shown + 3 } else { 0 };
        1 + shown + truncated_len(cut)
    });
    out.reserve(
        HEAD.len() + rule.id().len() + 2 + kept + truncated_len(template.len() - kept) + repr_room,
    );
    out.push_str(HEAD);
    out.push_str(rule.id());
    out.push_str("] ");
    out.push_str(&template[..kept]);
    push_truncated(template.len() - kept, out);
    if let Some(args) = args {
        out.push(' ');
        let mut repr = Prefix::new(out, max_output_bytes);
        write_args_repr(args, &mut repr);
        let cut = repr.total - repr.kept_len();
        push_truncated(cut, out);
    }
}

fn push_truncated(cut: usize, out: &mut String) {
    if cut > 0 {
        out.push_str(TRUNCATED);
        let _ = write!(out, "{cut} bytes]");
    }
}

/// The length of the marker [`push_truncated`] writes.
fn truncated_len(cut: usize) -> usize {
    if cut == 0 {
        return 0;
    }
    let mut digits = 1;
    let mut rest = cut;
    while rest >= 10 {
        rest /= 10;
        digits += 1;
    }
    TRUNCATED.len() + digits + " bytes]".len()
}

/// The largest character boundary of `s` at or below `limit`.
fn floor_char_boundary(s: &str, limit: usize) -> usize {
    if limit >= s.len() {
        return s.len();
    }
    let mut i = limit;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Python's repr of the args as `msg % args` would see them.
fn write_args_repr(args: Args<'_>, out: &mut dyn Out) {
    match args {
        Args::Tuple(items) => {
            let _ = out.push_char('(');
            write_items_lenient(items, out);
            let _ = out.push_str(if items.len() == 1 { ",)" } else { ")" });
        }
        Args::Mapping(map) => write_dict_repr_lenient(map, out),
        Args::Scalar(v) => write_repr_lenient(v, out),
    }
}

/// CPython's `repr(v)`, except that an int too long for CPython's `repr()` (more than
/// 4,300 digits) is written in full: the fallback must show the args, not fail.
fn write_repr_lenient(v: &Value, out: &mut dyn Out) {
    if value::check_printable(v).is_ok() {
        let _ = value::write_repr(v, out);
        return;
    }
    match v {
        Value::Int(n) => {
            // CPython cannot repr it either; converting it would be quadratic in its size
            // (seconds for a million digits), so the fallback names it instead.
            let _ = out.push_str(&format!(
                "{}<int of {} digits>",
                if n.is_negative() { "-" } else { "" },
                number::int_decimal_digits(n)
            ));
        }
        Value::List(items) => {
            let _ = out.push_char('[');
            write_items_lenient(items, out);
            let _ = out.push_char(']');
        }
        Value::Dict(map) => write_dict_repr_lenient(map, out),
        _ => {
            let _ = value::write_repr(v, out);
        }
    }
}

/// The items of a list or tuple, comma-separated, each as [`write_repr_lenient`] writes it.
fn write_items_lenient(items: &[Value], out: &mut dyn Out) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            let _ = out.push_str(", ");
        }
        write_repr_lenient(item, out);
    }
}

/// `repr(d)` of a dict with the leniency of [`write_repr_lenient`].
fn write_dict_repr_lenient(map: &IndexMap<String, Value>, out: &mut dyn Out) {
    let _ = out.push_char('{');
    for (i, (k, item)) in map.iter().enumerate() {
        if i > 0 {
            let _ = out.push_str(", ");
        }
        write_key_repr(k, out);
        let _ = out.push_str(": ");
        write_repr_lenient(item, out);
    }
    let _ = out.push_char('}');
}

/// `str(v)` with the leniency of [`write_repr_lenient`].
fn write_str_lenient(v: &Value, out: &mut dyn Out) {
    match v {
        Value::Str(s) => {
            let _ = out.push_str(s);
        }
        _ => write_repr_lenient(v, out),
    }
}

fn write_key_repr(k: &str, out: &mut dyn Out) {
    let _ = value::write_str_repr(k, out);
}

/// A sink that appends the first `limit` bytes it is given to a string (cut at a character
/// boundary; after the first cut nothing more is kept) and counts everything: a prefix and
/// an exact total in one pass and bounded memory. Never refuses a write.
#[derive(Debug)]
struct Prefix<'s> {
    out: &'s mut String,
    /// Where the kept part starts in `out`.
    start: usize,
    limit: usize,
    total: usize,
    full: bool,
}

impl<'s> Prefix<'s> {
    fn new(out: &'s mut String, limit: usize) -> Prefix<'s> {
        Prefix {
            start: out.len(),
            out,
            limit,
            total: 0,
            full: false,
        }
    }

    fn kept_len(&self) -> usize {
        self.out.len() - self.start
    }

    fn keep(&mut self, s: &str) {
        if self.full {
            return;
        }
        let take = floor_char_boundary(s, self.limit - self.kept_len());
        if take < s.len() {
            self.full = true;
        }
        self.out.push_str(&s[..take]);
    }
}

impl Out for Prefix<'_> {
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        self.total = self.total.saturating_add(s.len());
        self.keep(s);
        Ok(())
    }

    fn push_repeat(&mut self, c: char, n: usize) -> Result<(), Reject> {
        let unit = c.len_utf8();
        self.total = self.total.saturating_add(unit.saturating_mul(n));
        if self.full {
            return Ok(());
        }
        let fits = (self.limit - self.kept_len()) / unit;
        if fits < n {
            self.full = true;
        }
        for _ in 0..n.min(fits) {
            self.out.push(c);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    fn int(v: i64) -> Value {
        Value::Int(Int::Small(v))
    }

    #[test]
    fn escape_borrows_plain_text() {
        for t in [
            "",
            "plain ascii",
            "émoji 🚀 日本語 עברית \u{200f}",
            "\u{a0}\u{2027}\u{202f}\u{2065}",
        ] {
            assert!(matches!(escape(t), Cow::Borrowed(_)), "{t:?}");
        }
    }

    #[test]
    fn escape_maps_every_control_class() {
        let cases: &[(&str, &str)] = &[
            ("a\\b", "a\\\\b"),
            ("\t\n\r", "\\t\\n\\r"),
            ("\x00\x01\x1b[31m\x1f", "\\x00\\x01\\x1b[31m\\x1f"),
            ("\x7f", "\\x7f"),
            ("\u{80}\u{85}\u{9b}\u{9f}", "\\x80\\x85\\x9b\\x9f"),
            ("\u{2028}\u{2029}", "\\u2028\\u2029"),
            (
                "\u{202a}\u{202e}\u{2066}\u{2069}",
                "\\u202a\\u202e\\u2066\\u2069",
            ),
            (
                "é\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}",
                "é\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}",
            ),
            ("x\u{85}y\nz", "x\\x85y\\nz"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), *want, "{input:?}");
        }
    }

    #[test]
    fn escape_finds_controls_past_the_first_chunk() {
        let mut t = "a".repeat(70);
        t.push('\n');
        t.push_str(&"b".repeat(40));
        t.push('\u{202e}');
        let e = escape(&t);
        assert_eq!(e, format!("{}\\n{}\\u202e", "a".repeat(70), "b".repeat(40)));
    }

    #[test]
    fn escape_can_be_undone() {
        let t = "a\\x41\n\u{2028}\\n";
        let e = escape(t);
        assert_eq!(e, "a\\\\x41\\n\\u2028\\\\n");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn fallback_with_tuple_args_uses_python_tuple_repr() {
        let args = [s("x")];
        let m = fallback_message(
            Rule::WidthTooLarge,
            "Over %2400000000d",
            Some(Args::Tuple(&args)),
            65536,
        );
        assert_eq!(
            m,
            "[logfence rejected: width-too-large] Over %2400000000d ('x',)"
        );
        let args = [s("a"), int(1), Value::None, Value::Bool(true)];
        let m = fallback_message(Rule::FormatError, "%s", Some(Args::Tuple(&args)), 65536);
        assert_eq!(
            m,
            "[logfence rejected: format-error] %s ('a', 1, None, True)"
        );
        let m = fallback_message(Rule::FormatError, "%s", Some(Args::Tuple(&[])), 65536);
        assert_eq!(m, "[logfence rejected: format-error] %s ()");
    }

    #[test]
    fn fallback_with_mapping_and_scalar_args() {
        let mut map = IndexMap::new();
        map.insert("a".to_string(), Value::List(vec![int(1), s("it's")]));
        map.insert("b".to_string(), Value::None);
        let m = fallback_message(Rule::FormatError, "%(a)s", Some(Args::Mapping(&map)), 65536);
        assert_eq!(
            m,
            "[logfence rejected: format-error] %(a)s {'a': [1, \"it's\"], 'b': None}"
        );
        let v = int(5);
        let m = fallback_message(Rule::FormatError, "{0.x}", Some(Args::Scalar(&v)), 65536);
        assert_eq!(m, "[logfence rejected: format-error] {0.x} 5");
        let v = s("");
        let m = fallback_message(Rule::FormatError, "%d", Some(Args::Scalar(&v)), 65536);
        assert_eq!(m, "[logfence rejected: format-error] %d ''");
    }

    #[test]
    fn fallback_without_args_has_no_repr() {
        let m = fallback_message(Rule::BodyTooLarge, "raw body\n", None, 65536);
        assert_eq!(m, "[logfence rejected: body-too-large] raw body\n");
    }

    #[test]
    fn fallback_cuts_template_and_repr_at_char_boundaries() {
        // "é" is 2 bytes: a cut at 5 bytes keeps "aéé" (5 bytes) of "aééé" (7 bytes).
        let args = [s("ééé")];
        let m = fallback_message(Rule::OutputTooLarge, "aééé", Some(Args::Tuple(&args)), 5);
        // repr is "('ééé',)" = 11 bytes; first 5 bytes at a boundary: "('é" (4 bytes).
        assert_eq!(
            m,
            "[logfence rejected: output-too-large] aéé…[truncated 2 bytes] ('é…[truncated 7 bytes]"
        );
    }

    #[test]
    fn fallback_of_huge_args_counts_exactly_in_bounded_memory() {
        let big = "x".repeat(1 << 20);
        let args = [s(&big), s(&big)];
        let m = fallback_message(Rule::OutputTooLarge, "%s%s", Some(Args::Tuple(&args)), 100);
        let repr_len = 2 * ((1 << 20) + 2) + 2 + 2;
        assert!(
            m.ends_with(&format!("…[truncated {} bytes]", repr_len - 100)),
            "{}",
            &m[..200]
        );
        assert!(m.len() < 300);
    }

    #[test]
    fn fallback_message_is_one_allocation_of_its_own_size() {
        let long = "é".repeat(40);
        let args = [s(&long), int(7), s("x")];
        for limit in [10, 11, 45, 1000] {
            let (m, bytes) = crate::alloc::measure(|| {
                fallback_message(Rule::TooManyFields, &long, Some(Args::Tuple(&args)), limit)
            });
            // jemalloc size classes: at most 25% over the request (and 16 bytes for tiny).
            assert!(
                bytes as usize <= (m.len() + 24) * 5 / 4 + 16,
                "{limit}: {bytes} bytes for {}",
                m.len()
            );
            let (_, more) = crate::alloc::measure(|| {
                // Room for the reservation's slack (a cut may fall 3 bytes short).
                let mut into = String::with_capacity(m.len() + 8);
                push_fallback(
                    Rule::TooManyFields,
                    &long,
                    Some(Args::Tuple(&args)),
                    limit,
                    &mut into,
                );
                assert_eq!(into, m);
            });
            assert!(
                more as usize <= (m.len() + 24) * 5 / 4 + 16,
                "{limit}: {more}"
            );
        }
    }

    #[test]
    fn fallback_repr_names_too_long_ints_without_converting_them() {
        // Regression: a 999,000-digit arg was converted in full (quadratic: seconds) just
        // to be cut to the output limit, and the sandbox timed the record out.
        let n: num_bigint::BigInt = num_bigint::BigInt::from(10u8).pow(5000);
        let args = [
            Value::Int(Int::Big(Box::new(n - 1u8))),
            Value::Int(Int::Small(10)),
        ];
        let m = fallback_message(Rule::OutputTooLarge, "%d", Some(Args::Tuple(&args)), 100);
        assert!(m.ends_with("%d (<int of 5000 digits>, 10)"), "{m}");
        let huge = num_bigint::BigInt::from(10u8).pow(999_000);
        let args = [Value::Int(Int::Big(Box::new(huge)))];
        let started = std::time::Instant::now();
        let m = fallback_message(Rule::OutputTooLarge, "%d", Some(Args::Tuple(&args)), 100);
        assert!(m.ends_with("%d (<int of 999001 digits>,)"), "{m}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn fallback_repr_keeps_the_sign_of_a_too_long_negative_int() {
        // Regression: `-1000…` (4,301 digits) was shown as `<int of 4301 digits>`.
        let big = -num_bigint::BigInt::from(10u8).pow(4300);
        let neg = || Value::Int(Int::Big(Box::new(big.clone())));
        let literal = || Value::Int(Int::huge_literal(999_001, true));
        let args = [neg(), Value::List(vec![literal(), int(-1)])];
        let m = fallback_message(Rule::FormatError, "%i", Some(Args::Tuple(&args)), 1000);
        assert_eq!(
            m,
            "[logfence rejected: format-error] %i \
             (-<int of 4301 digits>, [-<int of 999001 digits>, -1])"
        );
        let mut map = IndexMap::new();
        map.insert("a".to_string(), neg());
        map.insert(
            "b".to_string(),
            Value::Dict(Box::new(IndexMap::from([("c".to_string(), neg())]))),
        );
        let m = fallback_message(Rule::FormatError, "$a", Some(Args::Mapping(&map)), 1000);
        assert!(
            m.ends_with("$a {'a': -<int of 4301 digits>, 'b': {'c': -<int of 4301 digits>}}"),
            "{m}"
        );
        let m = fallback_message(Rule::FormatError, "{}", Some(Args::Scalar(&neg())), 1000);
        assert!(m.ends_with("{} -<int of 4301 digits>"), "{m}");
        let m = fallback_message(Rule::FormatError, "{}", Some(Args::Scalar(&literal())), 9);
        assert!(m.ends_with("{} -<int of …[truncated 14 bytes]"), "{m}");
    }

    #[test]
    fn json_str_escapes_every_character_of_the_json_line_rule() {
        let mut all = String::from("\u{0}\u{1f}\"\\");
        all.extend((0x7f..=0x9f_u32).filter_map(char::from_u32));
        all.extend(['\u{61c}', '\u{200e}', '\u{200f}']);
        all.extend((0x2028..=0x202e_u32).filter_map(char::from_u32));
        all.extend((0x2066..=0x2069_u32).filter_map(char::from_u32));
        all.push_str("é\u{a0}\u{2027}\u{202f}🚀");
        let mut out = String::new();
        json_str(&all, &mut out);
        assert!(
            !out.chars().any(|c| c.is_control() || needs_json_escape(c)),
            "{out}"
        );
        assert!(
            out.starts_with("\"\\u0000\\u001f\\\"\\\\\\u007f\\u0080"),
            "{out}"
        );
        assert!(
            out.ends_with("\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069é\u{a0}\u{2027}\u{202f}🚀\""),
            "{out}"
        );
        let back: String = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(back, all);
    }

    #[test]
    fn json_line_has_the_contract_keys_in_order() {
        let mut fields = IndexMap::new();
        fields.insert("n".to_string(), int(3));
        fields.insert(
            "big".to_string(),
            Value::Int(Int::Big(Box::new(
                "18446744073709551616".parse().unwrap_or_default(),
            ))),
        );
        fields.insert(
            "l".to_string(),
            Value::List(vec![Value::None, Value::Bool(false), s("q\"")]),
        );
        let parts = LineParts {
            ts: "2026-11-22T10:00:00.000Z",
            level: "warning",
            logger: "chat",
            message: "hi\n\u{202e}\u{1b}",
            fields: Some(&fields),
            exc: None,
            stack: None,
        };
        let f = [Finding::new(
            Rule::ControlChars,
            Some(2),
            "control character U+000A",
        )];
        let line = json_line(&parts, &f);
        assert_eq!(
            line,
            "{\"ts\":\"2026-11-22T10:00:00.000Z\",\"level\":\"WARNING\",\"logger\":\"chat\",\
             \"message\":\"hi\\n\\u202e\\u001b\",\"fields\":{\"n\":3,\"big\":18446744073709551616,\
             \"l\":[null,false,\"q\\\"\"]},\"findings\":[{\"rule\":\"control-chars\",\
             \"severity\":\"warn\",\"offset\":2,\"detail\":\"control character U+000A\"}]}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back["message"], "hi\n\u{202e}\u{1b}");
    }

    #[test]
    fn json_line_omits_empty_fields_and_findings() {
        let empty = IndexMap::new();
        let parts = LineParts {
            ts: "t",
            level: "INFO",
            logger: "root",
            message: "m",
            fields: Some(&empty),
            exc: None,
            stack: None,
        };
        assert_eq!(
            json_line(&parts, &[]),
            r#"{"ts":"t","level":"INFO","logger":"root","message":"m"}"#
        );
    }

    #[test]
    fn exc_and_stack_follow_the_line_as_cpython_appends_them() {
        let t = LineTemplate::default();
        let line = |message: &str, exc: Option<&str>, stack: Option<&str>| {
            t.render(&LineParts {
                ts: "2026-11-22T10:00:00.000Z",
                level: "error",
                logger: "app",
                message,
                fields: None,
                exc,
                stack,
            })
        };
        let head = "2026-11-22T10:00:00.000Z ERROR app: ";
        let tb = "Traceback (most recent call last):\n  File \"a.py\"\nKeyError: 'k'";
        assert_eq!(
            line("boom", Some(tb), Some("Stack:\n  f()")),
            format!(
                "{head}boom\\nTraceback (most recent call last):\\n  File \"a.py\"\\n\
                 KeyError: 'k'\\nStack:\\n  f()"
            )
        );
        // A line feed only where the text so far does not end with one.
        assert_eq!(
            line("boom\n", Some("E\n"), Some("S")),
            format!("{head}boom\\nE\\nS")
        );
        assert_eq!(line("m", None, Some("S")), format!("{head}m\\nS"));
        // Empty texts add nothing (CPython tests them for truth).
        assert_eq!(line("m", Some(""), Some("")), format!("{head}m"));
        // A message ending in an escaped backslash and `n` is not a line feed.
        assert_eq!(line("a\\n", Some("E"), None), format!("{head}a\\\\n\\nE"));
        // Escaped like every part: nothing in them can start a second line.
        let l = line("m", Some("\r\n\u{1b}[2J\u{2028}\u{202e}"), None);
        assert_eq!(l, format!("{head}m\\n\\r\\n\\x1b[2J\\u2028\\u202e"));
        // Any template: they follow the whole line, as in `Formatter.format`.
        let t = LineTemplate::new("{message} [{logger}]").unwrap_or_default();
        let parts = LineParts {
            ts: "t",
            level: "info",
            logger: "app",
            message: "m",
            fields: None,
            exc: Some("E"),
            stack: None,
        };
        assert_eq!(t.render(&parts), "m [app]\\nE");
        let t = LineTemplate::new("{message!r}").unwrap_or_default();
        assert_eq!(t.render(&parts), "'m'\\nE");
    }

    #[test]
    fn ends_with_line_feed_reads_the_escaped_line() {
        for (escaped, lf) in [
            ("", false),
            ("n", false),
            ("a\\n", true),
            ("a\\\\n", false),
            ("a\\\\\\n", true),
            ("a\n", true),
            ("a\\r", false),
        ] {
            assert_eq!(ends_with_line_feed(escaped), lf, "{escaped:?}");
        }
    }

    #[test]
    fn cut_marked_cuts_at_a_char_boundary_with_the_marker() {
        assert!(matches!(cut_marked("abc", 3), Cow::Borrowed("abc")));
        assert_eq!(cut_marked("abcdef", 4), "abcd…[truncated 2 bytes]");
        // "é" is 2 bytes: a limit of 4 keeps "aé" (3 bytes) of "aéé" (5).
        assert_eq!(cut_marked("aéé", 4), "aé…[truncated 2 bytes]");
        assert_eq!(cut_marked("é", 1), "…[truncated 2 bytes]");
        let long = "x".repeat(70_000);
        let c = cut_marked(&long, 65_536);
        assert_eq!(c.len(), 65_536 + truncated_len(70_000 - 65_536));
        assert!(c.ends_with("…[truncated 4464 bytes]"));
    }

    #[test]
    fn json_line_carries_exc_and_stack_after_fields_before_findings() {
        let mut fields = IndexMap::new();
        fields.insert("k".to_string(), s("v"));
        let parts = LineParts {
            ts: "t",
            level: "error",
            logger: "app",
            message: "boom",
            fields: Some(&fields),
            exc: Some("Traceback:\n  \"x\"\u{202e}"),
            stack: Some(""),
        };
        let f = [Finding::new(Rule::FormatLikeText, Some(0), "d")];
        let line = json_line(&parts, &f);
        assert_eq!(
            line,
            "{\"ts\":\"t\",\"level\":\"ERROR\",\"logger\":\"app\",\"message\":\"boom\",\
             \"fields\":{\"k\":\"v\"},\"exc\":\"Traceback:\\n  \\\"x\\\"\\u202e\",\"stack\":\"\",\
             \"findings\":[{\"rule\":\"format-like-text\",\"severity\":\"warn\",\"offset\":0,\
             \"detail\":\"d\"}]}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back["exc"], "Traceback:\n  \"x\"\u{202e}");
        let parts = LineParts {
            exc: None,
            stack: Some("S"),
            fields: None,
            ..parts
        };
        assert_eq!(
            json_line(&parts, &[]),
            r#"{"ts":"t","level":"ERROR","logger":"app","message":"boom","stack":"S"}"#
        );
    }

    #[test]
    fn json_floats_follow_python_json_dumps() {
        let cases = [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e20, "1e+20"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e-5, "1e-05"),
            (3.0, "3.0"),
        ];
        for (x, want) in cases {
            let mut out = String::new();
            json_value(&Value::Float(x), &mut out);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn upper_case_level_is_borrowed_when_already_upper() {
        assert!(matches!(upper("INFO"), Cow::Borrowed("INFO")));
        assert_eq!(upper("warning"), "WARNING");
        assert_eq!(upper("straße"), "STRASSE");
    }
}
