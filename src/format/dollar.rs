//! `$` style: CPython 3.11's `string.Template(msg).substitute(args)`, bounded.
//!
//! The placeholder pattern is `string.Template`'s: `$$`, `$name`, `${name}` with the
//! identifier `(?a:[_a-z][_a-z0-9]*)` under `re.IGNORECASE`. The `(?a:)` makes case folding
//! ASCII-only, so non-ASCII letters — the Kelvin sign and the long s included, which Unicode
//! folding would match to `k` and `s` — are never part of a name. Any other `$` is an
//! invalid placeholder.
//!
//! `args` is passed as-is: a dict maps, anything else raises CPython's `TypeError` on its
//! first placeholder. A check pass counts the fields, measures the output and finds the
//! first error before one buffer of the measured size is filled.

use super::{Args, Buf, Counter, Out, Reject};
use crate::config::Limits;
use crate::value::{self, Value};

/// One `$` match of the pattern, in template order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'m> {
    /// `$$`.
    Escaped,
    /// `$name` or `${name}`.
    Named(&'m str),
    /// Any other `$`.
    Invalid,
}

/// Scans `msg` left to right like `pattern.sub`: the literal text before each `$`, the
/// token at that `$` (its byte offset), and the literal tail.
fn scan<'m>(msg: &'m str, mut each: impl FnMut(&'m str, usize, Token<'m>) -> bool) -> &'m str {
    let b = msg.as_bytes();
    let mut lit = 0;
    let mut pos = 0;
    while let Some(k) = memchr::memchr(b'$', &b[pos..]) {
        let at = pos + k;
        let (token, end) = token_at(msg, at);
        if !each(&msg[lit..at], at, token) {
            return "";
        }
        pos = end;
        lit = end;
    }
    &msg[lit..]
}

fn is_ident_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn ident_len(b: &[u8]) -> usize {
    match b.first() {
        Some(&c) if is_ident_start(c) => {
            1 + b[1..]
                .iter()
                .take_while(|&&c| c == b'_' || c.is_ascii_alphanumeric())
                .count()
        }
        _ => 0,
    }
}

/// The token of the `$` at `at` and where the match ends.
fn token_at(msg: &str, at: usize) -> (Token<'_>, usize) {
    let b = msg.as_bytes();
    let rest = &b[at + 1..];
    if rest.first() == Some(&b'$') {
        return (Token::Escaped, at + 2);
    }
    let n = ident_len(rest);
    if n > 0 {
        return (Token::Named(&msg[at + 1..at + 1 + n]), at + 1 + n);
    }
    if rest.first() == Some(&b'{') {
        let n = ident_len(&rest[1..]);
        if n > 0 && rest.get(1 + n) == Some(&b'}') {
            return (Token::Named(&msg[at + 2..at + 2 + n]), at + 3 + n);
        }
    }
    (Token::Invalid, at + 1)
}

/// `Template._invalid`: line and column (code points) of the `$` at `at`, as
/// `template[:at + 1].splitlines(keepends=True)` counts them.
fn invalid_placeholder(msg: &str, at: usize) -> Reject {
    let head = &msg[..at + 1];
    let mut line = 1usize;
    let mut col = 0usize;
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        let breaks = match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                true
            }
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => true,
            _ => false,
        };
        if breaks {
            line += 1;
            col = 0;
        }
    }
    Reject::FormatError {
        exception: "ValueError",
        message: format!("Invalid placeholder in string: line {line}, col {col}"),
        offset: Some(at),
    }
}

/// `mapping[name]` with `args` passed as-is.
fn lookup<'a>(args: Args<'a>, name: &str) -> Result<&'a Value, Reject> {
    let type_error = |m: String| Reject::format_error("TypeError", m);
    let subject = match args {
        Args::Mapping(m) => {
            return m.get(name).ok_or_else(|| key_error(name));
        }
        Args::Tuple(_) => {
            return Err(type_error(
                "list indices must be integers or slices, not str".into(),
            ))
        }
        Args::Scalar(v) => v,
    };
    match subject {
        Value::Dict(m) => m.get(name).ok_or_else(|| key_error(name)),
        Value::List(_) => Err(type_error(
            "list indices must be integers or slices, not str".into(),
        )),
        Value::Str(_) => Err(type_error(
            "string indices must be integers, not 'str'".into(),
        )),
        v => Err(type_error(format!(
            "'{}' object is not subscriptable",
            v.type_name()
        ))),
    }
}

