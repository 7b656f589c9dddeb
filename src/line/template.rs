//! The line template (`--line-format`): parsed and validated once, at start-up, then
//! rendered for every record by the bounded `{}` formatter.

use indexmap::IndexMap;

use super::plan::Plan;
use super::{escape, field_str, push_exc_stack, upper, LineParts};
use crate::config::Limits;
use crate::format::{brace, Args, Reject};
use crate::value::Value;

/// The names every record supplies to the line template.
const BUILTIN_NAMES: [&str; 4] = ["ts", "level", "logger", "message"];

/// Why `--line-format` was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineFormatError {
    /// The template does not parse, or fails to render even with string values (an
    /// unknown format code, a width over `--max-width`, …).
    #[error("--line-format is not a valid format string: {0}")]
    Invalid(String),
    /// `{}` or `{0}`: the line template has only named fields.
    #[error(
        "--line-format has a positional field `{{{0}}}`: name a part (ts, level, logger, \
         message) or a field"
    )]
    Positional(String),
    /// `{a.b}`: refused like in messages (the classic format-string attack).
    #[error("--line-format uses attribute access `{{{0}}}`, which is refused")]
    AttributeAccess(String),
    /// `{a[0]}`: every part is an escaped string by the time it is formatted, so an index
    /// would pick escaped characters; refused rather than half-working.
    #[error("--line-format uses index access `{{{0}}}`, which is refused")]
    IndexAccess(String),
}

/// The parsed, validated `--line-format`.
#[derive(Debug)]
pub struct LineTemplate {
    /// The template as given: the parsed form holds byte ranges into it.
    source: String,
    /// Parsed once; rendered for every record.
    parsed: brace::Template,
    /// The record fields the template names (its names minus the built-in parts): only
    /// these are converted and escaped for a record.
    field_names: Vec<String>,
    /// Bounds of one line: widths and precisions as in messages (a literal one is checked
    /// at start-up, so `{message:>2400000000}` is refused before the first record); the
    /// output itself is not capped, its parts being bounded by the body size.
    limits: Limits,
    /// The template rendered directly, when it has only plain fields (the default does).
    pub(super) plan: Option<Plan>,
}

