//! Numeric rendering shared by the `%` and `{}` styles: CPython's
//! `PyOS_double_to_string` for floats and exact radix conversion for ints of any size
//! (with CPython's 4,300-digit limit on decimal conversion).
//!
//! Never hands a width or precision to `format!`: std panics above 65,535. Float digits come
//! from `ryu` (shortest) or std's correctly rounded `{:.N}` / `{:.Ne}` with a capped `N`; the
//! layout (zero padding, point, exponent) is CPython's `format_float_short`, written through
//! [`Out`] so that a huge precision is measured, not built.

use std::sync::OnceLock;

use num_bigint::{BigUint, Sign};
use num_traits::Zero;

use super::{Out, Reject};
use crate::value::Int;

/// The float presentation, as `PyOS_double_to_string`'s `format_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatKind {
    /// `e`: scientific, `precision` digits after the point.
    Exp,
    /// `f`: fixed, `precision` digits after the point.
    Fixed,
    /// `g`: general, `precision` significant digits (0 means 1).
    General,
    /// `r`: repr, the shortest string that round-trips (precision ignored).
    Repr,
}

/// Flags of `PyOS_double_to_string`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloatFmt {
    pub kind: FloatKind,
    /// `E`/`F`/`G`: upper-case exponent and `INF`/`NAN`.
    pub upper: bool,
    pub precision: usize,
    /// `Py_DTSF_SIGN`: always write a sign (`+` for non-negative).
    pub always_sign: bool,
    /// `Py_DTSF_ADD_DOT_0`: add `.0` when the result looks like an int (`repr`, `str`).
    pub add_dot_0: bool,
    /// `Py_DTSF_ALT`: `#`, keep the point and trailing zeros.
    pub alt: bool,
    /// `Py_DTSF_NO_NEG_0`: the `z` option of the format mini-language.
    pub no_neg_0: bool,
}

impl FloatFmt {
    /// `repr(x)`: kind `r`, `add_dot_0`, nothing else.
    pub const REPR: FloatFmt = FloatFmt {
        kind: FloatKind::Repr,
        upper: false,
        precision: 0,
        always_sign: false,
        add_dot_0: true,
        alt: false,
        no_neg_0: false,
    };
}

/// CPython's `int_max_str_digits` default: decimal conversions longer than this raise.
pub const INT_MAX_STR_DIGITS: usize = 4300;

/// An f64's exact decimal expansion has at most 767 significant digits and 1,074 digits
/// after the point; rounding at this many digits is therefore exact, and every digit asked
/// for beyond it is a zero we write ourselves.
const EXACT_DIGITS_CAP: usize = 1100;

/// CPython's `PyOS_double_to_string(x, kind, precision, flags)`, sign included.
pub fn float_to_string(x: f64, f: &FloatFmt) -> String {
    let mut s = StringOut(String::new());
    // A `StringOut` never refuses a write.
    let _ = write_float(x, f, &mut s);
    s.0
}

/// CPython's `repr(x)` / `str(x)` of a float: `0.1`, `1e+20`, `1e-05`, `-0.0`, `inf`, `nan`.
pub fn float_repr(x: f64) -> String {
    float_to_string(x, &FloatFmt::REPR)
}

