//! Drives `tests/oracle.py`: one `python3` process per batch, JSON lines in and out.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What CPython made of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The rendered message.
    Ok(String),
    /// `Type: message`; `unlimited_len` is the UTF-8 length the message would have had
    /// without CPython's 4,300-digit rule, when that rule is what raised.
    Err {
        text: String,
        unlimited_len: Option<usize>,
    },
    /// A result JSON cannot carry (e.g. a lone surrogate); not compared.
    Skip(String),
}

/// One query: `(style, msg, args as JSON text)`.
pub type Query<'a> = (&'a str, &'a str, &'a str);

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("oracle.py")
}

/// Asks CPython about every query, in order, with a single `python3` process.
pub fn ask(queries: &[Query<'_>]) -> Vec<Answer> {
    let mut child = Command::new("python3")
        .arg(script())
        .env("LC_ALL", "C")
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed: it is the oracle (docs/record.md: CPython 3.11)");
    let mut input = String::new();
    for (style, msg, args) in queries {
        let line = serde_json::json!({"style": style, "msg": msg, "args": args});
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from another thread: python answers while we are still writing, and a full
    // stdout pipe would otherwise deadlock both processes.
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).expect("write to oracle");
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut answers = Vec::with_capacity(queries.len());
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read oracle output");
        let v: serde_json::Value = serde_json::from_str(&line).expect("oracle writes JSON lines");
        answers.push(decode(&v));
    }
    writer.join().expect("oracle writer thread");
    let status = child.wait().expect("wait for oracle");
    assert!(status.success(), "oracle exited with {status}");
    assert_eq!(answers.len(), queries.len(), "oracle answered every query");
    answers
}

fn decode(v: &serde_json::Value) -> Answer {
    if let Some(s) = v.get("ok").and_then(|s| s.as_str()) {
        return Answer::Ok(s.to_string());
    }
    if let Some(s) = v.get("err").and_then(|s| s.as_str()) {
        let unlimited_len = v
            .get("unlimited_len")
            .and_then(|n| n.as_u64())
            .map(|n| n as usize);
        return Answer::Err {
            text: s.to_string(),
            unlimited_len,
        };
    }
    let why = v
        .get("skip")
        .and_then(|s| s.as_str())
        .unwrap_or("unreadable oracle answer");
    Answer::Skip(why.to_string())
}
