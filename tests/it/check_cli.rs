//! `logfence check` run as a user runs it: the built binary on files, directories and
//! stdin, with its JSON report, human report and exit codes; with failpoints armed, the
//! sandbox turns a crashing record into a `crashed` verdict and the run goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn logfence() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logfence"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run logfence: {e}"),
    }
}

fn reports(out: &Output) -> Vec<Json> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn rules(report: &Json) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["rule"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `(file, verdict, rule)` rows of `fixtures/poison/README.md`.
fn expected_poison_verdicts() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(repo("fixtures/poison/README.md")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let file = cells.get(1)?.trim_matches('`').to_string();
            let verdict = cells.get(2)?.to_string();
            let rule = cells.get(3)?.split('`').nth(1)?.to_string();
            Some((file, verdict, rule))
        })
        .collect()
}

#[test]
fn check_gives_every_poison_fixture_its_documented_verdict_and_rule() {
    let expected = expected_poison_verdicts();
    assert!(
        expected.len() >= 25,
        "the fixture table was not read: {expected:?}"
    );
    // A generous timeout: a debug build parses a million-digit int in seconds.
    let out = run(logfence()
        .args(["check", "--json", "--format-timeout", "20s"])
        .arg(repo("fixtures/poison")));
    let reports = reports(&out);
    for (file, verdict, rule) in &expected {
        let Some(r) = reports.iter().find(|r| {
            r["source"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("/{file}")))
        }) else {
            panic!("no report for {file}");
        };
        assert_eq!(r["verdict"], verdict.as_str(), "{file}: {r}");
        assert!(rules(r).contains(rule), "{file}: expected {rule} in {r}");
        let rejects = r["findings"].as_array().map_or(0, |fs| {
            fs.iter().filter(|f| f["severity"] == "reject").count()
        });
        assert!(rejects <= 1, "{file}: at most one reject finding: {r}");
        // Parsing and rendering any of them costs less than one output limit.
        let limit = 64 << 10;
        let alloc = r["alloc_bytes"].as_u64().unwrap_or(u64::MAX);
        assert!(alloc < limit, "{file}: alloc_bytes {alloc}");
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected records, none crashed: exit 1"
    );
}

#[test]
fn check_json_report_has_every_field_of_the_contract() {
    let out = run(logfence()
        .args(["check", "--json"])
        .arg(repo("fixtures/poison/percent-width-2400000000.json")));
    let reports = reports(&out);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    for key in [
        "source",
        "verdict",
        "message",
        "line",
        "findings",
        "alloc_bytes",
        "elapsed_us",
    ] {
        assert!(r.get(key).is_some(), "missing {key}: {r}");
    }
    assert_eq!(r["verdict"], "rejected");
    assert!(r["message"].is_null());
    let f = &r["findings"][0];
    assert_eq!(f["rule"], "width-too-large");
    assert_eq!(f["severity"], "reject");
    assert_eq!(f["offset"], 5);
    assert!(f["detail"]
        .as_str()
        .unwrap_or("")
        .starts_with("width 2400000000 > limit 4096"));
    let line = r["line"].as_str().unwrap_or("");
    assert!(
        line.ends_with("[logfence rejected: width-too-large] Over %2400000000d ('x',)"),
        "{line}"
    );
    assert!(r["alloc_bytes"].as_u64().is_some_and(|b| b > 0));
}

