//! Numeric rendering shared by the `%` and `{}` styles: CPython's
//! `PyOS_double_to_string` for floats and exact radix conversion for ints of any size
//! (with CPython's 4,300-digit limit on decimal conversion).
//!
//! Never hands a width or precision to `format!`: std panics above 65,535.

use super::Reject;
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

/// CPython's `PyOS_double_to_string(x, kind, precision, flags)`, sign included.
pub fn float_to_string(x: f64, f: &FloatFmt) -> String {
    let _ = (x, f);
    todo!("number::float_to_string")
}

/// CPython's `repr(x)` / `str(x)` of a float: `0.1`, `1e+20`, `1e-05`, `-0.0`, `inf`, `nan`.
pub fn float_repr(x: f64) -> String {
    let _ = x;
    todo!("number::float_repr")
}

/// The digits of `|n|` in `radix` (2, 8, 10 or 16), no sign or prefix. Decimal conversion of
/// more than 4,300 digits is CPython's `ValueError: Exceeds the limit (4300 digits) ...`.
pub fn int_magnitude_digits(n: &Int, radix: u32, upper: bool) -> Result<String, Reject> {
    let _ = (n, radix, upper);
    todo!("number::int_magnitude_digits")
}

/// A lower bound of the number of digits of `|n|` in `radix`, computed from its bit length
/// without converting, so a size check never pays for the conversion it would refuse.
pub fn int_digits_lower_bound(n: &Int, radix: u32) -> usize {
    let _ = (n, radix);
    todo!("number::int_digits_lower_bound")
}
