//! The template parser: CPython's `MarkupIterator` and `parse_field`
//! (Objects/stringlib/unicode_format.h), run once over the whole template, nested specs
//! included, so that every limit can be checked before anything is looked up.
//!
//! CPython parses lazily and stops at the first error; this parser records the first
//! syntax error of each piece list where CPython would meet it, then resynchronises and goes
//! on, because a limit later in the template still wins over that error.

use super::spec::{self, RawSpec};

/// Fields nested deeper than this are never evaluated by CPython ("Max string recursion
/// exceeded" fires one level earlier); they are only counted and scanned for attribute access.
const MAX_STRUCTURED_DEPTH: u8 = 2;

/// One element of a template or of a nested spec, in the order CPython meets them.
#[derive(Clone, Debug)]
pub(crate) enum Piece {
    /// Literal text `msg[start..end]`; when `escaped`, `{{` and `}}` stand for one brace.
    Literal {
        start: usize,
        end: usize,
        escaped: bool,
    },
    Field(Field),
    /// The first syntax error of this piece list: CPython raises `ValueError` here.
    Error {
        offset: usize,
        kind: SyntaxError,
    },
}

/// A replacement field `{name!conv:spec}`.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    /// Byte offset of the opening `{`.
    pub start: usize,
    /// The field name, `msg[name.0..name.1]`, re-read at render time like CPython does.
    pub name: (usize, usize),
    pub conversion: Option<char>,
    pub spec: FieldSpec,
}

#[derive(Clone, Debug)]
pub(crate) enum FieldSpec {
    /// No spec: `str(obj)`.
    Empty,
    /// A spec without replacement fields, `msg[start..end]`, read once here.
    Static {
        start: usize,
        end: usize,
        raw: RawSpec,
    },
    /// A spec with replacement fields, expanded at render time.
    Nested { pieces: Vec<Piece> },
    /// A spec nested too deep to be evaluated; counted and scanned only.
    Opaque,
}

/// CPython's `ValueError` messages from the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    SingleClose,
    SingleOpen,
    UnexpectedOpen,
    ExpectedClose,
    EndInConversion,
    ExpectedColon,
    UnmatchedInSpec,
}

impl SyntaxError {
    pub fn message(self) -> &'static str {
        match self {
            SyntaxError::SingleClose => "Single '}' encountered in format string",
            SyntaxError::SingleOpen => "Single '{' encountered in format string",
            SyntaxError::UnexpectedOpen => "unexpected '{' in field name",
            SyntaxError::ExpectedClose => "expected '}' before end of string",
            SyntaxError::EndInConversion => "end of string while looking for conversion specifier",
            SyntaxError::ExpectedColon => "expected ':' after conversion specifier",
            SyntaxError::UnmatchedInSpec => "unmatched '{' in format spec",
        }
    }
}

pub(crate) struct Parser<'m> {
    msg: &'m str,
    /// Every field met so far, at every depth, stored or not.
    pub count: usize,
    /// Fields beyond this many are counted, not stored.
    store_limit: usize,
    pub truncated: bool,
    /// The `{` of the first field that uses attribute access.
    pub attribute_at: Option<usize>,
}

impl<'m> Parser<'m> {
    pub fn new(msg: &'m str, max_fields: usize) -> Self {
        Parser {
            msg,
            count: 0,
            store_limit: max_fields.saturating_add(1),
            truncated: false,
            attribute_at: None,
        }
    }

