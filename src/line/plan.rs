//! The common shape of a line template, rendered without the formatter: literal text and
//! plain fields (`{message}`, `{level:<5}`: a fill, an alignment, a width). The default
//! template is one. Such a line is written straight into one buffer sized from its parts,
//! each part escaped on the way in, where the general path builds a mapping of escaped
//! copies for the `{}` formatter. Any other template (a conversion, a precision, a nested
//! field) keeps the general path.

use std::borrow::Cow;

use super::{escape_into, escaped_chars, field_str, upper, LineParts};

/// What a field of the template shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Ts,
    Level,
    Logger,
    Message,
    /// The record field named `field_names[i]`.
    Field(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Left,
    Right,
    Center,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Text as it appears in the line (`{{` already made `{`).
    Literal(String),
    Field {
        part: Part,
        fill: char,
        align: Align,
        /// In characters of the escaped part, as `str.format` counts them.
        width: usize,
    },
}

/// A template of literal text and plain fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pieces: Vec<Piece>,
}

impl Plan {
    /// The plan of `fmt` if it has only plain fields; `field_names` are the record fields
    /// it names, in the template's order. Call it on a template already validated.
    pub(super) fn compile(fmt: &str, field_names: &[String]) -> Option<Plan> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = fmt;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return None;
            }
            let end = tail.find('}')?;
            let inner = &tail[1..end];
            if inner.contains(['{', '!']) {
                return None;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(field(inner, field_names)?);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Some(Plan { pieces })
    }

    /// The line of one record, without the newline.
    pub(super) fn render(&self, parts: &LineParts<'_>, field_names: &[String]) -> String {
        let level = upper(parts.level);
        let text = |part: Part| -> Cow<'_, str> {
            match part {
                Part::Ts => Cow::Borrowed(parts.ts),
                Part::Level => Cow::Borrowed(level.as_ref()),
                Part::Logger => Cow::Borrowed(parts.logger),
                Part::Message => Cow::Borrowed(parts.message),
                Part::Field(i) => field_names
                    .get(i)
                    .and_then(|name| parts.fields?.get(name))
                    .map_or(Cow::Borrowed(""), field_str),
            }
        };
        // One allocation, sized from the raw parts (escapes, which are rare, may grow it).
        let mut line = String::with_capacity(self.size_hint(parts, field_names));
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => line.push_str(s),
                Piece::Field {
                    part,
                    fill,
                    align,
                    width,
                } => {
                    let t = text(*part);
                    let pad = if *width > 0 {
                        width.saturating_sub(escaped_chars(&t))
                    } else {
                        0
                    };
                    let before = match align {
                        Align::Left => 0,
                        Align::Right => pad,
                        Align::Center => pad / 2,
                    };
                    push_fill(&mut line, *fill, before);
                    escape_into(&t, &mut line);
                    push_fill(&mut line, *fill, pad - before);
                }
            }
        }
        line
    }
}

impl Plan {
    /// The line's length when nothing needs escaping and every padding is full, the
    /// record's `exc` and `stack` included (they follow the template).
    fn size_hint(&self, parts: &LineParts<'_>, field_names: &[String]) -> usize {
        let mut size = super::exc_stack_len(parts.exc, parts.stack);
        for piece in &self.pieces {
            size += match piece {
                Piece::Literal(s) => s.len(),
                Piece::Field {
                    part, fill, width, ..
                } => {
                    let raw = match part {
                        Part::Ts => parts.ts.len(),
                        Part::Level => parts.level.len(),
                        Part::Logger => parts.logger.len(),
                        Part::Message => parts.message.len(),
                        Part::Field(i) => {
                            match field_names.get(*i).and_then(|name| parts.fields?.get(name)) {
                                Some(crate::value::Value::Str(s)) => s.len(),
                                Some(_) => 16,
                                None => 0,
                            }
                        }
                    };
                    raw.saturating_add(width.saturating_mul(fill.len_utf8()))
                }
            };
        }
        size
    }
}

fn push_fill(line: &mut String, fill: char, n: usize) {
    for _ in 0..n {
        line.push(fill);
    }
}

