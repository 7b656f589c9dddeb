//! The log record (docs/record.md): a body becomes either a structured record (a JSON object
//! with a string `msg`) or a plain-text one (anything else, byte for byte).
//!
//! Decoding is where the first two limits apply, in reject precedence: the body's size is
//! checked before a byte of it is decoded (`body-too-large`), then its JSON nesting while it
//! is parsed (`json-too-deep`, which is never demoted to a plain-text record).
//!
//! Choices made here once (docs/record.md "Fine points" lists them):
//! - `null` is "absent" for every field (`args: null` is no args; `style`, `level`,
//!   `logger`, `ts` and `fields` follow it), so `"level": null` is `info`, not `None`;
//! - a non-string `level` / `logger` is Python's `str()` of the value (`5`, `True`,
//!   `['a']`); if `str()` itself would fail or exceed `--max-output-bytes` (a 5,000-digit
//!   int), the default is kept;
//! - a non-string `style` is an unknown style, kept raw like an unknown string;
//! - `ts`: an RFC 3339 string (any offset, converted to UTC) or a JSON number of epoch
//!   seconds (an int, or a float rounded to microseconds as CPython's
//!   `datetime.fromtimestamp`); `true`/`false` and anything outside the years 0000–9999 (the
//!   years RFC 3339 can write) is "does not parse", i.e. absent;
//! - `fields` that is not an object is ignored; so is an `exc` or `stack` that is not a
//!   string (they are verbatim text, never templates, kept whole here: the line cuts them);
//! - a lone surrogate in a member of a structured record (`msg`, `args`, `style`, `level`,
//!   `logger`, `ts`, `fields`, `exc`, `stack`, keys included) counts as invalid UTF-8; members outside
//!   the record's table are ignored, their strings too. A plain-text body is never
//!   JSON-decoded, so its `\ud800` is six ASCII characters.
//!
//! Only those members are built: the rest of the body, and a whole body that turns out to be
//! plain text (a JSON array, a scalar), is checked (syntax, depth) without allocating values.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use indexmap::IndexMap;

use crate::config::Limits;
use crate::finding::{Finding, Rule};
use crate::format::number::INT_MAX_STR_DIGITS;
use crate::format::{Args, Buf, Style};
use crate::json::{self, JsonError, Object, StrValue};
use crate::value::{Int, Value};

/// Level of a record that names none.
pub const DEFAULT_LEVEL: &str = "info";
/// Logger of a record that names none.
pub const DEFAULT_LOGGER: &str = "root";

/// One record, ready to be detected, rendered and put in a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    /// The template, or the message itself when there are no args. For a plain-text record,
    /// the whole body (lossily decoded, BOM and trailing newline included). Borrowed from
    /// the body when it can be.
    pub msg: Cow<'a, str>,
    /// The raw `args`, never `null`, `[]` or `{}` (those are `None`: no args, verbatim
    /// message). See [`Record::args`] for how Python sees it.
    pub args: Option<Value>,
    /// How `msg` is rendered when there are args.
    pub style: StyleField,
    /// Not upper-cased yet: that is the line's business.
    pub level: String,
    pub logger: String,
    /// Event time; `None` means "time received".
    pub ts: Option<DateTime<Utc>>,
    /// The `fields` object, in its order, when there is one (possibly empty).
    pub fields: Option<IndexMap<String, Value>>,
    /// The exception text (a formatted traceback), verbatim, when `exc` is a string.
    pub exc: Option<String>,
    /// The stack text (`stack_info`), verbatim, when `stack` is a string.
    pub stack: Option<String>,
    /// A JSON object with a string `msg` (as opposed to a plain-text body).
    pub structured: bool,
    /// The body was not valid UTF-8, or a JSON string of a structured record held a lone
    /// surrogate: both became U+FFFD, and the record gets an `invalid-utf8` finding.
    pub invalid_utf8: bool,
}

/// The `style` field as sent.
#[derive(Clone, Debug, PartialEq)]
pub enum StyleField {
    Known(Style),
    /// Neither `"%"`, `"{"` nor `"$"` (any JSON value but `null`). It only matters when there
    /// are args: then it is a `format-error`, as `logging.Formatter` would raise
    /// `ValueError: Style must be one of: %,{,$`.
    Unknown(Value),
}

impl StyleField {
    pub fn known(&self) -> Option<Style> {
        match self {
            StyleField::Known(s) => Some(*s),
            StyleField::Unknown(_) => None,
        }
    }
}

