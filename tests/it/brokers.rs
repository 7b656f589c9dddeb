//! What differs between the broker versions logfence supports (RabbitMQ 3.10 to 4.3), pinned
//! against the broker under test (`LOGFENCE_TEST_AMQP_URL`, `scripts/broker.sh 4.0|4.3`):
//! each test asks the broker its version and asserts that version's behaviour, so the same
//! suite runs on every one and none is skipped for being new. `scripts/compat.sh` runs these
//! with the other broker-facing tests against 3.10, 4.0 and 4.3.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicRejectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use logfence::amqp::topology::{QueueType, Topology};

use super::broker::figure;
use super::broker::{broker_version, sink_lines, wait_until, Rabbit, TestQueue};
use super::consume::{benign, spawn_consumer, token_of};
use super::metrics::{get_status, metrics_addr};

fn header_int(p: &BasicProperties, name: &str) -> Option<u64> {
    match p.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        other => panic!("{name} is not an integer: {other:?}"),
    }
}

/// `basic.get` without ack: (tag, redelivered, properties, body).
fn get_one(rabbit: &Rabbit, queue: &str) -> (u64, bool, BasicProperties, Vec<u8>) {
    rabbit.rt.block_on(async {
        let m = rabbit
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .unwrap_or_else(|| panic!("{queue} is empty"));
        let d = m.delivery;
        (d.delivery_tag, d.redelivered, d.properties, d.data)
    })
}

