//! The render walk: CPython's `build_string` / `output_markup` / `get_field_object` over
//! parsed pieces.
//!
//! The same walk runs twice. The check pass writes into an unbounded [`Counter`], stops only
//! for a width or precision over its limit, and otherwise notes the first CPython error and
//! goes on, so that a limit later in the template still wins. The render pass runs only
//! when the check pass found nothing, into a buffer sized by it.
//!
//! [`Counter`]: crate::format::Counter

use super::fmt::{self, Conv, Obj, Src};
use super::parse::{Field, FieldSpec, Piece};
use super::spec::{self, RawSpec};
use crate::config::Limits;
use crate::format::{Args, Buf, Out, Reject};
use crate::value::{self, Value};

/// CPython's `AutoNumber`: `{}` and `{0}` cannot be mixed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AutoState {
    Init,
    Auto,
    Manual,
}

pub(crate) struct Walk<'a> {
    msg: &'a str,
    args: Args<'a>,
    limits: &'a Limits,
    /// The check pass: note CPython's errors and go on.
    check: bool,
    auto: AutoState,
    next_auto: usize,
    /// The first CPython error met (check pass).
    pub first_error: Option<Reject>,
    /// How many errors were noted, to tell whether a nested spec expanded cleanly.
    errors: usize,
    /// A nested spec grew past the output limit (check pass).
    pub overflow: bool,
}

fn value_error(message: impl Into<String>) -> Reject {
    Reject::format_error("ValueError", message)
}

impl<'a> Walk<'a> {
    pub fn new(msg: &'a str, args: Args<'a>, limits: &'a Limits, check: bool) -> Self {
        Walk {
            msg,
            args,
            limits,
            check,
            auto: AutoState::Init,
            next_auto: 0,
            first_error: None,
            errors: 0,
            overflow: false,
        }
    }

    /// `build_string` over `pieces`; `depth` is CPython's `recursion_depth` (2 at the top).
    pub fn walk(&mut self, pieces: &[Piece], depth: u8, out: &mut dyn Out) -> Result<(), Reject> {
        for piece in pieces {
            match piece {
                Piece::Literal {
                    start,
                    end,
                    escaped,
                } => {
                    let r = write_literal(&self.msg[*start..*end], *escaped, out);
                    self.settle(r)?;
                }
                Piece::Error { offset, kind } => {
                    let e = Reject::FormatError {
                        exception: "ValueError",
                        message: kind.message().to_string(),
                        offset: Some(*offset),
                    };
                    self.settle(Err(e))?;
                }
                Piece::Field(f) => self.field(f, depth, out)?,
            }
        }
        Ok(())
    }

