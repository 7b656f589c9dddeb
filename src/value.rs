//! The Python value model: what `json.loads` makes of a record's args, and CPython's
//! `str()`, `repr()` and `ascii()` of each value, byte for byte.
//!
//! Everything that prints a value writes through [`Out`](crate::format::Out), so the same
//! code both measures (a counting sink) and renders (a bounded buffer): nothing is ever
//! built only to find out that it is too large.

mod printable;

use indexmap::IndexMap;
use num_bigint::{BigInt, Sign};
use num_traits::{ToPrimitive, Zero};

use crate::format::number;
use crate::format::{Out, Reject};

/// A Python int. Small values stay inline; `Big` only holds values outside `i64`, or a
/// literal too long ever to be rendered (see [`Int::huge_literal`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Int {
    Small(i64),
    /// Boxed: keeps `Int` (and so every `Value`) small; big ints are rare.
    ///
    /// A `Big` whose value fits in an `i64` (which a real big int never does) is a huge
    /// literal: it holds its decimal digit count, with the literal's sign. Kept inside
    /// `Big` rather than as a variant of its own so that code matching `Small` / `Big`
    /// (every `Big` is "too large for a machine word") stays right for it.
    Big(Box<BigInt>),
}

impl Int {
    pub fn from_i64(v: i64) -> Int {
        Int::Small(v)
    }

    /// Keeps the invariant that `Big` never holds a value that fits in an `i64`.
    pub fn from_bigint(b: BigInt) -> Int {
        match b.to_i64() {
            Some(v) => Int::Small(v),
            None => Int::Big(Box::new(b)),
        }
    }

    /// An int literal of `digits` decimal digits (more than could ever be rendered within
    /// the limits, in any base) kept without its value: converting a million digits costs
    /// seconds and hundreds of MB, and every behaviour of such an int follows from its
    /// digit count and sign (`str()` is too long, `float()` overflows, a `*` width is over
    /// the limit, the fallback names it `<int of N digits>`). Its methods answer from those;
    /// [`Int::to_bigint`] cannot.
    pub fn huge_literal(digits: usize, negative: bool) -> Int {
        let count = BigInt::from(i64::try_from(digits).unwrap_or(i64::MAX));
        Int::Big(Box::new(if negative { -count } else { count }))
    }

    /// The decimal digit count of a [`huge literal`](Int::huge_literal); `None` for an int
    /// that holds its value.
    pub fn literal_digits(&self) -> Option<usize> {
        match self {
            Int::Small(_) => None,
            Int::Big(b) => b
                .to_i64()
                .map(|d| usize::try_from(d.unsigned_abs()).unwrap_or(usize::MAX)),
        }
    }

    pub fn is_negative(&self) -> bool {
        match self {
            Int::Small(v) => *v < 0,
            Int::Big(b) => b.sign() == Sign::Minus,
        }
    }

    pub fn is_zero(&self) -> bool {
        match self {
            Int::Small(v) => *v == 0,
            Int::Big(b) => b.is_zero(),
        }
    }

    /// The value. A [huge literal](Int::huge_literal) has none: the smallest magnitude of
    /// its digit count (`±10^(digits-1)`) stands in. No caller needs it: every size
    /// question about one is answered from its digit count first.
    pub fn to_bigint(&self) -> BigInt {
        match (self, self.literal_digits()) {
            (Int::Small(v), _) => BigInt::from(*v),
            (Int::Big(b), None) => (**b).clone(),
            (Int::Big(b), Some(d)) => {
                let m = num_traits::pow(BigInt::from(10u8), d.saturating_sub(1));
                if b.sign() == Sign::Minus {
                    -m
                } else {
                    m
                }
            }
        }
    }

    /// The value as an `i64`, if it fits (a `Big` never does).
    pub fn to_i64(&self) -> Option<i64> {
        match self {
            Int::Small(v) => Some(*v),
            Int::Big(_) => None,
        }
    }

