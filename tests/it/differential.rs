//! The differential test: logfence's formatter against CPython 3.11, over thousands of
//! generated cases per style. The project's key quality gate: agreement must be 100%.
//!
//! For every generated `(style, msg, args)` case (see [`gen`]), CPython renders it
//! (`tests/oracle.py`, one `python3` process for the whole batch, JSON lines in and out)
//! and logfence renders it with `format::render(msg, args, style, &Limits::default())`.
//! Both sides get the args as the same JSON text. The verdict:
//!
//! - a template-level limit applies (the generator knows: attribute access, more than 256
//!   fields, a width/precision over 4096; the first in reject precedence order wins):
//!   logfence must return that reject, whatever CPython does;
//! - CPython renders ≤ 64 KiB: logfence must return exactly those bytes;
//! - CPython renders > 64 KiB (or would have, but for its 4,300-digit rule):
//!   `output-too-large`;
//! - CPython raises: `Reject::FormatError` whose `"{exception}: {message}"` is CPython's
//!   `"{type}: {str(exc)}"` exactly.
//!
//! A panic in logfence is caught and counted as a mismatch.
//!
//! Run: `cargo test --test it differential -- --nocapture`. Environment:
//!
//! - `LOGFENCE_DIFF_STYLE=%|{|$`: only that style (each style's cases do not depend on
//!   the others, so a filtered run sees the same cases);
//! - `LOGFENCE_DIFF_CASES=N`: cases per style (default 5,000);
//! - `LOGFENCE_DIFF_SEED=N`: the generator seed (default 20261122);
//! - `LOGFENCE_DIFF_SHOW=N`: how many mismatches to print per style (default 20);
//! - `LOGFENCE_DIFF_KIND=clean|malformed|limit-width|…`: only cases of that generator
//!   kind (the kinds are listed in the summary);
//! - `LOGFENCE_DIFF_TRACE=1`: print each case to stderr before logfence renders it (to
//!   find a case that aborts the process, which `catch_unwind` cannot catch).

pub mod gen;
pub mod oracle;
pub mod pyjson;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use logfence::config::Limits;
use logfence::finding::Rule;
use logfence::format::{self, Args, Reject, Style};
use logfence::value::Value;

use gen::{Case, MAX_OUTPUT};
use oracle::Answer;

const DEFAULT_SEED: u64 = 20261122;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What logfence must return for a case.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    Output(String),
    Limit(Rule),
    Error(String),
    /// Not comparable (the oracle said why).
    Skip(String),
}

impl Expected {
    /// Combines the generator's verdict with CPython's answer (reject precedence).
    pub fn of(case: &Case, answer: Option<&Answer>) -> Expected {
        if let Some(rule) = case.limit {
            return Expected::Limit(rule);
        }
        match answer {
            None => Expected::Skip("no oracle answer".into()),
            Some(Answer::Ok(s)) if s.len() > MAX_OUTPUT => Expected::Limit(Rule::OutputTooLarge),
            Some(Answer::Ok(s)) => Expected::Output(s.clone()),
            Some(Answer::Err {
                unlimited_len: Some(n),
                ..
            }) if *n > MAX_OUTPUT => Expected::Limit(Rule::OutputTooLarge),
            Some(Answer::Err { text, .. }) => Expected::Error(text.clone()),
            Some(Answer::Skip(why)) => Expected::Skip(why.clone()),
        }
    }
}

/// What logfence returned.
#[derive(Clone, Debug)]
pub enum Got {
    Ok(String),
    Reject(Reject),
    Panic(String),
    /// The harness could not decode the args (a harness bug, reported as such).
    BadArgs(String),
}

/// How a case went; every variant but `Agree`/`Skipped` is a mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Agree,
    Skipped,
    /// Both rendered, different bytes.
    OutputBytes,
    /// CPython rendered; logfence refused (any reject).
    RefusedValid,
    /// CPython raised; logfence rendered.
    RenderedInvalid,
    /// Both failed with `format-error`, different `Type: message`.
    ErrorMessage,
    /// CPython raised; logfence returned a limit reject instead of `format-error`.
    ErrorAsLimit,
    /// A limit should have won; logfence rendered.
    LimitMissed,
    /// A limit should have won; logfence returned another reject.
    LimitWrong,
    Panic,
    HarnessArgs,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Skipped => "skipped",
            Verdict::OutputBytes => "output-bytes-differ",
            Verdict::RefusedValid => "refused-what-cpython-renders",
            Verdict::RenderedInvalid => "rendered-what-cpython-rejects",
            Verdict::ErrorMessage => "error-message-differs",
            Verdict::ErrorAsLimit => "limit-where-cpython-raises",
            Verdict::LimitMissed => "limit-missed",
            Verdict::LimitWrong => "wrong-limit",
            Verdict::Panic => "panic",
            Verdict::HarnessArgs => "harness-args-decode",
        }
    }
}

