//! The record model of docs/record.md, with CPython as the oracle for lossy decoding and epochs.

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn rec(body: &str) -> Record<'_> {
    match decode(body.as_bytes(), &limits()) {
        Ok(r) => r,
        Err(e) => unreachable!("{body:?}: {e}"),
    }
}

fn int(n: i64) -> Value {
    Value::Int(Int::Small(n))
}

/// `code` run by python3, its stdout lines; `None` when python3 is not there.
fn python(code: &str) -> Option<Vec<String>> {
    crate::json::tests::python_lines(code, "")
}

#[test]
fn body_size_is_checked_before_anything_else() {
    let l = Limits {
        max_body_bytes: 10,
        max_json_depth: 1,
        ..limits()
    };
    assert_eq!(
        decode(b"[[[[[[[[[[[", &l),
        Err(DecodeReject::BodyTooLarge { len: 11, limit: 10 })
    );
    assert_eq!(
        decode(b"\xff\xfe{\"msg\":1}", &l),
        Err(DecodeReject::BodyTooLarge { len: 11, limit: 10 })
    );
    // The limit is inclusive.
    assert!(decode(b"0123456789", &l).is_ok());
    let f = DecodeReject::BodyTooLarge { len: 11, limit: 10 }.to_finding();
    assert_eq!(
        (f.rule, f.offset, f.detail.as_str()),
        (Rule::BodyTooLarge, None, "body of 11 bytes > limit 10")
    );
}

#[test]
fn too_deep_json_is_rejected_never_plain_text() {
    let l = limits();
    let deep = "[".repeat(33) + &"]".repeat(33);
    assert_eq!(
        decode(deep.as_bytes(), &l),
        Err(DecodeReject::JsonTooDeep { limit: 32 })
    );
    // Unclosed, and not an object: still too deep.
    assert_eq!(
        decode("[".repeat(40).as_bytes(), &l),
        Err(DecodeReject::JsonTooDeep { limit: 32 })
    );
    let deep_field = format!(
        "{{\"msg\":\"x\",\"fields\":{}1{}}}",
        "[".repeat(32),
        "]".repeat(32)
    );
    assert_eq!(
        decode(deep_field.as_bytes(), &l),
        Err(DecodeReject::JsonTooDeep { limit: 32 })
    );
    let ok = format!(
        "{{\"msg\":\"x\",\"fields\":{}1{}}}",
        "[".repeat(31),
        "]".repeat(31)
    );
    assert!(decode(ok.as_bytes(), &l).is_ok_and(|r| r.structured));
    assert_eq!(
        DecodeReject::JsonTooDeep { limit: 32 }.to_finding().rule,
        Rule::JsonTooDeep
    );
}

#[test]
fn anything_but_an_object_with_a_string_msg_is_plain_text_byte_for_byte() {
    for body in [
        "hello %s\n",
        "",
        "[1, 2]",
        "\"msg\"",
        "{\"msg\": 5}",
        "{\"message\": \"x\"}",
        "{\"msg\": \"x\",}",
        "\u{feff}hello",
        "\u{feff}[\"x\"]\r\n",
        "\"\\ud800\"",
        "{\"msg\": null}",
    ] {
        let r = rec(body);
        assert_eq!(r, Record::plain(body.into(), false), "{body:?}");
        assert!(r.args().is_none());
    }
}

#[test]
fn structured_record_defaults() {
    let r = rec("{\"msg\": \"hi %s\"}");
    assert_eq!(r.msg, "hi %s");
    assert!(r.structured && !r.invalid_utf8);
    assert_eq!(r.args, None);
    assert_eq!(r.style, StyleField::Known(Style::Percent));
    assert_eq!((r.level.as_str(), r.logger.as_str()), ("info", "root"));
    assert_eq!((r.ts, r.fields), (None, None));
}

