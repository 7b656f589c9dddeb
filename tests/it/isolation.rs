//! Isolation: with many records in flight on a multi-threaded runtime, no
//! output line carries another record's content, and a record's measured allocation is its
//! own — the same as when it is processed alone.
//!
//! (a) goes through the real consumer and broker (`LOGFENCE_TEST_AMQP_URL` overrides the
//! local RabbitMQ); (b) runs the pipeline in-process on a tokio multi-thread runtime, which
//! is where a per-thread allocation counter read across an `.await` would charge one record
//! with another's memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logfence::config::Limits;
use logfence::line::DEFAULT_LINE_FORMAT;
use logfence::pipeline::{OutputFormat, Pipeline, Verdict};

use super::consume_memory::{
    sink_lines, tokens_in, wait_until, ConsumerProcess, Rabbit, TestQueue, TS,
};

/// A record carrying its token in the template, in an argument, in its logger and in a
/// field, in one of the three styles, with a payload of `i`-dependent size.
fn tokened(i: usize) -> Vec<u8> {
    let token = format!("tok-{i:06}");
    let payload = "p".repeat((i * 37) % 2000);
    let (msg, args, style) = match i % 3 {
        0 => (
            format!("req {token}: %s moved %d bytes %s"),
            serde_json::json!([token, i, payload]),
            "%",
        ),
        1 => (
            format!("req {token}: {{0}} moved {{1:>8}} bytes {{2}}"),
            serde_json::json!([token, i, payload]),
            "{",
        ),
        _ => (
            format!("req {token}: $who moved $n bytes $p"),
            serde_json::json!({"who": token, "n": i, "p": payload}),
            "$",
        ),
    };
    serde_json::json!({
        "msg": msg, "args": args, "style": style, "level": "info",
        "logger": format!("svc.{token}"), "fields": {"token": token, "i": i}, "ts": TS,
    })
    .to_string()
    .into_bytes()
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_json_lines_of_5000_records_in_flight_each_carry_only_their_own_token() {
    let rabbit = Rabbit::connect();
    let n = 5_000;
    let queue = TestQueue::classic(&rabbit, "isolation");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.jsonl");
    let bodies: Vec<Vec<u8>> = (0..n).map(tokened).collect();
    let pipeline = Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT)
        .expect("pipeline")
        .with_output(OutputFormat::Json);
    // Each record's line, rendered alone here: its ts is in the record, so the line does not
    // depend on when it is processed.
    let expected: HashMap<String, String> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let out = pipeline.process_at(b, chrono::DateTime::UNIX_EPOCH);
            assert_eq!(out.verdict, Verdict::Ok, "record {i}: {:?}", out.findings);
            (format!("tok-{i:06}"), out.line.expect("a line"))
        })
        .collect();
    rabbit.publish_transient(&queue.name, &bodies);
    let mut consumer = ConsumerProcess::spawn(
        &queue.name,
        &sink,
        tmp.path(),
        &["--prefetch", "500", "--output", "json"],
    );
    let started = Instant::now();
    let done = wait_until(Duration::from_secs(60), || {
        sink_lines(&sink).len() >= n && rabbit.ready(&queue.name) == 0
    });
    let elapsed = started.elapsed();
    let status = consumer.stop();
    let stderr = consumer.stderr();
    assert!(
        done,
        "{} of {n} lines; stderr:\n{stderr}",
        sink_lines(&sink).len()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("prefetch=500"),
        "prefetch 500 asked for; stderr:\n{stderr}"
    );
    let lines = sink_lines(&sink);
    assert_eq!(lines.len(), n, "one line per record");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in &lines {
        let tokens = tokens_in(line);
        let own = tokens[0];
        // Template, argument, logger and field: four times its own, never another's.
        assert_eq!(tokens.len(), 4, "{line}");
        assert!(tokens.iter().all(|t| *t == own), "mixed tokens: {line}");
        assert_eq!(
            Some(line),
            expected.get(own),
            "the line differs from the record's own"
        );
        *seen.entry(own).or_default() += 1;
    }
    assert_eq!(seen.len(), n, "every record written");
    assert!(seen.values().all(|&c| c == 1), "none written twice");
    assert_eq!(rabbit.ready(&queue.name), 0, "the queue ends empty");
    eprintln!("isolation: {n} records, prefetch 500, json lines, in {elapsed:?} (debug)");
}

/// A record of template `t` (six templates, two per style) whose one string argument holds
/// `token` and `size` bytes of text.
fn sized(t: usize, token: &str, size: usize) -> Vec<u8> {
    let payload = "x".repeat(size);
    let (msg, args, style) = match t {
        0 => ("a %s: %s", serde_json::json!([token, payload]), "%"),
        1 => (
            "b %(who)s: %(p)s",
            serde_json::json!({"who": token, "p": payload}),
            "%",
        ),
        2 => ("c {0}: {1}", serde_json::json!([token, payload]), "{"),
        3 => (
            "d {who!r:>20}: {p}",
            serde_json::json!({"who": token, "p": payload}),
            "{",
        ),
        4 => (
            "e $who: $p",
            serde_json::json!({"who": token, "p": payload}),
            "$",
        ),
        _ => (
            "f ${who}: ${p}!",
            serde_json::json!({"who": token, "p": payload}),
            "$",
        ),
    };
    serde_json::json!({"msg": msg, "args": args, "style": style, "logger": "iso", "ts": TS})
        .to_string()
        .into_bytes()
}

