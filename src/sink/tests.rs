#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use futures_lite::future::poll_once;
use futures_lite::FutureExt;
use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::ConnectionProperties;
use std::fs;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i} ü")).collect()
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn spec_parses_each_form() {
    let ok = |s: &str| s.parse::<SinkSpec>().expect(s);
    assert_eq!(ok("stdout"), SinkSpec::Stdout);
    assert_eq!(
        ok("file:/var/log/a.log"),
        SinkSpec::File("/var/log/a.log".into())
    );
    assert_eq!(ok("file:rel/a:b.log"), SinkSpec::File("rel/a:b.log".into()));
    assert_eq!(
        ok("amqp:logs"),
        SinkSpec::Amqp {
            exchange: "logs".into(),
            routing_key: None
        }
    );
    assert_eq!(
        ok("amqp:logs/app.web"),
        SinkSpec::Amqp {
            exchange: "logs".into(),
            routing_key: Some("app.web".into())
        }
    );
    assert_eq!(
        ok("amqp:logs/a/b"),
        SinkSpec::Amqp {
            exchange: "logs".into(),
            routing_key: Some("a/b".into())
        }
    );
    assert_eq!(
        ok("amqp:/lines"),
        SinkSpec::Amqp {
            exchange: String::new(),
            routing_key: Some("lines".into())
        }
    );
    for s in ["stdout", "file:/x", "amqp:logs", "amqp:logs/k", "amqp:/q"] {
        assert_eq!(ok(s).to_string(), s);
    }
}

#[test]
fn spec_refuses_with_a_message_that_says_what_to_write() {
    let err = |s: &str| s.parse::<SinkSpec>().expect_err(s);
    assert_eq!(err("file:"), SinkSpecError::EmptyPath);
    assert_eq!(err("amqp:"), SinkSpecError::EmptyAmqp);
    assert_eq!(err("amqp:/"), SinkSpecError::EmptyAmqp);
    assert_eq!(err("Stdout"), SinkSpecError::Unknown("Stdout".into()));
    assert_eq!(err(""), SinkSpecError::Unknown(String::new()));
    let long = format!("amqp:{}", "x".repeat(256));
    assert_eq!(
        err(&long),
        SinkSpecError::TooLong {
            what: "exchange",
            len: 256
        }
    );
    let long_key = format!("amqp:x/{}", "k".repeat(300));
    assert_eq!(
        err(&long_key),
        SinkSpecError::TooLong {
            what: "routing key",
            len: 300
        }
    );
    assert!(err("syslog")
        .to_string()
        .contains("stdout, file:PATH or amqp:"));
    assert!(err("file:").to_string().contains("file:/var/log/app.log"));
}

#[tokio::test]
async fn file_sink_creates_then_appends_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.log");
    let spec = SinkSpec::File(path.clone());
    let mut sink = Sink::open(&spec, false, None).await.expect("open");
    sink.write(&lines(0..3)).await.expect("write");
    sink.write(&[]).await.expect("nothing to write");
    drop(sink);
    let mut sink = Sink::open(&spec, true, None).await.expect("reopen");
    sink.write(&lines(3..5)).await.expect("write");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        joined(&lines(0..5)),
        "appended, never truncated"
    );
}

#[tokio::test]
async fn file_sink_fsyncs_regular_files_and_skips_dev_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let regular = Sink::open(&SinkSpec::File(dir.path().join("f")), true, None)
        .await
        .expect("open");
    assert!(matches!(
        regular.inner,
        Inner::Local(LocalWriter {
            target: Target::File { fsync: true, .. },
            ..
        })
    ));
    let mut null = Sink::open(&SinkSpec::File("/dev/null".into()), true, None)
        .await
        .expect("open /dev/null");
    assert!(matches!(
        null.inner,
        Inner::Local(LocalWriter {
            target: Target::File { fsync: false, .. },
            ..
        })
    ));
    null.write(&lines(0..10))
        .await
        .expect("write to /dev/null with fsync on");
    let unasked = Sink::open(&SinkSpec::File(dir.path().join("g")), false, None)
        .await
        .expect("open");
    assert!(matches!(
        unasked.inner,
        Inner::Local(LocalWriter {
            target: Target::File { fsync: false, .. },
            ..
        })
    ));
}

#[tokio::test]
async fn file_sink_open_failure_is_labelled_and_not_transient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SinkSpec::File(dir.path().join("missing/dir/out.log"));
    let err = Sink::open(&spec, false, None)
        .await
        .expect_err("no such dir");
    assert_eq!(err.label(), "open");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("missing/dir/out.log"));
}

#[tokio::test]
async fn file_sink_write_failure_is_an_error_not_a_silent_loss() {
    let Ok(mut sink) = Sink::open(&SinkSpec::File("/dev/full".into()), true, None).await else {
        return; // no /dev/full here
    };
    let err = sink.write(&lines(0..1)).await.expect_err("ENOSPC");
    assert_eq!(err.label(), "file");
}

#[tokio::test]
async fn a_cancelled_write_finishes_before_the_next_batch_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.log");
    // fsync: the write goes to a blocking task (a plain file would be written inline).
    let mut sink = Sink::open(&SinkSpec::File(path.clone()), true, None)
        .await
        .expect("open");
    let first = lines(0..50_000);
    let second = lines(50_000..50_010);
    // Polled once (the batch is handed to its blocking task), then dropped by its caller.
    let _ = poll_once(sink.write(&first)).await;
    sink.write(&second).await.expect("second batch");
    let mut want = joined(&first);
    want.push_str(&joined(&second));
    assert_eq!(fs::read_to_string(&path).expect("read"), want);
}

