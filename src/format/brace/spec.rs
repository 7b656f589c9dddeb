//! The format-spec mini-language, read as CPython 3.11's `parse_internal_render_format_spec`
//! reads it: `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`.
//!
//! Reading is split in two. [`parse`] is type-independent and lenient: it keeps going past
//! CPython's errors so that a width or precision later in the spec is still seen (the limits
//! win over CPython's errors), and it remembers the first error. [`RawSpec::finalize`] then
//! applies what depends on the object being formatted (default type and alignment).

/// Thousands grouping asked for by the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grouping {
    None,
    Comma,
    Underscore,
}

/// The first error CPython's spec parser raises, before the type is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecError {
    /// A width or precision over `PY_SSIZE_T_MAX`.
    TooManyDigits,
    CommaAndUnderscore,
    MissingPrecision,
    /// More than one character left where the type should be.
    Invalid,
}

/// A spec as written, before the object's defaults apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawSpec {
    /// Set only by the two-character `fill align` form.
    pub fill: Option<char>,
    pub align: Option<char>,
    pub sign: Option<char>,
    pub no_neg_0: bool,
    pub alternate: bool,
    /// The `0` flag (only read when no fill was given).
    pub zero: bool,
    /// Saturates at `u64::MAX` (CPython raises above `isize::MAX`: see `error`).
    pub width: Option<u64>,
    pub grouping: Grouping,
    pub precision: Option<u64>,
    pub ty: Option<char>,
    pub error: Option<SpecError>,
}

/// A spec with the object's defaults applied and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub fill: char,
    pub align: char,
    pub sign: Option<char>,
    pub no_neg_0: bool,
    pub alternate: bool,
    pub width: Option<usize>,
    /// `(group size, separator)`: 3 for `,`/`_` on decimals, 4 for `_` on `b o x X`.
    pub grouping: Option<(usize, char)>,
    pub precision: Option<usize>,
    /// `'\0'` when the spec has none and the object's default is none (floats).
    pub ty: char,
}

/// Why a spec is refused, with CPython's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecFail {
    Parse(SpecError),
    SeparatorWithType(char, char),
}

impl SpecFail {
    /// CPython's `ValueError` text; `spec` and `type_name` name the spec and the object.
    pub fn message(self, spec: &str, type_name: &str) -> String {
        match self {
            SpecFail::Parse(SpecError::TooManyDigits) => {
                "Too many decimal digits in format string".to_string()
            }
            SpecFail::Parse(SpecError::CommaAndUnderscore) => {
                "Cannot specify both ',' and '_'.".to_string()
            }
            SpecFail::Parse(SpecError::MissingPrecision) => {
                "Format specifier missing precision".to_string()
            }
            SpecFail::Parse(SpecError::Invalid) => {
                format!("Invalid format specifier '{spec}' for object of type '{type_name}'")
            }
            SpecFail::SeparatorWithType(sep, ty) => {
                format!("Cannot specify '{sep}' with {}.", quoted_code(ty))
            }
        }
    }
}

/// `'c'` for a printable ASCII code, `'\x..'` otherwise, as CPython's messages print it.
pub(crate) fn quoted_code(c: char) -> String {
    let cp = u32::from(c);
    if cp > 32 && cp < 128 {
        format!("'{c}'")
    } else {
        format!("'\\x{cp:x}'")
    }
}

fn is_align(c: char) -> bool {
    matches!(c, '<' | '>' | '=' | '^')
}

/// The first code point of each run of ten Unicode decimal digits (`Nd`), as CPython 3.11's
/// database has them: `Py_UNICODE_TODECIMAL` accepts all of them in widths and indexes.
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// `Py_UNICODE_TODECIMAL`: the value of a decimal digit of any script.
pub(crate) fn decimal_value(c: char) -> Option<u32> {
    let cp = u32::from(c);
    if c.is_ascii() {
        return c.to_digit(10);
    }
    let i = DECIMAL_ZEROS.partition_point(|&z| z <= cp);
    let zero = *DECIMAL_ZEROS.get(i.checked_sub(1)?)?;
    (cp - zero < 10).then_some(cp - zero)
}

/// A run of decimal digits: its value (saturated at `u64::MAX`), whether it passed
/// CPython's `PY_SSIZE_T_MAX`, and the bytes it took. `None` when there is no digit.
pub(crate) fn read_integer(s: &str) -> Option<(u64, bool, usize)> {
    let mut acc: u64 = 0;
    let mut overflow = false;
    let mut used = 0;
    for c in s.chars() {
        let Some(d) = decimal_value(c) else { break };
        acc = acc.saturating_mul(10).saturating_add(u64::from(d));
        if acc > i64::MAX as u64 {
            overflow = true;
        }
        used += c.len_utf8();
    }
    (used > 0).then_some((acc, overflow, used))
}