impl LineTemplate {
    pub fn new(fmt: &str) -> Result<LineTemplate, LineFormatError> {
        let limits = Limits {
            max_output_bytes: usize::MAX,
            ..Limits::default()
        };
        let mut field_names: Vec<String> = Vec::new();
        for name in field_names_of(fmt) {
            let end = name.find(['.', '[']).unwrap_or(name.len());
            let (first, rest) = name.split_at(end);
            if first.is_empty() || first.bytes().all(|c| c.is_ascii_digit()) {
                return Err(LineFormatError::Positional(name.to_string()));
            }
            if rest.starts_with('.') {
                return Err(LineFormatError::AttributeAccess(name.to_string()));
            }
            if rest.starts_with('[') {
                return Err(LineFormatError::IndexAccess(name.to_string()));
            }
            if !BUILTIN_NAMES.contains(&first) && !field_names.iter().any(|n| n == first) {
                field_names.push(first.to_string());
            }
        }
        let parsed = brace::parse(fmt, limits.max_fields);
        let t = LineTemplate {
            source: fmt.to_string(),
            parsed,
            field_names,
            limits,
            plan: None,
        };
        // Every value is a string, so one trial render with strings meets every error a
        // record could meet (`{level:d}`, a bad spec, a syntax error), except a spec taken
        // from a field's content (`{message:>{w}}`), whose width the limits bound at run
        // time. The trial strings are empty: what a record that lacks a field gets.
        let mut mapping = IndexMap::new();
        for name in BUILTIN_NAMES
            .iter()
            .copied()
            .chain(t.field_names.iter().map(String::as_str))
        {
            mapping.insert(name.to_string(), Value::Str(String::new()));
        }
        brace::render_parsed(&t.parsed, &t.source, Args::Mapping(&mapping), &t.limits).map_err(
            |r| match r {
                Reject::AttributeAccess { .. } => LineFormatError::AttributeAccess(fmt.into()),
                r => LineFormatError::Invalid(r.detail()),
            },
        )?;
        let plan = Plan::compile(fmt, &t.field_names);
        Ok(LineTemplate { plan, ..t })
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The record fields the template names.
    pub fn field_names(&self) -> &[String] {
        &self.field_names
    }

    /// The text line of one record, without the newline. Every part is escaped before it
    /// is formatted; a named field the record lacks is an empty string.
    /// The record's `exc` and `stack` follow the template, as CPython appends them
    /// ([`super::push_exc_stack`]).
    pub fn render(&self, parts: &LineParts<'_>) -> String {
        let mut line = match &self.plan {
            Some(plan) => plan.render(parts, &self.field_names),
            None => self.render_formatted(parts),
        };
        push_exc_stack(&mut line, parts.exc, parts.stack);
        line
    }

    /// [`LineTemplate::render`] through the `{}` formatter: any template.
    pub(super) fn render_formatted(&self, parts: &LineParts<'_>) -> String {
        let mut mapping = IndexMap::with_capacity(BUILTIN_NAMES.len() + self.field_names.len());
        let level = upper(parts.level);
        let values = [parts.ts, &level, parts.logger, parts.message];
        for (name, part) in BUILTIN_NAMES.into_iter().zip(values) {
            mapping.insert(name.to_string(), Value::Str(escape(part).into_owned()));
        }
        for name in &self.field_names {
            let text = match parts.fields.and_then(|f| f.get(name)) {
                Some(v) => escape(&field_str(v)).into_owned(),
                None => String::new(),
            };
            mapping.insert(name.clone(), Value::Str(text));
        }
        match brace::render_parsed(
            &self.parsed,
            &self.source,
            Args::Mapping(&mapping),
            &self.limits,
        ) {
            Ok(line) => line,
            // Only a width from a field's content can fail here (start-up validation
            // covers the rest); the record still gets exactly one line, in the default
            // layout.
            Err(_) => default_line(&mapping),
        }
    }
}

impl Default for LineTemplate {
    fn default() -> Self {
        // The default template is fixed and valid (a test pins it); should it ever fail,
        // an empty-named template would too, so fall back to a parsed copy without checks.
        LineTemplate::new(super::DEFAULT_LINE_FORMAT).unwrap_or_else(|_| LineTemplate {
            source: super::DEFAULT_LINE_FORMAT.to_string(),
            parsed: brace::parse(super::DEFAULT_LINE_FORMAT, Limits::default().max_fields),
            field_names: Vec::new(),
            limits: Limits {
                max_output_bytes: usize::MAX,
                ..Limits::default()
            },
            plan: None,
        })
    }
}

/// The default layout, built by hand from the escaped parts.
fn default_line(mapping: &IndexMap<String, Value>) -> String {
    let get = |k: &str| match mapping.get(k) {
        Some(Value::Str(s)) => s.as_str(),
        _ => "",
    };
    let level = get("level");
    let pad = 5usize.saturating_sub(level.chars().count());
    let mut line = String::new();
    line.push_str(get("ts"));
    line.push(' ');
    line.push_str(level);
    for _ in 0..pad {
        line.push(' ');
    }
    line.push(' ');
    line.push_str(get("logger"));
    line.push_str(": ");
    line.push_str(get("message"));
    line
}

/// The field names of a `{}` template (`ts`, `x[0]`, `a.b`, `0`, ``), nested ones in
/// specs included, in order. `{{` and `}}` are literal braces at the top level; inside a
/// field every `{` opens a nested field, as in `str.format`. Syntax errors are left to the
/// formatter's trial render.
fn field_names_of(fmt: &str) -> Vec<&str> {
    let b = fmt.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if b.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => i = field(fmt, i, &mut names),
            _ => i += 1,
        }
    }
    names
}