const TEMPLATES: usize = 6;
const SIZES: [usize; 7] = [0, 10, 100, 1_000, 5_000, 20_000, 60_000];
const REPEATS: usize = 12;

/// The records of the test: every template at every size, `REPEATS` times, each with its
/// own token; and for each, the warm-up record of the same template.
fn sized_records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..REPEATS {
        for &size in &SIZES {
            for t in 0..TEMPLATES {
                let i = out.len();
                out.push((
                    sized(t, "tok-warmup", 3),
                    sized(t, &format!("tok-{i:06}"), size),
                ));
            }
        }
    }
    out
}

/// Within 5 % of the reference.
fn close(measured: u64, alone: u64) -> bool {
    // Wide arithmetic: a counter read across threads can be off by nearly 2^64.
    u128::from(measured.abs_diff(alone)) * 100 <= u128::from(alone) * 5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_allocation_with_many_records_in_flight_matches_each_alone() {
    let pipeline =
        Arc::new(Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT).expect("pipeline"));
    let records = Arc::new(sized_records());
    let n = records.len();

    // Alone: each record on a fresh thread, after one record of its template warmed the
    // thread's template cache and JSON scratch.
    let alone: Vec<u64> = std::thread::scope(|s| {
        records
            .iter()
            .map(|(warm, body)| {
                let p = &pipeline;
                s.spawn(move || {
                    let _ = p.process(warm);
                    p.process(body).alloc_bytes.expect("measured")
                })
                .join()
                .expect("reference thread")
            })
            .collect()
    });

    // In flight: one task per record, all spawned at once on 4 workers, each yielding
    // around its synchronous processing so tasks interleave and move between threads.
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let pipeline = Arc::clone(&pipeline);
        let records = Arc::clone(&records);
        handles.push(tokio::spawn(async move {
            tokio::task::yield_now().await;
            let (warm, body) = &records[i];
            // No await between the warm-up and the measurement: same thread, warm.
            let _ = pipeline.process(warm);
            let out = pipeline.process(body);
            tokio::task::yield_now().await;
            (i, out)
        }));
    }
    let mut worst = 0.0f64;
    let mut exact = 0;
    for handle in handles {
        let (i, out) = handle.await.expect("task");
        assert_eq!(out.verdict, Verdict::Ok, "record {i}: {:?}", out.findings);
        let line = out.line.expect("a line");
        let own = format!("tok-{i:06}");
        assert_eq!(tokens_in(&line), vec![own.as_str()], "{line:.200}");
        let measured = out.alloc_bytes.expect("measured");
        let reference = alone[i];
        let (t, size) = (i % TEMPLATES, SIZES[(i / TEMPLATES) % SIZES.len()]);
        assert!(
            close(measured, reference),
            "record {i} (template {t}, {size} B): {measured} B in flight, {reference} B alone"
        );
        if measured == reference {
            exact += 1;
        }
        let off = measured.abs_diff(reference) as f64 / reference.max(1) as f64;
        worst = worst.max(off);
    }
    eprintln!(
        "isolation: {n} records on 4 workers; {exact} measured exactly as alone, worst off by \
         {:.2} %; alone from {} to {} B",
        worst * 100.0,
        alone.iter().min().unwrap_or(&0),
        alone.iter().max().unwrap_or(&0),
    );
}

/// The control that shows the test above can fail: the same tasks, with the per-thread
/// counter read across the awaits instead of around the synchronous call, are charged with
/// what other tasks allocated on their thread meanwhile, or, when the task moved, with the
/// difference of two threads' unrelated counters (in trials: all 504 off by more than 5 %).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocation_read_across_awaits_is_charged_with_other_records() {
    let pipeline =
        Arc::new(Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT).expect("pipeline"));
    let records = Arc::new(sized_records());
    let n = records.len();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let pipeline = Arc::clone(&pipeline);
        let records = Arc::clone(&records);
        handles.push(tokio::spawn(async move {
            let (warm, body) = &records[i];
            let _ = pipeline.process(warm);
            let before = logfence::alloc::thread_allocated();
            tokio::task::yield_now().await;
            let out = pipeline.process(body);
            tokio::task::yield_now().await;
            let after = logfence::alloc::thread_allocated();
            (
                out.alloc_bytes.expect("measured"),
                after.wrapping_sub(before),
            )
        }));
    }
    let mut off = 0;
    for handle in handles {
        let (own, across) = handle.await.expect("task");
        if !close(across, own) {
            off += 1;
        }
    }
    eprintln!("control: {off} of {n} records mismeasured when read across awaits");
    assert!(
        off > 0,
        "reading across awaits should have mixed records up"
    );
}
