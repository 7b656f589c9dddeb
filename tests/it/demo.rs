//! `scripts/demo.sh`, the README's first command, run as a user runs it against the real
//! broker (with this build's binary through `LOGFENCE_BIN`, so it does not build again), and
//! its output read for what the README promises: the incident template refused, the verbatim
//! link passed with a warning, the Log4Shell lookup reported, the CR/LF forgery escaped, the
//! poison in the dead-letter listing, every message settled — and its queues gone after.
//! Without a broker it fails, naming `scripts/broker.sh`; built with
//! `LOGFENCE_SKIP_BROKER_TESTS=1` it shows as ignored (build.rs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::broker::{url, Rabbit};

/// Far above the demo's own bounded waits (30 s each): only a hung script reaches it.
const DEMO_LIMIT: Duration = Duration::from_secs(240);

struct DemoRun {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run_demo() -> DemoRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LOGFENCE_BIN", env!("CARGO_BIN_EXE_logfence"))
        .env("AMQP_URL", url())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    // The demo's consumer must see only the demo's flags, not a setting of the caller's.
    for (k, _) in std::env::vars() {
        if k.starts_with("LOGFENCE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawn scripts/demo.sh");
    let until = Instant::now() + DEMO_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for demo.sh") {
            break Some(status);
        }
        if Instant::now() > until {
            // SIGTERM, so the script's trap still stops its consumer and deletes its queues.
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    let run = DemoRun {
        success: status.is_some_and(|s| s.success()),
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    assert!(
        status.is_some(),
        "demo.sh still running after {DEMO_LIMIT:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// The text of the section headed `== N.` (up to the next heading).
fn section<'a>(out: &'a str, number: &str) -> &'a str {
    let head = format!("\n== {number}. ");
    let start = out
        .find(&head)
        .unwrap_or_else(|| panic!("no section {number} in:\n{out}"));
    let rest = &out[start + head.len()..];
    rest.find("\n== ").map_or(rest, |end| &rest[..end])
}

/// The one line of `text` holding `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(
        lines.len(),
        1,
        "one line with {needle:?} expected in:\n{text}"
    );
    lines[0]
}

/// `logfence_messages_total{outcome="..."}`'s value as the demo printed it.
fn settled(metrics: &str, outcome: &str) -> u64 {
    let series = format!("logfence_messages_total{{outcome=\"{outcome}\"}}");
    line_with(metrics, &series)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value for {series} in:\n{metrics}"))
}

/// Whether `queue` exists: a passive declare on a channel of its own (a 404 closes it).
fn queue_exists(rabbit: &Rabbit, queue: &str) -> bool {
    rabbit.rt.block_on(async {
        let ch = rabbit._conn.create_channel().await.expect("channel");
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok()
    })
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
fn demo_shows_the_incident_refused_and_the_poison_dead_lettered() {
    let rabbit = Rabbit::connect();
    let run = run_demo();
    let out = &run.stdout;
    assert!(
        run.success,
        "demo.sh failed\n--- stdout\n{out}\n--- stderr\n{}",
        run.stderr
    );

    let queue = line_with(out, "dead letters go to")
        .split_whitespace()
        .nth(1)
        .expect("queue name")
        .to_string();
    assert!(queue.starts_with("logfence-demo-"), "{queue}");

    // What check says of each record.
    let check = section(out, "1");
    let template = line_with(check, "incident-link-as-template");
    assert!(template.contains(" rejected "), "{template}");
    assert!(template.contains("width-too-large"), "{template}");
    assert!(
        template.contains("width 2400000000 > limit 4096"),
        "{template}"
    );
    let verbatim = line_with(check, "incident-link-verbatim");
    assert!(verbatim.contains(" ok "), "{verbatim}");
    assert!(verbatim.contains("warn format-like-text"), "{verbatim}");
    let log4shell = line_with(check, "log4shell-lookup");
    assert!(log4shell.contains(" ok "), "{log4shell}");
    assert!(log4shell.contains("warn lookup-syntax"), "{log4shell}");
    assert!(line_with(check, "crlf-injection").contains("warn control-chars"));

    // Every message settled, and the lines the consumer wrote.
    assert!(
        line_with(section(out, "2"), "settled").contains("13 of 13"),
        "{out}"
    );
    let sink = section(out, "3");
    assert_eq!(
        sink.lines().filter(|l| l.starts_with("  2026-")).count(),
        13,
        "one line per record:\n{sink}"
    );
    line_with(
        sink,
        r"auth: login ok for bob\r\n2026-11-22T10:00:00.000Z ERROR root: admin password reset",
    );
    assert!(
        !sink.lines().any(|l| l
            .trim_start()
            .starts_with("2026-11-22T10:00:00.000Z ERROR root")),
        "a forged line reached the sink:\n{sink}"
    );
    line_with(
        sink,
        "chat: [logfence rejected: width-too-large] %s shared https://www.amazon.com/",
    );
    line_with(
        sink,
        "chat: user bob shared https://www.amazon.com/dp/B0CHX1W1XY?ref=%2400000000d",
    );

    // The poison in the dead-letter queue, listed from it.
    let dlq = section(out, "4");
    let poison = line_with(dlq, "width-too-large");
    assert!(poison.contains(&queue), "{poison}");
    line_with(dlq, "attribute-access");
    line_with(dlq, "2 messages");

    // The settlement counters.
    let metrics = section(out, "5");
    assert_eq!(settled(metrics, "formatted"), 11, "{metrics}");
    assert_eq!(settled(metrics, "fallback"), 2, "{metrics}");
    assert_eq!(settled(metrics, "dead_lettered"), 0, "{metrics}");
    assert_eq!(settled(metrics, "requeued"), 0, "{metrics}");
    line_with(
        metrics,
        "logfence_findings_total{rule=\"format-like-text\"}",
    );
    line_with(metrics, "logfence_message_alloc_bytes_count");

    // Stopped cleanly, and nothing left behind on the broker.
    assert!(
        line_with(section(out, "6"), "SIGTERM").contains("exited 0"),
        "{out}"
    );
    for q in [queue.clone(), format!("{queue}.dead")] {
        assert!(!queue_exists(&rabbit, &q), "demo.sh left {q} behind");
    }
}