    /// Python's `int.bit_length()`: bits of `|n|`, 0 for zero. For a
    /// [huge literal](Int::huge_literal), the fewest bits an int of its digit count has.
    pub fn bits(&self) -> u64 {
        match (self, self.literal_digits()) {
            (Int::Small(v), _) => u64::from(64 - v.unsigned_abs().leading_zeros()),
            (Int::Big(b), None) => b.bits(),
            // |n| >= 10^(d-1) >= 2^floor((d-1)·log2 10); the constant is a hair under it.
            (Int::Big(_), Some(d)) => {
                let d = u128::try_from(d.saturating_sub(1)).unwrap_or(u128::MAX);
                let b = d.saturating_mul(3_321_928_094) / 1_000_000_000 + 1;
                u64::try_from(b).unwrap_or(u64::MAX)
            }
        }
    }

    /// CPython's `float(n)`, correctly rounded; `None` is its `OverflowError: int too large
    /// to convert to float` (always, for a huge literal).
    pub fn to_f64(&self) -> Option<f64> {
        let f = match (self, self.literal_digits()) {
            (Int::Small(v), _) => *v as f64,
            (Int::Big(b), None) => b.to_f64()?,
            (Int::Big(_), Some(_)) => return None,
        };
        f.is_finite().then_some(f)
    }

    /// CPython's `int(x)` of a float (truncation), with its errors for inf and NaN.
    pub fn from_f64_trunc(x: f64) -> Result<Int, Reject> {
        if x.is_nan() {
            return Err(Reject::format_error(
                "ValueError",
                "cannot convert float NaN to integer",
            ));
        }
        if x.is_infinite() {
            return Err(Reject::format_error(
                "OverflowError",
                "cannot convert float infinity to integer",
            ));
        }
        let t = x.trunc();
        if t.abs() < 9.0e18 {
            return Ok(Int::Small(t as i64));
        }
        // Exact: an integral float is a dyadic integer.
        let b: Option<BigInt> = num_traits::FromPrimitive::from_f64(t);
        Ok(b.map_or(Int::Small(0), Int::from_bigint))
    }

    /// The `OverflowError` of CPython's `float(n)` for an int out of range.
    pub fn float_overflow() -> Reject {
        Reject::format_error("OverflowError", "int too large to convert to float")
    }
}

/// A Python value as `json.loads` makes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(Int),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// Insertion-ordered; a duplicate key keeps its first position and its last value.
    Dict(Box<IndexMap<String, Value>>),
}

impl Value {
    /// Python's type name, as CPython's error messages spell it (`int`, `str`, `NoneType`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }
}

/// CPython's `str(v)`.
pub fn write_str(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(n) => number::write_int_decimal(n, out),
        _ => write_repr(v, out),
    }
}

/// CPython's `repr(v)`.
pub fn write_repr(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(n) => number::write_int_decimal(n, out),
        Value::Float(x) => out.push_str(&number::float_repr(*x)),
        Value::Str(s) => write_str_repr(s, out),
        Value::List(items) => {
            out.push_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ")?;
                }
                write_repr(item, out)?;
            }
            out.push_char(']')
        }
        Value::Dict(map) => write_dict_repr(map, out),
    }
}

/// `repr(d)` of a dict held outside a [`Value`] (a record's named args).
pub fn write_dict_repr(map: &IndexMap<String, Value>, out: &mut dyn Out) -> Result<(), Reject> {
    out.push_char('{')?;
    for (i, (k, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ")?;
        }
        write_str_repr(k, out)?;
        out.push_str(": ")?;
        write_repr(item, out)?;
    }
    out.push_char('}')
}

/// `ascii(d)` of a dict held outside a [`Value`].
pub fn write_dict_ascii(map: &IndexMap<String, Value>, out: &mut dyn Out) -> Result<(), Reject> {
    let mut a = AsciiOut { inner: out };
    write_dict_repr(map, &mut a)
}

/// CPython's `ascii(v)`: the repr, with every non-ASCII character escaped.
pub fn write_ascii(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    let mut a = AsciiOut { inner: out };
    write_repr(v, &mut a)
}

/// The error CPython's `str(v)` / `repr(v)` would raise, found without writing anything:
/// only an int of more than 4,300 decimal digits can make them fail. Lets a caller that
/// keeps only a prefix of the text (`%.5s`) stop early and still raise what CPython raises.
pub fn check_printable(v: &Value) -> Result<(), Reject> {
    match v {
        Value::Int(n) if number::exceeds_str_digits(n) => Err(number::int_too_long()),
        Value::List(items) => items.iter().try_for_each(check_printable),
        Value::Dict(map) => map.values().try_for_each(check_printable),
        _ => Ok(()),
    }
}

