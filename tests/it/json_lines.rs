//! Every JSON line logfence writes (`check --json`, `consume --output json`, `dlq list
//! --json`, the consumer's `--log-format json` logs) stays one line for every line reader:
//! records holding DEL, every C1 control, U+2028, U+2029 and every bidi control go through
//! the built binary, and the real python3 reads what came out: `str.splitlines()` gives
//! one piece per record, `json.loads` gives back the same strings, and none of those
//! characters is left raw.
//!
//! Regression: `check --json`, `dlq list --json` and `--log-format json` wrote them raw
//! (valid JSON, but U+0085 and U+2028 split the line for Python and many log viewers), and
//! `--output json` left U+061C, U+200E and U+200F raw.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use logfence::amqp::deadletter::{DELIVERIES_HEADER, DETAIL_HEADER, RULE_HEADER};
use logfence::amqp::topology::{QueueType, DLX};
use serde_json::{json, Value};

use super::broker::{sink_lines, url, wait_until, Rabbit, TestQueue, TS};
use super::consume::spawn_consumer;

/// Every character a JSON line writes as a `\u` escape although JSON allows it raw.
fn escaped_chars() -> Vec<char> {
    let mut cs: Vec<char> = (0x7f..=0x9f_u32).filter_map(char::from_u32).collect();
    cs.extend(['\u{61c}', '\u{200e}', '\u{200f}']);
    cs.extend((0x2028..=0x202e_u32).filter_map(char::from_u32));
    cs.extend((0x2066..=0x2069_u32).filter_map(char::from_u32));
    cs
}

/// All of them in one string, with the C0 controls `str.splitlines()` also breaks at.
fn nasty() -> String {
    let mut s: String = escaped_chars().into_iter().collect();
    s.push_str("\n\r\u{b}\u{c}\u{1c}\u{1d}\u{1e}");
    s
}

/// What python3 made of some JSON lines.
#[derive(Debug)]
struct PythonRead {
    /// `len(text.splitlines())`.
    pieces: usize,
    /// Every escaped character found raw in the text, as `U+HHHH`.
    raw: Vec<String>,
    /// `json.loads` of each piece (re-encoded ASCII-only for the way back).
    objects: Vec<Value>,
    /// Pieces `json.loads` refused.
    errors: Vec<String>,
}

const PY_READ: &str = r#"
import json, sys
text = sys.stdin.buffer.read().decode("utf-8")
escaped = {chr(int(h, 16)) for h in sys.argv[1].split(",")}
pieces = text.splitlines()
objects, errors = [], []
for p in pieces:
    try:
        objects.append(json.loads(p))
    except ValueError as e:
        errors.append(f"{e}: {p[:120]!r}")
raw = sorted({"U+%04X" % ord(c) for c in text if c in escaped})
print(json.dumps({"pieces": len(pieces), "raw": raw, "objects": objects, "errors": errors},
                 ensure_ascii=True))
"#;

/// Reads `text` with the real python3 (a test that cannot run it fails).
fn python_read(text: &[u8]) -> PythonRead {
    use std::io::Write;
    let hex: Vec<String> = escaped_chars()
        .iter()
        .map(|c| format!("{:x}", u32::from(*c)))
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PY_READ, &hex.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 (the oracle): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text).expect("write to python3");
    }
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("python3's answer");
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    PythonRead {
        pieces: v["pieces"].as_u64().unwrap_or(0) as usize,
        raw: strings("raw"),
        objects: v["objects"].as_array().cloned().unwrap_or_default(),
        errors: strings("errors"),
    }
}

/// The JSON lines of `text`, as python3 reads them: exactly `lines` pieces, each a JSON
/// object, no escaped character raw.
fn assert_one_piece_per_line(what: &str, text: &[u8], lines: usize) -> Vec<Value> {
    let read = python_read(text);
    assert!(read.errors.is_empty(), "{what}: {:?}", read.errors);
    assert!(read.raw.is_empty(), "{what}: raw {:?}", read.raw);
    assert_eq!(
        read.pieces, lines,
        "{what}: splitlines() gives {} pieces for {lines} lines",
        read.pieces
    );
    read.objects
}