    /// Limits always propagate; in the check pass anything else is noted and the walk goes
    /// on.
    fn settle(&mut self, r: Result<(), Reject>) -> Result<(), Reject> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (Reject::WidthTooLarge { .. } | Reject::PrecisionTooLarge { .. })) => Err(e),
            Err(e) if !self.check => Err(e),
            Err(Reject::OutputTooLarge { .. }) => {
                self.overflow = true;
                Ok(())
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
                Ok(())
            }
        }
    }

    /// `output_markup`: look up, convert, expand the spec, check its limits, format.
    fn field(&mut self, f: &Field, depth: u8, out: &mut dyn Out) -> Result<(), Reject> {
        let obj = match self.lookup(f).and_then(|o| convert(o, f.conversion)) {
            Ok(o) => Some(o),
            Err(e) => {
                self.settle(Err(e.at(f.start)))?;
                None
            }
        };
        let expanded;
        let parsed;
        let (text, raw): (&str, Option<&RawSpec>) = match &f.spec {
            FieldSpec::Empty => ("", None),
            FieldSpec::Static { start, end, raw } => (&self.msg[*start..*end], Some(raw)),
            FieldSpec::Nested { pieces } if depth > 1 => {
                let mut buf = Buf::new(self.limits.max_output_bytes, 16);
                let errors = self.errors;
                let r = self.walk(pieces, depth - 1, &mut buf);
                self.settle(r)?;
                if self.errors != errors || (self.check && self.overflow) {
                    return Ok(());
                }
                expanded = buf.into_string();
                parsed = spec::parse(&expanded);
                (expanded.as_str(), Some(&parsed))
            }
            FieldSpec::Nested { pieces } => {
                // Never evaluated, but their literal widths are in the template.
                for p in pieces {
                    if let Piece::Field(Field {
                        start,
                        spec: FieldSpec::Static { raw, .. },
                        ..
                    }) = p
                    {
                        self.check_limits(raw, *start)?;
                    }
                }
                return self.settle(Err(value_error("Max string recursion exceeded").at(f.start)));
            }
            FieldSpec::Opaque => {
                return self.settle(Err(value_error("Max string recursion exceeded").at(f.start)));
            }
        };
        if let Some(raw) = raw {
            self.check_limits(raw, f.start)?;
        }
        let Some(obj) = obj else { return Ok(()) };
        if self.check && out.len() > self.limits.max_output_bytes {
            // Over the limit already: `output-too-large` wins over anything this field could
            // raise, and measuring `str()` of another 4,300-digit int would only cost memory.
            return Ok(());
        }
        let r = fmt::format_obj(obj, text, raw, self.limits.max_output_bytes, out);
        self.settle(r.map_err(|e| e.at(f.start)))
    }

    fn check_limits(&self, raw: &RawSpec, offset: usize) -> Result<(), Reject> {
        if let Some(width) = raw.width.filter(|&w| w > self.limits.max_width) {
            return Err(Reject::WidthTooLarge {
                offset,
                width,
                limit: self.limits.max_width,
            });
        }
        if let Some(precision) = raw.precision.filter(|&p| p > self.limits.max_precision) {
            let limit = self.limits.max_precision;
            return Err(Reject::PrecisionTooLarge {
                offset,
                precision,
                limit,
            });
        }
        Ok(())
    }

    /// `get_field_object`: `field_name_split`, the arg, then each `[key]`.
    fn lookup(&mut self, f: &Field) -> Result<Obj<'a>, Reject> {
        let name = &self.msg[f.name.0..f.name.1];
        let first_end = name.find(['.', '[']).unwrap_or(name.len());
        let first = &name[..first_end];
        let mut index = get_integer(first)?;
        let empty = first.is_empty();
        if empty || index.is_some() {
            if self.auto == AutoState::Init {
                self.auto = if empty {
                    AutoState::Auto
                } else {
                    AutoState::Manual
                };
            }
            match (self.auto, empty) {
                (AutoState::Manual, true) => return Err(value_error(
                    "cannot switch from manual field specification to automatic field numbering",
                )),
                (AutoState::Auto, false) => return Err(value_error(
                    "cannot switch from automatic field numbering to manual field specification",
                )),
                _ => {}
            }
            if empty {
                index = Some(self.next_auto);
                self.next_auto += 1;
            }
        }
        let mut obj = match index {
            None => match self.args {
                Args::Mapping(m) => m.get(first).map(Obj::Val).ok_or_else(|| key_error(first))?,
                _ => return Err(key_error(first)),
            },
            Some(i) => {
                let v = match self.args {
                    Args::Tuple(vs) => vs.get(i),
                    Args::Scalar(v) => (i == 0).then_some(v),
                    Args::Mapping(_) => None,
                };
                Obj::Val(v.ok_or_else(|| {
                    Reject::format_error(
                        "IndexError",
                        format!("Replacement index {i} out of range for positional args tuple"),
                    )
                })?)
            }
        };
        let mut rest = &name[first_end..];
        while let Some(c) = rest.chars().next() {
            match c {
                '.' => return Err(Reject::AttributeAccess { offset: f.start }),
                '[' => {
                    let inner = &rest[1..];
                    let Some(close) = inner.find(']') else {
                        return Err(value_error("Missing ']' in format string"));
                    };
                    let key = &inner[..close];
                    rest = &inner[close + 1..];
                    let idx = get_integer(key)?;
                    if key.is_empty() {
                        return Err(value_error("Empty attribute in format string"));
                    }
                    obj = getitem(obj, key, idx)?;
                }
                _ => {
                    return Err(value_error(
                        "Only '.' or '[' may follow ']' in format field specifier",
                    ))
                }
            }
        }
        Ok(obj)
    }
}

