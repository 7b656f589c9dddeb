//! The drain timeout running out in the middle of a batch's settlement: each delivery is
//! counted once in `logfence_messages_total`, by what became of it, and the counts agree with
//! the sink and with what the broker holds after the consumer stopped.

use std::collections::HashSet;
use std::time::Duration;

use super::broker::{sink_lines, wait_until, Rabbit, TestQueue};
use super::consume::{benign, spawn_consumer};
use super::metrics::{metrics_addr, samples, scrape};

const RECORDS: usize = 200;

/// Regression: when the drain deadline fired while a batch was being acked, the deliveries
/// already acked were counted as requeued (their ackers refused the forced release), and the
/// lower tags of a multiple ack were nacked after it (a channel error).
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    all(feature = "failpoints", logfence_skip_broker),
    ignore = "LOGFENCE_SKIP_BROKER_TESTS is set"
)]
fn drain_timeout_during_a_settlement_counts_each_delivery_once() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "drain-settle");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    rabbit.publish(&queue.name, &(0..RECORDS).map(benign).collect::<Vec<_>>());

    // The first batch's settlement is held for 10 s once the broker was told: the signal is sent
    // as soon as its lines are on the sink, so the 500 ms drain timeout runs out inside the
    // hold. The process then waits 3 s before it exits, so its final counts can be read.
    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &[
            "--queue-type",
            "classic",
            "--prefetch",
            "40",
            "--drain-timeout",
            "500ms",
        ],
        &[(
            "FAILPOINTS",
            "settle-hold=1*return(10000);exit-hold=sleep(3000)",
        )],
        tmp.path().join("stderr.log"),
    );
    let addr = metrics_addr(&consumer);
    let written = wait_until(Duration::from_secs(30), || !sink_lines(&sink).is_empty());
    assert!(written, "no line written:\n{}", consumer.stderr());
    consumer.terminate();
    let stopped = wait_until(Duration::from_secs(20), || {
        consumer.stderr().contains("stopped cleanly")
    });
    assert!(stopped, "did not stop:\n{}", consumer.stderr());
    let m = samples(&scrape(addr));
    let status = consumer.wait_for(Duration::from_secs(20));
    let stderr = consumer.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "unclean exit {status:?}:\n{stderr}"
    );
    // The deadline landed inside the held settlement: that batch was already told.
    let cut_short = stderr
        .lines()
        .filter(|l| l.contains("drain timeout"))
        .filter_map(|l| l.split("already_settled=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .any(|n| n > 0);
    assert!(
        cut_short,
        "the drain timeout did not run out during a settlement:\n{stderr}"
    );
    assert!(
        !stderr.contains("PRECONDITION_FAILED") && !stderr.contains("unknown delivery tag"),
        "a delivery was settled twice:\n{stderr}"
    );

    let count = |outcome: &str| {
        m.get(&format!("logfence_messages_total{{outcome=\"{outcome}\"}}"))
            .copied()
            .unwrap_or_else(|| panic!("no {outcome} series"))
            .round() as u64
    };
    let (formatted, requeued) = (count("formatted"), count("requeued"));
    let lines = sink_lines(&sink);
    let tokens: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.find("tok-").map(|at| &l[at..at + 10]))
        .collect();
    let depth = rabbit.depth_at_rest(&queue.name, Duration::from_secs(15));
    let report = format!(
        "formatted {formatted}, requeued {requeued}, lines {}, distinct {}, broker {depth:?}\n{stderr}",
        lines.len(),
        tokens.len()
    );
    assert_eq!(
        (count("fallback"), count("dead_lettered")),
        (0, 0),
        "{report}"
    );
    assert_eq!(tokens.len(), lines.len(), "a line written twice: {report}");
    assert_eq!(
        formatted,
        lines.len() as u64,
        "every line written is counted formatted, once: {report}"
    );
    assert_eq!(
        (depth.unacked, depth.consumers),
        (0, 0),
        "the consumer is gone: {report}"
    );
    assert_eq!(
        depth.ready,
        (RECORDS - lines.len()) as u64,
        "every record is either on the sink or back in the queue: {report}"
    );
    assert!(
        requeued <= depth.ready,
        "counted as handed back but not in the queue: {report}"
    );
}
