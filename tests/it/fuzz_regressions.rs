//! Replays the fuzz targets' inputs through the fuzz targets' own invariants
//! (`tests/fuzz/src/lib.rs`, compiled here as is): every crash the fuzzers found, saved as
//! `fixtures/fuzz/<target>-<n>.bin`, and the seeds `scripts/fuzz.sh` makes from the other
//! fixtures, so a change that breaks an invariant on a known input fails `cargo test`
//! without cargo-fuzz or a nightly toolchain.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

use logfence::value::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every saved fuzz finding, replayed through the target its name gives.
#[test]
fn saved_fuzz_findings_hold_every_invariant() {
    let dir = fixtures().join("fuzz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures under {}", dir.display());
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let target = name.rsplit_once('-').map_or(name.as_str(), |(t, _)| t);
        let data = std::fs::read(&path).unwrap();
        assert!(
            targets::run(target, &data),
            "{}: no fuzz target named {target:?} (one of {:?})",
            path.display(),
            targets::TARGETS
        );
    }
}

/// Strings of a JSON value, keys included, as the detector target's extra parts.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Str(s) => out.push(s.clone()),
        Value::List(items) => items.iter().for_each(|x| strings(x, out)),
        Value::Dict(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out);
        }),
        _ => {}
    }
}

/// One body of `fixtures/` through every target, in the shape each reads.
fn replay_body(body: &[u8]) {
    targets::record(body);
    let text = String::from_utf8_lossy(body);
    let parsed = logfence::json::parse(&text, 64).ok().map(|p| p.value);
    let Some(Value::Dict(rec)) = parsed else {
        targets::detect(body);
        targets::line_escape(&[b"\0info\0root\0", body].concat());
        return;
    };
    let Some(Value::Str(msg)) = rec.get("msg") else {
        return;
    };
    let mut others = Vec::new();
    for k in ["args", "fields"] {
        if let Some(v) = rec.get(k) {
            strings(v, &mut others);
        }
    }
    let detect_input = std::iter::once(msg.as_str())
        .chain(others.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\0");
    targets::detect(detect_input.as_bytes());
    let part = |k: &str, default: &str| match rec.get(k) {
        Some(Value::Str(s)) => s.clone(),
        _ => default.to_owned(),
    };
    let line = [
        part("ts", ""),
        part("level", "info"),
        part("logger", "root"),
        msg.clone(),
    ]
    .join("\0");
    targets::line_escape(line.as_bytes());
}

/// The fixture cases and records the seed corpora are made of hold the invariants too.
#[test]
fn fixture_records_hold_every_fuzz_invariant() {
    let mut n = 0;
    for dir in ["poison", "realistic"] {
        let dir = fixtures().join(dir);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|x| x != "md"))
            .collect();
        paths.sort();
        for path in paths {
            replay_body(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    for (style, target) in [
        ("percent", targets::format_percent as fn(&[u8])),
        ("brace", targets::format_brace),
        ("dollar", targets::format_dollar),
    ] {
        let path = fixtures().join("format").join(format!("{style}.json"));
        for_each_case(&path, |msg, args| {
            target(&[msg.as_bytes(), b"\0", args.as_bytes()].concat());
            n += 1;
        });
    }
    assert!(n > 100, "only {n} fixtures replayed");
}

/// Calls `f(msg, args JSON text)` for each case of a `fixtures/format/*.json` file (one case
/// per line), the args cut out of the line as written so big ints and `NaN` stay exact.
fn for_each_case(path: &Path, mut f: impl FnMut(&str, &str)) {
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let line = line.trim().trim_end_matches(',');
        if !line.starts_with('{') {
            continue;
        }
        let case = logfence::json::parse(line, 64).unwrap().value;
        let Value::Dict(case) = case else { continue };
        let Some(Value::Str(msg)) = case.get("msg") else {
            continue;
        };
        let mut args = String::new();
        if let Some(v) = case.get("args") {
            logfence::line::json_value(v, &mut args);
        }
        f(msg, &args);
    }
}