fn key_error(name: &str) -> Reject {
    // Names are ASCII identifiers: their repr is always 'name'.
    Reject::format_error("KeyError", format!("'{name}'"))
}

/// Writes the substitution of every token into `out`; the first CPython error stops it.
fn substitute(msg: &str, args: Args<'_>, out: &mut dyn Out) -> Result<(), Reject> {
    let mut result = Ok(());
    let tail = scan(msg, |lit, at, token| {
        let r = out.push_str(lit).and_then(|()| match token {
            Token::Escaped => out.push_char('$'),
            Token::Named(name) => lookup(args, name)
                .and_then(|v| value::write_str(v, out))
                .map_err(|e| e.at(at)),
            Token::Invalid => Err(invalid_placeholder(msg, at)),
        });
        result = r;
        result.is_ok()
    });
    result?;
    out.push_str(tail)
}

/// The check pass: field count, output size (every placeholder measured, even past an
/// error, until the size is over `max_output_bytes`: from there `output-too-large` wins
/// over any CPython error, and measuring `str()` of another 4,300-digit int would only cost
/// memory), and the first CPython error.
struct Check {
    fields: usize,
    size: Counter,
    first_error: Option<Reject>,
}

fn check(msg: &str, args: Args<'_>, max_output_bytes: usize) -> Check {
    let mut c = Check {
        fields: 0,
        size: Counter::new(usize::MAX),
        first_error: None,
    };
    let tail = scan(msg, |lit, at, token| {
        let _ = c.size.push_str(lit);
        let r = match token {
            Token::Escaped => c.size.push_char('$'),
            Token::Named(_) if c.size.len() > max_output_bytes => {
                c.fields += 1;
                Ok(())
            }
            Token::Named(name) => {
                c.fields += 1;
                lookup(args, name)
                    .and_then(|v| measure_str(v, &mut c.size))
                    .map_err(|e| e.at(at))
            }
            Token::Invalid => Err(invalid_placeholder(msg, at)),
        };
        if let Err(e) = r {
            c.first_error.get_or_insert(e);
        }
        true
    });
    let _ = c.size.push_str(tail);
    c
}

/// `str(v)` into the counter. An int too long for CPython's 4,300-digit rule is measured
/// anyway, so that an output over the limit wins over that error.
fn measure_str(v: &Value, size: &mut Counter) -> Result<(), Reject> {
    let r = value::write_str(v, size);
    if let (Err(_), Value::Int(n)) = (&r, v) {
        let _ = size.push_repeat('0', super::brace::int_str_len(n));
    }
    r
}