/// Reads the field opened at `at` (its name, then its spec with nested fields); returns the
/// index after its closing `}` (or the end of the text).
fn field<'a>(fmt: &'a str, at: usize, names: &mut Vec<&'a str>) -> usize {
    let b = fmt.as_bytes();
    let mut j = at + 1;
    // The name runs to `!`, `:` or `}`; a `[…]` index may hold any of them but `]`.
    let start = j;
    while j < b.len() && !matches!(b[j], b'!' | b':' | b'}' | b'{') {
        if b[j] == b'[' {
            while j < b.len() && b[j] != b']' {
                j += 1;
            }
        }
        j += 1;
    }
    let end = j.min(b.len());
    // `start` and `end` sit next to ASCII bytes: char boundaries.
    names.push(fmt.get(start..end).unwrap_or(""));
    while j < b.len() {
        match b[j] {
            b'{' => j = field(fmt, j, names),
            b'}' => return j + 1,
            _ => j += 1,
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Int;

    fn parts<'a>(message: &'a str, fields: Option<&'a IndexMap<String, Value>>) -> LineParts<'a> {
        LineParts {
            ts: "2026-11-22T10:00:00.000Z",
            level: "info",
            logger: "chat",
            message,
            fields,
            exc: None,
            stack: None,
        }
    }

    fn template(fmt: &str) -> LineTemplate {
        let t = LineTemplate::new(fmt);
        assert!(t.is_ok(), "{fmt:?}: {:?}", t.as_ref().err());
        t.unwrap_or_default()
    }

    #[test]
    fn default_template_renders_the_contract_line() {
        let t = template(super::super::DEFAULT_LINE_FORMAT);
        assert_eq!(
            t.render(&parts("Over 9000", None)),
            "2026-11-22T10:00:00.000Z INFO  chat: Over 9000"
        );
    }

    #[test]
    fn every_part_is_escaped_before_padding() {
        let t = template("[{level:<7}] {logger}: {message}");
        let p = LineParts {
            level: "a\tb",
            logger: "x\ny",
            ..parts("m\u{202e}\r\n", None)
        };
        // `a\tb` escaped is 4 characters, padded to 7.
        assert_eq!(t.render(&p), "[A\\tB   ] x\\ny: m\\u202e\\r\\n");
    }

    #[test]
    fn fields_render_as_python_str_and_missing_ones_are_empty() {
        let t = template("{message} user={user} n={n} l={l} none={none} gone=<{gone}>");
        let mut f = IndexMap::new();
        f.insert("user".to_string(), Value::Str("al\nice".into()));
        f.insert("n".to_string(), Value::Int(Int::Small(-3)));
        f.insert(
            "l".to_string(),
            Value::List(vec![Value::Str("a".into()), Value::Float(0.5)]),
        );
        f.insert("none".to_string(), Value::None);
        assert_eq!(
            t.render(&parts("hi", Some(&f))),
            "hi user=al\\nice n=-3 l=['a', 0.5] none=None gone=<>"
        );
        assert_eq!(t.field_names(), ["user", "n", "l", "none", "gone"]);
    }

    #[test]
    fn builtin_parts_shadow_fields_of_the_same_name() {
        let t = template("{message}");
        let mut f = IndexMap::new();
        f.insert("message".to_string(), Value::Str("forged".into()));
        assert_eq!(t.render(&parts("real", Some(&f))), "real");
    }

    #[test]
    fn specs_with_nested_fields_and_escaped_braces_work() {
        let t = template("{{{level}}} {message:>{w}}|{logger!r}");
        let mut f = IndexMap::new();
        f.insert("w".to_string(), Value::Int(Int::Small(6)));
        assert_eq!(t.render(&parts("ab", Some(&f))), "{INFO}     ab|'chat'");
    }

    #[test]
    fn a_width_from_field_content_over_the_limit_falls_back_to_the_default_layout() {
        let t = template("{message:>{w}}");
        let mut f = IndexMap::new();
        f.insert("w".to_string(), Value::Str("2400000000".into()));
        assert_eq!(
            t.render(&parts("m", Some(&f))),
            "2026-11-22T10:00:00.000Z INFO  chat: m"
        );
    }

    #[test]
    fn bad_templates_are_refused_at_startup() {
        let positional = ["{}", "{0}", "{message} {1}", "{:{}}"];
        for fmt in positional {
            assert!(
                matches!(LineTemplate::new(fmt), Err(LineFormatError::Positional(_))),
                "{fmt:?}"
            );
        }
        assert!(matches!(
            LineTemplate::new("{message.__class__}"),
            Err(LineFormatError::AttributeAccess(_))
        ));
        assert!(matches!(
            LineTemplate::new("{message[0]}"),
            Err(LineFormatError::IndexAccess(_))
        ));
        for fmt in [
            "{message",
            "}",
            "{level:d}",
            "{message:>99999}",
            "{message!x}",
            "{ts:=5}",
        ] {
            assert!(
                matches!(LineTemplate::new(fmt), Err(LineFormatError::Invalid(_))),
                "{fmt:?}"
            );
        }
    }

    #[test]
    fn field_names_cover_nested_specs_and_skip_escapes() {
        assert_eq!(
            field_names_of("{{x}} {a:{b}>{c}} {d!r} {e[k:}]} {}"),
            vec!["a", "b", "c", "d", "e[k:}]", ""]
        );
    }
}
