//! The decoder against CPython 3.11's `json.loads`: hand-picked tricky inputs, a seeded
//! batch of random token soups, and the bounds (depth, big integers, allocation shape).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use num_bigint::BigInt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Build the members named, ints exact, nothing borrowed.
fn members<'f>(names: &'f [&'f str]) -> Members<'f> {
    Members {
        names,
        huge_int: &|_| None,
        borrow: None,
    }
}

/// A canonical, lossless text of a parse result that is easy to produce on both sides:
/// floats as their bits, strings as UTF-8 hex (lone surrogates as U+FFFD plus a `+S` mark).
fn canon(r: &Result<Parsed, JsonError>) -> String {
    fn v(x: &Value, o: &mut String) {
        match x {
            Value::None => o.push('N'),
            Value::Bool(b) => o.push(if *b { 'T' } else { 'F' }),
            Value::Int(Int::Small(n)) => o.push_str(&format!("i{n}")),
            Value::Int(Int::Big(n)) => o.push_str(&format!("i{n}")),
            Value::Float(f) => o.push_str(&format!("f{:016x}", f.to_bits())),
            Value::Str(s) => s_(s, o),
            Value::List(l) => {
                o.push('[');
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    v(x, o);
                }
                o.push(']');
            }
            Value::Dict(d) => {
                o.push('{');
                for (i, (k, x)) in d.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    s_(k, o);
                    o.push(':');
                    v(x, o);
                }
                o.push('}');
            }
        }
    }
    fn s_(s: &str, o: &mut String) {
        o.push('s');
        for b in s.bytes() {
            o.push_str(&format!("{b:02x}"));
        }
    }
    match r {
        Err(JsonError::Invalid { .. }) => "E".into(),
        Err(JsonError::TooDeep { .. }) => "DEEP".into(),
        Ok(p) => {
            let mut o = String::new();
            v(&p.value, &mut o);
            if p.lone_surrogate {
                o.push_str("+S");
            }
            o
        }
    }
}

const PY_CANON: &str = r#"
import sys, json, struct
sys.set_int_max_str_digits(0)
def s_(s, o):
    sur = False
    t = []
    for ch in s:
        if 0xd800 <= ord(ch) <= 0xdfff:
            sur = True; ch = '\ufffd'
        t.append(ch)
    o.append('s' + ''.join(t).encode('utf-8').hex())
    return sur
def v(x, o):
    sur = False
    if x is None: o.append('N')
    elif x is True: o.append('T')
    elif x is False: o.append('F')
    elif isinstance(x, int): o.append('i' + str(x))
    elif isinstance(x, float): o.append('f' + struct.pack('>d', x).hex())
    elif isinstance(x, str): sur |= s_(x, o)
    elif isinstance(x, list):
        o.append('[')
        for i, y in enumerate(x):
            if i: o.append(',')
            sur |= v(y, o)
        o.append(']')
    elif isinstance(x, dict):
        o.append('{')
        for i, (k, y) in enumerate(x.items()):
            if i: o.append(',')
            sur |= s_(k, o); o.append(':'); sur |= v(y, o)
        o.append('}')
    return sur
for line in sys.stdin:
    s = bytes.fromhex(line.strip()).decode('utf-8')
    if s.startswith('\ufeff'): s = s[1:]
    try:
        x = json.loads(s)
    except json.JSONDecodeError:
        print('E'); continue
    o = []
    sur = v(x, o)
    print(''.join(o) + ('+S' if sur else ''))
"#;