/// Reads `spec` leniently; see the module doc.
pub(crate) fn parse(spec: &str) -> RawSpec {
    let mut r = RawSpec {
        fill: None,
        align: None,
        sign: None,
        no_neg_0: false,
        alternate: false,
        zero: false,
        width: None,
        grouping: Grouping::None,
        precision: None,
        ty: None,
        error: None,
    };
    let fail = |r: &mut RawSpec, e: SpecError| {
        if r.error.is_none() {
            r.error = Some(e);
        }
    };
    let mut rest = spec;
    let mut it = rest.chars();
    let (c0, c1) = (it.next(), it.next());
    match (c0, c1) {
        (Some(f), Some(a)) if is_align(a) => {
            r.fill = Some(f);
            r.align = Some(a);
            rest = &rest[f.len_utf8() + 1..];
        }
        (Some(a), _) if is_align(a) => {
            r.align = Some(a);
            rest = &rest[1..];
        }
        _ => {}
    }
    if let Some(c @ ('+' | '-' | ' ')) = rest.chars().next() {
        r.sign = Some(c);
        rest = &rest[1..];
    }
    if let Some(tail) = rest.strip_prefix('z') {
        r.no_neg_0 = true;
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix('#') {
        r.alternate = true;
        rest = tail;
    }
    if r.fill.is_none() {
        if let Some(tail) = rest.strip_prefix('0') {
            r.zero = true;
            rest = tail;
        }
    }
    if let Some((w, overflow, used)) = read_integer(rest) {
        r.width = Some(w);
        if overflow {
            fail(&mut r, SpecError::TooManyDigits);
        }
        rest = &rest[used..];
    }
    if let Some(tail) = rest.strip_prefix(',') {
        r.grouping = Grouping::Comma;
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix('_') {
        if r.grouping != Grouping::None {
            fail(&mut r, SpecError::CommaAndUnderscore);
        }
        r.grouping = Grouping::Underscore;
        rest = tail;
    }
    if rest.starts_with(',') && r.grouping == Grouping::Underscore {
        fail(&mut r, SpecError::CommaAndUnderscore);
        rest = &rest[1..];
    }
    if let Some(tail) = rest.strip_prefix('.') {
        rest = tail;
        match read_integer(rest) {
            Some((p, overflow, used)) => {
                r.precision = Some(p);
                if overflow {
                    fail(&mut r, SpecError::TooManyDigits);
                }
                rest = &rest[used..];
            }
            None => fail(&mut r, SpecError::MissingPrecision),
        }
    }
    let mut it = rest.chars();
    match (it.next(), it.next()) {
        (Some(_), Some(_)) => fail(&mut r, SpecError::Invalid),
        (Some(t), None) => r.ty = Some(t),
        _ => {}
    }
    r
}

impl RawSpec {
    /// Applies the object's `default_type` (`'\0'` for none) and `default_align`, and the
    /// checks CPython makes before it looks at the object.
    pub fn finalize(&self, default_type: char, default_align: char) -> Result<Spec, SpecFail> {
        if let Some(e) = self.error {
            return Err(SpecFail::Parse(e));
        }
        let mut fill = self.fill.unwrap_or(' ');
        let mut align = self.align.unwrap_or(default_align);
        if self.zero {
            fill = '0';
            if self.align.is_none() && default_align == '>' {
                align = '=';
            }
        }
        let ty = self.ty.unwrap_or(default_type);
        let grouping = match self.grouping {
            Grouping::None => None,
            g => {
                let sep = if g == Grouping::Comma { ',' } else { '_' };
                match ty {
                    'd' | 'e' | 'f' | 'g' | 'E' | 'G' | '%' | 'F' | '\0' => Some((3, sep)),
                    'b' | 'o' | 'x' | 'X' if sep == '_' => Some((4, sep)),
                    _ => return Err(SpecFail::SeparatorWithType(sep, ty)),
                }
            }
        };
        let size = |v: Option<u64>| v.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(Spec {
            fill,
            align,
            sign: self.sign,
            no_neg_0: self.no_neg_0,
            alternate: self.alternate,
            width: size(self.width),
            grouping,
            precision: size(self.precision),
            ty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reads_every_part_in_cpython_order() {
        let r = parse("*^+z#010,.3f");
        assert_eq!(r.fill, Some('*'));
        assert_eq!(r.align, Some('^'));
        assert_eq!(r.sign, Some('+'));
        assert!(r.no_neg_0 && r.alternate);
        assert!(!r.zero, "a fill was given, so 0 is the width");
        assert_eq!(r.width, Some(10));
        assert_eq!(r.grouping, Grouping::Comma);
        assert_eq!(r.precision, Some(3));
        assert_eq!(r.ty, Some('f'));
        assert_eq!(r.error, None);
    }

    #[test]
    fn spec_keeps_reading_past_errors_for_the_limits() {
        let r = parse(",_.99999x");
        assert_eq!(r.error, Some(SpecError::CommaAndUnderscore));
        assert_eq!(r.precision, Some(99999));
        let r = parse("99999999999999999999999");
        assert_eq!(r.error, Some(SpecError::TooManyDigits));
        assert_eq!(r.width, Some(u64::MAX));
        assert_eq!(parse("5xy").error, Some(SpecError::Invalid));
        assert_eq!(parse("5.").error, Some(SpecError::MissingPrecision));
    }

    #[test]
    fn widths_accept_decimal_digits_of_any_script() {
        assert_eq!(parse("\u{665}").width, Some(5));
        assert_eq!(decimal_value('\u{1D7D9}'), Some(1));
        assert_eq!(
            decimal_value('\u{B2}'),
            None,
            "superscript two is not decimal"
        );
    }
}