pub fn judge(expected: &Expected, got: &Got) -> Verdict {
    match (expected, got) {
        (Expected::Skip(_), _) => Verdict::Skipped,
        (_, Got::Panic(_)) => Verdict::Panic,
        (_, Got::BadArgs(_)) => Verdict::HarnessArgs,
        (Expected::Output(e), Got::Ok(g)) if e == g => Verdict::Agree,
        (Expected::Output(_), Got::Ok(_)) => Verdict::OutputBytes,
        (Expected::Output(_), Got::Reject(_)) => Verdict::RefusedValid,
        (Expected::Error(_), Got::Ok(_)) => Verdict::RenderedInvalid,
        (Expected::Error(e), Got::Reject(r)) => match r {
            Reject::FormatError {
                exception, message, ..
            } => {
                if format!("{exception}: {message}") == *e {
                    Verdict::Agree
                } else {
                    Verdict::ErrorMessage
                }
            }
            _ => Verdict::ErrorAsLimit,
        },
        (Expected::Limit(_), Got::Ok(_)) => Verdict::LimitMissed,
        (Expected::Limit(rule), Got::Reject(r)) if r.rule() == *rule => Verdict::Agree,
        (Expected::Limit(_), Got::Reject(_)) => Verdict::LimitWrong,
    }
}

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that stays quiet (and remembers the message) on threads that are catching
/// logfence's panics, and leaves every other test's panics to the default hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(|c| c.get()) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(message)`.
pub fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    CATCHING.with(|c| c.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    r.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".into())
    })
}

/// The args as logfence's formatter takes them, decoded from the same JSON text CPython
/// decodes, by `logfence::json` (the decoder records go through). The harness's own
/// decoder checks it: a disagreement is reported as a harness-args mismatch, not blamed on
/// the formatter.
pub fn decode_args(text: &str) -> Result<Value, String> {
    let parsed = catching(|| logfence::json::parse(text, 64))
        .map_err(|p| format!("logfence::json::parse panicked: {p}"))?
        .map_err(|e| format!("logfence::json::parse: {e}"))?;
    let mine = pyjson::parse(text)?;
    let (a, b) = (pyjson::text_of(&parsed.value), pyjson::text_of(&mine));
    if a != b {
        return Err(format!(
            "logfence::json decodes {} where json.loads gives {}",
            clip(&a, 200),
            clip(&b, 200)
        ));
    }
    Ok(parsed.value)
}

pub fn style_of(s: &str) -> Style {
    Style::from_field(s).unwrap_or(Style::Percent)
}

/// logfence's rendering of one case, panics caught.
pub fn render_case(style: &str, msg: &str, args_text: &str, limits: &Limits) -> Got {
    let value = match decode_args(args_text) {
        Ok(v) => v,
        Err(e) => return Got::BadArgs(e),
    };
    let args = match &value {
        Value::List(xs) => Args::Tuple(xs),
        Value::Dict(m) => Args::Mapping(m),
        other => Args::Scalar(other),
    };
    let style = style_of(style);
    match catching(|| format::render(msg, args, style, limits)) {
        Ok(Ok(s)) => Got::Ok(s),
        Ok(Err(r)) => Got::Reject(r),
        Err(p) => Got::Panic(p),
    }
}

fn clip(s: &str, max: usize) -> String {
    let dbg = format!("{s:?}");
    if dbg.len() <= max {
        return dbg;
    }
    let mut cut = max;
    while !dbg.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes total]", &dbg[..cut], s.len())
}

pub fn show_expected(e: &Expected) -> String {
    match e {
        Expected::Output(s) => format!("ok {}", clip(s, 400)),
        Expected::Limit(r) => format!("reject {}", r.id()),
        Expected::Error(t) => format!("format-error {}", clip(t, 400)),
        Expected::Skip(w) => format!("skip ({w})"),
    }
}

fn show_got(g: &Got) -> String {
    match g {
        Got::Ok(s) => format!("ok {}", clip(s, 400)),
        Got::Reject(Reject::FormatError {
            exception, message, ..
        }) => {
            format!(
                "format-error {}",
                clip(&format!("{exception}: {message}"), 400)
            )
        }
        Got::Reject(r) => format!("reject {} ({})", r.rule().id(), r.detail()),
        Got::Panic(p) => format!("PANIC {}", clip(p, 400)),
        Got::BadArgs(e) => format!("harness could not decode args: {e}"),
    }
}

/// Per-style tallies.
#[derive(Default)]
struct Tally {
    cases: usize,
    verdicts: BTreeMap<Verdict, usize>,
    /// generator kind -> (cases, agree, CPython rendered, CPython raised)
    kinds: BTreeMap<&'static str, (usize, usize, usize, usize)>,
}