    /// The pieces of `msg[pos..end]`, a template (depth 0) or a nested spec.
    pub fn pieces(&mut self, mut pos: usize, end: usize, depth: u8) -> Vec<Piece> {
        let b = self.msg.as_bytes();
        // One allocation of about the right size: a piece per `{`, one more for literal
        // text before it (none right after a `}`), one for the tail. Growing by doubling
        // would allocate, and count, about three times as much.
        let estimate: usize = 1 + memchr::memchr_iter(b'{', &b[pos..end])
            .map(|i| pos + i)
            .take(self.store_limit)
            .map(|i| 1 + usize::from(i > pos && b[i - 1] != b'}'))
            .sum::<usize>();
        let mut out = Vec::with_capacity(estimate);
        let mut lit = (pos, false);
        let mut errored = false;
        let mut error = |out: &mut Vec<Piece>, offset: usize, kind: SyntaxError, store: bool| {
            if !errored && store {
                out.push(Piece::Error { offset, kind });
            }
            errored = true;
        };
        while pos < end {
            let Some(i) = memchr::memchr2(b'{', b'}', &b[pos..end]) else {
                pos = end;
                break;
            };
            pos += i;
            let twin = pos + 1 < end && b[pos + 1] == b[pos];
            if twin {
                lit.1 = true;
                pos += 2;
                continue;
            }
            let store = !self.truncated;
            self.flush(&mut out, lit, pos, store);
            if b[pos] == b'}' {
                error(&mut out, pos, SyntaxError::SingleClose, store);
                pos += 1;
            } else if pos + 1 >= end {
                error(&mut out, pos, SyntaxError::SingleOpen, store);
                pos = end;
            } else {
                let (field, err, resume) = self.field(pos, end, depth);
                let store = !self.truncated;
                if let Some((offset, kind)) = err {
                    error(&mut out, offset, kind, store);
                }
                if let (Some(f), true) = (field, store) {
                    out.push(Piece::Field(f));
                }
                pos = resume;
            }
            lit = (pos, false);
        }
        self.flush(&mut out, lit, pos.min(end), !self.truncated);
        if self.truncated {
            out = Vec::new();
        }
        out
    }

    fn flush(
        &self,
        out: &mut Vec<Piece>,
        (start, escaped): (usize, bool),
        end: usize,
        store: bool,
    ) {
        if store && start < end {
            out.push(Piece::Literal {
                start,
                end,
                escaped,
            });
        }
    }

    /// `parse_field` from the `{` at `open`: the field (when there is one to keep), the syntax
    /// error it raises, and where the iterator goes on.
    fn field(
        &mut self,
        open: usize,
        end: usize,
        depth: u8,
    ) -> (Option<Field>, Option<(usize, SyntaxError)>, usize) {
        let b = self.msg.as_bytes();
        self.count = self.count.saturating_add(1);
        if self.count > self.store_limit {
            self.truncated = true;
        }
        let name_start = open + 1;
        let mut p = name_start;
        let mut stop = None;
        while p < end {
            let c = b[p];
            p += 1;
            match c {
                b'{' => {
                    return (None, Some((p - 1, SyntaxError::UnexpectedOpen)), p - 1);
                }
                b'[' => {
                    while p < end && b[p] != b']' {
                        p += 1;
                    }
                }
                b'}' | b':' | b'!' => {
                    stop = Some(c);
                    break;
                }
                _ => {}
            }
        }
        let Some(stop) = stop else {
            return (None, Some((open, SyntaxError::ExpectedClose)), end);
        };
        let name = (name_start, p - 1);
        let mut field = Field {
            start: open,
            name,
            conversion: None,
            spec: FieldSpec::Empty,
        };
        if stop == b'}' {
            self.note_attribute(open, name.0, name.1);
            return (Some(field), None, p);
        }
        let mut err = None;
        if stop == b'!' {
            let Some(conv) = self.msg[p..end].chars().next() else {
                return (None, Some((open, SyntaxError::EndInConversion)), end);
            };
            field.conversion = Some(conv);
            p += conv.len_utf8();
            if p < end {
                match b[p] {
                    b'}' => {
                        self.note_attribute(open, name.0, name.1);
                        return (Some(field), None, p + 1);
                    }
                    b':' => p += 1,
                    // Resynchronise as if the ':' were there.
                    _ => err = Some((p, SyntaxError::ExpectedColon)),
                }
            }
        }
        let spec_start = p;
        let mut count = 1usize;
        let mut nested = false;
        while p < end {
            let c = b[p];
            p += 1;
            match c {
                b'{' => {
                    nested = true;
                    count += 1;
                }
                b'}' => {
                    count -= 1;
                    if count == 0 {
                        if err.is_none() {
                            self.note_attribute(open, name.0, name.1);
                        }
                        field.spec = self.spec(spec_start, p - 1, nested, depth);
                        return (Some(field), err, p);
                    }
                }
                _ => {}
            }
        }
        (
            None,
            err.or(Some((open, SyntaxError::UnmatchedInSpec))),
            end,
        )
    }