/// CPython's `get_integer` on a field name part: `None` unless it is all decimal digits;
/// an overflow met before any other character is its `ValueError`.
fn get_integer(s: &str) -> Result<Option<usize>, Reject> {
    match spec::read_integer(s) {
        Some((_, true, _)) => Err(value_error("Too many decimal digits in format string")),
        Some((v, false, used)) if used == s.len() => Ok(usize::try_from(v).ok()),
        _ => Ok(None),
    }
}

fn key_error(key: &str) -> Reject {
    Reject::format_error("KeyError", py_repr_str(key))
}

/// `repr(s)` of a short str taken from the template.
pub(crate) fn py_repr_str(s: &str) -> String {
    let mut b = Buf::new(usize::MAX, s.len() + 2);
    match value::write_repr(&Value::Str(s.to_string()), &mut b) {
        Ok(()) => b.into_string(),
        Err(_) => format!("'{s}'"),
    }
}

/// `obj[key]` as `getitem_str`, `getitem_sequence` and `getitem_idx` do it.
fn getitem<'a>(obj: Obj<'a>, key: &str, idx: Option<usize>) -> Result<Obj<'a>, Reject> {
    let type_error = |m: String| Reject::format_error("TypeError", m);
    let text = match obj {
        Obj::Val(Value::Str(s)) => Some(s.as_str()),
        Obj::Char(s) => Some(s),
        _ => None,
    };
    if let Some(s) = text {
        let Some(i) = idx else {
            return Err(type_error(
                "string indices must be integers, not 'str'".to_string(),
            ));
        };
        return match s.char_indices().nth(i) {
            Some((at, c)) => Ok(Obj::Char(&s[at..at + c.len_utf8()])),
            None => Err(Reject::format_error(
                "IndexError",
                "string index out of range",
            )),
        };
    }
    match (obj, idx) {
        (Obj::Val(Value::List(items)), Some(i)) => items
            .get(i)
            .map(Obj::Val)
            .ok_or_else(|| Reject::format_error("IndexError", "list index out of range")),
        (Obj::Val(Value::List(_)), None) => Err(type_error(
            "list indices must be integers or slices, not str".to_string(),
        )),
        (Obj::Val(Value::Dict(m)), None) => m.get(key).map(Obj::Val).ok_or_else(|| key_error(key)),
        // JSON keys are strings: an int key is never there.
        (Obj::Val(Value::Dict(_)), Some(i)) => Err(Reject::format_error("KeyError", i.to_string())),
        (o, _) => Err(type_error(format!(
            "'{}' object is not subscriptable",
            o.type_name()
        ))),
    }
}

/// `do_conversion`.
fn convert(obj: Obj<'_>, conversion: Option<char>) -> Result<Obj<'_>, Reject> {
    let Some(c) = conversion else { return Ok(obj) };
    let src = match obj {
        Obj::Val(v) => Src::Val(v),
        Obj::Char(s) => Src::Char(s),
        Obj::Conv(..) => return Ok(obj),
    };
    let kind = match c {
        's' => match obj {
            Obj::Val(Value::Str(_)) | Obj::Char(_) => return Ok(obj),
            _ => Conv::Str,
        },
        'r' => Conv::Repr,
        'a' => Conv::Ascii,
        c => {
            let cp = u32::from(c);
            let shown = if cp > 32 && cp < 127 {
                c.to_string()
            } else {
                format!("\\x{cp:x}")
            };
            return Err(value_error(format!("Unknown conversion specifier {shown}")));
        }
    };
    Ok(Obj::Conv(kind, src))
}

/// Literal text, with `{{` and `}}` standing for one brace when `escaped`.
fn write_literal(text: &str, escaped: bool, out: &mut dyn Out) -> Result<(), Reject> {
    if !escaped {
        return out.push_str(text);
    }
    let b = text.as_bytes();
    let mut from = 0;
    let mut i = 0;
    while let Some(k) = memchr::memchr2(b'{', b'}', &b[i..]) {
        let brace = i + k;
        out.push_str(&text[from..=brace])?;
        // The parser only left doubled braces in literal text.
        i = brace + 2;
        from = i;
        if i >= b.len() {
            break;
        }
    }
    if from < text.len() {
        out.push_str(&text[from..])?;
    }
    Ok(())
}
