//! `format(obj, spec)` for the objects a record can hold, as CPython 3.11's
//! Python/formatter_unicode.c does it: `format_string_internal`, `format_long_internal`,
//! `format_float_internal` and `object.__format__`, written through [`Out`].
//!
//! Sizes are settled before digits are made: an int whose digits alone would pass
//! `max_out` is measured from its bit length and never converted.

use super::spec::{quoted_code, RawSpec, Spec};
use crate::format::number::{self, FloatFmt, FloatKind};
use crate::format::take::Take;
use crate::format::{Out, Reject};
use crate::value::{self, Int, Value};

/// How a `!r`, `!s` or `!a` conversion made its str.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conv {
    Str,
    Repr,
    Ascii,
}

/// Where a converted str comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Src<'a> {
    Val(&'a Value),
    /// A str made by indexing a str (`{0[1]}`).
    Char(&'a str),
}

/// The object a replacement field names, after its conversion.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Obj<'a> {
    Val(&'a Value),
    /// A str made by indexing a str.
    Char(&'a str),
    /// A str made by a conversion, produced on demand (it may be long).
    Conv(Conv, Src<'a>),
}

impl Obj<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Obj::Val(v) => v.type_name(),
            Obj::Char(_) | Obj::Conv(..) => "str",
        }
    }
}

fn value_error(message: impl Into<String>) -> Reject {
    Reject::format_error("ValueError", message)
}

/// `format(obj, spec)`. `raw` is `spec` already parsed; `max_out` is the output limit.
pub(crate) fn format_obj(
    obj: Obj<'_>,
    spec: &str,
    raw: Option<&RawSpec>,
    max_out: usize,
    out: &mut dyn Out,
) -> Result<(), Reject> {
    let parsed;
    let raw = match raw {
        Some(r) => r,
        None if spec.is_empty() => return format_plain(obj, max_out, out),
        None => {
            parsed = super::spec::parse(spec);
            &parsed
        }
    };
    if spec.is_empty() {
        return format_plain(obj, max_out, out);
    }
    let tyname = obj.type_name();
    let finalize = |default_type, default_align| {
        raw.finalize(default_type, default_align)
            .map_err(|f| value_error(f.message(spec, tyname)))
    };
    match obj {
        Obj::Val(Value::Str(s)) => format_str(Text::Plain(s), &finalize('s', '<')?, out),
        Obj::Char(s) => format_str(Text::Plain(s), &finalize('s', '<')?, out),
        // CPython made the str before it read the spec: the str's errors come first.
        Obj::Conv(_, Src::Val(Value::Int(n))) => {
            format_int_as_str(n, finalize('s', '<'), max_out, out)
        }
        Obj::Conv(c, src) => {
            if let Src::Val(v) = src {
                value::check_printable(v)?;
            }
            format_str(Text::Conv(c, src), &finalize('s', '<')?, out)
        }
        Obj::Val(Value::Int(n)) => format_int(n, tyname, &finalize('d', '>')?, max_out, out),
        Obj::Val(Value::Bool(b)) => format_int(
            &Int::Small(i64::from(*b)),
            tyname,
            &finalize('d', '>')?,
            max_out,
            out,
        ),
        Obj::Val(Value::Float(x)) => {
            let spec = finalize('\0', '>')?;
            match spec.ty {
                '\0' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 'n' | '%' => {
                    format_float(*x, &spec, max_out, out)
                }
                t => Err(unknown_code(t, tyname)),
            }
        }
        Obj::Val(Value::None | Value::List(_) | Value::Dict(_)) => Err(Reject::format_error(
            "TypeError",
            format!("unsupported format string passed to {tyname}.__format__"),
        )),
    }
}