    fn spec(&mut self, start: usize, end: usize, nested: bool, depth: u8) -> FieldSpec {
        if start == end {
            FieldSpec::Empty
        } else if !nested {
            FieldSpec::Static {
                start,
                end,
                raw: spec::parse(&self.msg[start..end]),
            }
        } else if depth < MAX_STRUCTURED_DEPTH {
            FieldSpec::Nested {
                pieces: self.pieces(start, end, depth + 1),
            }
        } else {
            self.scan_opaque(start, end);
            FieldSpec::Opaque
        }
    }

    /// Counts the fields of a spec too deep to be evaluated and looks for attribute access
    /// in their names, without recursing: every `{` not doubled opens a field.
    fn scan_opaque(&mut self, mut pos: usize, end: usize) {
        let b = self.msg.as_bytes();
        while pos < end {
            if b[pos] != b'{' {
                pos += 1;
                continue;
            }
            if pos + 1 < end && b[pos + 1] == b'{' {
                pos += 2;
                continue;
            }
            self.count = self.count.saturating_add(1);
            self.truncated |= self.count > self.store_limit;
            let name_start = pos + 1;
            let mut p = name_start;
            while p < end && !matches!(b[p], b'{' | b'}' | b':' | b'!') {
                if b[p] == b'[' {
                    while p < end && b[p] != b']' {
                        p += 1;
                    }
                }
                p += 1;
            }
            if p < end && b[p] != b'{' {
                self.note_attribute(pos, name_start, p);
            }
            pos = p;
        }
    }

    /// Called only for a field that parses cleanly: a broken one is CPython's syntax error,
    /// never an attribute lookup.
    fn note_attribute(&mut self, open: usize, start: usize, end: usize) {
        if self.attribute_at.is_none() && has_attribute(&self.msg[start..end.max(start)]) {
            self.attribute_at = Some(open);
        }
    }
}

/// Whether CPython's `FieldNameIterator` would reach a `.` (a `getattr`) in `name`.
pub(crate) fn has_attribute(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = b
        .iter()
        .position(|&c| c == b'.' || c == b'[')
        .unwrap_or(b.len());
    while i < b.len() {
        match b[i] {
            b'.' => return true,
            b'[' => match b[i + 1..].iter().position(|&c| c == b']') {
                Some(k) => i += k + 2,
                None => return false,
            },
            _ => return false,
        }
    }
    false
}

/// Heap bytes held by a piece list, recursively.
pub(crate) fn heap_bytes(pieces: &[Piece]) -> usize {
    let mut n = std::mem::size_of_val(pieces);
    for p in pieces {
        if let Piece::Field(Field {
            spec: FieldSpec::Nested { pieces },
            ..
        }) = p
        {
            n += heap_bytes(pieces);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(msg: &str) -> (Vec<Piece>, Parser<'_>) {
        let mut p = Parser::new(msg, 256);
        let pieces = p.pieces(0, msg.len(), 0);
        (pieces, p)
    }

    #[test]
    fn attribute_access_is_found_by_the_field_name_grammar() {
        for (name, attr) in [
            ("0.real", true),
            (".imag", true),
            ("0[0].x", true),
            ("a[b.c]", false),
            ("0[1]x.y", false),
            ("0.", true),
            ("a", false),
        ] {
            assert_eq!(has_attribute(name), attr, "{name}");
        }
    }

    #[test]
    fn fields_are_counted_at_every_depth_and_escapes_are_not() {
        let (_, p) = parse("{{ {} {:{}} {:{:{}}} }}");
        assert_eq!(p.count, 6);
        let (_, p) = parse("{:{:{:{:{0.x}}}}}");
        assert_eq!(p.count, 5);
        assert_eq!(p.attribute_at, Some(8));
    }

    #[test]
    fn parsing_goes_on_after_a_syntax_error() {
        let (pieces, p) = parse("} {0!rx:>5} {a{b} {:99}");
        assert_eq!(p.count, 4);
        let errors = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Error { .. }))
            .count();
        assert_eq!(errors, 1);
        assert!(matches!(
            pieces[0],
            Piece::Error {
                kind: SyntaxError::SingleClose,
                ..
            }
        ));
    }

    #[test]
    fn storage_stops_past_the_field_limit() {
        let msg = "{}".repeat(1000);
        let mut p = Parser::new(&msg, 10);
        let pieces = p.pieces(0, msg.len(), 0);
        assert_eq!(p.count, 1000);
        assert!(p.truncated && pieces.is_empty());
    }
}
