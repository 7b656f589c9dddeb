//! Which records of a capture are rendered in the sandbox rather than in process.
//!
//! An audit renders millions of records in its own process: that is what makes it fast
//! (a sandboxed record costs a pipe round trip to a worker process, ~30× an in-process
//! one). The sandbox is for the records that reach the formatter's edges, where a bug
//! would be a crash or a runaway allocation rather than a wrong byte: the same places the
//! limits guard. A record is suspicious when its raw body holds
//!
//! - a `%` spec with a `*` width or precision, or a width or precision of 4 or more
//!   digits (`%2400000000d`, `%.*s`, `%(a)-10000s`);
//! - a `{…:spec}` replacement field whose spec holds a nested field or a run of 4 or more
//!   digits (`{:>2400000000}`, `{:>{}}`, `{0:.99999}`);
//! - a run of 1,000 or more digits (a huge int: arbitrary-precision conversion, the
//!   4,300-digit rule);
//! - a `\u00XX` escape of a printable ASCII character: JSON encoders write those
//!   characters as they are, and an escaped `%` or `{` would hide a spec from this scan.
//!
//! The scan reads the raw bytes once (`memchr` hops between candidates) and allocates
//! nothing. It is a cost decision, not a security boundary: a record it lets through is
//! rendered in process exactly as the consumer renders a first delivery, and a panic
//! there is caught and the record sent to the sandbox after all.

use memchr::memchr_iter;

/// How far past a `%` or `{` a spec is looked for.
const SPEC_WINDOW: usize = 256;
/// Digits in a run from which an int is "huge".
const HUGE_DIGITS: usize = 1000;

/// Why a record goes to the sandbox, or `None` when it is checked in process.
pub fn suspicion(body: &[u8]) -> Option<&'static str> {
    for i in memchr_iter(b'%', body) {
        if risky_percent(&body[i + 1..]) {
            return Some("a `%` spec with a `*` or 4-digit width or precision");
        }
    }
    for i in memchr_iter(b'{', body) {
        if risky_brace(&body[i + 1..]) {
            return Some("a `{}` spec with a nested field or a 4-digit number");
        }
    }
    for i in memchr_iter(b'\\', body) {
        if escaped_ascii(&body[i + 1..]) {
            return Some("a printable ASCII character written as a \\u escape");
        }
    }
    if body.len() >= HUGE_DIGITS && longest_digit_run(body) >= HUGE_DIGITS {
        return Some("a number of 1,000 digits or more");
    }
    None
}

/// `s` follows a `%`: `(key)`, flags, width, `.precision`, as CPython reads them.
fn risky_percent(s: &[u8]) -> bool {
    let s = &s[..s.len().min(SPEC_WINDOW)];
    let mut i = 0;
    if s.first() == Some(&b'(') {
        match s.iter().position(|&b| b == b')') {
            Some(j) => i = j + 1,
            None => return false,
        }
    }
    while i < s.len() && b"-#0 +".contains(&s[i]) {
        i += 1;
    }
    let risky_number = |i: &mut usize| -> bool {
        if s.get(*i) == Some(&b'*') {
            return true;
        }
        let digits = s[*i..].iter().take_while(|b| b.is_ascii_digit()).count();
        *i += digits;
        digits >= 4
    };
    if risky_number(&mut i) {
        return true;
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        return risky_number(&mut i);
    }
    false
}

/// `s` follows a `{`: a replacement field's body up to its `}`. Inside a JSON string a
/// field holds no raw `"`, so a `{` that opens a JSON object is never one.
fn risky_brace(s: &[u8]) -> bool {
    let s = &s[..s.len().min(SPEC_WINDOW)];
    let Some(end) = s.iter().position(|&b| b == b'}' || b == b'"' || b == b'\n') else {
        return false;
    };
    if s[end] != b'}' {
        return false;
    }
    let field = &s[..end];
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let spec = &field[colon + 1..];
    spec.contains(&b'{') || longest_digit_run(spec) >= 4
}

/// `s` follows a backslash: `u00` and two hex digits naming a printable ASCII character.
fn escaped_ascii(s: &[u8]) -> bool {
    let [b'u', b'0', b'0', hi, lo, ..] = *s else {
        return false;
    };
    let hex = |b: u8| (b as char).to_digit(16);
    match (hex(hi), hex(lo)) {
        (Some(h), Some(l)) => (0x20..0x7f).contains(&(h * 16 + l)),
        _ => false,
    }
}

fn longest_digit_run(s: &[u8]) -> usize {
    let (mut best, mut run) = (0, 0);
    for &b in s {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn benign_records_are_checked_in_process() {
        for body in [
            &br#"{"msg": "user %s logged in from %s after %d attempts", "args": ["bob", "10.0.0.1", 3], "ts": 1764500000.123}"#[..],
            br#"{"msg": "{} took {:.3f}s, {:>10}", "args": ["GET", 0.25, "ok"], "style": "{", "fields": {"port": 8080}}"#,
            br#"{"msg": "progress 100% (20%-30% earlier), %E2%80%99", "fields": {"id": 123456789}}"#,
            br#"{"msg": "caf\u00e9 \u2028 \u001b", "level": "warning"}"#,
            b"plain text with {braces} and 12345 and 50%",
        ] {
            assert_eq!(suspicion(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn records_at_the_formatters_edges_go_to_the_sandbox() {
        for body in [
            &br#"{"msg": "Over %2400000000d", "args": ["x"]}"#[..],
            br#"{"msg": "%*d", "args": [2400000000, 1]}"#,
            br#"{"msg": "%(a)-.*s", "args": {"a": 1}}"#,
            br#"{"msg": "%.99999s", "args": ["x"]}"#,
            br#"{"msg": "{:>2400000000}", "args": [1], "style": "{"}"#,
            br#"{"msg": "{0:>{1}}", "args": [1, 2], "style": "{"}"#,
            br#"{"msg": "\u0025d", "args": [1]}"#,
        ] {
            assert!(
                suspicion(body).is_some(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = format!(r#"{{"msg": "%d", "args": [{}]}}"#, "7".repeat(1000));
        assert!(suspicion(huge.as_bytes()).is_some());
        let long_but_fine = format!(r#"{{"msg": "%d", "args": [{}]}}"#, "7".repeat(999));
        assert_eq!(suspicion(long_but_fine.as_bytes()), None);
    }
}