/// The records of these tests, each holding every nasty character in `msg`, `args`,
/// `fields`, `logger`, `exc` and `stack`, with the message each renders to (`None`:
/// rejected).
fn records() -> Vec<(Vec<u8>, Option<String>)> {
    let s = nasty();
    let structured =
        |body: Value, message: Option<String>| (body.to_string().into_bytes(), message);
    vec![
        structured(
            json!({"msg": format!("m{s} %s"), "args": [format!("a{s}")], "logger": format!("l{s}"),
                   "fields": {format!("f{s}"): format!("v{s}")}, "exc": format!("e{s}"),
                   "stack": format!("st{s}"), "level": "warning", "ts": TS}),
            Some(format!("m{s} a{s}")),
        ),
        structured(
            json!({"msg": format!("{{0}}{s}"), "args": [format!("b{s}")], "style": "{",
                   "logger": format!("l{s}"), "exc": format!("e{s}"), "ts": TS}),
            Some(format!("b{s}{s}")),
        ),
        structured(
            json!({"msg": format!("$w{s}"), "args": {"w": format!("c{s}")}, "style": "$",
                   "fields": {"n": 1, "g": [format!("x{s}")]}, "ts": TS}),
            Some(format!("c{s}{s}")),
        ),
        // Rejected: the fallback line carries the template and the args' repr.
        structured(
            json!({"msg": format!("%99999d{s}"), "args": [format!("d{s}")],
                   "logger": format!("l{s}"), "exc": format!("e{s}"), "ts": TS}),
            None,
        ),
        // Plain text: the body is the message.
        (format!("plain{s}").into_bytes(), Some(format!("plain{s}"))),
    ]
}

