//! Properties of the whole synchronous path over arbitrary input: `process` never panics,
//! always yields exactly one line, and what it allocates is bounded by the output limit
//! plus a small multiple of the body, whatever the template and args.

use logfence::config::Limits;
use logfence::line::DEFAULT_LINE_FORMAT;
use logfence::pipeline::{Pipeline, Verdict};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

/// Pieces templates are made of: spec-like fragments of every style, with widths and
/// precisions from tiny to absurd, and text that escapes or breaks lines.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z ]{0,8}",
        Just("%s".to_string()),
        Just("%%".to_string()),
        Just("%r".to_string()),
        Just("%(a)s".to_string()),
        Just("%*d".to_string()),
        Just("%.*f".to_string()),
        Just("{}".to_string()),
        Just("{0!r:>{1}}".to_string()),
        Just("{a[0]}".to_string()),
        Just("{0.real}".to_string()),
        Just("{:,.2f}".to_string()),
        Just("$a".to_string()),
        Just("${a}".to_string()),
        Just("\n\r\t\u{1b}\u{202e}".to_string()),
        Just("${jndi:ldap://x}".to_string()),
        (0u64..10_000_000_000).prop_map(|w| format!("%{w}d")),
        (0u64..10_000_000_000).prop_map(|w| format!("{{:>{w}}}")),
        (0u64..100_000).prop_map(|p| format!("%.{p}f")),
        "[%{}$(),.:0-9a-z!*#+-]{1,6}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        (-1e12f64..1e12).prop_map(Json::from),
        "[ -~\u{80}-\u{10ffff}]{0,40}".prop_map(Json::from),
        any::<bool>().prop_map(Json::from),
        Just(Json::Null),
        (0u64..5_000_000_000).prop_map(Json::from),
    ]
}

fn args() -> impl Strategy<Value = Json> {
    let leaf = scalar();
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::from),
            prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        prop::collection::vec(value.clone(), 0..8).prop_map(Json::from),
        prop::collection::btree_map("[a-c]{1,2}", value, 0..6)
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        scalar(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn process_never_panics_and_allocation_stays_bounded(
        msg in template(),
        args in args(),
        style in prop::sample::select(vec!["%", "{", "$"]),
    ) {
        let limits = Limits { max_output_bytes: 8 << 10, ..Limits::default() };
        let pipeline = Pipeline::new(limits.clone(), DEFAULT_LINE_FORMAT)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = json!({"msg": msg, "args": args, "style": style}).to_string();
        // Warm this thread's template cache and lazily built tables first: the property
        // is about what a record costs, not what the process pays once.
        let _ = pipeline.process(body.as_bytes());
        let outcome = pipeline.process(body.as_bytes());

        let line = outcome.line.clone().unwrap_or_default();
        prop_assert!(!line.contains('\n') && !line.contains('\r'), "one line: {line:?}");
        prop_assert!(outcome.verdict != Verdict::Crashed);
        let rejects = outcome.findings.iter().filter(|f| f.rule.severity()
            == logfence::finding::Severity::Reject).count();
        prop_assert!(rejects <= 1, "{:?}", outcome.findings);
        prop_assert_eq!(outcome.verdict == Verdict::Rejected, rejects == 1);

        // The output buffer, the fallback (template and args repr, each cut to the limit)
        // and the escaped line each hold at most a few times the limit; parsing holds a
        // small multiple of the body (a Python value per JSON value).
        let alloc = outcome.alloc_bytes.unwrap_or(u64::MAX);
        let bound = 8 * limits.max_output_bytes as u64 + 96 * body.len() as u64 + (16 << 10);
        prop_assert!(alloc <= bound, "allocated {} > bound {} for {}", alloc, bound, body);
    }
}