fn run_style(style: &'static str, n: usize, seed: u64, show: usize, kind: Option<&str>) -> Tally {
    let cases: Vec<Case> = gen::cases(style, n, seed)
        .into_iter()
        .filter(|c| kind.is_none_or(|k| c.kind == k))
        .collect();
    // Cases a template limit decides are never shown to CPython: it would try to allocate
    // the 2.4 GB the limit exists to refuse.
    let asked: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].limit.is_none())
        .collect();
    let queries: Vec<oracle::Query<'_>> = asked
        .iter()
        .map(|&i| {
            (
                cases[i].style,
                cases[i].msg.as_str(),
                cases[i].args.as_str(),
            )
        })
        .collect();
    let answers = oracle::ask(&queries);
    let mut by_case: Vec<Option<&Answer>> = vec![None; cases.len()];
    for (k, &i) in asked.iter().enumerate() {
        by_case[i] = Some(&answers[k]);
    }
    let trace = std::env::var_os("LOGFENCE_DIFF_TRACE").is_some();
    let limits = Limits::default();
    let mut t = Tally::default();
    let mut shown = 0;
    for (i, case) in cases.iter().enumerate() {
        let expected = Expected::of(case, by_case[i]);
        if trace {
            eprintln!(
                "[{style} #{i} {}] msg={} args={}",
                case.kind,
                clip(&case.msg, 200),
                clip(&case.args, 200)
            );
        }
        let got = render_case(case.style, &case.msg, &case.args, &limits);
        let v = judge(&expected, &got);
        t.cases += 1;
        *t.verdicts.entry(v).or_default() += 1;
        let k = t.kinds.entry(case.kind).or_default();
        k.0 += 1;
        match by_case[i] {
            Some(Answer::Ok(_)) => k.2 += 1,
            Some(Answer::Err { .. }) => k.3 += 1,
            _ => {}
        }
        if v == Verdict::Agree || v == Verdict::Skipped {
            k.1 += 1;
            continue;
        }
        if shown < show {
            shown += 1;
            println!("--- mismatch [{style} #{i}, {}] {}", case.kind, v.name());
            println!("    msg:      {}", clip(&case.msg, 300));
            println!("    args:     {}", clip(&case.args, 300));
            println!("    expected: {}", show_expected(&expected));
            println!("    got:      {}", show_got(&got));
        }
    }
    t
}

#[test]
fn differential_logfence_matches_cpython() {
    let n = env_usize("LOGFENCE_DIFF_CASES", 5000);
    let show = env_usize("LOGFENCE_DIFF_SHOW", 20);
    let seed = std::env::var("LOGFENCE_DIFF_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let only = std::env::var("LOGFENCE_DIFF_STYLE").ok();
    let kind = std::env::var("LOGFENCE_DIFF_KIND").ok();
    let mut failed = 0;
    let mut summary = String::new();
    for style in ["%", "{", "$"] {
        if only.as_deref().is_some_and(|o| o != style) {
            continue;
        }
        let t = run_style(style, n, seed, show, kind.as_deref());
        let agree = t.verdicts.get(&Verdict::Agree).copied().unwrap_or(0);
        let skipped = t.verdicts.get(&Verdict::Skipped).copied().unwrap_or(0);
        let bad = t.cases - agree - skipped;
        failed += bad;
        let pct = if t.cases > skipped {
            100.0 * agree as f64 / (t.cases - skipped) as f64
        } else {
            100.0
        };
        summary.push_str(&format!(
            "style {style}: {} cases, {agree} agree ({pct:.2}%), {skipped} skipped, {bad} mismatches\n",
            t.cases
        ));
        for (v, c) in &t.verdicts {
            if *v != Verdict::Agree {
                summary.push_str(&format!("    {:<32} {c}\n", v.name()));
            }
        }
        for (k, (c, a, ok, err)) in &t.kinds {
            summary.push_str(&format!(
                "    kind {k:<24} {a}/{c} agree (CPython: {ok} rendered, {err} raised)\n"
            ));
        }
    }
    println!("=== differential (seed {seed}, {n} cases per style)\n{summary}");
    assert_eq!(
        failed, 0,
        "logfence disagrees with CPython on {failed} cases:\n{summary}"
    );
}

#[test]
fn differential_generator_is_deterministic_and_covers_every_kind() {
    let a = gen::cases("{", 300, 7);
    let b = gen::cases("{", 300, 7);
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.msg == y.msg && x.args == y.args));
    for style in ["%", "{", "$"] {
        let cs = gen::cases(style, 2000, DEFAULT_SEED);
        for kind in ["clean", "malformed", "limit-fields", "limit-output"] {
            assert!(
                cs.iter().any(|c| c.kind == kind),
                "{style} has no {kind} case"
            );
        }
        for c in &cs {
            assert!(pyjson::parse(&c.args).is_ok(), "args of {c:?} decode");
        }
    }
}