/// [`float_to_string`] written through `out`: zero padding goes out as `push_repeat`, so a
/// counting sink measures a huge precision without building it.
pub fn write_float(x: f64, f: &FloatFmt, out: &mut dyn Out) -> Result<(), Reject> {
    let negative = x.is_sign_negative() && !x.is_nan();
    if !x.is_finite() {
        if negative {
            out.push_char('-')?;
        } else if f.always_sign {
            out.push_char('+')?;
        }
        let word = match (x.is_nan(), f.upper) {
            (true, false) => "nan",
            (true, true) => "NAN",
            (false, false) => "inf",
            (false, true) => "INF",
        };
        return out.push_str(word);
    }
    let mut precision = f.precision;
    let d = match f.kind {
        FloatKind::Repr => shortest_digits(x),
        FloatKind::Exp => {
            precision = precision.saturating_add(1);
            significant_digits(x, precision)
        }
        FloatKind::General => {
            if precision == 0 {
                precision = 1;
            }
            significant_digits(x, precision)
        }
        FloatKind::Fixed => fixed_digits(x, precision),
    };
    let digits = d.digits.as_bytes();
    let digits_len = digits.len() as i64;
    let mut decpt = d.decpt;
    let precision = i64::try_from(precision)
        .unwrap_or(i64::MAX / 4)
        .min(i64::MAX / 4);

    let mut negative = negative;
    if f.no_neg_0 && negative && (digits.is_empty() || digits == b"0") {
        negative = false;
    }

    let mut use_exp = false;
    let mut vdigits_end = digits_len;
    match f.kind {
        FloatKind::Exp => {
            use_exp = true;
            vdigits_end = precision;
        }
        FloatKind::Fixed => vdigits_end = decpt.saturating_add(precision),
        FloatKind::General => {
            let threshold = if f.add_dot_0 {
                precision - 1
            } else {
                precision
            };
            if decpt <= -4 || decpt > threshold {
                use_exp = true;
            }
            if f.alt {
                vdigits_end = precision;
            }
        }
        FloatKind::Repr => {
            if decpt <= -4 || decpt > 16 {
                use_exp = true;
            }
        }
    }
    let mut exp = 0i64;
    if use_exp {
        exp = decpt - 1;
        decpt = 1;
    }
    let vdigits_start = if decpt <= 0 { decpt - 1 } else { 0 };
    if !use_exp && f.add_dot_0 {
        vdigits_end = vdigits_end.max(decpt + 1);
    } else {
        vdigits_end = vdigits_end.max(decpt);
    }

    if negative {
        out.push_char('-')?;
    } else if f.always_sign {
        out.push_char('+')?;
    }
    // Tracks whether the last byte written is the point, so it can be dropped (non-alt).
    let mut pending_point = false;
    let mut w = Writer {
        out,
        pending_point: &mut pending_point,
    };
    if decpt <= 0 {
        w.zeros(decpt - vdigits_start)?;
        w.point()?;
        w.zeros(-decpt)?;
    } else {
        w.zeros(-vdigits_start)?;
    }
    let ds = d.digits.as_str();
    if 0 < decpt && decpt <= digits_len {
        let cut = decpt as usize;
        w.text(&ds[..cut])?;
        w.point()?;
        w.text(&ds[cut..])?;
    } else {
        w.text(ds)?;
    }
    if digits_len < decpt {
        w.zeros(decpt - digits_len)?;
        w.point()?;
        w.zeros(vdigits_end - decpt)?;
    } else {
        w.zeros(vdigits_end - digits_len)?;
    }
    if pending_point && f.alt {
        out.push_char('.')?;
    }
    if use_exp {
        out.push_char(if f.upper { 'E' } else { 'e' })?;
        out.push_char(if exp < 0 { '-' } else { '+' })?;
        let mag = exp.unsigned_abs();
        if mag < 10 {
            out.push_char('0')?;
        }
        out.push_str(&mag.to_string())?;
    }
    Ok(())
}

/// Writes the pieces of a float, holding back a point until something follows it, so that
/// a trailing point can be dropped as CPython does (`p[-1] == '.'`).
struct Writer<'a, 'b> {
    out: &'a mut dyn Out,
    pending_point: &'b mut bool,
}

impl Writer<'_, '_> {
    fn flush(&mut self) -> Result<(), Reject> {
        if *self.pending_point {
            *self.pending_point = false;
            self.out.push_char('.')?;
        }
        Ok(())
    }

    fn point(&mut self) -> Result<(), Reject> {
        self.flush()?;
        *self.pending_point = true;
        Ok(())
    }

    fn zeros(&mut self, n: i64) -> Result<(), Reject> {
        if n > 0 {
            self.flush()?;
            self.out
                .push_repeat('0', usize::try_from(n).unwrap_or(usize::MAX))?;
        }
        Ok(())
    }

    fn text(&mut self, s: &str) -> Result<(), Reject> {
        if !s.is_empty() {
            self.flush()?;
            self.out.push_str(s)?;
        }
        Ok(())
    }
}

/// `_Py_dg_dtoa`'s answer: significant digits without trailing zeros, and the position of
/// the point relative to the first digit (`0.25` is `"25"`, 0). Zero is `"0"`, 1.
struct Digits {
    digits: String,
    decpt: i64,
}

/// Splits a std/ryu rendering (`-1.25e-7`, `0.0012`, `1e20`) into [`Digits`].
fn digits_of(rendered: &str) -> Digits {
    let s = rendered.trim_start_matches('-');
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    let mut all = String::with_capacity(int_part.len() + frac_part.len());
    all.push_str(int_part);
    all.push_str(frac_part);
    let lead = all.bytes().take_while(|&b| b == b'0').count();
    let trimmed = all[lead..].trim_end_matches('0');
    if trimmed.is_empty() {
        return Digits {
            digits: "0".to_string(),
            decpt: 1,
        };
    }
    Digits {
        digits: trimmed.to_string(),
        decpt: int_part.len() as i64 - lead as i64 + exp,
    }
}