/// Python's `str.isprintable()` for one character, from CPython 3.11's Unicode database.
pub fn is_printable(c: char) -> bool {
    let cp = u32::from(c);
    if (0x20..0x7F).contains(&cp) {
        return true;
    }
    if cp < 0xA1 {
        return false;
    }
    let table = printable::NON_PRINTABLE;
    let i = table.partition_point(|&(_, last)| last < cp);
    !(i < table.len() && table[i].0 <= cp)
}

/// `repr(s)`: CPython's quote choice and escapes (`unicode_repr`).
pub fn write_str_repr(s: &str, out: &mut dyn Out) -> Result<(), Reject> {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push_char(quote)?;
    let mut run_start = 0;
    for (i, c) in s.char_indices() {
        let plain = c != quote && c != '\\' && is_printable(c);
        if plain {
            continue;
        }
        if run_start < i {
            out.push_str(&s[run_start..i])?;
        }
        run_start = i + c.len_utf8();
        match c {
            '\\' => out.push_str("\\\\")?,
            '\t' => out.push_str("\\t")?,
            '\n' => out.push_str("\\n")?,
            '\r' => out.push_str("\\r")?,
            c if c == quote => {
                out.push_char('\\')?;
                out.push_char(c)?;
            }
            c => write_escape(c, out)?,
        }
    }
    if run_start < s.len() {
        out.push_str(&s[run_start..])?;
    }
    out.push_char(quote)
}

/// `\xhh`, `\uhhhh` or `\Uhhhhhhhh`, lower-case hex, by the size of the code point.
fn write_escape(c: char, out: &mut dyn Out) -> Result<(), Reject> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let cp = u32::from(c);
    let (lead, ndigits) = match cp {
        0..=0xFF => ('x', 2),
        0x100..=0xFFFF => ('u', 4),
        _ => ('U', 8),
    };
    let mut buf = [0u8; 10];
    buf[0] = b'\\';
    buf[1] = lead as u8;
    for k in 0..ndigits {
        let shift = 4 * (ndigits - 1 - k);
        buf[2 + k] = HEX[((cp >> shift) & 0xF) as usize];
    }
    // Only ASCII was written.
    out.push_str(std::str::from_utf8(&buf[..2 + ndigits]).unwrap_or(""))
}

/// Escapes every non-ASCII character on its way to `inner` (`ascii()` = repr, then
/// backslashreplace).
struct AsciiOut<'a> {
    inner: &'a mut dyn Out,
}