/// `format(obj, '')`: `str(obj)`.
fn format_plain(obj: Obj<'_>, max_out: usize, out: &mut dyn Out) -> Result<(), Reject> {
    match obj {
        Obj::Val(Value::Int(n)) | Obj::Conv(_, Src::Val(Value::Int(n))) => {
            format_int(n, "int", &plain_int_spec(), max_out, out)
        }
        Obj::Val(v) => value::write_str(v, out),
        Obj::Char(s) => out.push_str(s),
        Obj::Conv(c, src) => write_conv(c, src, out),
    }
}

fn plain_int_spec() -> Spec {
    Spec {
        fill: ' ',
        align: '>',
        sign: None,
        no_neg_0: false,
        alternate: false,
        width: None,
        grouping: None,
        precision: None,
        ty: 'd',
    }
}

pub(crate) fn write_conv(c: Conv, src: Src<'_>, out: &mut dyn Out) -> Result<(), Reject> {
    let owned;
    let v = match src {
        Src::Val(v) => v,
        Src::Char(s) => {
            owned = Value::Str(s.to_string());
            &owned
        }
    };
    match c {
        Conv::Str => value::write_str(v, out),
        Conv::Repr => value::write_repr(v, out),
        Conv::Ascii => value::write_ascii(v, out),
    }
}

fn unknown_code(ty: char, tyname: &str) -> Reject {
    value_error(format!(
        "Unknown format code {} for object of type '{tyname}'",
        quoted_code(ty)
    ))
}

/// The text of a str being formatted.
#[derive(Clone, Copy)]
enum Text<'a> {
    Plain(&'a str),
    Conv(Conv, Src<'a>),
}

impl Text<'_> {
    /// Characters of the text, counting at most `cap`.
    fn chars(&self, cap: usize) -> Result<usize, Reject> {
        match self {
            Text::Plain(s) => Ok(s.chars().take(cap).count()),
            Text::Conv(c, src) => {
                let mut t = Take::new(None, cap);
                take_conv(&mut t, *c, *src)?;
                Ok(t.chars())
            }
        }
    }

    /// The first `n` characters.
    fn write_prefix(&self, n: usize, out: &mut dyn Out) -> Result<(), Reject> {
        match self {
            Text::Plain(s) => match s.char_indices().nth(n) {
                Some((i, _)) => out.push_str(&s[..i]),
                None => out.push_str(s),
            },
            Text::Conv(c, src) => take_conv(&mut Take::new(Some(out), n), *c, *src),
        }
    }
}

/// A conversion's str through `t`. CPython made the whole str first, so when the cut
/// stops the conversion early, the errors of the rest of it still count.
fn take_conv(t: &mut Take<'_>, c: Conv, src: Src<'_>) -> Result<(), Reject> {
    t.run(|o| write_conv(c, src, o))?;
    if let (true, Src::Val(v)) = (t.stopped(), src) {
        value::check_printable(v)?;
    }
    Ok(())
}

/// `format_string_internal`.
fn format_str(text: Text<'_>, spec: &Spec, out: &mut dyn Out) -> Result<(), Reject> {
    if spec.ty != 's' {
        return Err(unknown_code(spec.ty, "str"));
    }
    match spec.sign {
        Some(' ') => return Err(value_error("Space not allowed in string format specifier")),
        Some(_) => return Err(value_error("Sign not allowed in string format specifier")),
        None => {}
    }
    if spec.no_neg_0 {
        return Err(value_error(
            "Negative zero coercion (z) not allowed in string format specifier",
        ));
    }
    if spec.alternate {
        return Err(value_error(
            "Alternate form (#) not allowed in string format specifier",
        ));
    }
    if spec.align == '=' {
        return Err(value_error(
            "'=' alignment not allowed in string format specifier",
        ));
    }
    let width = spec.width.unwrap_or(0);
    let cap = match spec.precision {
        Some(p) => p,
        // Only whether the text reaches the width matters.
        None => width.saturating_add(1),
    };
    let counted = text.chars(cap)?;
    let len = match spec.precision {
        Some(p) => counted.min(p),
        None => counted,
    };
    if len >= width {
        return match spec.precision {
            Some(p) => text.write_prefix(p, out),
            None => match text {
                Text::Plain(s) => out.push_str(s),
                Text::Conv(c, src) => write_conv(c, src, out),
            },
        };
    }
    let total = width;
    let left = match spec.align {
        '>' => total - len,
        '^' => (total - len) / 2,
        _ => 0,
    };
    out.push_repeat(spec.fill, left)?;
    text.write_prefix(len, out)?;
    out.push_repeat(spec.fill, total - len - left)
}