/// The table in docs/brokers.md, as the broker under test behaves: a quorum
/// queue's `x-delivery-count` after a `nack` and after a `reject` (both with requeue),
/// `x-acquired-count`, and where a returned message goes (tail on 3.x, head from 4.0).
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn quorum_returns_are_counted_and_placed_as_the_broker_version_does() {
    let rabbit = Rabbit::connect();
    let v = broker_version();
    let queue = TestQueue::new(&rabbit, "brokers-count", QueueType::Quorum);
    rabbit.publish(&queue.name, &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let nack = |tag| {
        rabbit.rt.block_on(async {
            rabbit
                .ch
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
                .expect("nack")
        })
    };
    let reject = |tag| {
        rabbit.rt.block_on(async {
            rabbit
                .ch
                .basic_reject(tag, BasicRejectOptions { requeue: true })
                .await
                .expect("reject")
        })
    };
    let (tag, redelivered, p, body) = get_one(&rabbit, &queue.name);
    assert_eq!((body.as_slice(), redelivered), (&b"a"[..], false));
    assert_eq!(
        header_int(&p, "x-delivery-count").unwrap_or(0),
        0,
        "{v}: first delivery (3.x says 0, 4.x says nothing)"
    );
    nack(tag);
    let (tag, redelivered, p, body) = get_one(&rabbit, &queue.name);
    // From 4.0 a returned message goes to the head. 3.x is left unasserted: it put `a` back
    // at the head here (a queue with a delivery limit, one message returned), while the
    // dead-letter queue's listing found returns at the tail (see src/dlq/hold.rs).
    let head = body == b"a";
    if v.major >= 4 {
        assert!(head, "{v}: a returned message goes to the head");
    }
    // Bring `a` back whichever way it went.
    let (tag, p) = if body == b"a" {
        (tag, p)
    } else {
        reject(tag);
        let (t, _, _, b) = get_one(&rabbit, &queue.name);
        assert_eq!(b, b"c");
        reject(t);
        let (t, _, p, b) = get_one(&rabbit, &queue.name);
        assert_eq!(b, b"a");
        (t, p)
    };
    assert!(
        redelivered || !head,
        "{v}: a returned message is redelivered"
    );
    let after_nack = header_int(&p, "x-delivery-count").unwrap_or(0);
    assert_eq!(
        after_nack,
        u64::from(v.counts_nack()),
        "{v}: x-delivery-count after one nack"
    );
    assert_eq!(
        header_int(&p, "x-acquired-count"),
        v.has_acquired_count().then_some(1),
        "{v}: x-acquired-count after one return"
    );
    reject(tag);
    let (_, redelivered, p, body) = get_one(&rabbit, &queue.name);
    assert_eq!(body, b"a");
    assert!(redelivered);
    assert_eq!(
        header_int(&p, "x-delivery-count").unwrap_or(0),
        after_nack + 1,
        "{v}: a reject is counted on every version"
    );
    figure(
        "returns",
        "returned to",
        if head { "head" } else { "tail" },
        "",
        true,
    );
    figure("returns", "nack counted", v.counts_nack(), "", true);
    eprintln!(
        "{v}: returns to the {}, nack counted: {}, x-acquired-count: {}",
        if head { "head" } else { "tail" },
        v.counts_nack(),
        v.has_acquired_count()
    );
}

/// An upgrade from a logfence whose `<queue>.dead` had no delivery limit of its own: the
/// broker refuses to redeclare it with one (406), and `consume` must still start, consume,
/// and dead-letter into it, deleting nothing.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_accepts_a_dead_letter_queue_declared_before_it_had_a_delivery_limit() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::bare(&rabbit, "brokers-upgrade");
    let t = Topology::new(&queue.name, QueueType::Quorum, 5).expect("name");
    let dead = t.dead_queue();
    rabbit.rt.block_on(async {
        rabbit
            .ch
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                t.dead_queue_arguments_before_limit(),
            )
            .await
            .expect("the older dead-letter queue")
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    let mut bodies: Vec<Vec<u8>> = (0..20).map(benign).collect();
    // A record whose width is refused: rejected, so dead-lettered (and a fallback line).
    bodies.push(br#"{"msg":"%*d","args":[999999999,1],"ts":"2026-11-22T10:00:00Z"}"#.to_vec());
    let consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &[],
        &[],
        tmp.path().join("stderr.log"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || consumer
            .stderr()
            .contains("consuming")),
        "never consumed:\n{}",
        consumer.stderr()
    );
    rabbit.publish(&queue.name, &bodies);
    assert!(
        wait_until(Duration::from_secs(20), || sink_lines(&sink).len() == 21
            && rabbit.ready(&dead) == 1),
        "lines {}, dead {}:\n{}",
        sink_lines(&sink).len(),
        rabbit.ready(&dead),
        consumer.stderr()
    );
    let stderr = consumer.stderr();
    assert!(
        stderr.contains("no delivery limit of its own"),
        "the older queue is named in the log:\n{stderr}"
    );
    // (lapin itself logs the refused redeclaration at ERROR; logfence must not.)
    assert!(!stderr.contains("ERROR logfence"), "{stderr}");
}

/// A consumer cancelled by the broker (`basic.cancel`; here its queue was deleted, as a
/// quorum leader move or a 4.3 consumer timeout would also do) consumes again within 5 s,
/// with `/readyz` 503 in between, on every version.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_consumes_again_after_the_broker_cancels_it() {
    let rabbit = Rabbit::connect();
    let v = broker_version();
    let queue = TestQueue::new(&rabbit, "brokers-cancel", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    let consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &[],
        &[],
        tmp.path().join("stderr.log"),
    );
    let addr = metrics_addr(&consumer);
    assert!(
        wait_until(Duration::from_secs(20), || get_status(addr, "/readyz")
            == Some(200)),
        "never ready:\n{}",
        consumer.stderr()
    );
    rabbit.publish(&queue.name, &[benign(0)]);
    assert!(wait_until(Duration::from_secs(10), || sink_lines(&sink)
        .len()
        == 1));
    // Delete only the work queue, under the running consumer.
    rabbit.rt.block_on(async {
        rabbit
            .ch
            .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete the work queue")
    });
    let cancelled_at = Instant::now();
    // /readyz is polled in a tight loop: the gap is a backoff of about half a second.
    let mut saw_503 = false;
    let mut back_at = None;
    while cancelled_at.elapsed() < Duration::from_secs(10) {
        match get_status(addr, "/readyz") {
            Some(503) => saw_503 = true,
            Some(200) if saw_503 => {
                back_at = Some(cancelled_at.elapsed());
                break;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = consumer.stderr();
    assert!(saw_503, "{v}: /readyz never turned 503:\n{stderr}");
    let back = back_at.unwrap_or_else(|| panic!("{v}: never ready again:\n{stderr}"));
    assert!(
        back < Duration::from_secs(5),
        "{v}: ready again after {back:?}"
    );
    assert!(
        stderr.contains("cancelled the consumer"),
        "{v}: the cancel is logged:\n{stderr}"
    );
    // Consuming, not just connected: the queue is declared again and a new record is written.
    rabbit.publish(&queue.name, &[benign(1)]);
    assert!(
        wait_until(Duration::from_secs(10), || sink_lines(&sink).len() == 2),
        "{v}: nothing consumed after the cancel:\n{}",
        consumer.stderr()
    );
    eprintln!("{v}: consuming again {back:?} after basic.cancel");
    figure(
        "cancel",
        "ready again after basic.cancel",
        format!("{} ms", back.as_millis()),
        "< 5 s",
        true,
    );
}

/// A SIGTERM drain hands back what it could not finish with `basic.nack`, which from 4.3
/// costs a message no delivery (`x-delivery-count` untouched, `x-acquired-count` + 1); up to
/// 4.2 every return counts. Nothing is lost either way, and nothing the broker sent before
/// the consumer was cancelled is returned by the channel's close (which counts everywhere).
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_sigterm_drain_hands_back_with_the_uncounted_verb() {
    let rabbit = Rabbit::connect();
    let v = broker_version();
    for attempt in 1..=3 {
        let queue = TestQueue::new(&rabbit, "brokers-drain", QueueType::Quorum);
        let tmp = tempfile::tempdir().expect("tempdir");
        let sink = tmp.path().join("out.log");
        let n = 3_000;
        let bodies: Vec<Vec<u8>> = (0..n).map(benign).collect();
        rabbit.publish_transient(&queue.name, &bodies);
        let mut consumer = spawn_consumer(
            &queue.name,
            &sink,
            tmp.path(),
            &["--prefetch", "300", "--drain-timeout", "1ms"],
            &[],
            tmp.path().join("stderr.log"),
        );
        assert!(
            wait_until(Duration::from_secs(20), || !sink_lines(&sink).is_empty()),
            "nothing written:\n{}",
            consumer.stderr()
        );
        consumer.terminate();
        let status = consumer.wait_for(Duration::from_secs(15));
        let stderr = consumer.stderr();
        assert!(
            status.is_some_and(|s| s.success()),
            "exit {status:?}:\n{stderr}"
        );
        let written = sink_lines(&sink);
        // What the closing channel held may take a moment to be ready again.
        let settled = wait_until(Duration::from_secs(20), || {
            written.len() + rabbit.ready(&queue.name) as usize >= n
        });
        let left = rabbit.take_all(&queue.name);
        eprintln!("{v} attempt {attempt}: ready again in time: {settled}");
        let mut tokens: std::collections::HashSet<String> =
            written.iter().filter_map(|l| token_of(l)).collect();
        tokens.extend(
            left.iter()
                .filter_map(|(b, _)| token_of(&String::from_utf8_lossy(b))),
        );
        assert_eq!(tokens.len(), n, "{v}: nothing lost");
        let mut counts: HashMap<(Option<u64>, Option<u64>), usize> = HashMap::new();
        for (_, headers) in &left {
            let p = BasicProperties::default().with_headers(headers.clone());
            *counts
                .entry((
                    header_int(&p, "x-delivery-count"),
                    header_int(&p, "x-acquired-count"),
                ))
                .or_default() += 1;
        }
        eprintln!(
            "{v} attempt {attempt}: {} written, {} left; (x-delivery-count, x-acquired-count) of those left: {counts:?}",
            written.len(),
            left.len()
        );
        let handed_back: usize = counts
            .iter()
            .filter(|((d, a), _)| d.is_some() || a.is_some())
            .map(|(_, n)| n)
            .sum();
        if handed_back == 0 {
            eprintln!("{v}: the signal landed between batches; again");
            continue;
        }
        let counted: usize = counts
            .iter()
            .filter(|((d, _), _)| d.unwrap_or(0) > 0)
            .map(|(_, n)| n)
            .sum();
        figure("drain", "handed back by nack", handed_back, "> 0", true);
        figure(
            "drain",
            "of those, delivery counted",
            counted,
            if v.counts_nack() {
                "all (<= 4.2)"
            } else {
                "0 (4.3)"
            },
            if v.counts_nack() {
                counted == handed_back
            } else {
                counted == 0
            },
        );
        for ((delivery, acquired), n) in &counts {
            if v.counts_nack() {
                // Counted at least once; a message nacked before the consumer's cancel took
                // effect can come back to it and be nacked again (counted twice on <= 4.2).
                assert!(
                    !matches!(delivery, Some(0)),
                    "{v}: {n} left with x-delivery-count {delivery:?}"
                );
            } else {
                assert!(
                    matches!(delivery, None | Some(0)),
                    "{v}: a drain cost {n} messages a delivery (x-delivery-count {delivery:?}, x-acquired-count {acquired:?}):\n{stderr}"
                );
            }
        }
        return;
    }
    panic!("{v}: three SIGTERMs in a row handed nothing back");
}

/// `dlq list` on a dead-letter queue that has no delivery limit of its own (what an older
/// logfence declared, left as it was by the upgrade): twenty-five listings still leave
/// every message, in order. On 4.0-4.2 such a queue has the broker's default limit of 20,
/// so the listing renews messages whose count grows before they reach it.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_keeps_an_older_dead_letter_queue_whole_over_25_listings() {
    let rabbit = Rabbit::connect();
    let v = broker_version();
    let queue = TestQueue::bare(&rabbit, "brokers-older-dlq");
    let t = Topology::new(&queue.name, QueueType::Quorum, 5).expect("name");
    let dead = t.dead_queue();
    rabbit.rt.block_on(async {
        rabbit
            .ch
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                t.dead_queue_arguments_before_limit(),
            )
            .await
            .expect("the older dead-letter queue")
    });
    let mut headers = FieldTable::default();
    headers.insert(
        "x-logfence-rule".into(),
        AMQPValue::LongString(LongString::from("crash")),
    );
    let bodies: Vec<Vec<u8>> = (0..100).map(benign).collect();
    rabbit.publish_with(
        &dead,
        &bodies,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers),
    );
    let started = Instant::now();
    let mut renewals = 0;
    for listing in 1..=25 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_logfence"))
            .args(["dlq", "list", "--json", "--queue", &dead])
            .env("AMQP_URL", super::broker::url())
            .output()
            .expect("dlq list");
        assert!(
            out.status.success(),
            "listing {listing}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(n, 100, "{v}: listing {listing} saw {n} messages");
        if String::from_utf8_lossy(&out.stderr).contains("renewed 100 messages") {
            renewals += 1;
        }
    }
    eprintln!(
        "{v}: 25 listings of an older .dead took {:?}, {renewals} of them renewed it",
        started.elapsed()
    );
    figure("older-dlq", "listings that renewed", renewals, "", true);
    // Only where listings are counted does the count grow to the renewal point.
    assert_eq!(renewals > 0, v.counts_nack(), "{v}: renewals {renewals}");
    let left = rabbit.take_all(&dead);
    let got: Vec<&[u8]> = left.iter().map(|(b, _)| b.as_slice()).collect();
    let want: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    assert!(
        got == want,
        "{v}: {} of 100 left, or out of order",
        got.len()
    );
    for (_, h) in &left {
        assert!(
            h.inner().contains_key("x-logfence-rule"),
            "{v}: headers kept"
        );
    }
}