#[test]
fn structured_record_with_bom_and_every_field() {
    let body = "\u{feff}{\"level\":\"warn\",\"msg\":\"%(a)s\",\"args\":{\"a\":1},\"style\":\"{\",\
        \"logger\":\"chat\",\"ts\":\"2026-11-22T11:00:00.123456+01:00\",\"fields\":{\"z\":1,\"y\":\"2\"},\
        \"extra\":\"ignored\"}";
    let r = rec(body);
    assert_eq!(r.msg, "%(a)s");
    assert_eq!(r.style, StyleField::Known(Style::Brace));
    assert_eq!((r.level.as_str(), r.logger.as_str()), ("warn", "chat"));
    assert_eq!(
        r.ts.as_ref().map(format_ts).as_deref(),
        Some("2026-11-22T10:00:00.123Z")
    );
    let fields = r
        .fields
        .as_ref()
        .map(|f| f.keys().cloned().collect::<Vec<_>>());
    assert_eq!(fields, Some(vec!["z".to_owned(), "y".to_owned()]));
    assert!(matches!(r.args(), Some(Args::Mapping(m)) if m.get("a") == Some(&int(1))));
}

#[test]
fn args_map_to_tuple_mapping_or_scalar() {
    let kind = |body: &str| match rec(body).args() {
        None => "none".to_owned(),
        Some(Args::Tuple(t)) => format!("tuple{}", t.len()),
        Some(Args::Mapping(m)) => format!("mapping{}", m.len()),
        Some(Args::Scalar(v)) => format!("scalar:{}", v.type_name()),
    };
    let cases = [
        ("{\"msg\":\"m\"}", "none"),
        ("{\"msg\":\"m\",\"args\":null}", "none"),
        ("{\"msg\":\"m\",\"args\":[]}", "none"),
        ("{\"msg\":\"m\",\"args\":{}}", "none"),
        ("{\"msg\":\"m\",\"args\":[{\"a\":1}]}", "tuple1"),
        ("{\"msg\":\"m\",\"args\":[null]}", "tuple1"),
        ("{\"msg\":\"m\",\"args\":{\"a\":1,\"b\":2}}", "mapping2"),
        ("{\"msg\":\"m\",\"args\":0}", "scalar:int"),
        ("{\"msg\":\"m\",\"args\":false}", "scalar:bool"),
        ("{\"msg\":\"m\",\"args\":\"\"}", "scalar:str"),
        ("{\"msg\":\"m\",\"args\":1.5}", "scalar:float"),
        (
            "{\"msg\":\"m\",\"args\":18446744073709551616}",
            "scalar:int",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(kind(body), want, "{body}");
    }
}

#[test]
fn unknown_style_is_kept_raw() {
    let style = |s: &str| rec(&format!("{{\"msg\":\"m\",\"style\":{s}}}")).style;
    assert_eq!(style("\"%\""), StyleField::Known(Style::Percent));
    assert_eq!(style("\"$\""), StyleField::Known(Style::Dollar));
    assert_eq!(style("null"), StyleField::Known(Style::Percent));
    assert_eq!(style("\"f\""), StyleField::Unknown(Value::Str("f".into())));
    assert_eq!(
        style("\"%%\""),
        StyleField::Unknown(Value::Str("%%".into()))
    );
    assert_eq!(style("1"), StyleField::Unknown(int(1)));
    assert_eq!(style("\"{\"").known(), Some(Style::Brace));
}

#[test]
fn null_fields_are_absent_and_non_object_fields_ignored() {
    let r = rec("{\"msg\":\"m\",\"level\":null,\"logger\":null,\"ts\":null,\"fields\":null}");
    assert_eq!(
        (r.level.as_str(), r.logger.as_str(), r.ts, r.fields),
        ("info", "root", None, None)
    );
    assert_eq!(rec("{\"msg\":\"m\",\"fields\":[1]}").fields, None);
    assert_eq!(
        rec("{\"msg\":\"m\",\"fields\":{}}").fields,
        Some(IndexMap::new())
    );
    assert_eq!(rec("{\"msg\":\"m\",\"level\":\"\"}").level, "");
}

#[test]
fn exc_and_stack_are_verbatim_strings_and_other_values_are_ignored() {
    let r = rec(
        "{\"msg\":\"boom %s\",\"exc\":\"Traceback (most recent call last):\\n  \
         File \\\"x.py\\\", line 1\\nValueError: %s {0}\",\"stack\":\"Stack (most recent call last):\\n\"}",
    );
    assert_eq!(
        r.exc.as_deref(),
        Some("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: %s {0}")
    );
    assert_eq!(r.stack.as_deref(), Some("Stack (most recent call last):\n"));
    for other in ["1", "null", "true", "[\"a\"]", "{\"k\":\"v\"}", "1e400"] {
        let body = format!("{{\"msg\":\"m\",\"exc\":{other},\"stack\":{other}}}");
        let r = rec(&body);
        assert_eq!((r.exc, r.stack), (None, None), "{other}");
        assert!(r.structured);
    }
    let r = rec("{\"msg\":\"m\",\"exc\":\"\",\"exc\":\"last\"}");
    assert_eq!((r.exc.as_deref(), r.stack), (Some("last"), None));
    let plain = rec("not json\n");
    assert_eq!((plain.exc, plain.stack), (None, None));
    // A lone surrogate in them is invalid UTF-8, like in every member of the record.
    let r = rec("{\"msg\":\"m\",\"stack\":\"a\\ud800b\"}");
    assert!(r.invalid_utf8);
    assert_eq!(r.stack.as_deref(), Some("a\u{fffd}b"));
}

#[test]
fn duplicate_msg_last_one_wins() {
    assert_eq!(rec("{\"msg\":\"a\",\"msg\":\"b\"}").msg, "b");
    assert!(!rec("{\"msg\":\"a\",\"msg\":1}").structured);
}

#[test]
fn non_string_level_and_logger_are_python_str() {
    let r = rec("{\"msg\":\"m\",\"level\":5,\"logger\":[\"a\",true,null,1.0]}");
    assert_eq!(
        (r.level.as_str(), r.logger.as_str()),
        ("5", "['a', True, None, 1.0]")
    );
    let r = rec("{\"msg\":\"m\",\"level\":{\"k\":1e20},\"logger\":false}");
    assert_eq!(
        (r.level.as_str(), r.logger.as_str()),
        ("{'k': 1e+20}", "False")
    );
    // str() of a 5,000-digit int raises in CPython: the default stands.
    let body = format!("{{\"msg\":\"m\",\"level\":1{}}}", "0".repeat(5000));
    let r = rec(&body);
    assert_eq!(r.level, "info");
}

#[test]
fn invalid_utf8_is_decoded_as_python_errors_replace() {
    let bodies: [&[u8]; 10] = [
        b"caf\xe9 %s\n",
        b"\xff\xfe",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80x",
        b"\xc0\xafx",
        b"\xf4\x90\x80\x80",
        b"a\xe2\x82",
        b"\xe2\x82\xe2\x82\xac",
        b"\x80\x80\x80",
        b"\xef\xbb\xbf\xff{}",
    ];
    let hex: Vec<String> = bodies
        .iter()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        .collect();
    let code = format!(
        "for h in {hex:?}: print(bytes.fromhex(h).decode('utf-8', 'replace').encode('utf-8').hex())"
    );
    let Some(want) = python(&code) else { return };
    for (body, want) in bodies.iter().zip(want) {
        let r = decode(body, &limits()).unwrap_or_else(|e| unreachable!("{e}"));
        let got: String = r.msg.bytes().map(|x| format!("{x:02x}")).collect();
        assert_eq!(got, want, "{body:?}");
        assert!(r.invalid_utf8 && !r.structured);
    }
}

#[test]
fn invalid_utf8_inside_a_structured_record() {
    let r = decode(b"{\"msg\": \"caf\xe9\", \"args\": [\"\xff\"]}", &limits())
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(r.structured && r.invalid_utf8);
    assert_eq!(r.msg, "caf\u{fffd}");
    assert_eq!(
        r.args,
        Some(Value::List(vec![Value::Str("\u{fffd}".into())]))
    );
}

#[test]
fn lone_surrogate_in_a_structured_record_is_invalid_utf8() {
    let r = rec("{\"msg\":\"a\\ud800b\"}");
    assert_eq!(r.msg, "a\u{fffd}b");
    assert!(r.invalid_utf8);
    assert!(rec("{\"msg\":\"m\",\"fields\":{\"\\udc00\":1}}").invalid_utf8);
    assert!(!rec("{\"msg\":\"\\ud83d\\ude00\"}").invalid_utf8);
    // Members outside the record's table are ignored, their strings too.
    assert!(!rec("{\"msg\":\"m\",\"other\":\"\\ud800\"}").invalid_utf8);
    assert!(!rec("{\"msg\":\"m\",\"\\ud800\":1}").invalid_utf8);
}

#[test]
fn ts_strings_are_rfc3339_in_utc_with_truncated_millis() {
    let ts = |s: &str| parse_ts(&Value::Str(s.into())).as_ref().map(format_ts);
    assert_eq!(
        ts("2026-11-22T10:00:00Z").as_deref(),
        Some("2026-11-22T10:00:00.000Z")
    );
    assert_eq!(
        ts("2026-11-22T10:00:00.9999Z").as_deref(),
        Some("2026-11-22T10:00:00.999Z")
    );
    assert_eq!(
        ts("2026-11-22T00:30:00-02:00").as_deref(),
        Some("2026-11-22T02:30:00.000Z")
    );
    assert_eq!(
        ts("2026-01-01T00:30:00+01:00").as_deref(),
        Some("2025-12-31T23:30:00.000Z")
    );
    assert_eq!(ts("0000-01-01T00:30:00+01:00"), None);
    assert_eq!(ts("2026-11-22"), None);
    assert_eq!(ts("1700000000"), None);
    assert_eq!(ts("yesterday"), None);
    assert_eq!(ts(""), None);
    assert_eq!(parse_ts(&Value::Bool(true)), None);
    assert_eq!(parse_ts(&Value::List(vec![])), None);
}

#[test]
fn epoch_seconds_match_python_fromtimestamp() {
    let epochs = [
        "0",
        "1700000000",
        "-1",
        "1.001",
        "-0.5",
        "1e-7",
        "5e-7",
        "1.5e-6",
        "-1.0000005",
        "1700000000.123456789",
        "253402300799.9999",
        "253402300799",
        "-62135596800",
        "-62167219200",
        "0.9999995",
        "-0.0000005",
        "1e-300",
    ];
    let code = format!(
        "from datetime import datetime, timezone\nfor x in {epochs:?}:\n \
         try: print(datetime.fromtimestamp(float(x), timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z'))\n \
         except ValueError: print('year 0')"
    );
    let Some(want) = python(&code) else { return };
    for (e, want) in epochs.iter().zip(want) {
        let v = match json::parse(e, 1) {
            Ok(p) => p.value,
            Err(err) => unreachable!("{e}: {err}"),
        };
        let got = parse_ts(&v).as_ref().map(format_ts);
        // Python cannot write year 0 (its datetime starts at year 1); RFC 3339 can.
        let want = if want == "year 0" {
            "0000-01-01T00:00:00.000Z".to_owned()
        } else {
            want
        };
        assert_eq!(got.as_deref(), Some(want.as_str()), "epoch {e}");
    }
}

#[test]
fn epochs_out_of_range_are_absent() {
    for e in [
        "253402300800",
        "-62167219201",
        "1e300",
        "-1e300",
        "9223372036854775807",
        "18446744073709551616",
        "NaN",
        "Infinity",
        "-Infinity",
    ] {
        let v = json::parse(e, 1).map(|p| p.value).unwrap_or(Value::None);
        assert_ne!(v, Value::None, "{e}");
        assert_eq!(parse_ts(&v), None, "epoch {e}");
    }
    let r = rec("{\"msg\":\"m\",\"ts\":1e400}");
    assert_eq!(r.ts, None);
    let r = rec("{\"msg\":\"m\",\"ts\":1700000000.5}");
    assert_eq!(
        r.ts.as_ref().map(format_ts).as_deref(),
        Some("2023-11-14T22:13:20.500Z")
    );
}

#[test]
fn plain_text_of_a_megabyte_costs_one_copy() {
    let body = "x".repeat(1 << 20);
    let r = decode(body.as_bytes(), &limits()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(r.msg.len(), 1 << 20);
    assert!(!r.structured);
}

/// Allocation (jemalloc's per-thread counter, size classes) for decoding typical and
/// hostile megabyte bodies, printed for the record and bounded loosely so a regression to
/// quadratic or unbounded growth fails.
#[test]
fn decoding_allocates_in_proportion_to_the_body() {
    let obj = |inner: String| format!("{{\"msg\":\"m %s\",\"args\":{inner}}}");
    // (name, body, the most bytes allocated per body byte)
    let cases = [
        ("plain text 1 MiB", "x".repeat(1 << 20), 1.1),
        (
            "small record",
            "{\"msg\":\"user %s logged in\",\"args\":[\"bob\"]}".to_owned(),
            40.0,
        ),
        (
            "1 MiB string arg",
            obj(format!("[\"{}\"]", "y".repeat((1 << 20) - 40))),
            1.1,
        ),
        (
            "~1 MiB of small ints",
            obj(format!("[{}0]", "0,".repeat(524_000))),
            120.0,
        ),
        (
            "~1 MiB of empty lists",
            obj(format!("[{}[]]", "[],".repeat(349_000))),
            120.0,
        ),
        (
            "~1 MiB of empty dicts",
            obj(format!("[{}{{}}]", "{},".repeat(349_000))),
            120.0,
        ),
        ("1 MiB-digit int", obj("7".repeat((1 << 20) - 30)), 200.0),
        // Plain text that happens to be JSON, and unknown members: checked, not built.
        (
            "JSON array, plain text",
            format!("[{}0]", "0,".repeat(524_000)),
            1.1,
        ),
        ("1 MiB-digit int, plain text", "7".repeat(1 << 20), 1.1),
        (
            "escaped strings, plain text",
            format!("[{}0]", "\"\\n\",".repeat(200_000)),
            1.1,
        ),
        (
            "unknown member",
            format!("{{\"msg\":\"m\",\"x\":[{}0]}}", "0,".repeat(524_000)),
            0.1,
        ),
    ];
    for (name, body, max_ratio) in cases {
        assert!(body.len() <= 1 << 20, "{name}: {}", body.len());
        let t = std::time::Instant::now();
        let (r, bytes) = crate::alloc::measure(|| decode(body.as_bytes(), &limits()).map(drop));
        let took = t.elapsed();
        assert!(r.is_ok(), "{name}");
        let ratio = bytes as f64 / body.len() as f64;
        eprintln!(
            "{name}: {} bytes body, {bytes} allocated ({ratio:.1}x), {took:?}",
            body.len()
        );
        assert!(ratio <= max_ratio, "{name}: {ratio}");
    }
}

#[test]
fn ts_string_forms_follow_chrono_rfc3339() {
    let cases = [
        ("2026-11-22 10:00:00Z", Some("2026-11-22T10:00:00.000Z")),
        ("2026-11-22t10:00:00z", Some("2026-11-22T10:00:00.000Z")),
        (
            "2026-11-22T10:00:00.123456789123Z",
            Some("2026-11-22T10:00:00.123Z"),
        ),
        // A leap second stays one: RFC 3339 allows :60.
        ("2026-11-22T23:59:60.5Z", Some("2026-11-22T23:59:60.500Z")),
        ("2026-11-22T10:00Z", None),
        (" 2026-11-22T10:00:00Z", None),
    ];
    for (s, want) in cases {
        assert_eq!(
            parse_ts(&Value::Str(s.into()))
                .as_ref()
                .map(format_ts)
                .as_deref(),
            want,
            "{s}"
        );
    }
}

/// `(template, style, args)` bodies with `N` standing for the huge int.
const HUGE_INT_CASES: &[(&str, &str, &str)] = &[
    ("%d", "%", "[N]"),
    ("%i|%u", "%", "[N, N]"),
    ("%x", "%", "[N]"),
    ("%#X", "%", "[N]"),
    ("%#o", "%", "[N]"),
    ("%+-12d", "%", "[N]"),
    ("%s", "%", "[N]"),
    ("%r", "%", "[[N, 1]]"),
    ("%a", "%", "[N]"),
    ("%.3s", "%", "[N]"),
    ("%e", "%", "[N]"),
    ("%f", "%", "[N]"),
    ("%G", "%", "[N]"),
    ("%c", "%", "[N]"),
    ("%*d", "%", "[N, 1]"),
    ("%.*f", "%", "[N, 1.5]"),
    ("%d %d", "%", "[N]"),
    ("%(a)s", "%", "{\"a\": N}"),
    ("%d", "%", "N"),
    ("{}", "{", "[N]"),
    ("{!r:>5}", "{", "[N]"),
    ("{:x}", "{", "[N]"),
    ("{:b}", "{", "[N]"),
    ("{:#o}", "{", "[N]"),
    ("{:_X}", "{", "[N]"),
    ("{:,}", "{", "[N]"),
    ("{:.3}", "{", "[N]"),
    ("{:e}", "{", "[N]"),
    ("{:%}", "{", "[N]"),
    ("{:c}", "{", "[N]"),
    ("{:s}", "{", "[N]"),
    ("{:>{}}", "{", "[1, N]"),
    ("{0[0]}", "{", "[N]"),
    ("{a}", "{", "{\"a\": N}"),
    ("$a", "$", "{\"a\": N}"),
];

/// What a render came to, with an output-too-large's lower bound left out: that figure
/// is "at least", from whichever bound was at hand.
fn verdict(r: Result<String, crate::format::Reject>) -> String {
    match r {
        Ok(s) => format!("ok {s}"),
        Err(crate::format::Reject::OutputTooLarge { limit, .. }) => {
            format!("output-too-large {limit}")
        }
        Err(e) => format!("{}: {}", e.rule().id(), e.detail()),
    }
}

#[test]
fn huge_int_literal_renders_exactly_as_its_value_would() {
    for max_output_bytes in [1_000, 8_000] {
        let l = Limits {
            max_output_bytes,
            ..Limits::default()
        };
        let digits = huge_int_digits(&l) + 1;
        for sign in ["", "-"] {
            let n = format!("{sign}7{}", "3".repeat(digits - 1));
            for (msg, style, args) in HUGE_INT_CASES {
                let args = args.replace('N', &n);
                let body =
                    format!("{{\"msg\": \"{msg}\", \"style\": \"{style}\", \"args\": {args}}}");
                let lazy = decode(body.as_bytes(), &l).unwrap_or_else(|e| unreachable!("{e}"));
                let exact = json::parse(&args, 8)
                    .map(|p| p.value)
                    .unwrap_or(Value::None);
                let style = lazy.style.known().unwrap_or(Style::Percent);
                let Some(lazy_args) = lazy.args() else {
                    unreachable!("{body}")
                };
                let exact_args = match &exact {
                    Value::List(items) => Args::Tuple(items),
                    Value::Dict(map) => Args::Mapping(map),
                    other => Args::Scalar(other),
                };
                assert_eq!(
                    verdict(crate::format::render(msg, lazy_args, style, &l)),
                    verdict(crate::format::render(msg, exact_args, style, &l)),
                    "{msg} {sign}{digits} digits, limit {max_output_bytes}"
                );
                assert_eq!(
                    crate::line::fallback_message(Rule::OutputTooLarge, msg, Some(lazy_args), 200),
                    crate::line::fallback_message(Rule::OutputTooLarge, msg, Some(exact_args), 200),
                );
            }
        }
    }
}

#[test]
fn huge_int_literal_is_counted_not_converted_except_in_fields() {
    let l = Limits::default();
    let digits = huge_int_digits(&l) + 1;
    let n = "9".repeat(digits);
    let body = format!("{{\"msg\": \"%d\", \"args\": [-{n}], \"fields\": {{\"n\": {n}}}}}");
    let (r, bytes) = crate::alloc::measure(|| decode(body.as_bytes(), &l));
    let r = r.unwrap_or_else(|e| unreachable!("{e}"));
    let Some(Value::List(args)) = &r.args else {
        unreachable!("{r:?}")
    };
    assert_eq!(args, &[Value::Int(Int::huge_literal(digits, true))]);
    let Some(Value::Int(exact)) = r.fields.as_ref().and_then(|f| f.get("n")) else {
        unreachable!("{r:?}")
    };
    assert_eq!(exact.literal_digits(), None);
    assert!(bytes > 30_000, "the exact field costs its value: {bytes}");
    let small = format!("{{\"msg\": \"%d\", \"args\": [-{n}]}}");
    let (_, bytes) = crate::alloc::measure(|| decode(small.as_bytes(), &l));
    assert!(bytes < 4096, "a huge arg costs nothing: {bytes}");
    // One digit fewer is a value, exact.
    let edge = format!("{{\"msg\": \"%d\", \"args\": [{}]}}", &n[1..]);
    let r = decode(edge.as_bytes(), &l).unwrap_or_else(|e| unreachable!("{e}"));
    let Some(Value::List(args)) = &r.args else {
        unreachable!("{r:?}")
    };
    assert!(matches!(&args[0], Value::Int(i) if i.literal_digits().is_none()));
}

#[test]
fn msg_borrows_the_body_unless_it_must_be_decoded() {
    let borrowed = |body: &str| matches!(rec(body).msg, Cow::Borrowed(_));
    assert!(borrowed("{\"msg\": \"plain %s\", \"args\": [1]}"));
    assert!(borrowed("not json at all"));
    assert!(!borrowed("{\"msg\": \"tab\\there\"}"));
    assert_eq!(rec("{\"msg\": \"tab\\there\"}").msg, "tab\there");
    // The last `msg` wins, whichever kinds came before.
    assert_eq!(rec("{\"msg\": \"a\", \"msg\": \"b\\n\"}").msg, "b\n");
    assert_eq!(rec("{\"msg\": 5, \"msg\": \"b\"}").msg, "b");
    let r = rec("{\"msg\": \"a\", \"msg\": 5}");
    assert!(!r.structured);
    assert_eq!(r.msg, "{\"msg\": \"a\", \"msg\": 5}");
    // A nested `msg` is just a key.
    let r = rec("{\"msg\": \"m\", \"args\": {\"msg\": \"x\"}}");
    assert_eq!(r.msg, "m");
    assert_eq!(
        r.args().map(
            |a| matches!(a, Args::Mapping(m) if m.get("msg") == Some(&Value::Str("x".into())))
        ),
        Some(true)
    );
    // Invalid UTF-8 elsewhere in the body: the message is owned, still exact.
    let r = decode(b"{\"msg\": \"ok\", \"level\": \"\xff\"}", &limits())
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!((r.msg.as_ref(), r.invalid_utf8), ("ok", true));
}

#[test]
fn format_ts_writes_what_chrono_writes() {
    let chrono_of = |ts: &DateTime<Utc>| ts.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut seconds: i64 = -62_167_219_200; // 0000-01-01
    while seconds < 253_402_300_800 {
        // 9999-12-31, in steps that visit every field's range.
        for nanos in [
            0,
            999_999,
            1_000_000,
            123_456_789,
            999_999_999,
            1_500_000_000,
        ] {
            if let Some(ts) = DateTime::from_timestamp(seconds, nanos) {
                assert_eq!(format_ts(&ts), chrono_of(&ts), "{seconds} {nanos}");
            }
        }
        seconds += 7_777_777 + seconds.rem_euclid(86_399);
    }
    for (s, n) in [(-62_167_219_201, 0), (253_402_300_800, 5_000_000)] {
        let ts = DateTime::from_timestamp(s, n).unwrap_or_default();
        assert_eq!(format_ts(&ts), chrono_of(&ts), "{s}");
    }
}
