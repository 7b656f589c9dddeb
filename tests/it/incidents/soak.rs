//! Scenario 6, the soak: a million records, one in ten pathological, through a real consumer
//! at full speed. Its resident memory must stay flat (the allocator returns what the refused
//! and the rendered records took), and every record must be accounted for.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::super::broker::{Rabbit, TestQueue, TS};
use super::super::consume::{benign, spawn_consumer};
use super::super::metrics::{metrics_addr, samples, scrape};
use super::Goals;

const RECORDS: usize = 1_000_000;

fn pathological(i: usize) -> Vec<u8> {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let record = match i % 6 {
        0 => serde_json::json!({"msg": "Over %2400000000d", "args": [i], "ts": TS}).to_string(),
        1 => serde_json::json!({"msg": "https://www.amazon.com/gp/goldbox?deals=%10%off&ref=x",
                                "args": ["op"], "ts": TS})
        .to_string(),
        2 => serde_json::json!({"msg": "{:>999999999}", "args": [i], "style": "{", "ts": TS})
            .to_string(),
        3 => {
            serde_json::json!({"msg": "%(a)s".repeat(5000), "args": {"a": 1}, "ts": TS}).to_string()
        }
        4 => serde_json::json!({"msg": "{0.__class__}", "args": ["x"], "style": "{", "ts": TS})
            .to_string(),
        _ => format!(r#"{{"msg": "deep %s", "args": [{deep}], "ts": "{TS}"}}"#),
    };
    record.into_bytes()
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_soak_a_million_records_flat_memory_no_loss() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "soak");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    let mut bodies = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        bodies.push(if i % 10 == 9 {
            pathological(i / 10)
        } else {
            benign(i)
        });
    }
    let published = Instant::now();
    rabbit.publish_transient(&queue.name, &bodies);
    let publish_s = published.elapsed().as_secs_f64();
    drop(bodies);

    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &["--queue-type", "classic", "--prefetch", "1000"],
        &[("RUST_LOG", "warn,logfence::consume=info")],
        tmp.path().join("stderr.log"),
    );
    let pid = consumer.child.id();
    let addr = metrics_addr(&consumer);
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut next_mark = 0;
    let marks = [RECORDS / 10, RECORDS / 2, RECORDS];
    let mut settled = 0.0;
    while next_mark < marks.len() {
        let s = samples(&scrape(addr));
        settled = ["formatted", "fallback", "dead_lettered"]
            .iter()
            .filter_map(|o| s.get(&format!("logfence_messages_total{{outcome=\"{o}\"}}")))
            .sum::<f64>();
        while next_mark < marks.len() && settled >= marks[next_mark] as f64 {
            rss.push(resident_kib(pid));
            next_mark += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {settled} settled after 10 minutes:\n{}",
            consumer.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let consume_s = started.elapsed().as_secs_f64();
    let final_metrics = samples(&scrape(addr));
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(30));

    let text = std::fs::read_to_string(&sink).unwrap_or_default();
    let lines = text.lines().count();
    let tokens: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.find("tok-").map(|at| &l[at..at + 10]))
        .collect();
    let benign_count = RECORDS - RECORDS / 10;
    let dead = rabbit.ready(&format!("{}.dead", queue.name)) as f64;
    let fallback = final_metrics
        .get(r#"logfence_messages_total{outcome="fallback"}"#)
        .copied()
        .unwrap_or(0.0);

    let mut goals = Goals::new("6 soak");
    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let (lo, hi) = (
        rss.iter().copied().min().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    let flat = hi as f64 <= lo as f64 * 1.10;
    goals.report("RSS at 10%", kib(rss[0]));
    goals.report("RSS at 50%", kib(rss[1]));
    goals.report("RSS at 100%", kib(rss[2]));
    goals.goal(
        "RSS spread (max/min)",
        format!("{:.3}", hi as f64 / lo.max(1) as f64),
        "<= 1.10",
        flat,
    );
    goals.report(
        "publish rate",
        format!("{:.0}/s", RECORDS as f64 / publish_s),
    );
    goals.report(
        "consume throughput",
        format!("{:.0}/s", settled / consume_s),
    );
    goals.goal("lines written", lines, "1000000", lines == RECORDS);
    goals.goal(
        "distinct benign tokens",
        tokens.len(),
        "900000",
        tokens.len() == benign_count,
    );
    goals.goal(
        "DLQ copies = fallback lines",
        format!("{dead} = {fallback}"),
        "equal, 100000",
        dead == fallback && fallback == (RECORDS / 10) as f64,
    );
    goals.goal(
        "clean exit",
        format!("{status:?}"),
        "exit 0",
        status.is_some_and(|s| s.success()),
    );
    goals.check(format!("rss {rss:?}"));
}
