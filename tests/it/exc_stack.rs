//! A record's `exc` and `stack` (docs/record.md): verbatim text after the line, each
//! preceded by a line feed as CPython's `logging.Formatter.format` appends `exc_text` and
//! `stack_info` (no second feed after text that already ends with one), escaped so a
//! traceback stays on the record's one line; the keys `exc` and `stack` of `--output json`;
//! each cut to `--max-output-bytes` with the truncation marker; a non-string one ignored; a
//! rejected record's fallback line carries them too. The built binary is run as users run
//! it, python3's own `logging.Formatter` is the oracle for the text line, and the consumer
//! reads them from the real broker.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use logfence::amqp::topology::QueueType;
use serde_json::{json, Value};

use super::broker::{sink_lines, wait_until, Rabbit, TestQueue, TS};
use super::consume::spawn_consumer;

const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"app.py\", line 7, in \
                         <module>\n    1 / 0\nZeroDivisionError: division by zero";
const STACK: &str = "Stack (most recent call last):\n  File \"app.py\", line 9, in main\n    \
                     log.error(\"boom\", stack_info=True)";

fn logfence() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logfence"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run logfence: {e}"))
}

/// `check --json` of each body (one file each, in order), with `extra` flags: the reports.
fn check(bodies: &[Value], extra: &[&str]) -> (Vec<Value>, Option<i32>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = logfence();
    cmd.args(["check", "--json"]).args(extra);
    for (i, body) in bodies.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, body.to_string()).unwrap_or_else(|e| panic!("{e}"));
        cmd.arg(path);
    }
    let out = run(&mut cmd);
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    assert_eq!(
        reports.len(),
        bodies.len(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (reports, out.status.code())
}

/// The line's escaping, for the expected lines built here.
fn esc(s: &str) -> String {
    logfence::line::escape(s).into_owned()
}

#[test]
fn check_json_line_carries_exc_and_stack_escaped_after_the_message() {
    let head = format!("{TS:.19}.000Z ERROR app: ");
    let bodies = [
        json!({"msg": "boom %s", "args": ["x"], "level": "error", "logger": "app", "ts": TS,
               "exc": TRACEBACK, "stack": STACK}),
        // Text that already ends with a line feed gets no second one.
        json!({"msg": "boom\n", "level": "error", "logger": "app", "ts": TS,
               "exc": "E\n", "stack": "S"}),
        // Only a stack; an empty exc adds nothing.
        json!({"msg": "m", "level": "error", "logger": "app", "ts": TS, "exc": "",
               "stack": "S\u{1b}[2J\u{2028}\u{202e}"}),
        // Verbatim, never a template, and never scanned by the detector.
        json!({"msg": "m", "level": "error", "logger": "app", "ts": TS,
               "exc": "%s {0} ${x} %(k)s {0.__class__}"}),
    ];
    let (reports, status) = check(&bodies, &[]);
    assert_eq!(status, Some(0), "{reports:?}");
    let want = [
        (
            "boom x",
            format!("{head}boom x\\n{}\\n{}", esc(TRACEBACK), esc(STACK)),
        ),
        ("boom\n", format!("{head}boom\\nE\\nS")),
        ("m", format!("{head}m\\nS\\x1b[2J\\u2028\\u202e")),
        (
            "m",
            format!("{head}m\\n%s {{0}} ${{x}} %(k)s {{0.__class__}}"),
        ),
    ];
    for (r, (message, line)) in reports.iter().zip(&want) {
        assert_eq!(r["verdict"], "ok", "{r}");
        // `message` is the rendered message alone.
        assert_eq!(r["message"], *message, "{r}");
        assert_eq!(r["line"], line.as_str(), "{r}");
        assert!(!r["line"].as_str().unwrap_or("").contains('\n'));
    }
    // The detector leaves them alone: the template-like exc of the last record is no
    // `format-like-text`, the controls in the third one's stack no `control-chars`.
    for i in [0, 2, 3] {
        assert_eq!(reports[i]["findings"], json!([]), "{}", reports[i]);
    }
}

#[test]
fn check_fallback_line_of_a_rejected_record_carries_exc_and_stack() {
    let bodies = [
        json!({"msg": "%99999d", "args": [1], "level": "error", "logger": "app", "ts": TS,
               "exc": TRACEBACK, "stack": STACK}),
        json!({"msg": "{0.__class__}", "args": [1], "style": "{", "ts": TS, "exc": "E"}),
    ];
    let (reports, status) = check(&bodies, &[]);
    assert_eq!(status, Some(1), "{reports:?}");
    assert_eq!(reports[0]["verdict"], "rejected");
    assert_eq!(reports[0]["message"], Value::Null);
    assert_eq!(
        reports[0]["line"],
        format!(
            "{TS:.19}.000Z ERROR app: [logfence rejected: width-too-large] %99999d (1,)\\n{}\\n{}",
            esc(TRACEBACK),
            esc(STACK)
        )
        .as_str()
    );
    assert_eq!(
        reports[1]["line"],
        format!(
            "{TS:.19}.000Z INFO  root: [logfence rejected: attribute-access] {{0.__class__}} \
             (1,)\\nE"
        )
        .as_str()
    );
}

#[test]
fn check_cuts_exc_and_stack_each_to_the_output_limit_and_ignores_non_strings() {
    let long_exc = format!("{}é{}", "e".repeat(63), "x".repeat(40));
    let long_stack = "s".repeat(200);
    let mut bodies = vec![
        // The message is within the limit; exc and stack are each cut on their own ("é"
        // straddles byte 64, so the cut falls before it).
        json!({"msg": "m", "ts": TS, "exc": long_exc, "stack": long_stack}),
    ];
    for other in [
        json!(1),
        json!(null),
        json!(true),
        json!(["e"]),
        json!({"e": "x"}),
    ] {
        bodies.push(json!({"msg": "m", "ts": TS, "exc": other, "stack": other}));
    }
    let (reports, status) = check(&bodies, &["--max-output-bytes", "64"]);
    assert_eq!(status, Some(0), "{reports:?}");
    let head = format!("{TS:.19}.000Z INFO  root: m");
    assert_eq!(
        reports[0]["line"],
        format!(
            "{head}\\n{}…[truncated 42 bytes]\\n{}…[truncated 136 bytes]",
            "e".repeat(63),
            "s".repeat(64)
        )
        .as_str()
    );
    for r in &reports[1..] {
        assert_eq!(r["line"], head.as_str(), "{r}");
    }
}

/// Builds each record's line with CPython's `logging.Formatter` (`{`-style, the same
/// template): a `LogRecord` with the record's message, `exc_text` and `stack_info`, then
/// the line's escaping. One JSON string per line out.
const PY_FORMATTER: &str = r#"
import json, logging, sys

def esc(s):
    out = []
    for c in s:
        o = ord(c)
        if c == "\\": out.append("\\\\")
        elif c == "\t": out.append("\\t")
        elif c == "\n": out.append("\\n")
        elif c == "\r": out.append("\\r")
        elif o < 0x20 or 0x7f <= o <= 0x9f: out.append("\\x%02x" % o)
        elif o in (0x2028, 0x2029) or 0x202a <= o <= 0x202e or 0x2066 <= o <= 0x2069:
            out.append("\\u%04x" % o)
        else: out.append(c)
    return "".join(out)

fmt = sys.argv[1]
for line in sys.stdin:
    r = json.loads(line)
    args = tuple(r["args"]) if r.get("args") else None
    rec = logging.LogRecord(r["logger"], logging.ERROR, "app.py", 1, r["msg"], args, None)
    rec.levelname = r["level"].upper()
    exc, stack = r.get("exc"), r.get("stack")
    rec.exc_text = exc if isinstance(exc, str) else None
    rec.stack_info = stack if isinstance(stack, str) else None
    print(json.dumps(esc(logging.Formatter(fmt, style="{").format(rec))))
"#;

fn python_lines(fmt: &str, bodies: &[Value]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", PY_FORMATTER, fmt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 (the oracle): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        for b in bodies {
            writeln!(stdin, "{b}").unwrap_or_else(|e| panic!("write to python3: {e}"));
        }
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

#[test]
fn text_line_with_exc_and_stack_is_cpython_formatter_output_escaped() {
    let rec = |msg: &str, args: Value, exc: Value, stack: Value| {
        json!({"msg": msg, "args": args, "level": "error", "logger": "app", "ts": TS,
               "exc": exc, "stack": stack})
    };
    let bodies = [
        rec("boom %s", json!(["x"]), json!(TRACEBACK), json!(STACK)),
        rec("boom %d\n", json!([7]), json!("E\n"), json!("S\n")),
        rec("boom\n", json!(null), json!(null), json!("S")),
        rec("m", json!(null), json!(""), json!("S")),
        rec("m", json!(null), json!("E"), json!("")),
        rec("m", json!(null), json!("\n"), json!("\n")),
        rec(
            "tab\there",
            json!(null),
            json!("back\\slash \\n \u{1b}[31m\r\n\u{85}\u{2028}\u{202e}\u{2066}"),
            json!(7),
        ),
        rec("m", json!(null), json!("%s {0} $x"), json!(["not", "text"])),
        rec("é %s", json!(["日本"]), json!("ünïcode 🚀"), json!(null)),
    ];
    for fmt in ["{level:<5} {logger}: {message}", "{message} [{logger}]"] {
        let python_fmt = fmt
            .replace("{level", "{levelname")
            .replace("{logger", "{name");
        let want = python_lines(&python_fmt, &bodies);
        assert_eq!(want.len(), bodies.len(), "python3 gave {want:?}");
        let (reports, _) = check(&bodies, &["--line-format", fmt]);
        for ((r, w), b) in reports.iter().zip(&want).zip(&bodies) {
            assert_eq!(r["line"], w.as_str(), "{fmt:?} {b}");
        }
    }
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_json_output_has_exc_and_stack_keys_from_the_broker() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "excstack", QueueType::Quorum);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sink = tmp.path().join("out.jsonl");
    let long = "t".repeat(100);
    let bodies: Vec<Vec<u8>> = [
        json!({"msg": "boom %s", "args": ["x"], "level": "error", "logger": "app", "ts": TS,
               "fields": {"k": 1}, "exc": TRACEBACK, "stack": STACK}),
        json!({"msg": "only stack", "ts": TS, "stack": "S\u{2028}", "exc": 5}),
        json!({"msg": "%99999d", "args": [1], "ts": TS, "exc": long}),
        json!({"msg": "none", "ts": TS}),
    ]
    .iter()
    .map(|b| b.to_string().into_bytes())
    .collect();
    rabbit.publish(&queue.name, &bodies);
    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &[
            "--output",
            "json",
            "--on-reject",
            "fallback",
            "--max-output-bytes",
            "64",
        ],
        &[],
        tmp.path().join("stderr.log"),
    );
    let n = bodies.len();
    let written = wait_until(Duration::from_secs(30), || sink_lines(&sink).len() >= n);
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(15));
    let stderr = consumer.stderr();
    assert!(written, "stderr:\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; stderr:\n{stderr}"
    );
    let lines = sink_lines(&sink);
    let find = |prefix: &str| -> Value {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|o| o["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no line for {prefix:?}: {lines:?}"))
    };
    let first = find("boom x");
    // The keys in the contract's order (read from the raw line: `Value` sorts them).
    let raw = lines
        .iter()
        .find(|l| l.contains(r#""message":"boom x""#))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let at: Vec<usize> = ["ts", "level", "logger", "message", "fields", "exc", "stack"]
        .iter()
        .map(|k| {
            raw.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no {k} in {raw}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{raw}");
    let cut = |s: &str| {
        let mut i = 64.min(s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        if i == s.len() {
            s.to_string()
        } else {
            format!("{}…[truncated {} bytes]", &s[..i], s.len() - i)
        }
    };
    assert_eq!(first["exc"], cut(TRACEBACK).as_str());
    assert_eq!(first["stack"], cut(STACK).as_str());
    let second = find("only stack");
    assert_eq!(second.get("exc"), None);
    assert_eq!(second["stack"], "S\u{2028}");
    // The raw line holds the separator escaped.
    assert!(lines.iter().any(|l| l.contains(r#""stack":"S\u2028""#)));
    let rejected = find("[logfence rejected: width-too-large]");
    assert_eq!(
        rejected["exc"],
        format!("{}…[truncated 36 bytes]", "t".repeat(64)).as_str()
    );
    assert!(rejected["findings"].is_array());
    let none = find("none");
    assert_eq!((none.get("exc"), none.get("stack")), (None, None));
}
