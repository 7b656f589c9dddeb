//! `/metrics`, `/healthz` and `/readyz` of a real `logfence consume` (docs/metrics.md), scraped
//! over HTTP while it consumes from the real broker, and checked with the real `promtool`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use rand::{Rng, SeedableRng};

use super::broker::{sink_lines, wait_until, Rabbit, TestQueue, TS};
use super::consume::{benign, spawn_consumer, ConsumerProcess};
use super::deploy::promtool;
use logfence::telemetry::names;

/// The address the consumer logged once its endpoint was bound (it runs on port 0).
pub(crate) fn metrics_addr(consumer: &ConsumerProcess) -> SocketAddr {
    let mut addr = None;
    let found = wait_until(Duration::from_secs(20), || {
        addr = consumer
            .stderr()
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        addr.is_some()
    });
    assert!(found, "no metrics address logged:\n{}", consumer.stderr());
    addr.expect("address")
}

/// One HTTP/1.1 GET, answered within `limit` or an error: (status, body).
pub(crate) fn get(addr: SocketAddr, path: &str, limit: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end: {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The status of `GET path`, or `None` when the endpoint did not answer within a second.
pub(crate) fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path, Duration::from_secs(1)).ok().map(|(s, _)| s)
}

pub(crate) fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics", Duration::from_secs(10)).expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// Series (name with labels) -> value.
pub(crate) fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

/// `promtool check metrics` on the exposition.
fn promtool_check(exposition: &str) -> String {
    let child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}"
    );
    said
}

