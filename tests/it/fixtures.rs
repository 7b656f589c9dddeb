//! The hand-written format cases of `fixtures/format/{percent,brace,dollar}.json`, checked
//! against `logfence::format::render`, and re-checked against CPython in the same run.
//!
//! A case is `{"msg", "args", "expect" | "error" | "reject", "note"?}`. `expect` (the
//! rendered message) and `error` (CPython's `Type: message`) come from CPython via
//! `scripts/gen_format_fixtures.py`; `reject` (a limit's rule id) is labelled by hand. Every
//! run asks `tests/oracle.py` again about each non-reject case, so a fixture that no longer
//! says what CPython says fails here instead of silently teaching the formatter a wrong
//! answer. To refresh after editing a file: `python3 scripts/gen_format_fixtures.py`.
//!
//! Run one style: `cargo test --test it fixtures_percent -- --nocapture` (or `_brace`,
//! `_dollar`). `LOGFENCE_DIFF_SHOW=N` caps the failures printed (default 20).

use std::path::PathBuf;

use logfence::config::Limits;
use logfence::finding::Rule;
use logfence::value::Value;

use crate::differential::oracle::{self, Answer};
use crate::differential::{judge, pyjson, render_case, show_expected, Expected, Got, Verdict};

/// One fixture case, as read from the file.
#[derive(Debug)]
struct Fixture {
    line: usize,
    msg: String,
    args_text: String,
    expect: Expected,
    note: Option<String>,
}

fn load(file: &str) -> Vec<Fixture> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/format")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = pyjson::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Value::List(items) = doc else {
        panic!("{file}: not a JSON array")
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let line = i + 2; // one case per line, after the opening `[`
            let Value::Dict(m) = item else {
                panic!("{file}:{line}: not an object")
            };
            let s = |k: &str| match m.get(k) {
                Some(Value::Str(s)) => Some(s.clone()),
                None => None,
                Some(v) => panic!("{file}:{line}: {k} is not a string: {v:?}"),
            };
            let msg = s("msg").unwrap_or_else(|| panic!("{file}:{line}: no msg"));
            let args = m
                .get("args")
                .unwrap_or_else(|| panic!("{file}:{line}: no args"));
            let empty = match args {
                Value::None => true,
                Value::List(xs) => xs.is_empty(),
                Value::Dict(d) => d.is_empty(),
                _ => false,
            };
            assert!(
                !empty,
                "{file}:{line}: empty args never reach the formatter (verbatim)"
            );
            let expect = match (s("expect"), s("error"), s("reject")) {
                (Some(e), None, None) => Expected::Output(e),
                (None, Some(e), None) => Expected::Error(e),
                (None, None, Some(r)) => Expected::Limit(
                    Rule::ALL
                        .into_iter()
                        .find(|x| x.id() == r)
                        .unwrap_or_else(|| panic!("{file}:{line}: unknown rule {r}")),
                ),
                _ => panic!(
                    "{file}:{line}: needs exactly one of expect/error/reject \
                     (run scripts/gen_format_fixtures.py)"
                ),
            };
            Fixture {
                line,
                msg,
                args_text: pyjson::text_of(args),
                expect,
                note: s("note"),
            }
        })
        .collect()
}

fn clip(s: &str) -> String {
    let d = format!("{s:?}");
    if d.len() <= 300 {
        return d;
    }
    let mut cut = 300;
    while !d.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes]", &d[..cut], s.len())
}

fn show_got(g: &Got) -> String {
    match g {
        Got::Ok(s) => format!("ok {}", clip(s)),
        Got::Reject(r) => format!("reject {}: {}", r.rule().id(), clip(&r.detail())),
        Got::Panic(p) => format!("PANIC {}", clip(p)),
        Got::BadArgs(e) => format!("args not decoded: {e}"),
    }
}

/// Checks one style's fixture file; panics with a report when any case fails.
fn check(file: &str, style: &'static str) {
    let show = std::env::var("LOGFENCE_DIFF_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cases = load(file);
    // Stale fixtures: CPython must still say what the file says.
    let asked: Vec<&Fixture> = cases
        .iter()
        .filter(|c| !matches!(c.expect, Expected::Limit(_)))
        .collect();
    let queries: Vec<oracle::Query<'_>> = asked
        .iter()
        .map(|c| (style, c.msg.as_str(), c.args_text.as_str()))
        .collect();
    let answers = oracle::ask(&queries);
    let mut stale = Vec::new();
    for (c, a) in asked.iter().zip(&answers) {
        let fresh = match (a, &c.expect) {
            (Answer::Ok(s), Expected::Output(e)) => s == e,
            (Answer::Err { text, .. }, Expected::Error(e)) => text == e,
            _ => false,
        };
        if !fresh {
            stale.push(format!(
                "{file}:{}: {} — CPython now says {a:?}",
                c.line,
                clip(&c.msg)
            ));
        }
    }
    // logfence.
    let limits = Limits::default();
    let mut failures = Vec::new();
    let mut agree = 0;
    for c in &cases {
        let got = render_case(style, &c.msg, &c.args_text, &limits);
        if judge(&c.expect, &got) == Verdict::Agree {
            agree += 1;
            continue;
        }
        failures.push(format!(
            "{file}:{}{}\n    msg:      {}\n    args:     {}\n    expected: {}\n    got:      {}",
            c.line,
            c.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            clip(&c.msg),
            clip(&c.args_text),
            show_expected(&c.expect),
            show_got(&got),
        ));
    }
    println!(
        "=== fixtures/format/{file}: {} cases, {agree} agree, {} fail, {} stale",
        cases.len(),
        failures.len(),
        stale.len()
    );
    for s in &stale {
        println!("STALE {s}");
    }
    for f in failures.iter().take(show) {
        println!("--- {f}");
    }
    assert!(
        stale.is_empty(),
        "{} stale fixtures in {file}: run scripts/gen_format_fixtures.py",
        stale.len()
    );
    assert!(
        failures.is_empty(),
        "logfence fails {} of {} cases in {file}",
        failures.len(),
        cases.len()
    );
}

#[test]
fn fixtures_percent_match_cpython() {
    check("percent.json", "%");
}

#[test]
fn fixtures_brace_match_cpython() {
    check("brace.json", "{");
}

#[test]
fn fixtures_dollar_match_cpython() {
    check("dollar.json", "$");
}
