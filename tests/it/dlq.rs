//! `logfence dlq list` and `logfence dlq replay` against the real RabbitMQ, the built binary
//! as on-call runs it. Each test uses its own uniquely named queues and deletes them.
//!
//! Order is checked twice over: by what the tool prints, and by draining the queue at the
//! end with the test's own consumer, so a listing that reordered the queue cannot hide it.

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::broker::{url, wait_until, Rabbit, TestQueue, TS};
use lapin::options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use logfence::amqp::deadletter::{
    DEAD_LETTERED_AT_HEADER, DELIVERIES_HEADER, DETAIL_HEADER, FINGERPRINT_HEADER, RULE_HEADER,
};
use logfence::amqp::delivery::fingerprint;
use logfence::amqp::topology::{QueueType, DLX};
use serde_json::Value;

fn logfence(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logfence"));
    cmd.args(args)
        .env("AMQP_URL", url())
        .env_remove("FAILPOINTS")
        .env_remove("LOGFENCE_AMQP_URL_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    logfence(args, &[]).output().expect("run logfence")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `dlq list --json`, parsed; the command must succeed.
fn list_json(dead: &str) -> Vec<Value> {
    let out = run(&["dlq", "list", "--queue", dead, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "dlq list failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// What the consumer's dead-lettering publishes: the original properties plus our headers.
fn marked(i: usize, original: &BasicProperties) -> BasicProperties {
    let mut h = original.headers().clone().unwrap_or_default();
    h.insert(RULE_HEADER.into(), long("width-too-large"));
    h.insert(DETAIL_HEADER.into(), long(&format!("width {i} > limit 4")));
    h.insert(DELIVERIES_HEADER.into(), AMQPValue::LongLongInt(1));
    h.insert(FINGERPRINT_HEADER.into(), long("ignored-by-list"));
    h.insert(
        DEAD_LETTERED_AT_HEADER.into(),
        AMQPValue::Timestamp(1_795_000_000 + i as u64),
    );
    h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
    original.clone().with_headers(h)
}

fn record(i: usize) -> Vec<u8> {
    serde_json::json!({"msg": "job %s done", "args": [format!("tok-{i:05}")], "ts": TS})
        .to_string()
        .into_bytes()
}

/// Dead-letters `bodies` as the consumer does: marked, through `logfence.dlx` with the
/// work queue's name as routing key, confirmed one by one.
fn dead_letter(rabbit: &Rabbit, queue: &str, bodies: &[Vec<u8>], original: &BasicProperties) {
    rabbit.rt.block_on(async {
        for (i, body) in bodies.iter().enumerate() {
            let confirm = rabbit
                .ch
                .basic_publish(
                    DLX.into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    marked(i, original),
                )
                .await
                .expect("publish");
            assert!(confirm.await.expect("confirm").is_ack());
        }
    });
}

fn publish_marked(rabbit: &Rabbit, queue: &str, bodies: &[Vec<u8>]) {
    dead_letter(
        rabbit,
        queue,
        bodies,
        &BasicProperties::default().with_delivery_mode(2),
    );
}

/// Bodies as text, so a failed comparison prints something readable.
fn texts<'a>(bodies: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    bodies.into_iter().map(|b| text(b)).collect()
}

/// Every message of `queue`, body and properties, taken for good (basic.get, no ack).
fn drain(rabbit: &Rabbit, queue: &str) -> Vec<(Vec<u8>, BasicProperties)> {
    rabbit.rt.block_on(async {
        let mut out = Vec::new();
        while let Some(m) = rabbit
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            out.push((m.delivery.data, m.delivery.properties));
        }
        out
    })
}

fn fingerprints(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|v| v["fingerprint"].as_str().expect("fingerprint").to_string())
        .collect()
}

fn list_twice_leaves_depth_and_order(queue_type: QueueType, what: &str) {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, what, queue_type);
    let dead = format!("{}.dead", queue.name);
    // More than one give-back batch (32), so batch order matters too.
    let bodies: Vec<Vec<u8>> = (0..100).map(record).collect();
    publish_marked(&rabbit, &queue.name, &bodies);

    let started = Instant::now();
    let first = list_json(&dead);
    let elapsed = started.elapsed();
    let second = list_json(&dead);
    eprintln!("{what}: dlq list of 100 messages took {elapsed:?}");

    let want: Vec<String> = bodies.iter().map(|b| fingerprint(b)).collect();
    assert_eq!(fingerprints(&first), want, "listed in queue order");
    assert_eq!(first, second, "a second listing sees the very same list");
    assert_eq!(first[7]["rule"], "width-too-large");
    assert_eq!(first[7]["detail"], "width 7 > limit 4");
    assert_eq!(first[7]["deliveries"], 1);
    assert_eq!(first[7]["size"], bodies[7].len());
    assert_eq!(first[7]["dead_lettered_at"], "2026-11-18T11:06:47Z");
    assert_eq!(first[7]["queue"], queue.name.as_str());

    let human = run(&["dlq", "list", "--queue", &dead]);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human.stderr));
    let out = text(&human.stdout);
    assert_eq!(out.lines().count(), 102, "heading, 100 rows, total:\n{out}");
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("100 messages (")),
        "{out}"
    );

    assert_eq!(rabbit.ready(&dead), 100, "depth unchanged");
    let left = drain(&rabbit, &dead);
    assert_eq!(
        texts(left.iter().map(|(b, _)| b)),
        texts(&bodies),
        "the queue itself kept its order"
    );
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_twice_leaves_a_classic_dlq_as_found_order_included() {
    list_twice_leaves_depth_and_order(QueueType::Classic, "dlq-list-classic");
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_twice_leaves_a_quorum_dlq_as_found_order_included() {
    list_twice_leaves_depth_and_order(QueueType::Quorum, "dlq-list-quorum");
}

/// The dead-letter queue is never a place where messages die: every listing hands each
/// message back, which RabbitMQ 4.0-4.2 count against a quorum queue's delivery limit (20 by
/// default, and `.dead` has no dead-letter exchange of its own: past it a message is
/// dropped). Twenty-five listings of the same 100 messages leave all 100, in order.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_25_times_keeps_every_dead_letter_in_order() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "dlq-list-25", QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    let bodies: Vec<Vec<u8>> = (0..100).map(record).collect();
    publish_marked(&rabbit, &queue.name, &bodies);
    let want: Vec<String> = bodies.iter().map(|b| fingerprint(b)).collect();
    let started = Instant::now();
    for listing in 1..=25 {
        let listed = list_json(&dead);
        assert_eq!(
            fingerprints(&listed),
            want,
            "listing {listing} saw every message, in order"
        );
    }
    eprintln!(
        "dlq-list-25: 25 listings of 100 messages took {:?}",
        started.elapsed()
    );
    let left = drain(&rabbit, &dead);
    let kept = left.len();
    super::broker::figure("dlq-25", "kept after 25 listings", kept, "100", kept == 100);
    assert_eq!(kept, 100, "all 100 still there");
    assert_eq!(
        texts(left.iter().map(|(b, _)| b)),
        texts(&bodies),
        "in order"
    );
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_shows_messages_the_broker_dead_lettered_at_its_delivery_limit() {
    let rabbit = Rabbit::connect();
    // Declared as the consumer does: x-delivery-limit 7 (--max-deliveries 5 + 2).
    let queue = TestQueue::new(&rabbit, "dlq-broker", QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    rabbit.publish(&queue.name, &[b"poison".to_vec()]);
    // Return it until the broker gives up on it: with `basic.reject`, which every version
    // counts (from 4.3 a `basic.nack` is not counted, see tests/it/brokers.rs).
    rabbit.rt.block_on(async {
        for _ in 0..20 {
            let got = rabbit
                .ch
                .basic_get(
                    queue.name.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .expect("basic.get");
            let Some(m) = got else { break };
            rabbit
                .ch
                .basic_reject(
                    m.delivery.delivery_tag,
                    BasicRejectOptions { requeue: true },
                )
                .await
                .expect("reject");
        }
    });
    assert!(
        wait_until(Duration::from_secs(10), || rabbit.ready(&dead) == 1),
        "the broker dead-lettered it"
    );
    let listed = list_json(&dead);
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!(d["rule"], "delivery-limit");
    assert_eq!(d["queue"], queue.name.as_str());
    assert_eq!(d["fingerprint"], fingerprint(b"poison"));
    assert!(d["deliveries"].is_null());
    assert!(
        d["dead_lettered_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')),
        "x-death time: {d}"
    );
    assert!(d["detail"]
        .as_str()
        .is_some_and(|s| s.contains("delivery_limit")));
}

/// SIGINT once the listing holds some messages but not all: it must still give them all
/// back, in order. The `dlq-hold` failpoint makes each take slow, so "mid-listing" is a
/// state the test waits for, not a moment it guesses.
fn sigint_mid_listing(queue_type: QueueType, what: &str) {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, what, queue_type);
    let dead = format!("{}.dead", queue.name);
    let bodies: Vec<Vec<u8>> = (0..80).map(record).collect();
    publish_marked(&rabbit, &queue.name, &bodies);

    let tmp = tempfile::tempdir().expect("tempdir");
    let stderr_path = tmp.path().join("stderr");
    let mut child: Child = logfence(
        &["dlq", "list", "--queue", &dead, "--json"],
        &[("FAILPOINTS", "dlq-hold=sleep(100)")],
    )
    .stdout(Stdio::null())
    .stderr(File::create(&stderr_path).expect("stderr file"))
    .spawn()
    .expect("spawn dlq list");
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    // Held: more than one give-back batch, fewer than all.
    let mid = wait_until(Duration::from_secs(60), || rabbit.ready(&dead) <= 40);
    assert!(mid, "the listing never got half-way; stderr:\n{}", stderr());
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "interrupted listing exits 130; stderr:\n{}",
        stderr()
    );
    assert!(stderr().contains("interrupted after"), "{}", stderr());
    assert_eq!(
        rabbit.ready(&dead),
        80,
        "every held message is back at exit"
    );
    let left = drain(&rabbit, &dead);
    assert_eq!(
        texts(left.iter().map(|(b, _)| b)),
        texts(&bodies),
        "in the order they were in"
    );
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    all(feature = "failpoints", logfence_skip_broker),
    ignore = "LOGFENCE_SKIP_BROKER_TESTS is set"
)]
fn dlq_list_interrupted_by_sigint_leaves_a_quorum_dlq_intact() {
    sigint_mid_listing(QueueType::Quorum, "dlq-sigint-quorum");
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    all(feature = "failpoints", logfence_skip_broker),
    ignore = "LOGFENCE_SKIP_BROKER_TESTS is set"
)]
fn dlq_list_interrupted_by_sigint_leaves_a_classic_dlq_intact() {
    sigint_mid_listing(QueueType::Classic, "dlq-sigint-classic");
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_replay_moves_every_message_back_byte_for_byte_with_its_own_properties() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "dlq-replay", QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    let mut bodies: Vec<Vec<u8>> = (0..70).map(record).collect();
    bodies[3] = vec![0xff, 0xfe, 0x00, b'\n', 0x80];
    bodies[4] = Vec::new();
    bodies[5] = b"%2400000000d plain text".to_vec();
    let mut trace = FieldTable::default();
    trace.insert("trace-id".into(), long("t-42"));
    let original = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id("m-1".into())
        .with_headers(trace.clone());
    dead_letter(&rabbit, &queue.name, &bodies, &original);

    // --limit takes from the head.
    let out = run(&["dlq", "replay", "--queue", &dead, "--limit", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("moved 10 to {}, kept 0", queue.name)),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(rabbit.ready(&dead), 60);
    let started = Instant::now();
    let out = run(&["dlq", "replay", "--queue", &dead]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    eprintln!("dlq replay of 60 messages (quorum to quorum) took {elapsed:?}");

    assert_eq!(rabbit.ready(&dead), 0, "the dead-letter queue is empty");
    let moved = drain(&rabbit, &queue.name);
    let moved_bodies: Vec<&Vec<u8>> = moved.iter().map(|(b, _)| b).collect();
    assert_eq!(moved_bodies.len(), bodies.len());
    assert!(
        moved_bodies.iter().zip(&bodies).all(|(a, b)| *a == b),
        "each once, in order, byte for byte: {:?}",
        texts(moved_bodies.iter().copied())
    );
    for (_, props) in &moved {
        assert_eq!(props.content_type(), original.content_type());
        assert_eq!(props.message_id(), original.message_id());
        assert_eq!(props.delivery_mode(), &Some(2));
        let h = props.headers().clone().unwrap_or_default();
        let names: Vec<&str> = h.inner().keys().map(|k| k.as_str()).collect();
        // The broker stamps its own x-delivery-count on a quorum get; nothing of ours or
        // the dead-lettering's comes back, and the old count is gone.
        assert_eq!(h.inner().get("trace-id"), Some(&long("t-42")), "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| *n == "trace-id" || *n == "x-delivery-count"),
            "{names:?}"
        );
        let count = h.inner().get("x-delivery-count");
        assert!(
            matches!(count, None | Some(AMQPValue::LongLongInt(0))),
            "a replayed message is a first delivery: {count:?}"
        );
    }
}

/// The consumer as a child process, dead-lettering under the given limits.
fn consume_until_drained(rabbit: &Rabbit, queue: &str, extra: &[&str], dead_count: u32) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("sink.log");
    let stderr_path = tmp.path().join("stderr");
    let sink_arg = format!("file:{}", sink.display());
    let mut args = vec![
        "consume",
        "--queue",
        queue,
        "--sink",
        &sink_arg,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut child = logfence(&args, &[("RUST_LOG", "info")])
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn consume");
    let dead = format!("{queue}.dead");
    let drained = wait_until(Duration::from_secs(60), || {
        rabbit.ready(queue) == 0 && rabbit.ready(&dead) >= dead_count
    });
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = wait_for_exit(&mut child, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        drained,
        "consume did not dead-letter {dead_count}; stderr:\n{stderr}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "consume exit {status:?}:\n{stderr}"
    );
}

fn width_record(i: usize, width: usize) -> Vec<u8> {
    serde_json::json!({"msg": format!("row {i}: %{width}d|"), "args": [i], "ts": TS})
        .to_string()
        .into_bytes()
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_replay_check_moves_exactly_the_messages_that_now_pass() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "dlq-check", QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    // Under --max-width 50 every one is rejected; under the default 4096 only the
    // 10000-wide ones still are.
    let bodies: Vec<Vec<u8>> = (0..60)
        .map(|i| width_record(i, if i % 3 == 0 { 10_000 } else { 100 }))
        .collect();
    let (bad, good): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
        bodies.iter().partition(|b| text(b).contains("%10000d"));
    rabbit.publish(&queue.name, &bodies);
    consume_until_drained(
        &rabbit,
        &queue.name,
        &[
            "--max-width",
            "50",
            "--on-reject",
            "dead-letter",
            "--prefetch",
            "1",
        ],
        60,
    );
    let listed = list_json(&dead);
    assert_eq!(listed.len(), 60);
    assert!(
        listed.iter().all(|d| d["rule"] == "width-too-large"),
        "{listed:?}"
    );

    let out = run(&["dlq", "replay", "--queue", &dead, "--check"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some were kept: {stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("moved 40 to {}, kept 20 in {dead}", queue.name)),
        "{stdout}"
    );
    let kept_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("kept ")).collect();
    assert_eq!(kept_lines.len(), 20, "{stdout}");
    for (line, body) in kept_lines.iter().zip(&bad) {
        assert_eq!(
            *line,
            format!("kept  {}  rejected  width-too-large", fingerprint(body))
        );
    }
    assert!(
        !stdout.contains("row "),
        "no message content in the output: {stdout}"
    );

    let moved: Vec<Vec<u8>> = drain(&rabbit, &queue.name)
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    let mut moved_sorted = moved.clone();
    moved_sorted.sort();
    let mut good_sorted: Vec<Vec<u8>> = good.iter().map(|b| b.to_vec()).collect();
    good_sorted.sort();
    assert_eq!(
        texts(&moved_sorted),
        texts(&good_sorted),
        "exactly the good ones, each once"
    );
    let still: Vec<Vec<u8>> = drain(&rabbit, &dead).into_iter().map(|(b, _)| b).collect();
    let mut still_sorted = still.clone();
    still_sorted.sort();
    let mut bad_sorted: Vec<Vec<u8>> = bad.iter().map(|b| b.to_vec()).collect();
    bad_sorted.sort();
    assert_eq!(
        texts(&still_sorted),
        texts(&bad_sorted),
        "the bad ones stay, none lost"
    );
    // The consumer dead-letters in the order it consumed (prefetch 1), so the kept ones
    // are in publishing order, and stay so.
    assert_eq!(texts(&still), texts(bad.iter().copied()));
}

#[test]
fn dlq_reports_an_unreachable_broker_without_its_password() {
    for sub in [&["list"][..], &["replay"]] {
        let mut args = vec!["dlq"];
        args.extend_from_slice(sub);
        args.extend_from_slice(&["--amqp-url", "amqp://guest:s3cret-pw@127.0.0.1:1/%2f"]);
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{sub:?}: {stderr}");
        assert!(
            stderr.contains("cannot reach the broker at amqp://guest:***@127.0.0.1:1/%2f"),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret-pw") && !text(&out.stdout).contains("s3cret-pw"));
    }
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_reports_a_missing_queue_with_exit_66_and_bad_flags_with_64() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::bare(&rabbit, "dlq-missing");
    let dead = format!("{}.dead", queue.name);
    for sub in ["list", "replay"] {
        let out = run(&["dlq", sub, "--queue", &dead]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{sub}: {stderr}");
        assert!(
            stderr.contains(&format!("queue '{dead}' does not exist")),
            "{stderr}"
        );
    }
    // The dead-letter queue exists, the work queue does not.
    let other = TestQueue::new(&rabbit, "dlq-target", QueueType::Classic);
    let out = run(&[
        "dlq",
        "replay",
        "--queue",
        &format!("{}.dead", other.name),
        "--to",
        &queue.name,
    ]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));

    let usage = run(&["dlq", "replay", "--queue", "graveyard"]);
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage.stderr));
    assert!(
        text(&usage.stderr).contains("--to"),
        "{}",
        text(&usage.stderr)
    );
    assert_eq!(
        run(&["dlq", "list", "--json", "extra"]).status.code(),
        Some(64)
    );
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_of_an_empty_queue_exits_0_with_a_total_line() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "dlq-empty", QueueType::Quorum);
    let dead = format!("{}.dead", queue.name);
    let out = run(&["dlq", "list", "--queue", &dead]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("0 messages (0 bytes) in {dead}, left as found.\n")
    );
    assert!(list_json(&dead).is_empty());
}