impl Out for AsciiOut<'_> {
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        let mut run_start = 0;
        for (i, c) in s.char_indices() {
            if c.is_ascii() {
                continue;
            }
            if run_start < i {
                self.inner.push_str(&s[run_start..i])?;
            }
            run_start = i + c.len_utf8();
            write_escape(c, self.inner)?;
        }
        if run_start < s.len() {
            self.inner.push_str(&s[run_start..])?;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_small_because_parsing_allocates_one_per_json_value() {
        // A 1 MiB args array of small ints is ~500k values: at 72 bytes each that was
        // 38 MB before a single byte of output. Boxing the rare big variants halves it.
        assert!(
            std::mem::size_of::<Value>() <= 32,
            "{}",
            std::mem::size_of::<Value>()
        );
        assert!(std::mem::size_of::<Int>() <= 16);
    }
    use crate::format::Buf;

    fn render(f: fn(&Value, &mut dyn Out) -> Result<(), Reject>, v: &Value) -> String {
        let mut b = Buf::new(1 << 20, 0);
        f(v, &mut b)
            .map(|_| b.into_string())
            .unwrap_or_else(|e| format!("ERR {e:?}"))
    }

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    #[test]
    fn repr_of_str_picks_quotes_and_escapes_like_cpython() {
        let cases: &[(&str, &str)] = &[
            ("abc", "'abc'"),
            ("it's", "\"it's\""),
            ("'\"", "'\\'\"'"),
            ("a\\b\t\n\r", "'a\\\\b\\t\\n\\r'"),
            ("\x00\x7f\u{85}\u{a0}", "'\\x00\\x7f\\x85\\xa0'"),
            ("é😀", "'é😀'"),
            (
                "\u{200b}\u{2028}\u{e000}\u{10ffff}",
                "'\\u200b\\u2028\\ue000\\U0010ffff'",
            ),
            ("\u{ad}", "'\\xad'"),
        ];
        for (input, want) in cases {
            assert_eq!(render(write_repr, &s(input)), *want, "{input:?}");
        }
    }

    #[test]
    fn ascii_escapes_non_ascii_after_repr() {
        assert_eq!(
            render(write_ascii, &s("é\x00😀")),
            "'\\xe9\\x00\\U0001f600'"
        );
        let l = Value::List(vec![s("ā"), Value::None]);
        assert_eq!(render(write_ascii, &l), "['\\u0101', None]");
    }

    #[test]
    fn str_and_repr_of_containers_nest_like_cpython() {
        let mut m = IndexMap::new();
        m.insert("k".to_string(), Value::None);
        m.insert(
            "l".to_string(),
            Value::List(vec![Value::Bool(true), Value::Float(1e20)]),
        );
        let d = Value::Dict(Box::new(m));
        assert_eq!(render(write_str, &d), "{'k': None, 'l': [True, 1e+20]}");
        assert_eq!(
            render(write_str, &Value::Dict(Box::new(IndexMap::new()))),
            "{}"
        );
        assert_eq!(render(write_str, &Value::List(vec![])), "[]");
        assert_eq!(render(write_str, &s("x'y")), "x'y");
        assert_eq!(render(write_repr, &Value::Float(-0.0)), "-0.0");
        assert_eq!(
            render(write_str, &Value::Int(Int::Small(i64::MIN))),
            "-9223372036854775808"
        );
    }

    #[test]
    fn str_of_int_over_4300_digits_is_value_error() {
        let big = Value::Int(Int::from_bigint(num_traits::pow(BigInt::from(10), 4300)));
        assert!(render(write_str, &big).starts_with("ERR FormatError { exception: \"ValueError\""));
        assert!(check_printable(&Value::List(vec![big])).is_err());
        let ok = Value::Int(Int::from_bigint(-num_traits::pow(BigInt::from(10), 4299)));
        assert_eq!(render(write_str, &ok).len(), 4301);
        assert!(check_printable(&ok).is_ok());
    }

    #[test]
    fn repr_stops_at_the_output_bound() {
        let big = s(&"x".repeat(100_000));
        let mut b = Buf::new(10, 0);
        assert!(matches!(
            write_repr(&big, &mut b),
            Err(Reject::OutputTooLarge { .. })
        ));
        assert!(b.len() <= 10);
    }

    #[test]
    fn int_helpers_follow_cpython() {
        assert_eq!(Int::from_bigint(BigInt::from(5)), Int::Small(5));
        assert_eq!(Int::Small(-8).bits(), 4);
        assert_eq!(Int::Small(0).bits(), 0);
        assert_eq!(Int::from_f64_trunc(-2.9), Ok(Int::Small(-2)));
        assert_eq!(
            Int::from_f64_trunc(1e20).map(|n| n.to_bigint().to_string()),
            Ok("100000000000000000000".to_string())
        );
        assert!(Int::from_f64_trunc(f64::NAN).is_err());
        let huge = Int::from_bigint(num_traits::pow(BigInt::from(10), 400));
        assert_eq!(huge.to_f64(), None);
        assert!(!huge.is_negative() && !huge.is_zero());
    }

    #[test]
    fn printable_table_agrees_with_spot_checks() {
        for c in [' ', 'a', '~', '\u{a1}', 'é', '\u{3001}', '😀'] {
            assert!(is_printable(c), "{c:?}");
        }
        for c in [
            '\u{7f}',
            '\u{a0}',
            '\u{ad}',
            '\u{2028}',
            '\u{3000}',
            '\u{e000}',
            '\u{10ffff}',
        ] {
            assert!(!is_printable(c), "{c:?}");
        }
    }
}