/// CPython's canonical results for `inputs`, or `None` when python3 is not there.
fn python(inputs: &[String]) -> Option<Vec<String>> {
    let feed: String = inputs
        .iter()
        .map(|s| s.bytes().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    python_lines(PY_CANON, &feed)
}

/// The stdout lines of python3 running `code` with `stdin`; `None` when python3 is not
/// there. Shared by the decoder's and the record's tests: CPython is the oracle of both.
pub(crate) fn python_lines(code: &str, stdin: &str) -> Option<Vec<String>> {
    let mut child = Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut pipe = child.stdin.take()?;
    let feed = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(feed.as_bytes()));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

fn assert_same_as_python(inputs: &[String]) {
    let Some(expected) = python(inputs) else {
        eprintln!("python3 not available: skipped");
        return;
    };
    assert_eq!(expected.len(), inputs.len());
    let mut bad = Vec::new();
    for (input, want) in inputs.iter().zip(&expected) {
        let got = canon(&parse(input, 10_000));
        if &got != want {
            bad.push(format!("{input:?}: got {got}, python {want}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

const TRICKY: &[&str] = &[
    "",
    " ",
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1",
    "-1",
    "01",
    "-01",
    "1.",
    ".5",
    "+1",
    "-",
    "1e",
    "1e+",
    "1e5",
    "1E+5",
    "1e-5",
    "1.5e",
    "0e0",
    "1e400",
    "-1e400",
    "1e-400",
    "2.5E-3",
    "123.456e7",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "-18446744073709551616",
    "0.1",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "4.9e-324",
    "2.4e-324",
    "NaN",
    "-NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "infinity",
    "Inf",
    "[NaN,Infinity,-Infinity]",
    "null",
    "true",
    "false",
    "nul",
    "True",
    "nullx",
    "null null",
    "\"\"",
    "\"a\"",
    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
    "\"\\a\"",
    "\"\\U00e9\"",
    "\"\\u00e9\"",
    "\"\\u00E9\"",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud800\\udc00\"",
    "\"\\udbff\\udfff\"",
    "\"\\udc00\\ud800\"",
    "\"\\ud800\\u0041\"",
    "\"\\ud800\\uZZZZ\"",
    "\"\\ud800\\\\\"",
    "\"\\ud800x\"",
    "\"\\u12\"",
    "\"\\u",
    "\"\\",
    "\"abc",
    "\"\t\"",
    "\"\n\"",
    "\"\u{1f}\"",
    "\"\u{7f}\"",
    "\"\u{85}\u{2028}é😀\"",
    "\"\\u0000\"",
    "[]",
    "{}",
    "[1,]",
    "[,1]",
    "[1 2]",
    "[1,2]",
    "[ 1 , 2 ]",
    "{\"a\":1,}",
    "{\"a\" : 1}",
    "{\"a\":1,\"b\":2,\"a\":3}",
    "{\"a\":1,\"a\":{\"x\":[]},\"b\":0,\"a\":null}",
    "{1:2}",
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\" 1}",
    "{,}",
    "[}",
    "{]",
    "[[[]]]",
    "[[[]]",
    "\u{feff}{}",
    "\u{feff}\u{feff}{}",
    " \u{feff}{}",
    "1 2",
    "[1]x",
    " \t\n\r[1] \t\n\r",
    "\u{a0}1",
    "\u{b}1",
    "\u{c}1",
    "1\u{c}",
    "{\"msg\": \"hi %s\", \"args\": [1, 2.5, \"x\"]}",
    "{\"\\ud800\": 1}",
    "{\"\": \"\"}",
    "[\"\\u002f\", \"\\/\"]",
    "[-0, -0.0, 0e-0, -0E+0]",
];

#[test]
fn tricky_inputs_decode_as_python_json_loads() {
    let inputs: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
    assert_same_as_python(&inputs);
}

#[test]
fn random_token_soup_decodes_as_python_json_loads() {
    const TOKENS: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\"a\"",
        "\"k\"",
        "\"",
        "\\",
        "\\u",
        "d800",
        "dc00",
        "0041",
        "\\ud83d\\ude00",
        "1",
        "0",
        "-",
        ".",
        "e",
        "E",
        "+",
        "5",
        "9",
        "NaN",
        "Infinity",
        "-Infinity",
        "true",
        "false",
        "null",
        "x",
        "é",
        "\u{1}",
        "\u{7f}",
        "\\n",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(0x10f3);
    let mut inputs = Vec::new();
    for _ in 0..4000 {
        let n = rng.gen_range(1..12);
        let s: String = (0..n)
            .map(|_| TOKENS[rng.gen_range(0..TOKENS.len())])
            .collect();
        inputs.push(s);
    }
    // Structured documents with one token changed, so that many are valid.
    const DOCS: &[&str] = &[
        "{\"msg\": \"a %s\", \"args\": [1, -2.5e3, \"\\u00e9\"], \"level\": \"warn\"}",
        "[{\"a\": [1, {\"b\": null}]}, 18446744073709551616, -0]",
    ];
    for _ in 0..2000 {
        let doc = DOCS[rng.gen_range(0..DOCS.len())];
        let mut chars: Vec<char> = doc.chars().collect();
        let i = rng.gen_range(0..chars.len());
        let tok = TOKENS[rng.gen_range(0..TOKENS.len())];
        match rng.gen_range(0..3) {
            0 => {
                chars.remove(i);
            }
            1 => chars.splice(i..i, tok.chars()).for_each(drop),
            _ => chars.splice(i..=i, tok.chars()).for_each(drop),
        }
        inputs.push(chars.into_iter().collect());
    }
    assert_same_as_python(&inputs);
}

#[test]
fn big_integers_are_exact_and_small_ones_inline() {
    let p = |s: &str| parse(s, 32).map(|p| p.value);
    assert_eq!(p("-0"), Ok(Value::Int(Int::Small(0))));
    assert_eq!(
        p("-9223372036854775808"),
        Ok(Value::Int(Int::Small(i64::MIN)))
    );
    let big: BigInt = "9223372036854775808".parse().unwrap_or_default();
    assert_eq!(
        p("9223372036854775808"),
        Ok(Value::Int(Int::Big(Box::new(big))))
    );
    // Across the divide-and-conquer splits: every length compared with num-bigint's parse.
    for len in [1023, 1024, 1025, 2047, 2048, 2049, 4097, 10_000, 33_333] {
        let s: String = (0..len)
            .map(|i| char::from(b'1' + (i * 7 % 9) as u8))
            .collect();
        let want: BigInt = s.parse().unwrap_or_default();
        assert_eq!(
            p(&s),
            Ok(Value::Int(Int::Big(Box::new(want.clone())))),
            "len {len}"
        );
        assert_eq!(
            p(&format!("-{s}")),
            Ok(Value::Int(Int::Big(Box::new(-want)))),
            "len -{len}"
        );
    }
    let zeros = format!("1{}", "0".repeat(5000));
    let want = num_traits::pow(BigInt::from(10), 5000);
    assert_eq!(p(&zeros), Ok(Value::Int(Int::Big(Box::new(want)))));
}

#[test]
fn million_digit_integer_parses_in_about_a_second() {
    let s: String = (0..1_000_000)
        .map(|i| char::from(b'0' + ((i * 7 + 1) % 10) as u8))
        .collect();
    let t = Instant::now();
    let r = parse(&s, 32);
    let took = t.elapsed();
    eprintln!("1,000,000-digit int: {took:?}");
    let Ok(Parsed {
        value: Value::Int(Int::Big(n)),
        ..
    }) = r
    else {
        unreachable!("not a big int: {r:?}")
    };
    // Spot-check exactness: the low digits and the digit count.
    assert_eq!(
        &*n % BigInt::from(1_000_000_000u64),
        BigInt::from(s[s.len() - 9..].parse::<u64>().unwrap_or(0))
    );
    assert_eq!(n.to_string().len(), 1_000_000);
}

#[test]
fn depth_counts_the_top_level_container_as_one() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse(&nest(32), 32).is_ok());
    assert_eq!(
        parse(&nest(33), 32),
        Err(JsonError::TooDeep {
            offset: 32,
            limit: 32
        })
    );
    assert!(parse("1", 0).is_ok());
    assert_eq!(
        parse("{}", 0),
        Err(JsonError::TooDeep {
            offset: 0,
            limit: 0
        })
    );
    assert!(parse("{\"a\":{\"b\":[1,{}]}}", 4).is_ok());
    assert!(matches!(
        parse("{\"a\":{\"b\":[1,{}]}}", 3),
        Err(JsonError::TooDeep { .. })
    ));
}

#[test]
fn too_deep_wins_over_a_later_syntax_error() {
    assert!(matches!(
        parse(&"[".repeat(40), 32),
        Err(JsonError::TooDeep { .. })
    ));
    let s = format!("{}x", "{\"a\":".repeat(33));
    assert!(matches!(parse(&s, 32), Err(JsonError::TooDeep { .. })));
    // An earlier syntax error is just invalid.
    let s = format!("[1,,{}", "[".repeat(40));
    assert_eq!(parse(&s, 32), Err(JsonError::Invalid { offset: 3 }));
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let n = 1 << 20;
    let s = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let t = Instant::now();
    let r = parse(&s, usize::MAX);
    eprintln!("2 MiB of nested arrays, depth {n}: {:?}", t.elapsed());
    assert_eq!(
        r,
        Err(JsonError::TooDeep {
            offset: HARD_MAX_DEPTH,
            limit: HARD_MAX_DEPTH
        })
    );
    assert!(matches!(
        parse(&s, 32),
        Err(JsonError::TooDeep { offset: 32, .. })
    ));
    // At the hard cap, built, compared and dropped (all recursive) on a test thread's stack.
    let s = format!("{}1{}", "[{\"a\":".repeat(500), "}]".repeat(500));
    assert!(parse(&s, HARD_MAX_DEPTH).is_ok());
    let s = "{\"a\":".repeat(n / 4);
    assert!(parse(&s, usize::MAX).is_err());
}

#[test]
fn duplicate_key_keeps_first_position_and_last_value() {
    let Ok(Parsed {
        value: Value::Dict(d),
        ..
    }) = parse("{\"a\":1,\"b\":2,\"a\":3}", 32)
    else {
        unreachable!()
    };
    let got: Vec<_> = d.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert_eq!(
        got,
        [
            ("a", Value::Int(Int::Small(3))),
            ("b", Value::Int(Int::Small(2)))
        ]
    );
}

#[test]
fn lone_surrogate_becomes_replacement_char_and_is_flagged() {
    let r = parse("[\"a\\ud800b\", \"\\ud83d\\ude00\"]", 32);
    let want = Value::List(vec![
        Value::Str("a\u{fffd}b".into()),
        Value::Str("😀".into()),
    ]);
    assert_eq!(
        r,
        Ok(Parsed {
            value: want,
            lone_surrogate: true,
            borrowed: None,
        })
    );
    assert_eq!(
        parse("\"\\ud83d\\ude00\"", 32).map(|p| p.lone_surrogate),
        Ok(false)
    );
}

#[test]
fn invalid_offsets_are_byte_offsets() {
    assert_eq!(parse("", 32), Err(JsonError::Invalid { offset: 0 }));
    assert_eq!(parse("[1,]", 32), Err(JsonError::Invalid { offset: 3 }));
    assert_eq!(parse("\"é\t\"", 32), Err(JsonError::Invalid { offset: 3 }));
    assert_eq!(parse("\"\\", 32), Err(JsonError::Invalid { offset: 2 }));
    assert_eq!(parse("\"a\\x\"", 32), Err(JsonError::Invalid { offset: 2 }));
}

#[test]
fn megabyte_bodies_parse_in_one_pass() {
    let cases = [
        ("small ints", format!("[{}0]", "0,".repeat(500_000))),
        (
            "strings",
            format!("[{}\"\"]", "\"\\u00e9x\",".repeat(100_000)),
        ),
        (
            "dict",
            format!(
                "{{{}\"z\":0}}",
                (0..80_000)
                    .map(|i| format!("\"k{i}\":1,"))
                    .collect::<String>()
            ),
        ),
        (
            "dup keys",
            format!("{{{}\"a\":0}}", "\"a\":1,".repeat(160_000)),
        ),
        ("floats", format!("[{}0]", "1.5e300,".repeat(120_000))),
    ];
    for (name, s) in cases {
        let t = Instant::now();
        assert!(parse(&s, 32).is_ok(), "{name}");
        eprintln!("{name}: {} bytes in {:?}", s.len(), t.elapsed());
    }
}

#[test]
fn repr_of_decoded_values_matches_python_repr_of_json_loads() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    const TOKENS: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"a\"",
        "\"\\u00e9\\n'\\\"\"",
        "1",
        "-0",
        "0.1",
        "1e20",
        "1e-5",
        "-0.0",
        "1e400",
        "NaN",
        "-Infinity",
        "true",
        "false",
        "null",
        "123456789012345678901",
        "\"\\u0007\\u007f\\u0085\\u2028\"",
        "\"\\ud83d\\ude00\"",
        "2.5E+3",
        "\"x\"",
    ];
    let mut inputs: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
    for _ in 0..3000 {
        let n = rng.gen_range(1..10);
        inputs.push(
            (0..n)
                .map(|_| TOKENS[rng.gen_range(0..TOKENS.len())])
                .collect(),
        );
    }
    for _ in 0..1500 {
        let mut doc = String::new();
        gen_doc(&mut rng, TOKENS, 0, &mut doc);
        inputs.push(doc);
    }
    let valid: Vec<(String, Value)> = inputs
        .into_iter()
        .filter_map(|s| match parse(&s, 10_000) {
            Ok(p) if !p.lone_surrogate => Some((s, p.value)),
            _ => None,
        })
        .collect();
    let code = "import sys, json\nfor line in sys.stdin:\n \
                s = bytes.fromhex(line.strip()).decode()\n \
                s = s[1:] if s.startswith('\\ufeff') else s\n \
                print(repr(json.loads(s)).encode().hex())";
    let feed: String = valid
        .iter()
        .map(|(s, _)| s.bytes().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    let Ok(mut child) = Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        return;
    };
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let writer = std::thread::spawn(move || stdin.write_all(feed.as_bytes()));
    let Ok(out) = child.wait_with_output() else {
        return;
    };
    assert!(matches!(writer.join(), Ok(Ok(()))));
    let want: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|h| {
            let bytes: Vec<u8> = (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect();
    assert_eq!(want.len(), valid.len());
    let mut bad = Vec::new();
    for ((s, v), want) in valid.iter().zip(&want) {
        let mut buf = crate::format::Buf::new(1 << 20, 64);
        let got = crate::value::write_repr(v, &mut buf).map(|()| buf.into_string());
        if got.as_deref() != Ok(want.as_str()) {
            bad.push(format!("{s:?}: got {got:?}, python {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        valid.len(),
        bad.join("\n")
    );
    eprintln!("{} valid documents: repr identical to python", valid.len());
}

/// A random well-formed document of scalars from `tokens`' scalar entries, with whitespace
/// and duplicate keys.
fn gen_doc(rng: &mut ChaCha8Rng, tokens: &[&str], depth: usize, o: &mut String) {
    const WS: &[&str] = &["", "", " ", "\n", "\t", "\r", "  "];
    o.push_str(WS[rng.gen_range(0..WS.len())]);
    match if depth > 4 { 2 } else { rng.gen_range(0..4) } {
        0 => {
            o.push('[');
            for i in 0..rng.gen_range(0..4) {
                if i > 0 {
                    o.push(',');
                }
                gen_doc(rng, tokens, depth + 1, o);
            }
            o.push(']');
        }
        1 => {
            o.push('{');
            for i in 0..rng.gen_range(0..4) {
                if i > 0 {
                    o.push(',');
                }
                o.push_str(["\"a\"", "\"b\"", "\"\\u00e9\"", "\"\""][rng.gen_range(0..4)]);
                o.push_str(WS[rng.gen_range(0..WS.len())]);
                o.push(':');
                gen_doc(rng, tokens, depth + 1, o);
            }
            o.push('}');
        }
        _ => loop {
            let t = tokens[rng.gen_range(0..tokens.len())];
            if !matches!(t, "[" | "]" | "{" | "}" | "," | ":") {
                o.push_str(t);
                break;
            }
        },
    }
    o.push_str(WS[rng.gen_range(0..WS.len())]);
}

#[test]
fn parse_object_checks_like_parse_and_builds_only_kept_members() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    const TOKENS: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"a\"",
        "\"b\"",
        "\"\\ud800\"",
        "1",
        "1.5",
        "x",
        "\"",
        "123456789012345678901234567890",
        "null",
        "\\",
        " ",
        "{\"a\":",
        "{\"b\":",
    ];
    const SCALARS: &[&str] = &[
        "\"a\"",
        "\"\\ud800\"",
        "1",
        "-1.5",
        "NaN",
        "null",
        "1234567890123456789012",
    ];
    let mut inputs: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
    for _ in 0..3000 {
        let mut doc = String::new();
        if rng.gen_bool(0.3) {
            gen_doc(&mut rng, SCALARS, 0, &mut doc);
        } else if rng.gen_bool(0.5) {
            let mut parts = [String::new(), String::new(), String::new()];
            for p in &mut parts {
                gen_doc(&mut rng, SCALARS, 1, p);
            }
            let [x, y, z] = parts;
            doc = format!("{{\"a\":{x},\"b\":{y},\"a\":{z}}}");
        } else {
            let n = rng.gen_range(1..12);
            doc = (0..n)
                .map(|_| TOKENS[rng.gen_range(0..TOKENS.len())])
                .collect();
        }
        inputs.push(doc);
    }
    let names = ["a"];
    let (mut objects, mut errors) = (0, 0);
    for s in &inputs {
        for depth in [2, 32] {
            let full = parse(s, depth);
            let part = parse_object(s, depth, &members(&names));
            match (&full, &part) {
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "{s:?}");
                    errors += 1;
                }
                (
                    Ok(Parsed {
                        value: Value::Dict(d),
                        ..
                    }),
                    Ok(p),
                ) => {
                    let canon_of = |v: Option<&Value>| {
                        v.map(|v| {
                            canon(&Ok(Parsed {
                                value: v.clone(),
                                lone_surrogate: false,
                                borrowed: None,
                            }))
                        })
                    };
                    assert!(p.is_object, "{s:?}");
                    assert_eq!(
                        canon_of(p.members[0].as_ref()),
                        canon_of(d.get("a")),
                        "{s:?}"
                    );
                    objects += 1;
                }
                (Ok(_), Ok(p)) => assert!(!p.is_object && p.members.is_empty(), "{s:?}"),
                _ => unreachable!("{s:?}: {full:?} vs {part:?}"),
            }
        }
    }
    eprintln!(
        "{} inputs: {objects} objects, {errors} errors",
        inputs.len()
    );
    assert!(objects > 500 && errors > 500);
    // A lone surrogate counts only where it is built.
    let flag = |s: &str| parse_object(s, 32, &members(&names)).map(|p| p.lone_surrogate);
    assert_eq!(flag("{\"b\":\"\\ud800\",\"\\udc00\":1,\"a\":1}"), Ok(false));
    assert_eq!(flag("[\"\\ud800\"]"), Ok(false));
    assert_eq!(flag("{\"a\":{\"\\udc00\":1}}"), Ok(true));
    assert_eq!(flag("{\"a\":[\"\\udc00\"]}"), Ok(true));
}

#[test]
fn scratch_stacks_are_reused_so_a_list_costs_its_exact_size() {
    let doc = format!(
        "{{\"a\": [{}]}}",
        (0..300)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = parse(&doc, 32);
    let (r, bytes) = crate::alloc::measure(|| parse(&doc, 32));
    assert!(r.is_ok());
    // The list (300 values) and the one-entry dict, not the stacks' doublings.
    let list = 300 * std::mem::size_of::<Value>();
    assert!(bytes as usize <= list + list / 4 + 1024, "{bytes}");
}