#[test]
fn check_json_lines_hold_no_raw_line_breaking_or_bidi_character() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = nasty();
    let records = records();
    let mut paths = Vec::new();
    for (i, (body, _)) in records.iter().enumerate() {
        // The file name (the report's `source`) holds them too.
        let name = format!("{i}-{}.json", s.replace(['/', '\0'], ""));
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write record");
        paths.push(path);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
        .args(["check", "--json"])
        .args(&paths)
        .output()
        .expect("run logfence check");
    assert_eq!(
        out.status.code(),
        Some(1),
        "one record is rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = assert_one_piece_per_line("check --json", &out.stdout, records.len());
    let pipeline = logfence::pipeline::Pipeline::new(
        logfence::config::Limits::default(),
        logfence::line::DEFAULT_LINE_FORMAT,
    )
    .expect("pipeline");
    for (((body, message), path), got) in records.iter().zip(&paths).zip(&objects) {
        assert_eq!(got["source"], path.display().to_string());
        match message {
            Some(m) => assert_eq!(got["message"], m.as_str(), "{got}"),
            None => assert_eq!(got["verdict"], "rejected", "{got}"),
        }
        let want = pipeline.process(body).line.expect("a line");
        if body.starts_with(b"{") {
            assert_eq!(got["line"], want.as_str(), "{got}");
        } else {
            // Stamped with the time received: compare after the timestamp.
            let tail = |l: &str| l.split_once(' ').map(|(_, t)| t.to_string());
            assert_eq!(tail(got["line"].as_str().unwrap_or("")), tail(&want));
        }
    }
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_json_output_and_json_logs_hold_no_raw_line_breaking_or_bidi_character() {
    let rabbit = Rabbit::connect();
    let s = nasty();
    // The queue name reaches the consumer's own logs; RabbitMQ takes any UTF-8.
    let in_name: String = escaped_chars().into_iter().collect();
    let queue = TestQueue::new(&rabbit, &format!("jsonl{in_name}"), QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.jsonl");
    let records = records();
    let bodies: Vec<Vec<u8>> = records.iter().map(|(b, _)| b.clone()).collect();
    rabbit.publish(&queue.name, &bodies);
    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &["--output", "json", "--log-format", "json"],
        &[],
        tmp.path().join("stderr.log"),
    );
    let n = records.len();
    let written = wait_until(Duration::from_secs(30), || sink_lines(&sink).len() >= n);
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(15));
    let stderr = consumer.stderr();
    assert!(written, "stderr:\n{stderr}");
    assert!(
        status.is_some_and(|st| st.success()),
        "exit {status:?}; stderr:\n{stderr}"
    );

    let text = std::fs::read(&sink).expect("sink");
    let objects = assert_one_piece_per_line("consume --output json", &text, n);
    let mut messages: Vec<String> = objects
        .iter()
        .map(|o| o["message"].as_str().unwrap_or("").to_string())
        .collect();
    let mut want: Vec<String> = records.iter().filter_map(|(_, m)| m.clone()).collect();
    messages.retain(|m| !m.starts_with("[logfence rejected"));
    messages.sort();
    want.sort();
    assert_eq!(messages, want);
    let first = objects
        .iter()
        .find(|o| o["message"] == format!("m{s} a{s}").as_str())
        .expect("the first record's line");
    assert_eq!(first["logger"], format!("l{s}").as_str());
    assert_eq!(first["fields"][format!("f{s}")], format!("v{s}").as_str());
    assert_eq!(first["exc"], format!("e{s}").as_str());
    assert_eq!(first["stack"], format!("st{s}").as_str());
    let rejected = objects
        .iter()
        .find(|o| {
            o["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("[logfence rejected"))
        })
        .expect("the fallback line");
    assert_eq!(
        rejected["message"]
            .as_str()
            .unwrap_or("")
            .split_once("] ")
            .map(|(_, t)| t),
        Some(format!("%99999d{s} ('d{}',)", python_repr_body(&s)).as_str()),
    );
    assert_eq!(rejected["exc"], format!("e{s}").as_str());
    assert_eq!(rejected.get("stack"), None);

    // The consumer's own logs: one JSON object per line, the queue name given back whole.
    let lines = stderr.bytes().filter(|&b| b == b'\n').count();
    let logs = assert_one_piece_per_line("--log-format json", stderr.as_bytes(), lines);
    assert!(
        logs.iter()
            .any(|l| l["fields"]["queue"] == queue.name.as_str()),
        "no log line names the queue: {stderr}"
    );
}

/// Python's repr of `s` without the quotes, for the characters of [`nasty`]: each is
/// escaped (none is printable).
fn python_repr_body(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            c if u32::from(c) <= 0xff => format!("\\x{:02x}", u32::from(c)),
            c => format!("\\u{:04x}", u32::from(c)),
        })
        .collect()
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_json_lines_hold_no_raw_line_breaking_or_bidi_character() {
    let rabbit = Rabbit::connect();
    let s = nasty();
    let in_name: String = escaped_chars().into_iter().collect();
    let queue = TestQueue::new(&rabbit, &format!("dlqjl{in_name}"), QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    let records = records();
    // Marked as the consumer marks them, but with a rule and a detail holding every
    // character; routed by the work queue's name, which holds them too.
    rabbit.rt.block_on(async {
        for (i, (body, _)) in records.iter().enumerate() {
            let mut h = FieldTable::default();
            let text = |t: String| AMQPValue::LongString(LongString::from(t.as_str()));
            h.insert(RULE_HEADER.into(), text(format!("rule{s}")));
            h.insert(DETAIL_HEADER.into(), text(format!("detail {i}{s}")));
            h.insert(DELIVERIES_HEADER.into(), AMQPValue::LongLongInt(1));
            let confirm = rabbit
                .ch
                .basic_publish(
                    DLX.into(),
                    queue.name.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_headers(h),
                )
                .await
                .expect("publish");
            assert!(confirm.await.expect("confirm").is_ack());
        }
    });
    assert!(
        wait_until(Duration::from_secs(10), || rabbit.ready(&dead) as usize
            == records.len()),
        "the dead letters did not arrive"
    );
    let out: Output = Command::new(env!("CARGO_BIN_EXE_logfence"))
        .args(["dlq", "list", "--queue", &dead, "--json"])
        .env("AMQP_URL", url())
        .env_remove("LOGFENCE_AMQP_URL_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run logfence dlq list");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = assert_one_piece_per_line("dlq list --json", &out.stdout, records.len());
    for (i, entry) in listed.iter().enumerate() {
        assert_eq!(entry["rule"], format!("rule{s}").as_str());
        assert_eq!(entry["detail"], format!("detail {i}{s}").as_str());
        assert_eq!(entry["queue"], queue.name.as_str());
    }
    assert_eq!(
        rabbit.ready(&dead) as usize,
        records.len(),
        "listing takes nothing"
    );
}