#[test]
fn check_passes_the_incident_link_verbatim_and_exits_0() {
    let path = repo("fixtures/poison/incident-amazon-link-verbatim.json");
    let body: Json =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_default()).unwrap_or(Json::Null);
    let out = run(logfence().args(["check", "--json"]).arg(&path));
    let r = &reports(&out)[0];
    assert_eq!(r["verdict"], "ok");
    assert_eq!(r["message"], body["msg"], "the link passes byte for byte");
    assert!(rules(r).contains(&"format-like-text".to_string()));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_reads_stdin_and_names_it_dash() {
    let mut child = match logfence()
        .args(["check", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"msg": "hello %s", "args": ["world"], "logger": "t"}"#);
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let r = &reports(&out)[0];
    assert_eq!(r["source"], "-");
    assert_eq!(r["message"], "hello world");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_exits_64_on_an_unreadable_file_and_on_a_bad_flag() {
    let out = run(logfence().args(["check", "/nonexistent/record.json"]));
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/record.json"));
    let out = run(logfence().args(["check", "--max-width", "lots", "x"]));
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_refuses_a_body_over_the_limit_without_parsing_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("big.json");
    let body = format!("{{\"msg\": \"{}\"}}", "a".repeat(1 << 20));
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
    let out = run(logfence().args(["check", "--json"]).arg(&path));
    let r = &reports(&out)[0];
    assert_eq!(r["verdict"], "rejected");
    assert_eq!(rules(r), ["body-too-large"]);
    let line = r["line"].as_str().unwrap_or("");
    assert!(
        line.contains("[logfence rejected: body-too-large] {\"msg\": \"aaa"),
        "{line}"
    );
    assert!(
        line.ends_with("…[truncated 983051 bytes]"),
        "{}",
        &line[line.len() - 60..]
    );
}

#[test]
fn check_human_report_puts_a_caret_under_the_width_and_a_summary_line() {
    let out = run(logfence()
        .arg("check")
        .arg(repo("fixtures/poison/percent-width-2400000000.json")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("REJECTED"), "{text}");
    assert!(
        text.contains("      Over %2400000000d\n           ^^^^^^^^^^^^\n"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("1 record: 0 ok, 1 rejected, 0 crashed"),
        "{text}"
    );
}

/// Three records, the middle one carrying the marker the failpoint looks for.
fn poison_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let records = [
        ("1-before.json", r#"{"msg": "before %s", "args": [1]}"#),
        ("2-poison.json", r#"{"msg": "POISON-7f3a %s", "args": [2]}"#),
        ("3-after.json", r#"{"msg": "after %s", "args": [3]}"#),
    ];
    for (name, body) in records {
        std::fs::write(dir.path().join(name), body).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

fn check_with_failpoint(failpoint: &str) -> (Vec<Json>, Option<i32>) {
    let dir = poison_dir();
    let out = run(logfence()
        .args(["check", "--json", "--format-timeout", "500ms"])
        .arg(dir.path())
        .env("FAILPOINTS", format!("{failpoint}=return(POISON-7f3a)")));
    (reports(&out), out.status.code())
}

fn assert_only_the_poison_crashed(reports: &[Json], rule: &str, detail: &str) {
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert_eq!(reports[0]["verdict"], "ok");
    assert_eq!(reports[0]["message"], "before 1");
    assert_eq!(reports[1]["verdict"], "crashed", "{}", reports[1]);
    assert_eq!(rules(&reports[1]), [rule]);
    let got = reports[1]["findings"][0]["detail"].as_str().unwrap_or("");
    assert!(
        got.contains(detail),
        "detail {got:?} should mention {detail:?}"
    );
    assert!(
        reports[1]["line"].is_null(),
        "a crashed record gets no line"
    );
    assert_eq!(
        reports[2]["verdict"], "ok",
        "the worker was respawned: {}",
        reports[2]
    );
    assert_eq!(reports[2]["message"], "after 3");
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn check_reports_an_aborting_record_as_crashed_and_goes_on() {
    let (reports, code) = check_with_failpoint("render-abort");
    assert_only_the_poison_crashed(&reports, "crash", "SIGABRT");
    assert_eq!(code, Some(2));
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn check_reports_a_panicking_record_as_crashed_with_its_message() {
    let (reports, code) = check_with_failpoint("render-panic");
    assert_only_the_poison_crashed(&reports, "crash", "failpoint render-panic");
    assert_eq!(code, Some(2));
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn check_survives_unbounded_allocation_under_the_address_space_limit() {
    let (reports, code) = check_with_failpoint("render-alloc");
    assert_only_the_poison_crashed(&reports, "crash", "SIGABRT");
    assert_eq!(code, Some(2));
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn check_times_out_a_record_that_never_finishes() {
    let (reports, code) = check_with_failpoint("render-loop");
    assert_only_the_poison_crashed(&reports, "timeout", "500ms");
    assert_eq!(code, Some(2));
}

/// Under a pod-like address-space limit (`ulimit -v`, here `prlimit --as` 256 MiB, hard and
/// soft) the sandbox still starts: its own limit is lowered to what the parent may have
/// (raising a hard limit is refused), and glibc's per-thread arenas no longer reserve
/// hundreds of MiB. A rejected record is rejected, not a sandbox failure.
#[test]
fn check_sandbox_works_under_an_address_space_limit() {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--as=268435456")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_logfence"))
        .args(["check", "--json"])
        .arg(repo("fixtures/poison/percent-width-2400000000.json"))
        .arg(repo("fixtures/realistic"));
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let reports = reports(&out);
    assert!(reports.len() > 1);
    assert_eq!(reports[0]["verdict"], "rejected", "{:?}", reports[0]);
    assert!(rules(&reports[0]).contains(&"width-too-large".to_string()));
    assert!(
        reports[1..].iter().all(|r| r["verdict"] == "ok"),
        "{reports:?}"
    );
}

/// Regression: the fallback repr of an int too long for CPython to print lost its sign
/// (`(<int of 4301 digits>,)` for `-1000…`). Each record is one CPython rejects with
/// `ValueError` (the 4,300-digit rule), in each style, the int at the top and nested.
#[test]
fn check_fallback_keeps_the_sign_of_a_too_long_negative_int() {
    let neg = format!("-1{}", "0".repeat(4300));
    let pos = format!("1{}", "0".repeat(4300));
    let int = "<int of 4301 digits>";
    let cases = [
        (
            format!(r#"{{"msg": "%i", "args": [{neg}]}}"#),
            format!("%i (-{int},)"),
        ),
        (
            format!(r#"{{"msg": "%d %d", "args": [{pos}, {neg}]}}"#),
            format!("%d %d ({int}, -{int})"),
        ),
        (
            format!(r#"{{"msg": "%(a)s", "args": {{"a": [{neg}]}}}}"#),
            format!("%(a)s {{'a': [-{int}]}}"),
        ),
        (
            format!(r#"{{"msg": "%s", "args": {neg}}}"#),
            format!("%s -{int}"),
        ),
        (
            format!(r#"{{"msg": "{{0}}", "args": [[{neg}]], "style": "{{"}}"#),
            format!("{{0}} ([-{int}],)"),
        ),
        (
            format!(r#"{{"msg": "{{}}", "args": [{{"k": {neg}}}], "style": "{{"}}"#),
            format!("{{}} ({{'k': -{int}}},)"),
        ),
        (
            format!(r#"{{"msg": "$a", "args": {{"a": {neg}}}, "style": "$"}}"#),
            format!("$a {{'a': -{int}}}"),
        ),
        (
            format!(r#"{{"msg": "$a", "args": {{"a": {{"b": [1, {neg}]}}}}, "style": "$"}}"#),
            format!("$a {{'a': {{'b': [1, -{int}]}}}}"),
        ),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = logfence();
    cmd.args(["check", "--json"]);
    for (i, (body, _)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        let body = body.replacen('{', r#"{"ts": "2026-11-22T10:00:00Z", "#, 1);
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        cmd.arg(path);
    }
    let reports = reports(&run(&mut cmd));
    assert_eq!(reports.len(), cases.len());
    for ((body, want), r) in cases.iter().zip(&reports) {
        assert_eq!(rules(r), ["format-error"], "{}", &body[..40]);
        assert_eq!(
            r["line"],
            format!(
                "2026-11-22T10:00:00.000Z INFO  root: [logfence rejected: format-error] {want}"
            )
            .as_str(),
            "{}",
            &body[..40]
        );
    }
}