fn shortest_digits(x: f64) -> Digits {
    let mut b = ryu::Buffer::new();
    digits_of(b.format_finite(x))
}

/// Mode 2 of `_Py_dg_dtoa`: `n` significant digits, correctly rounded (half to even).
fn significant_digits(x: f64, n: usize) -> Digits {
    let n = n.clamp(1, EXACT_DIGITS_CAP);
    digits_of(&format!("{:.*e}", n - 1, x))
}

/// Mode 3 of `_Py_dg_dtoa`: `n` digits after the point, correctly rounded.
fn fixed_digits(x: f64, n: usize) -> Digits {
    digits_of(&format!("{:.*}", n.min(EXACT_DIGITS_CAP), x))
}

/// An [`Out`] into a plain `String`, for results already known to be small.
struct StringOut(String);

impl Out for StringOut {
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        self.0.push_str(s);
        Ok(())
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// CPython's message when a decimal conversion would exceed `int_max_str_digits`.
pub fn int_too_long() -> Reject {
    Reject::format_error(
        "ValueError",
        "Exceeds the limit (4300 digits) for integer string conversion; \
         use sys.set_int_max_str_digits() to increase the limit",
    )
}

/// The digits of `|n|` in `radix` (2, 8, 10 or 16), no sign or prefix. Decimal conversion of
/// more than 4,300 digits is CPython's `ValueError: Exceeds the limit (4300 digits) ...`.
pub fn int_magnitude_digits(n: &Int, radix: u32, upper: bool) -> Result<String, Reject> {
    if radix == 10 && int_digits_lower_bound(n, 10) > INT_MAX_STR_DIGITS {
        return Err(int_too_long());
    }
    if radix == 10 && exceeds_str_digits(n) {
        return Err(int_too_long());
    }
    if n.literal_digits().is_some() {
        // A huge literal is longer than the output limit in every base: the decoder keeps
        // one only then, and callers refuse by `int_digits_lower_bound` before converting.
        let at_least = int_digits_lower_bound(n, radix);
        return Err(Reject::OutputTooLarge {
            at_least,
            limit: at_least.saturating_sub(1),
        });
    }
    let mut s = match n {
        Int::Small(v) => {
            let m = v.unsigned_abs();
            match radix {
                2 => format!("{m:b}"),
                8 => format!("{m:o}"),
                16 => format!("{m:x}"),
                _ => m.to_string(),
            }
        }
        Int::Big(b) => b.magnitude().to_str_radix(radix),
    };
    if radix == 10 && s.len() > INT_MAX_STR_DIGITS {
        return Err(int_too_long());
    }
    if upper {
        s.make_ascii_uppercase();
    }
    Ok(s)
}

/// A lower bound of the number of digits of `|n|` in `radix`, computed from its bit length
/// without converting, so a size check never pays for the conversion it would refuse.
/// Exact for radix 2, 8 and 16, and for radix 10 of a [huge literal](Int::huge_literal)
/// (its digit count is what it holds).
pub fn int_digits_lower_bound(n: &Int, radix: u32) -> usize {
    if let (Some(d), 10) = (n.literal_digits(), radix) {
        return d;
    }
    let bits = n.bits().max(1);
    match radix {
        2 => usize::try_from(bits).unwrap_or(usize::MAX),
        8 => usize::try_from(bits.div_ceil(3)).unwrap_or(usize::MAX),
        16 => usize::try_from(bits.div_ceil(4)).unwrap_or(usize::MAX),
        _ => {
            // |n| >= 2^(bits-1), so it has at least floor((bits-1)·log10 2) + 1 digits;
            // the constant is a hair under log10 2, which keeps this a lower bound.
            let d = (u128::from(bits - 1) * 30_102_999_566) / 100_000_000_000 + 1;
            usize::try_from(d).unwrap_or(usize::MAX)
        }
    }
}

/// Whether `|n|` has more than 4,300 decimal digits, found without converting it: from
/// its bit length, or, when that cannot tell, by one comparison with `10^4300` (built once
/// per process). Converting first would cost ~50 KB for an int CPython refuses anyway.
pub fn exceeds_str_digits(n: &Int) -> bool {
    if int_digits_lower_bound(n, 10) > INT_MAX_STR_DIGITS {
        return true;
    }
    if int_decimal_digits_upper_bound(n) <= INT_MAX_STR_DIGITS {
        return false;
    }
    match n {
        Int::Small(_) => false,
        Int::Big(b) => b.magnitude() >= ten_pow_max_str_digits(),
    }
}

/// `10^4300`: the smallest magnitude CPython refuses to convert to decimal.
fn ten_pow_max_str_digits() -> &'static BigUint {
    static POW: OnceLock<BigUint> = OnceLock::new();
    POW.get_or_init(|| num_traits::pow(BigUint::from(10u8), INT_MAX_STR_DIGITS))
}