/// `format(str(n), spec)`: the digits are made only when they can fit; when CPython's
/// 4,300-digit rule refuses them, their size is still measured into `out` (an output over
/// the limit wins over that error).
fn format_int_as_str(
    n: &Int,
    spec: Result<Spec, Reject>,
    max_out: usize,
    out: &mut dyn Out,
) -> Result<(), Reject> {
    let error = if number::int_digits_lower_bound(n, 10) > max_out {
        None
    } else {
        let mut text = String::new();
        match number::write_int_decimal(n, &mut Collect(&mut text)) {
            Ok(()) => return format_str(Text::Plain(&text), &spec?, out),
            Err(e) => Some(e),
        }
    };
    let spec = match (spec, error) {
        (Ok(spec), error) => (spec, error),
        (Err(e), None) => {
            out.push_repeat('0', int_str_len(n))?;
            return Err(e);
        }
        (Err(_), Some(e)) => return Err(e),
    };
    let (spec, error) = spec;
    let chars = int_str_len(n);
    let shown = spec.precision.map_or(chars, |p| p.min(chars));
    out.push_repeat('0', shown.max(spec.width.unwrap_or(0)))?;
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An [`Out`] into a `String` whose size is already bounded by the caller.
struct Collect<'s>(&'s mut String);

impl Out for Collect<'_> {
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        self.0.push_str(s);
        Ok(())
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The integer digits of a number: written, or only counted (too many to make).
enum Digits<'a> {
    Text(&'a str),
    Count(usize),
}

impl Digits<'_> {
    fn len(&self) -> usize {
        match self {
            Digits::Text(s) => s.len(),
            Digits::Count(n) => *n,
        }
    }
}

/// One number laid out as `calc_number_widths` / `fill_number` do:
/// `<lpad><sign><prefix><spad><grouped digits><decimal><remainder><rpad>`.
struct Number<'a> {
    sign: Option<char>,
    prefix: &'a str,
    digits: Digits<'a>,
    decimal: bool,
    remainder: &'a str,
}

fn write_number(n: &Number<'_>, spec: &Spec, out: &mut dyn Out) -> Result<(), Reject> {
    let width = spec
        .width
        .map_or(-1, |w| i128::try_from(w).unwrap_or(i128::MAX));
    let n_sign = usize::from(n.sign.is_some());
    let remainder_chars = n.remainder.chars().count();
    let non_digit = (n_sign + n.prefix.len() + usize::from(n.decimal) + remainder_chars) as i128;
    let min_width = if spec.fill == '0' && spec.align == '=' {
        width - non_digit
    } else {
        0
    };
    let n_digits = n.digits.len();
    let groups = if n_digits == 0 {
        Vec::new()
    } else {
        group(n_digits, min_width, spec.grouping)
    };
    let sep_len = usize::from(spec.grouping.is_some());
    let grouped: usize = groups
        .iter()
        .enumerate()
        .map(|(i, (z, c))| z + c + if i > 0 { sep_len } else { 0 })
        .sum();
    let padding = width - (non_digit + grouped as i128);
    let padding = usize::try_from(padding.max(0)).unwrap_or(usize::MAX);
    let (l, s, r) = match spec.align {
        '<' => (0, 0, padding),
        '^' => (padding / 2, 0, padding - padding / 2),
        '=' => (0, padding, 0),
        _ => (padding, 0, 0),
    };
    out.push_repeat(spec.fill, l)?;
    if let Some(c) = n.sign {
        out.push_char(c)?;
    }
    out.push_str(n.prefix)?;
    out.push_repeat(spec.fill, s)?;
    // `groups` runs right to left; the output left to right.
    let mut at = 0;
    for (i, (zeros, chars)) in groups.iter().rev().enumerate() {
        if i > 0 {
            if let Some((_, sep)) = spec.grouping {
                out.push_char(sep)?;
            }
        }
        out.push_repeat('0', *zeros)?;
        match &n.digits {
            Digits::Text(d) => out.push_str(&d[at..at + chars])?,
            Digits::Count(_) => out.push_repeat('0', *chars)?,
        }
        at += chars;
    }
    if n.decimal {
        out.push_char('.')?;
    }
    out.push_str(n.remainder)?;
    out.push_repeat(spec.fill, r)
}