pub fn render(msg: &str, args: Args<'_>, limits: &Limits) -> Result<String, Reject> {
    let c = check(msg, args, limits.max_output_bytes);
    super::check_field_count(c.fields, limits)?;
    let size = c.size.len();
    if size > limits.max_output_bytes {
        return Err(Reject::OutputTooLarge {
            at_least: size,
            limit: limits.max_output_bytes,
        });
    }
    if let Some(e) = c.first_error {
        return Err(e);
    }
    let mut buf = Buf::new(limits.max_output_bytes, size);
    substitute(msg, args, &mut buf)?;
    Ok(buf.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Int;
    use indexmap::IndexMap;

    fn map(pairs: &[(&str, Value)]) -> IndexMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn sub(msg: &str, m: &IndexMap<String, Value>) -> Result<String, String> {
        render(msg, Args::Mapping(m), &Limits::default()).map_err(|e| e.detail())
    }

    #[test]
    fn dollar_substitutes_names_braces_and_escapes() {
        let m = map(&[("a", Value::Int(Int::Small(1))), ("B_2", Value::None)]);
        assert_eq!(sub("$a ${B_2}x $$a $$", &m), Ok("1 Nonex $a $".into()));
    }

    #[test]
    fn dollar_invalid_placeholder_counts_lines_like_splitlines() {
        let m = map(&[]);
        let err = |msg: &str| sub(msg, &m).err().unwrap_or_default();
        assert_eq!(
            err("$"),
            "ValueError: Invalid placeholder in string: line 1, col 1"
        );
        assert_eq!(
            err("abc\n$"),
            "ValueError: Invalid placeholder in string: line 2, col 1"
        );
        assert_eq!(
            err("ab\r\n $1"),
            "ValueError: Invalid placeholder in string: line 2, col 2"
        );
        assert_eq!(
            err("a\x0b\x0c$"),
            "ValueError: Invalid placeholder in string: line 3, col 1"
        );
        assert_eq!(
            err("é\u{2028}é$"),
            "ValueError: Invalid placeholder in string: line 2, col 2"
        );
    }

    #[test]
    fn dollar_names_are_ascii_only_even_for_the_kelvin_sign() {
        let m = map(&[("\u{212a}", Value::None)]);
        assert!(sub("$\u{212a}", &m).is_err_and(|e| e.contains("Invalid placeholder")));
        assert!(sub("${\u{17f}}", &m).is_err_and(|e| e.contains("Invalid placeholder")));
    }

    #[test]
    fn dollar_args_that_are_not_a_dict_raise_cpythons_type_error() {
        let l = Limits::default();
        let five = Value::Int(Int::Small(5));
        let r = |a: Args<'_>| render("x $a", a, &l).map_err(|e| e.detail());
        assert_eq!(
            r(Args::Scalar(&five)),
            Err("TypeError: 'int' object is not subscriptable".into())
        );
        assert_eq!(
            r(Args::Tuple(std::slice::from_ref(&five))),
            Err("TypeError: list indices must be integers or slices, not str".into())
        );
        let st = Value::Str("s".into());
        assert_eq!(
            r(Args::Scalar(&st)),
            Err("TypeError: string indices must be integers, not 'str'".into())
        );
        assert_eq!(
            render("no fields $$", Args::Scalar(&five), &l),
            Ok("no fields $".into())
        );
    }

    /// Fuzz finding `fixtures/fuzz/format_dollar-1.bin`: every placeholder past the output
    /// limit was still measured, converting a big int to decimal each time (150 × a
    /// 2,740-digit int: 6.9 MB; 256 × 4,300 digits: 17.9 MB, over `--alloc-budget`).
    #[test]
    fn dollar_stops_measuring_once_the_output_is_over_the_limit() {
        let big: num_bigint::BigInt = "9".repeat(4300).parse().unwrap_or_default();
        let big = Value::Int(Int::from_bigint(big));
        let m = map(&[("a", big)]);
        let msg = "$a".repeat(256);
        let (r, allocated) =
            crate::alloc::measure(|| render(&msg, Args::Mapping(&m), &Limits::default()));
        assert!(matches!(r, Err(Reject::OutputTooLarge { .. })), "{r:?}");
        assert!(allocated < 4 << 20, "allocated {allocated}");
        // The field count still sees every placeholder.
        let r = render(&"$a".repeat(257), Args::Mapping(&m), &Limits::default());
        assert!(
            matches!(r, Err(Reject::TooManyFields { count: 257, .. })),
            "{r:?}"
        );
    }

    #[test]
    fn dollar_limits_win_over_an_earlier_key_error() {
        let big = map(&[("x", Value::Str("y".repeat(40_000)))]);
        let r = render("$missing $x $x", Args::Mapping(&big), &Limits::default());
        assert!(matches!(r, Err(Reject::OutputTooLarge { .. })));
        let many = "$x".repeat(257);
        let r = render(&many, Args::Mapping(&map(&[])), &Limits::default());
        assert!(matches!(r, Err(Reject::TooManyFields { count: 257, .. })));
    }
}
