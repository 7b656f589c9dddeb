use super::*;
use crate::value::{Int, Value};
use indexmap::IndexMap;

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

fn i(n: i64) -> Value {
    Value::Int(Int::Small(n))
}

fn fmt(msg: &str, args: &[Value]) -> Result<String, String> {
    render(msg, Args::Tuple(args), &Limits::default()).map_err(|e| e.detail())
}

fn rule(msg: &str, args: &[Value]) -> &'static str {
    match render(msg, Args::Tuple(args), &Limits::default()) {
        Ok(_) => "ok",
        Err(e) => e.rule().id(),
    }
}

#[test]
fn brace_literals_and_numbering_render_like_cpython() {
    assert_eq!(
        fmt("a{{b}}c {} {}", &[i(1), s("x")]),
        Ok("a{b}c 1 x".into())
    );
    assert_eq!(fmt("{1}{0}{1}", &[i(1), s("x")]), Ok("x1x".into()));
    assert_eq!(
        fmt("{}{0}", &[i(1)]),
        Err("ValueError: cannot switch from automatic field numbering to manual field specification".into())
    );
    assert_eq!(
        fmt("{0:{}}", &[i(1), i(2)]),
        Err("ValueError: cannot switch from manual field specification to automatic field numbering".into())
    );
}

#[test]
fn brace_syntax_errors_carry_cpythons_messages() {
    let cases = [
        ("a}b", "ValueError: Single '}' encountered in format string"),
        ("{", "ValueError: Single '{' encountered in format string"),
        ("{0[}", "ValueError: expected '}' before end of string"),
        ("{0!r", "ValueError: unmatched '{' in format spec"),
        (
            "{0!",
            "ValueError: end of string while looking for conversion specifier",
        ),
        (
            "{0!rx}",
            "ValueError: expected ':' after conversion specifier",
        ),
        ("{a{b}", "ValueError: unexpected '{' in field name"),
        ("{0!x}", "ValueError: Unknown conversion specifier x"),
        (
            "{0!\u{e9}}",
            "ValueError: Unknown conversion specifier \\xe9",
        ),
        ("{:{:{}}}", "ValueError: Max string recursion exceeded"),
        (
            "{5}",
            "IndexError: Replacement index 5 out of range for positional args tuple",
        ),
        ("{name}", "KeyError: 'name'"),
        ("{0[]}", "ValueError: Empty attribute in format string"),
    ];
    for (msg, want) in cases {
        assert_eq!(
            fmt(msg, &[i(1), i(2), i(3)]),
            Err(want.to_string()),
            "{msg}"
        );
    }
}

#[test]
fn brace_spec_mini_language_matches_cpython() {
    let cases: &[(&str, Value, &str)] = &[
        ("{:010,}", i(1234), "00,001,234"),
        ("{:08,}", i(1234), "0,001,234"),
        ("{:#_x}", i(0xabcdef), "0xab_cdef"),
        ("{:+^9.2f}", Value::Float(-1.5), "++-1.50++"),
        ("{:z.1f}", Value::Float(-0.0), "0.0"),
        ("{:.3}", Value::Float(1.0), "1.0"),
        ("{:%}", Value::Float(0.0001), "0.010000%"),
        ("{:010}", Value::Float(f64::INFINITY), "0000000inf"),
        ("{:05}", s("ab"), "ab000"),
        ("{:\u{665}}", s("ab"), "ab   "),
        ("{:^7.2}", s("héllo"), "  hé   "),
        ("{:c}", i(233), "é"),
        ("{:d}", Value::Bool(true), "1"),
        ("{}", Value::Bool(true), "True"),
        ("{!r:>6}", s("a"), "   'a'"),
        ("{!a}", s("é"), "'\\xe9'"),
    ];
    for (msg, v, want) in cases {
        assert_eq!(
            fmt(msg, std::slice::from_ref(v)),
            Ok(want.to_string()),
            "{msg}"
        );
    }
}

#[test]
fn brace_type_errors_name_the_object() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "{:d}",
            s("x"),
            "ValueError: Unknown format code 'd' for object of type 'str'",
        ),
        (
            "{:abc}",
            s("x"),
            "ValueError: Invalid format specifier 'abc' for object of type 'str'",
        ),
        (
            "{:+}",
            s("x"),
            "ValueError: Sign not allowed in string format specifier",
        ),
        ("{:,s}", s("x"), "ValueError: Cannot specify ',' with 's'."),
        (
            "{:s}",
            Value::Bool(true),
            "ValueError: Unknown format code 's' for object of type 'bool'",
        ),
        (
            "{:x}",
            Value::List(vec![]),
            "TypeError: unsupported format string passed to list.__format__",
        ),
        (
            "{:.2}",
            i(5),
            "ValueError: Precision not allowed in integer format specifier",
        ),
        (
            "{:c}",
            i(-1),
            "OverflowError: %c arg not in range(0x110000)",
        ),
        (
            "{0[a]}",
            Value::List(vec![]),
            "TypeError: list indices must be integers or slices, not str",
        ),
        (
            "{0[a]}",
            s("x"),
            "TypeError: string indices must be integers, not 'str'",
        ),
        (
            "{0[0]}",
            i(1),
            "TypeError: 'int' object is not subscriptable",
        ),
        ("{0[3]}", s("ab"), "IndexError: string index out of range"),
    ];
    for (msg, v, want) in cases {
        assert_eq!(
            fmt(msg, std::slice::from_ref(v)),
            Err(want.to_string()),
            "{msg}"
        );
    }
}