/// `_PyUnicode_InsertThousandsGrouping` without writing: `(zeros, digits)` of each group,
/// right to left. Without grouping there is one group, zero-padded to `min_width`.
fn group(n_digits: usize, min_width: i128, grouping: Option<(usize, char)>) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut remaining = n_digits as i128;
    let mut min_width = min_width.max(0);
    if let Some((size, _)) = grouping {
        let size = size as i128;
        loop {
            let len = size.min(remaining.max(min_width).max(1));
            let zeros = (len - remaining).max(0);
            let chars = remaining.min(len).max(0);
            groups.push((zeros as usize, chars as usize));
            remaining -= chars;
            min_width -= len;
            if remaining <= 0 && min_width <= 0 {
                return groups;
            }
            min_width -= 1;
        }
    }
    let len = remaining.max(min_width).max(1);
    let zeros = (len - remaining).max(0);
    let chars = remaining.min(len).max(0);
    groups.push((zeros as usize, chars as usize));
    groups
}

fn sign_of(negative: bool, spec: &Spec) -> Option<char> {
    match (negative, spec.sign) {
        (true, _) => Some('-'),
        (false, Some('+')) => Some('+'),
        (false, Some(' ')) => Some(' '),
        _ => None,
    }
}

/// `_PyLong_FormatAdvancedWriter` after the spec is read.
fn format_int(
    n: &Int,
    tyname: &str,
    spec: &Spec,
    max_out: usize,
    out: &mut dyn Out,
) -> Result<(), Reject> {
    let radix = match spec.ty {
        'b' => 2,
        'o' => 8,
        'x' | 'X' => 16,
        'd' | 'n' => 10,
        'c' => 0,
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%' => {
            let x = n.to_f64().ok_or_else(Int::float_overflow)?;
            return format_float(x, spec, max_out, out);
        }
        t => return Err(unknown_code(t, tyname)),
    };
    if spec.precision.is_some() {
        return Err(value_error(
            "Precision not allowed in integer format specifier",
        ));
    }
    if spec.no_neg_0 {
        return Err(value_error(
            "Negative zero coercion (z) not allowed in integer format specifier",
        ));
    }
    if radix == 0 {
        if spec.sign.is_some() {
            return Err(value_error(
                "Sign not allowed with integer format specifier 'c'",
            ));
        }
        if spec.alternate {
            return Err(value_error(
                "Alternate form (#) not allowed with integer format specifier 'c'",
            ));
        }
        let x = n.to_i64().ok_or_else(|| {
            Reject::format_error("OverflowError", "Python int too large to convert to C long")
        })?;
        let c = u32::try_from(x)
            .ok()
            .filter(|&c| c < 0x11_0000)
            .ok_or_else(|| {
                Reject::format_error("OverflowError", "%c arg not in range(0x110000)")
            })?;
        // A lone surrogate cannot be UTF-8: it becomes U+FFFD, as everywhere else.
        let ch = char::from_u32(c).unwrap_or('\u{FFFD}');
        let mut b = [0u8; 4];
        let num = Number {
            sign: None,
            prefix: "",
            digits: Digits::Count(0),
            decimal: false,
            remainder: ch.encode_utf8(&mut b),
        };
        return write_number(&num, spec, out);
    }
    let prefix = match (spec.alternate, spec.ty) {
        (false, _) => "",
        (true, 'b') => "0b",
        (true, 'o') => "0o",
        (true, 'x') => "0x",
        (true, 'X') => "0X",
        (true, _) => "",
    };
    let sign = sign_of(n.is_negative(), spec);
    let lower = number::int_digits_lower_bound(n, radix);
    let digits;
    let num_digits = if lower > max_out {
        Digits::Count(lower)
    } else {
        match number::int_magnitude_digits(n, radix, spec.ty == 'X') {
            Ok(d) => {
                digits = d;
                Digits::Text(&digits)
            }
            Err(e) => {
                // Measure what it would have been, so that a too-large output still wins
                // over the 4,300-digit rule; then raise CPython's error.
                let count = Digits::Count(decimal_digits(n));
                let num = Number {
                    sign,
                    prefix,
                    digits: count,
                    decimal: false,
                    remainder: "",
                };
                write_number(&num, spec, out)?;
                return Err(e);
            }
        }
    };
    let num = Number {
        sign,
        prefix,
        digits: num_digits,
        decimal: false,
        remainder: "",
    };
    write_number(&num, spec, out)
}