const STDOUT_CHILD: &str = "LOGFENCE_SINK_STDOUT_CHILD";

/// The child half of `stdout_sink_writes_each_line_once_and_flushes`: writes two batches to
/// its stdout through the sink, then waits (so only a flush could have put them there).
#[test]
fn stdout_child_writes_and_waits() {
    if std::env::var_os(STDOUT_CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut sink = Sink::open(&SinkSpec::Stdout, true, None)
            .await
            .expect("open");
        sink.write(&["STDOUT-BEGIN".to_string()])
            .await
            .expect("write");
        sink.write(&lines(0..3)).await.expect("write");
        sink.write(&["STDOUT-END".to_string()])
            .await
            .expect("write");
    });
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn stdout_sink_writes_each_line_once_and_flushes() {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sink::tests::stdout_child_writes_and_waits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STDOUT_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut got = Vec::new();
    let mut inside = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.ends_with("STDOUT-END") {
            break;
        }
        if inside {
            got.push(line);
        } else {
            inside = line.ends_with("STDOUT-BEGIN");
        }
    }
    // Everything arrived while the child was still alive: flushed, not left in a buffer.
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, lines(0..3));
}

#[tokio::test]
async fn amqp_sink_without_a_connection_says_so() {
    let spec: SinkSpec = "amqp:logs/app".parse().expect("spec");
    let err = Sink::open(&spec, false, None)
        .await
        .expect_err("no connection");
    assert_eq!(err.label(), "amqp_no_connection");
}

/// Connects to the test broker, starting it with `scripts/broker.sh` if nothing answers.
async fn broker() -> Connection {
    if std::net::TcpStream::connect("127.0.0.1:5672").is_err() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker.sh");
        let status = Command::new(script)
            .status()
            .expect("run scripts/broker.sh");
        assert!(
            status.success(),
            "scripts/broker.sh could not start RabbitMQ"
        );
    }
    Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .expect("connect to RabbitMQ at 127.0.0.1:5672 (guest/guest)")
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("logfence.test.sink.{what}.{}.{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_sink_publishes_persistent_confirmed_messages_and_refuses_unroutable_ones() {
    let conn = broker().await;
    let admin = conn.create_channel().await.expect("channel");
    let exchange = unique("exchange");
    let queue = unique("queue");
    admin
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    admin
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    admin
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "app".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    // Cleanup runs even when an assertion fails, then the failure is re-raised.
    let outcome = AssertUnwindSafe(async {
        let spec: SinkSpec = format!("amqp:{exchange}/app").parse().expect("spec");
        let mut sink = Sink::open(&spec, false, Some(&conn)).await.expect("open");
        let sent = lines(0..20);
        sink.write(&sent[..1]).await.expect("one line");
        sink.write(&sent[1..]).await.expect("a batch");
        let mut got = Vec::new();
        while let Some(message) = admin
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
            got.push(String::from_utf8(delivery.data).expect("utf-8"));
        }
        assert_eq!(got, sent, "one message per line, in order, no newline");

        // No queue for this key: the broker returns it, and that is an error.
        let spec: SinkSpec = format!("amqp:{exchange}/nowhere").parse().expect("spec");
        let mut unroutable = Sink::open(&spec, false, Some(&conn)).await.expect("open");
        let err = unroutable.write(&lines(0..2)).await.expect_err("returned");
        assert_eq!(err.label(), "amqp_returned");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("312"), "{err}");

        // The default exchange routes by queue name.
        let spec: SinkSpec = format!("amqp:/{queue}").parse().expect("spec");
        let mut direct = Sink::open(&spec, false, Some(&conn)).await.expect("open");
        direct.write(&lines(0..1)).await.expect("default exchange");
        let message = admin
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a message");
        assert_eq!(message.delivery.data, lines(0..1)[0].as_bytes());

        // A missing exchange fails at open, not at the first line.
        let spec: SinkSpec = format!("amqp:{}", unique("missing")).parse().expect("spec");
        let err = Sink::open(&spec, false, Some(&conn))
            .await
            .expect_err("404");
        assert_eq!(err.label(), "amqp");
        assert!(!err.is_transient(), "{err}");
    })
    .catch_unwind()
    .await;

    let _ = admin
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = admin
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn file_sink_writes_inline_only_where_a_write_cannot_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inline_of = |sink: &Sink| match &sink.inner {
        Inner::Local(LocalWriter {
            target: Target::File { inline, .. },
            ..
        }) => Some(*inline),
        _ => None,
    };
    let path = dir.path().join("plain");
    let mut plain = Sink::open(&SinkSpec::File(path.clone()), false, None)
        .await
        .expect("open");
    assert_eq!(
        inline_of(&plain),
        Some(true),
        "a regular file without fsync"
    );
    plain.write(&lines(0..3)).await.expect("write");
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count(),
        3
    );
    let synced = Sink::open(&SinkSpec::File(dir.path().join("synced")), true, None)
        .await
        .expect("open");
    assert_eq!(
        inline_of(&synced),
        Some(false),
        "fsync goes to a blocking thread"
    );
    let null = Sink::open(&SinkSpec::File("/dev/null".into()), false, None)
        .await
        .expect("open /dev/null");
    assert_eq!(inline_of(&null), Some(true), "/dev/null");
    let stdout = Sink::open(&SinkSpec::Stdout, false, None)
        .await
        .expect("open stdout");
    assert_eq!(inline_of(&stdout), None, "stdout may be a pipe that blocks");
}