#[test]
fn brace_index_access_reads_lists_dicts_and_str() {
    let mut m = IndexMap::new();
    m.insert("k".to_string(), Value::List(vec![i(7), s("hé")]));
    let d = Value::Dict(Box::new(m.clone()));
    assert_eq!(fmt("{0[k][1][1]}", &[d]), Ok("é".into()));
    let r = render("{k[0]}-{k[1]!r}", Args::Mapping(&m), &Limits::default());
    assert_eq!(r, Ok("7-'hé'".into()));
}

#[test]
fn brace_attribute_access_is_refused_before_anything_else() {
    let many = format!("{}{{0.real}}", "{0}".repeat(300));
    assert_eq!(rule(&many, &[i(1)]), "attribute-access");
    assert_eq!(rule("{:{0.imag}}", &[i(1)]), "attribute-access");
    assert_eq!(
        rule("{0[a.b]}", &[i(1)]),
        "format-error",
        "a dot inside [] is a key"
    );
    assert_eq!(
        rule("{.x{", &[i(1)]),
        "format-error",
        "a broken field is a syntax error"
    );
}

#[test]
fn brace_limits_win_in_spec_order() {
    assert_eq!(rule(&"{}".repeat(257), &[]), "too-many-fields");
    assert_eq!(rule(&"{}".repeat(256), &vec![i(1); 256]), "ok");
    assert_eq!(rule("{:{}}", &[s("x"), i(4097)]), "width-too-large");
    assert_eq!(rule("{:{}}", &[s("x"), i(4096)]), "ok");
    assert_eq!(rule("{missing} {:.99999}", &[i(1)]), "precision-too-large");
    assert_eq!(
        rule("{:99999999999999999999999}", &[i(1)]),
        "width-too-large"
    );
    assert_eq!(
        rule(&"{:4096}".repeat(17), &vec![s("a"); 17]),
        "output-too-large"
    );
    assert_eq!(rule(&"{:4096}".repeat(16), &vec![s("a"); 16]), "ok");
}

#[test]
fn brace_huge_int_is_output_too_large_not_converted() {
    let huge = Value::Int(Int::from_bigint(num_traits::pow(
        num_bigint::BigInt::from(7),
        100_000,
    )));
    assert_eq!(rule("{}", std::slice::from_ref(&huge)), "output-too-large");
    assert_eq!(
        rule("{:x}", std::slice::from_ref(&huge)),
        "output-too-large"
    );
    let big = Value::Int(Int::from_bigint(num_traits::pow(
        num_bigint::BigInt::from(10),
        5000,
    )));
    assert_eq!(rule("{}", std::slice::from_ref(&big)), "format-error");
    assert_eq!(
        rule("{:20000}", std::slice::from_ref(&big)),
        "width-too-large"
    );
}

#[test]
fn brace_template_memory_is_bounded_by_the_field_limit() {
    let msg = "{}".repeat(100_000);
    let t = parse(&msg, 256);
    assert_eq!(t.field_count(), 100_000);
    assert!(t.heap_bytes() < 64 << 10, "{}", t.heap_bytes());
    let deep = format!("{}{}", "{:".repeat(50_000), "}".repeat(50_000));
    let t = parse(&deep, 256);
    assert!(t.field_count() >= 50_000);
}

/// The `{}` twin of the fuzz finding `fixtures/fuzz/format_dollar-1.bin`: the check pass
/// measured every field past the output limit, converting a big int each time (256 × a
/// 4,300-digit int: 17.9 MB, over `--alloc-budget`). A width past the limit still wins.
#[test]
fn check_pass_stops_measuring_once_the_output_is_over_the_limit() {
    let big: num_bigint::BigInt = "9".repeat(4300).parse().unwrap_or_default();
    let args = [Value::Int(Int::from_bigint(big))];
    let msg = "{0}".repeat(256);
    let (r, allocated) =
        crate::alloc::measure(|| render(&msg, Args::Tuple(&args), &Limits::default()));
    assert!(matches!(r, Err(Reject::OutputTooLarge { .. })), "{r:?}");
    assert!(allocated < 4 << 20, "allocated {allocated}");
    let msg = format!("{}{{0:5000}}", "{0}".repeat(255));
    assert_eq!(rule(&msg, &args), "width-too-large");
}