/// The length of `str(n)`, sign included, without converting it (no 4,300-digit rule).
pub(crate) fn int_str_len(n: &Int) -> usize {
    decimal_digits(n) + usize::from(n.is_negative())
}

/// The exact number of decimal digits of `|n|`, without converting it.
fn decimal_digits(n: &Int) -> usize {
    let lo = number::int_digits_lower_bound(n, 10);
    let hi = number::int_decimal_digits_upper_bound(n);
    if lo >= hi {
        return lo;
    }
    let mag = n.to_bigint().magnitude().clone();
    let mut k = lo;
    let Ok(exp) = u32::try_from(lo) else {
        return lo;
    };
    let mut p = num_traits::pow(num_bigint::BigUint::from(10u8), exp as usize);
    while k < hi && mag >= p {
        k += 1;
        p *= 10u8;
    }
    k
}

/// `format_float_internal`.
fn format_float(x: f64, spec: &Spec, max_out: usize, out: &mut dyn Out) -> Result<(), Reject> {
    if let Some(p) = spec.precision {
        if p > i32::MAX as usize {
            return Err(value_error("precision too big"));
        }
    }
    let mut kind = match spec.ty {
        'e' | 'E' => FloatKind::Exp,
        'f' | 'F' | '%' => FloatKind::Fixed,
        '\0' => FloatKind::Repr,
        _ => FloatKind::General,
    };
    let precision = match (spec.precision, kind) {
        (None, FloatKind::Repr) => 0,
        (None, _) => 6,
        (Some(p), FloatKind::Repr) => {
            kind = FloatKind::General;
            p
        }
        (Some(p), _) => p,
    };
    let keeps_zeros = matches!(kind, FloatKind::Exp | FloatKind::Fixed) || spec.alternate;
    if keeps_zeros && precision > max_out {
        // At least `precision` digits: too long whatever they are.
        return out.push_repeat('0', precision);
    }
    let fmt = FloatFmt {
        kind,
        upper: matches!(spec.ty, 'E' | 'F' | 'G'),
        precision,
        always_sign: false,
        add_dot_0: spec.ty == '\0',
        alt: spec.alternate,
        no_neg_0: spec.no_neg_0,
    };
    let x = if spec.ty == '%' { x * 100.0 } else { x };
    let mut s = number::float_to_string(x, &fmt);
    if spec.ty == '%' {
        s.push('%');
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.as_str()),
    };
    let int_end = body
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(body.len());
    let decimal = body[int_end..].starts_with('.');
    let remainder = &body[int_end + usize::from(decimal)..];
    let num = Number {
        sign: sign_of(negative, spec),
        prefix: "",
        digits: Digits::Text(&body[..int_end]),
        decimal,
        remainder,
    };
    write_number(&num, spec, out)
}