/// A plain field: a name, then an optional `[[fill]align][width][s]` spec (a width not
/// starting with `0`, which would be the `0` flag).
fn field(inner: &str, field_names: &[String]) -> Option<Piece> {
    let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
    let part = match name {
        "ts" => Part::Ts,
        "level" => Part::Level,
        "logger" => Part::Logger,
        "message" => Part::Message,
        _ => Part::Field(field_names.iter().position(|n| n == name)?),
    };
    let align_of = |c: char| match c {
        '<' => Some(Align::Left),
        '>' => Some(Align::Right),
        '^' => Some(Align::Center),
        _ => None,
    };
    let mut chars = spec.chars();
    let (fill, align, rest) = match (chars.next(), chars.next()) {
        (Some(f), Some(a)) if align_of(a).is_some() => (f, align_of(a)?, &spec[f.len_utf8() + 1..]),
        (Some(a), _) if align_of(a).is_some() => (' ', align_of(a)?, &spec[1..]),
        _ => (' ', Align::Left, spec),
    };
    let rest = rest.strip_suffix('s').unwrap_or(rest);
    let width = if rest.is_empty() {
        0
    } else if rest.starts_with('0') || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    } else {
        rest.parse().ok()?
    };
    Some(Piece::Field {
        part,
        fill,
        align,
        width,
    })
}

#[cfg(test)]
mod tests {
    use indexmap::IndexMap;

    use super::super::LineTemplate;
    use super::*;
    use crate::value::{Int, Value};

    #[test]
    fn plain_templates_render_exactly_as_the_formatter_does() {
        let templates = [
            super::super::DEFAULT_LINE_FORMAT,
            "{level} {message}",
            "{ts}|{level:>7}|{logger:^9}|{message:*<12}",
            "{{lit}} {message} }}{{",
            "{message:s}|{level:é^8}|{logger:10s}|{level:=>5}",
            "{user} {message} {n:>4} {l:<9}|{missing:3}|",
            "",
            "no fields at all",
        ];
        let mut fields = IndexMap::new();
        fields.insert("user".to_string(), Value::Str("bo\u{7f}b".into()));
        fields.insert("n".to_string(), Value::Int(Int::Small(-5)));
        fields.insert(
            "l".to_string(),
            Value::List(vec![Value::Str("\n".into()), Value::None]),
        );
        let messages = [
            "",
            "plain",
            "a\nb\\c\t\u{85}\u{2028}é😀\u{202e}x",
            "\u{1b}[2J",
        ];
        let levels = ["info", "WARN", "straße", "\u{7}x"];
        for fmt in templates {
            let t = LineTemplate::new(fmt).unwrap_or_default();
            assert!(t.plan.is_some(), "{fmt:?} has a plan");
            for message in messages {
                for level in levels {
                    for fields in [None, Some(&fields)] {
                        let parts = LineParts {
                            ts: "2026-11-22T10:00:00.000Z",
                            level,
                            logger: "ch\u{9f}at",
                            message,
                            fields,
                            exc: None,
                            stack: None,
                        };
                        assert_eq!(
                            t.render(&parts),
                            t.render_formatted(&parts),
                            "{fmt:?} {message:?} {level:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn templates_beyond_plain_fields_keep_the_formatter() {
        for fmt in [
            "{message!r}",
            "{message:.5}",
            "{message:05}",
            "{message:>{w}}",
            "{level:=5}",
        ] {
            let names = vec!["w".to_string()];
            assert_eq!(Plan::compile(fmt, &names), None, "{fmt:?}");
        }
    }

    #[test]
    fn a_plain_line_is_one_allocation() {
        let t = LineTemplate::new(super::super::DEFAULT_LINE_FORMAT).unwrap_or_default();
        let trace = "Traceback (most recent call last):  File x, line 1 ".repeat(100);
        for (message, escaped, exc) in [
            ("x ".repeat(5000), false, None),
            ("x\n".repeat(5000), true, None),
            ("x ".repeat(5000), false, Some(trace.as_str())),
        ] {
            let parts = LineParts {
                ts: "2026-11-22T10:00:00.000Z",
                level: "WARN",
                logger: "chat",
                message: &message,
                fields: None,
                exc,
                stack: exc,
            };
            let (line, bytes) = crate::alloc::measure(|| t.render(&parts));
            // Escapes (rare) may grow the buffer once or twice.
            let bound = if escaped {
                3 * line.len()
            } else {
                line.len() * 5 / 4
            };
            assert!(bytes as usize <= bound, "{bytes} for {}", line.len());
        }
    }
}