/// A consumer that holds messages past the queue's consumer timeout (set low here with
/// `x-consumer-timeout`, 3.12 and later): from 4.3 a quorum queue cancels it with
/// `basic.cancel` and returns its messages uncounted; 4.0 closes its channel instead. Either
/// way logfence consumes again within 5 s once it can, with `/readyz` 503 in between, and
/// every record is written at least once. The sink is a FIFO the test stops reading, which
/// is what holds the messages. 3.10 has no per-queue consumer timeout: the consumer stays.
#[test]
#[ignore = "unfinished: on 4.0.5 x-consumer-timeout 1000 did not end a consumer holding messages for 30 s (measured); run with --ignored to look further"]
fn consume_consumes_again_after_the_consumer_timeout() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let rabbit = Rabbit::connect();
    let v = broker_version();
    let has_timeout = v
        >= super::broker::BrokerVersion {
            major: 3,
            minor: 12,
            patch: 0,
        };
    let queue = TestQueue::bare(&rabbit, "brokers-timeout");
    let t = Topology::new(&queue.name, QueueType::Quorum, 5).expect("name");
    rabbit.rt.block_on(async {
        t.declare(&rabbit.ch).await.expect("topology");
        rabbit
            .ch
            .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete");
        let mut args = t.queue_arguments();
        args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(1_000));
        rabbit
            .ch
            .queue_declare(
                queue.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .expect("the work queue with a consumer timeout")
    });
    let consumers = || {
        rabbit.rt.block_on(async {
            rabbit
                .ch
                .queue_declare(
                    queue.name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("passive declare")
                .consumer_count()
        })
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let fifo = tmp.path().join("sink.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Opened for reading first (without blocking), so the consumer's open does not wait.
    let mut reader = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO");
    let n = 3_000;
    let bodies: Vec<Vec<u8>> = (0..n).map(benign).collect();
    rabbit.publish_transient(&queue.name, &bodies);
    let consumer = spawn_consumer(
        &queue.name,
        &fifo,
        tmp.path(),
        &["--no-declare", "--prefetch", "300"],
        &[],
        tmp.path().join("stderr.log"),
    );
    let addr = metrics_addr(&consumer);
    assert!(
        wait_until(Duration::from_secs(20), || consumers() == 1),
        "{v}: never consumed:\n{}",
        consumer.stderr()
    );
    // The pipe fills (64 KiB) and the consumer's write blocks with a batch unacked.
    let held_since = Instant::now();
    let timed_out = wait_until(Duration::from_secs(30), || consumers() == 0);
    let held = held_since.elapsed();
    assert_eq!(
        timed_out,
        has_timeout,
        "{v}: the broker {} the consumer holding messages for {held:?}:\n{}",
        if timed_out { "dropped" } else { "kept" },
        consumer.stderr()
    );
    // Read everything from now on, and watch the consumer come back.
    let unblocked = Instant::now();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut saw_503 = false;
    let mut back_after = None;
    let mut tokens = std::collections::HashSet::new();
    while unblocked.elapsed() < Duration::from_secs(30) && tokens.len() < n {
        match reader.read(&mut buf) {
            Ok(k) if k > 0 => text.extend_from_slice(&buf[..k]),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
        if has_timeout && back_after.is_none() {
            match get_status(addr, "/readyz") {
                Some(503) => saw_503 = true,
                Some(200) if saw_503 && consumers() == 1 => {
                    back_after = Some(unblocked.elapsed());
                }
                _ => {}
            }
        }
        if let Some(end) = text.iter().rposition(|&b| b == b'\n') {
            let complete = String::from_utf8_lossy(&text[..=end]).into_owned();
            tokens.extend(complete.lines().filter_map(token_of));
            text.drain(..=end);
        }
    }
    let stderr = consumer.stderr();
    assert_eq!(tokens.len(), n, "{v}: every record written:\n{stderr}");
    if has_timeout {
        assert!(saw_503, "{v}: /readyz never turned 503:\n{stderr}");
        let back = back_after.unwrap_or_else(|| panic!("{v}: never consuming again:\n{stderr}"));
        assert!(back < Duration::from_secs(5), "{v}: back after {back:?}");
        figure(
            "consumer-timeout",
            "consuming again after the timeout",
            format!("{} ms", back.as_millis()),
            "< 5 s",
            true,
        );
        eprintln!("{v}: consumer timed out after {held:?}; consuming again {back:?} after the sink unblocked");
    } else {
        figure(
            "consumer-timeout",
            "consumer kept",
            "yes",
            "no per-queue timeout",
            true,
        );
    }
}