fn with_delivery_count(n: i64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(n));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn start(queue: &str, tmp: &Path, extra: &[&str]) -> ConsumerProcess {
    spawn_consumer(
        queue,
        &tmp.join("out.log"),
        tmp,
        extra,
        &[],
        tmp.join("stderr.log"),
    )
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
#[cfg_attr(
    all(logfence_skip_tools, not(logfence_skip_broker)),
    ignore = "LOGFENCE_SKIP_TOOL_TESTS is set"
)]
fn metrics_count_a_mixed_batch_exactly_and_pass_promtool() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "metrics-mixed");
    let tmp = tempfile::tempdir().expect("tempdir");
    let incident = |i: usize| {
        serde_json::json!({"msg": "%2400000000d", "args": [i], "ts": TS})
            .to_string()
            .into_bytes()
    };
    // 30 benign first deliveries, 10 rejected (a 2.4-billion width), 5 benign that were
    // delivered before (rendered in the sandbox), 1 on its last allowed delivery.
    rabbit.publish(&queue.name, &(0..30).map(benign).collect::<Vec<_>>());
    rabbit.publish(&queue.name, &(0..10).map(incident).collect::<Vec<_>>());
    rabbit.publish_with(
        &queue.name,
        &(100..105).map(benign).collect::<Vec<_>>(),
        with_delivery_count(1),
    );
    rabbit.publish_with(&queue.name, &[benign(200)], with_delivery_count(4));

    let consumer = start(&queue.name, tmp.path(), &["--queue-type", "classic"]);
    let addr = metrics_addr(&consumer);
    let mut last = BTreeMap::new();
    let settled = wait_until(Duration::from_secs(60), || {
        last = samples(&scrape(addr));
        let total: f64 = ["formatted", "fallback", "dead_lettered"]
            .iter()
            .map(|o| {
                last.get(&format!("{}{{outcome=\"{o}\"}}", names::MESSAGES_TOTAL))
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum();
        total >= 46.0
    });
    assert!(settled, "not all settled: {last:#?}\n{}", consumer.stderr());
    let exposition = scrape(addr);
    let s = samples(&exposition);
    let m = |series: &str| value(&s, series);
    assert_eq!(m(r#"logfence_messages_total{outcome="formatted"}"#), 35.0);
    assert_eq!(m(r#"logfence_messages_total{outcome="fallback"}"#), 10.0);
    assert_eq!(
        m(r#"logfence_messages_total{outcome="dead_lettered"}"#),
        1.0
    );
    assert_eq!(m(r#"logfence_messages_total{outcome="requeued"}"#), 0.0);
    assert_eq!(
        m(r#"logfence_findings_total{rule="width-too-large"}"#),
        10.0
    );
    assert_eq!(m(r#"logfence_findings_total{rule="delivery-limit"}"#), 1.0);
    assert_eq!(m(r#"logfence_findings_total{rule="crash"}"#), 0.0);
    assert_eq!(m(r#"logfence_sandbox_runs_total{result="ok"}"#), 5.0);
    assert_eq!(m(r#"logfence_sandbox_runs_total{result="crashed"}"#), 0.0);
    assert_eq!(m("logfence_redeliveries_total"), 6.0);
    // Every rendered message is observed once (the delivery-limit one is not rendered).
    assert_eq!(m("logfence_message_alloc_bytes_count"), 45.0);
    assert_eq!(m("logfence_format_duration_seconds_count"), 45.0);
    assert_eq!(m(r#"logfence_message_alloc_bytes_bucket{le="+Inf"}"#), 45.0);
    assert!(m("logfence_message_alloc_bytes_sum") > 0.0);
    assert_eq!(m("logfence_amqp_connected"), 1.0);
    assert_eq!(m("logfence_consumer_paused"), 0.0);
    assert_eq!(m("logfence_previous_exit_unclean"), 0.0);
    assert!(m("logfence_memory_allocated_bytes") > 0.0);
    assert!(m("logfence_memory_resident_bytes") > 0.0);
    assert_eq!(
        m(&format!(
            "logfence_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for name in names::ALL {
        assert!(
            exposition.contains(&format!("# HELP {name} ")),
            "{name} has no help text"
        );
        assert!(
            exposition.contains(&format!("# TYPE {name} ")),
            "{name} has no type"
        );
    }
    assert_eq!(sink_lines(&tmp.path().join("out.log")).len(), 45);
    assert_eq!(rabbit.ready(&format!("{}.dead", queue.name)), 11);
    promtool_check(&exposition);
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn metrics_series_are_all_there_at_zero_and_do_not_grow_with_random_content() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "metrics-cardinality");
    let tmp = tempfile::tempdir().expect("tempdir");
    let consumer = start(&queue.name, tmp.path(), &["--queue-type", "classic"]);
    let addr = metrics_addr(&consumer);
    let before_any = samples(&scrape(addr));
    for outcome in ["formatted", "fallback", "dead_lettered", "requeued"] {
        let series = format!("logfence_messages_total{{outcome=\"{outcome}\"}}");
        assert_eq!(value(&before_any, &series), 0.0, "{series}");
    }
    for rule in logfence::finding::Rule::ALL {
        let series = format!("logfence_findings_total{{rule=\"{}\"}}", rule.id());
        assert_eq!(value(&before_any, &series), 0.0, "{series}");
    }

    let settled_total = |s: &BTreeMap<String, f64>| -> f64 {
        ["formatted", "fallback", "dead_lettered"]
            .iter()
            .filter_map(|o| s.get(&format!("logfence_messages_total{{outcome=\"{o}\"}}")))
            .sum()
    };
    rabbit.publish_transient(&queue.name, &(0..10).map(benign).collect::<Vec<_>>());
    let mut after_ten = BTreeMap::new();
    assert!(wait_until(Duration::from_secs(30), || {
        after_ten = samples(&scrape(addr));
        settled_total(&after_ten) >= 10.0
    }));

    // Random content: random templates, styles, args, loggers, levels, field names and
    // bytes that are not JSON at all. None of it may become a label.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261123);
    let bodies: Vec<Vec<u8>> = (0..10_000).map(|_| random_record(&mut rng)).collect();
    rabbit.publish_transient(&queue.name, &bodies);
    let mut after_many = BTreeMap::new();
    let done = wait_until(Duration::from_secs(180), || {
        after_many = samples(&scrape(addr));
        settled_total(&after_many) >= 10_010.0
    });
    assert!(done, "not drained: {after_many:#?}\n{}", consumer.stderr());
    let keys = |s: &BTreeMap<String, f64>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&before_any), keys(&after_ten));
    assert_eq!(keys(&after_ten), keys(&after_many));
}

fn random_record(rng: &mut impl Rng) -> Vec<u8> {
    let word = |rng: &mut dyn rand::RngCore| -> String {
        let n = rng.gen_range(0..12);
        (0..n)
            .map(|_| {
                let pool = "abcXYZ%{}$()*.:!<>09 \n\u{202e}\u{0}'\"\\";
                let chars: Vec<char> = pool.chars().collect();
                chars[rng.gen_range(0..chars.len())]
            })
            .collect()
    };
    match rng.gen_range(0..5) {
        0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        1 => word(rng).into_bytes(),
        _ => {
            let style = ["%", "{", "$"][rng.gen_range(0..3)];
            let mut record = serde_json::json!({
                "msg": word(rng),
                "args": [word(rng), rng.gen_range(-1000..1000), rng.gen::<f64>()],
                "style": style,
                "level": word(rng),
                "logger": word(rng),
                "ts": TS,
            });
            record[word(rng)] = serde_json::Value::String(word(rng));
            record.to_string().into_bytes()
        }
    }
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn metrics_and_healthz_answer_while_the_consumer_is_flooded() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "metrics-flood");
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = 60_000;
    rabbit.publish_transient(&queue.name, &(0..n).map(benign).collect::<Vec<_>>());
    let consumer = start(
        &queue.name,
        tmp.path(),
        &["--queue-type", "classic", "--prefetch", "1000"],
    );
    let addr = metrics_addr(&consumer);
    // Start-up (connecting, declaring) is not what this test is about: from the moment
    // the consumer is consuming, every probe must answer 200.
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            get(addr, "/readyz", Duration::from_secs(1)),
            Ok((200, _))
        )),
        "the consumer never became ready"
    );
    // Scrape and probe back to back until the flood is through; each must answer within
    // a second. The point is that they answer at all while both cores are busy.
    let (mut asked, mut during_flood, mut failures) = (0, 0, Vec::new());
    loop {
        let ready_before = rabbit.ready(&queue.name);
        for path in ["/metrics", "/healthz", "/readyz"] {
            asked += 1;
            match get(addr, path, Duration::from_secs(1)) {
                Ok((200, _)) => {}
                other => failures.push(format!("{path}: {other:?}")),
            }
        }
        if ready_before > 0 {
            during_flood += 1;
        }
        if sink_lines(&tmp.path().join("out.log")).len() >= n {
            break;
        }
        assert!(
            asked < 30_000,
            "the flood never drained:\n{}",
            consumer.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        failures.is_empty(),
        "{} of {asked} failed: {failures:?}",
        failures.len()
    );
    assert!(
        during_flood > 0,
        "no probe was made while records were still queued"
    );
    eprintln!("{asked} requests answered, {during_flood} rounds while records were queued");
}

#[test]
fn readyz_is_503_while_disconnected_and_healthz_stays_200() {
    // A port nothing listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let tmp = tempfile::tempdir().expect("tempdir");
    let consumer = spawn_consumer(
        "logfence-test-nowhere",
        &tmp.path().join("out.log"),
        tmp.path(),
        &[],
        &[(
            "AMQP_URL",
            &format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed.port()),
        )],
        tmp.path().join("stderr.log"),
    );
    let addr = metrics_addr(&consumer);
    let (status, body) = get(addr, "/readyz", Duration::from_secs(5)).expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disconnected"), "{body}");
    let (status, _) = get(addr, "/healthz", Duration::from_secs(5)).expect("healthz");
    assert_eq!(status, 200);
    let mut s = BTreeMap::new();
    let retried = wait_until(Duration::from_secs(20), || {
        s = samples(&scrape(addr));
        s.get("logfence_amqp_reconnects_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    });
    assert!(retried, "no reconnect attempt counted: {s:#?}");
    assert_eq!(value(&s, "logfence_amqp_connected"), 0.0);
    let (status, _) = get(addr, "/nope", Duration::from_secs(5)).expect("404");
    assert_eq!(status, 404);
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    all(feature = "failpoints", logfence_skip_broker),
    ignore = "LOGFENCE_SKIP_BROKER_TESTS is set"
)]
fn readyz_turns_503_at_sigterm_while_the_drain_runs() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "metrics-drain");
    let tmp = tempfile::tempdir().expect("tempdir");
    const MARKER: &str = "HOLD-THE-DRAIN";
    // The record spins in the renderer (failpoint), so the drain cannot finish while we look.
    let body = serde_json::json!({"msg": format!("{MARKER} %s"), "args": ["x"], "ts": TS});
    rabbit.publish(&queue.name, &[body.to_string().into_bytes()]);
    let failpoint = format!("render-loop=return({MARKER})");
    let consumer = spawn_consumer(
        &queue.name,
        &tmp.path().join("out.log"),
        tmp.path(),
        &["--queue-type", "classic", "--drain-timeout", "60s"],
        &[("FAILPOINTS", failpoint.as_str())],
        tmp.path().join("stderr.log"),
    );
    let addr = metrics_addr(&consumer);
    assert!(
        wait_until(Duration::from_secs(20), || {
            matches!(get(addr, "/readyz", Duration::from_secs(2)), Ok((200, _)))
        }),
        "never ready:\n{}",
        consumer.stderr()
    );
    consumer.terminate();
    let mut last = None;
    let unready = wait_until(Duration::from_secs(20), || {
        last = get(addr, "/readyz", Duration::from_secs(2)).ok();
        matches!(&last, Some((503, body)) if body.contains("shutting down"))
    });
    assert!(
        unready,
        "still {last:?} after SIGTERM:\n{}",
        consumer.stderr()
    );
    let (status, _) = get(addr, "/healthz", Duration::from_secs(5)).expect("healthz");
    assert_eq!(status, 200, "alive while draining");
}