/// Why a body was not decoded into a record: a limit, in reject precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeReject {
    /// Longer than `--max-body-bytes`; checked before anything else, nothing was decoded.
    #[error("body of {len} bytes > limit {limit}")]
    BodyTooLarge { len: usize, limit: usize },
    /// JSON nested deeper than `--max-json-depth` (the limit applied; see
    /// [`json::HARD_MAX_DEPTH`]).
    #[error("JSON nested deeper than limit {limit}")]
    JsonTooDeep { limit: usize },
}

impl DecodeReject {
    pub fn rule(&self) -> Rule {
        match self {
            DecodeReject::BodyTooLarge { .. } => Rule::BodyTooLarge,
            DecodeReject::JsonTooDeep { .. } => Rule::JsonTooDeep,
        }
    }

    /// The `reject` finding; its offset is null (the problem is the body, not `msg`).
    pub fn to_finding(&self) -> Finding {
        Finding::new(self.rule(), None, self.to_string())
    }
}

impl<'a> Record<'a> {
    /// A plain-text record: `text` is the message, verbatim.
    pub fn plain(text: Cow<'a, str>, invalid_utf8: bool) -> Record<'a> {
        Record {
            msg: text,
            args: None,
            style: StyleField::Known(Style::Percent),
            level: DEFAULT_LEVEL.to_owned(),
            logger: DEFAULT_LOGGER.to_owned(),
            ts: None,
            fields: None,
            exc: None,
            stack: None,
            structured: false,
            invalid_utf8,
        }
    }

    /// The args as Python sees them: an array is a tuple (even of one object), an object a
    /// dict, anything else a scalar. `None`: no args, the message is `msg` verbatim.
    pub fn args(&self) -> Option<Args<'_>> {
        Some(match self.args.as_ref()? {
            Value::List(items) => Args::Tuple(items),
            Value::Dict(map) => Args::Mapping(map),
            other => Args::Scalar(other),
        })
    }
}

/// The members of a structured record, `msg` first; the others are checked as JSON but
/// never built.
const MEMBERS: [&str; 9] = [
    "msg", "args", "style", "level", "logger", "ts", "fields", "exc", "stack",
];

/// Decodes one body (an AMQP message or a file given to `check`). The message borrows
/// from `body` when it can (valid UTF-8, and a JSON `msg` without escapes): a message may
/// be most of a MiB, and it is only ever read.
pub fn decode<'a>(body: &'a [u8], limits: &Limits) -> Result<Record<'a>, DecodeReject> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeReject::BodyTooLarge {
            len: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let text = String::from_utf8_lossy(body);
    let lossy = matches!(text, Cow::Owned(_));
    let huge = huge_int_digits(limits);
    let members = json::Members {
        names: &MEMBERS,
        // `fields` are carried into the JSON line, exact; every other member only renders.
        huge_int: &move |k: &str| (k != "fields").then_some(huge),
        borrow: Some("msg"),
    };
    let object = match json::parse_object(&text, limits.max_json_depth, &members) {
        Err(JsonError::TooDeep { limit, .. }) => return Err(DecodeReject::JsonTooDeep { limit }),
        Ok(object) => object,
        Err(JsonError::Invalid { .. }) => return Ok(Record::plain(text, lossy)),
    };
    let Object {
        members: mut slots,
        lone_surrogate,
        borrowed: Some(msg),
        ..
    } = object
    else {
        return Ok(Record::plain(text, lossy));
    };
    // The last `msg` wins: a string one leaves an empty string in its slot.
    if !matches!(
        slots.first_mut().and_then(Option::take),
        Some(Value::Str(_))
    ) {
        return Ok(Record::plain(text, lossy));
    }
    let msg = match (msg, &text) {
        (StrValue::Decoded(s), _) => Cow::Owned(s),
        (StrValue::Span(span), Cow::Borrowed(t)) => Cow::Borrowed(&t[span]),
        (StrValue::Span(span), Cow::Owned(t)) => Cow::Owned(t[span].to_owned()),
    };
    Ok(structured(msg, slots, lossy || lone_surrogate, limits))
}

/// The digit count above which an int literal can never be rendered within `limits`, in
/// any base, so its value is never needed ([`Int::huge_literal`]). Hexadecimal is the
/// shortest: a `d`-digit int has at least `floor((d-1)·log16 10) + 1 > 0.83·(d-1)` hex
/// digits, which exceeds `max_output_bytes` once `d > 1.25·max_output_bytes + 2`; above
/// CPython's 4,300 digits, `str()` raises whatever the limit.
pub fn huge_int_digits(limits: &Limits) -> usize {
    INT_MAX_STR_DIGITS.max(limits.max_output_bytes.saturating_mul(5) / 4 + 2)
}