/// The exact number of decimal digits of `|n|` (1 for zero), without converting it and
/// without the 4,300-digit rule: from its bit length, and at most one comparison with a
/// power of ten when that leaves two candidates.
pub fn int_decimal_digits(n: &Int) -> usize {
    let lo = int_digits_lower_bound(n, 10).max(1);
    let hi = int_decimal_digits_upper_bound(n);
    let Int::Big(b) = n else {
        let mut digits = 1;
        let mut m = match n {
            Int::Small(v) => v.unsigned_abs(),
            Int::Big(_) => 0,
        };
        while m >= 10 {
            m /= 10;
            digits += 1;
        }
        return digits;
    };
    if lo >= hi || n.literal_digits().is_some() {
        return lo;
    }
    // The bounds differ by at most one: |n| has `hi` digits iff |n| >= 10^lo.
    let reaches = if lo == INT_MAX_STR_DIGITS {
        b.magnitude() >= ten_pow_max_str_digits()
    } else {
        *b.magnitude() >= num_traits::pow(BigUint::from(10u8), lo)
    };
    if reaches {
        hi
    } else {
        lo
    }
}

/// An upper bound of the number of decimal digits of `|n|` (from its bit length).
pub fn int_decimal_digits_upper_bound(n: &Int) -> usize {
    if let Some(d) = n.literal_digits() {
        return d;
    }
    let bits = n.bits().max(1);
    let d = (u128::from(bits) * 30_103_000_000) / 100_000_000_000 + 1;
    usize::try_from(d).unwrap_or(usize::MAX)
}