/// The structured record from the object's other members, in the slots of [`MEMBERS`]
/// (`msg` already taken out).
fn structured<'a>(
    msg: Cow<'a, str>,
    mut slots: Vec<Option<Value>>,
    invalid_utf8: bool,
    limits: &Limits,
) -> Record<'a> {
    let mut take = |k: &str| {
        let slot = MEMBERS.iter().position(|m| *m == k)?;
        slots.get_mut(slot)?.take().filter(|v| *v != Value::None)
    };
    let args = take("args").filter(|v| match v {
        Value::List(l) => !l.is_empty(),
        Value::Dict(d) => !d.is_empty(),
        _ => true,
    });
    let style = match take("style") {
        None => StyleField::Known(Style::Percent),
        Some(Value::Str(s)) => match Style::from_field(&s) {
            Some(style) => StyleField::Known(style),
            None => StyleField::Unknown(Value::Str(s)),
        },
        Some(other) => StyleField::Unknown(other),
    };
    let level = text_field(take("level"), DEFAULT_LEVEL, limits);
    let logger = text_field(take("logger"), DEFAULT_LOGGER, limits);
    let ts = take("ts").as_ref().and_then(parse_ts);
    let fields = match take("fields") {
        Some(Value::Dict(d)) => Some(*d),
        _ => None,
    };
    let mut text = |k: &str| match take(k) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    };
    let exc = text("exc");
    let stack = text("stack");
    Record {
        msg,
        args,
        style,
        level,
        logger,
        ts,
        fields,
        exc,
        stack,
        structured: true,
        invalid_utf8,
    }
}

/// A string field as is; another value as Python's `str()` of it; absent, or a `str()`
/// that would fail or not fit in `--max-output-bytes`, as `default`.
fn text_field(v: Option<Value>, default: &str, limits: &Limits) -> String {
    match v {
        None => default.to_owned(),
        Some(Value::Str(s)) => s,
        Some(other) => {
            let mut buf = Buf::new(limits.max_output_bytes, 16);
            match crate::value::write_str(&other, &mut buf) {
                Ok(()) => buf.into_string(),
                Err(_) => default.to_owned(),
            }
        }
    }
}

/// `ts` as sent, or `None` when it does not parse (then the line uses the time received).
pub fn parse_ts(v: &Value) -> Option<DateTime<Utc>> {
    let ts = match v {
        Value::Str(s) => DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc),
        Value::Int(Int::Small(secs)) => DateTime::from_timestamp(*secs, 0)?,
        Value::Float(x) => from_float_epoch(*x)?,
        Value::Int(Int::Big(_)) | Value::Bool(_) | Value::None => return None,
        Value::List(_) | Value::Dict(_) => return None,
    };
    (0..=9999).contains(&ts.year()).then_some(ts)
}

/// CPython's `datetime.fromtimestamp(x, timezone.utc)`: the fraction rounded half-even to
/// microseconds (so `1.001` is `.001`, not `.000999…`).
fn from_float_epoch(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() {
        return None;
    }
    let mut secs = x.trunc();
    let mut micros = ((x - secs) * 1e6).round_ties_even();
    if micros >= 1e6 {
        micros -= 1e6;
        secs += 1.0;
    } else if micros < 0.0 {
        micros += 1e6;
        secs -= 1.0;
    }
    // Beyond ±2^62 s is far outside any representable date; the bound keeps the cast exact.
    if secs.abs() > 4.6e18 {
        return None;
    }
    DateTime::from_timestamp(secs as i64, (micros as u32) * 1000)
}

/// RFC 3339 in UTC with milliseconds, truncated: `2026-11-22T10:00:00.000Z`. Written
/// digit by digit (every line has one; chrono's formatter is most of a line's cost),
/// chrono's own for the years RFC 3339 cannot write in four digits.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    let (year, nanos) = (ts.year(), ts.nanosecond());
    let Ok(year) = u32::try_from(year) else {
        return ts.to_rfc3339_opts(SecondsFormat::Millis, true);
    };
    if year > 9999 {
        return ts.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    // A leap second is held as nanoseconds past 1e9: chrono writes it as second 60.
    let (leap, nanos) = if nanos >= 1_000_000_000 {
        (1, nanos - 1_000_000_000)
    } else {
        (0, nanos)
    };
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, ts.month());
    put(8, 2, ts.day());
    put(11, 2, ts.hour());
    put(14, 2, ts.minute());
    put(17, 2, ts.second() + leap);
    put(20, 3, nanos / 1_000_000);
    // Only ASCII digits and separators were written.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