/// `str(n)` through `out`, sign included, with CPython's 4,300-digit rule. A machine int
/// is converted on the stack: a repr of many small ints allocates nothing.
///
/// An int whose bit length alone proves it too long first pushes its lower-bound length
/// (filler) so that a bounded sink reports `OutputTooLarge` when even that does not fit:
/// the limits win over CPython's `ValueError` (docs/record.md: a 999,000-digit int is
/// `output-too-large`). On `Err` the sink's content is garbage, as after any error.
pub fn write_int_decimal(n: &Int, out: &mut dyn Out) -> Result<(), Reject> {
    match n {
        Int::Small(v) => {
            let mut buf = [0u8; 20];
            let mut i = buf.len();
            let mut m = v.unsigned_abs();
            loop {
                i -= 1;
                buf[i] = b'0' + (m % 10) as u8;
                m /= 10;
                if m == 0 {
                    break;
                }
            }
            if *v < 0 {
                out.push_char('-')?;
            }
            // Only ASCII digits were written.
            out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"))
        }
        Int::Big(b) => {
            if b.is_zero() {
                return out.push_char('0');
            }
            let lb = int_digits_lower_bound(n, 10);
            if lb > INT_MAX_STR_DIGITS {
                out.push_repeat('0', lb + usize::from(b.sign() == Sign::Minus))?;
                return Err(int_too_long());
            }
            let digits = int_magnitude_digits(n, 10, false)?;
            if b.sign() == Sign::Minus {
                out.push_char('-')?;
            }
            out.push_str(&digits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigInt;

    fn fmt(kind: FloatKind, precision: usize) -> FloatFmt {
        FloatFmt {
            kind,
            upper: false,
            precision,
            always_sign: false,
            add_dot_0: false,
            alt: false,
            no_neg_0: false,
        }
    }

    #[test]
    fn float_repr_matches_cpython() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.0, "1.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2e16 + 8.0, "2.000000000000001e+16"),
            (1.5, "1.5"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(*x), *want, "{x}");
        }
    }

    #[test]
    fn float_fixed_exp_general_match_cpython() {
        let cases: &[(f64, FloatKind, usize, &str)] = &[
            (0.125, FloatKind::Fixed, 2, "0.12"),
            (2.5, FloatKind::Fixed, 0, "2"),
            (1.5, FloatKind::Exp, 3, "1.500e+00"),
            (0.0, FloatKind::Exp, 0, "0e+00"),
            (1e100, FloatKind::General, 6, "1e+100"),
            (123456.0, FloatKind::General, 6, "123456"),
            (1234567.0, FloatKind::General, 6, "1.23457e+06"),
            (0.0001, FloatKind::General, 6, "0.0001"),
            (0.00001, FloatKind::General, 6, "1e-05"),
        ];
        for &(x, kind, precision, want) in cases {
            assert_eq!(float_to_string(x, &fmt(kind, precision)), want, "{x}");
        }
        let mut alt = fmt(FloatKind::General, 6);
        alt.alt = true;
        assert_eq!(float_to_string(1.0, &alt), "1.00000");
        let mut alt0 = fmt(FloatKind::Fixed, 0);
        alt0.alt = true;
        assert_eq!(float_to_string(3.0, &alt0), "3.");
        let mut up = fmt(FloatKind::Exp, 2);
        up.upper = true;
        assert_eq!(float_to_string(f64::NAN, &up), "NAN");
        assert_eq!(float_to_string(12345.0, &up), "1.23E+04");
        let mut z = fmt(FloatKind::Fixed, 1);
        z.no_neg_0 = true;
        assert_eq!(float_to_string(-0.01, &z), "0.0");
    }

    #[test]
    fn float_huge_precision_pads_zeros_exactly() {
        let s = float_to_string(0.1, &fmt(FloatKind::Fixed, 100_000));
        assert_eq!(s.len(), 100_002);
        assert!(s.starts_with("0.1000000000000000055511151231257827"));
        assert!(s.ends_with("000"));
        let e = float_to_string(5e-324, &fmt(FloatKind::Exp, 70_000));
        assert!(e.ends_with("e-324"));
    }

    #[test]
    fn int_decimal_over_4300_digits_is_value_error_without_converting() {
        let big = Int::from_bigint(BigInt::from(10u8).pow(999_000));
        assert_eq!(int_magnitude_digits(&big, 10, false), Err(int_too_long()));
        let edge = Int::from_bigint(BigInt::from(10u8).pow(4299));
        assert_eq!(
            int_magnitude_digits(&edge, 10, false).map(|s| s.len()),
            Ok(4300)
        );
        let over = Int::from_bigint(BigInt::from(10u8).pow(4300));
        assert_eq!(int_magnitude_digits(&over, 10, false), Err(int_too_long()));
        assert_eq!(
            int_magnitude_digits(&Int::Small(-255), 16, true),
            Ok("FF".to_string())
        );
    }

    #[test]
    fn int_decimal_digits_are_exact_and_the_4300_rule_needs_no_conversion() {
        for k in [1u32, 18, 19, 20, 99, 4299, 4300, 4301, 9000] {
            let p = BigInt::from(10u8).pow(k);
            for (n, want) in [(p.clone() - 1, k), (p.clone(), k + 1), (-p, k + 1)] {
                let n = Int::from_bigint(n);
                assert_eq!(int_decimal_digits(&n), want as usize, "10^{k} ± 1");
                assert_eq!(exceeds_str_digits(&n), want > 4300, "10^{k} ± 1");
            }
        }
        for v in [0, 7, -7, 10, -100, i64::MAX, i64::MIN] {
            let mut s = StringOut(String::new());
            assert_eq!(write_int_decimal(&Int::Small(v), &mut s), Ok(()));
            assert_eq!(s.0, v.to_string());
        }
        assert_eq!(int_decimal_digits(&Int::Small(0)), 1);
        assert_eq!(int_decimal_digits(&Int::Small(i64::MIN)), 19);
        assert_eq!(int_decimal_digits(&Int::huge_literal(99_999, true)), 99_999);
        assert!(exceeds_str_digits(&Int::huge_literal(99_999, false)));
        let edge = Int::from_bigint(BigInt::from(10u8).pow(4300));
        // 10^4300 is built once per process; that is not the record's cost.
        assert!(exceeds_str_digits(&edge));
        let (r, bytes) = crate::alloc::measure(|| int_magnitude_digits(&edge, 10, false));
        assert_eq!(r, Err(int_too_long()));
        assert!(bytes < 2048, "refused without converting: {bytes} bytes");
    }

    #[test]
    fn int_digits_lower_bound_is_a_lower_bound() {
        for k in [1u32, 2, 9, 10, 99, 100, 4300, 12345] {
            let n = Int::from_bigint(BigInt::from(10u8).pow(k));
            let lb = int_digits_lower_bound(&n, 10);
            assert!(lb <= k as usize + 1 && lb + 1 >= k as usize, "{k} {lb}");
            let m = Int::from_bigint(BigInt::from(10u8).pow(k) - 1);
            assert!(int_digits_lower_bound(&m, 10) <= k as usize);
            assert!(int_decimal_digits_upper_bound(&m) >= k as usize);
        }
        assert_eq!(int_digits_lower_bound(&Int::Small(0), 10), 1);
        assert_eq!(int_digits_lower_bound(&Int::Small(255), 16), 2);
        assert_eq!(int_digits_lower_bound(&Int::Small(256), 8), 3);
    }
}
