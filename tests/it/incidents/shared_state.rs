//! Scenario 4, the shared state: many threads render through one `Pipeline` at once. A
//! record's line must hold only its own data (no bleed through a shared buffer or cache), and
//! the allocation measured for a record must be its own (jemalloc's per-thread counters),
//! whatever the other threads allocate meanwhile.

use std::sync::Arc;

use logfence::config::Limits;
use logfence::pipeline::Pipeline;

use super::Goals;

const THREADS: usize = 8;
const PER_THREAD: usize = 100_000;

/// A record with a unique token and a payload whose size (and so whose allocation) is known
/// from its index alone.
fn record(thread: usize, i: usize) -> Vec<u8> {
    let token = format!("tok-{thread}-{i:06}");
    let payload = "x".repeat((i * 7919) % 4096);
    let (msg, args) = match i % 3 {
        0 => (
            "user %s uploaded %s (%d)",
            serde_json::json!([token, payload, i]),
        ),
        1 => (
            "{} uploaded {:>5} {}",
            serde_json::json!([token, i, payload]),
        ),
        _ => (
            "$who uploaded $what",
            serde_json::json!({"who": token, "what": payload}),
        ),
    };
    let style = ["%", "{", "$"][i % 3];
    serde_json::json!({"msg": msg, "args": args, "style": style, "ts": "2026-11-23T10:00:00Z"})
        .to_string()
        .into_bytes()
}

/// The tokens a line holds.
fn tokens(line: &str) -> Vec<&str> {
    line.match_indices("tok-")
        .map(|(at, _)| {
            let rest = &line[at..];
            let end = rest[4..]
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .map_or(rest.len(), |e| e + 4);
            &rest[..end]
        })
        .collect()
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_shared_state_no_bleed_and_exact_allocation_attribution() {
    let pipeline = Arc::new(
        Pipeline::new(Limits::default(), logfence::line::DEFAULT_LINE_FORMAT).expect("pipeline"),
    );
    // The known allocation of each record kind: measured alone, on a thread of its own,
    // after a warm-up so the template cache holds its templates (as it does on a busy
    // consumer thread).
    let alone: Vec<u64> = {
        let p = Arc::clone(&pipeline);
        std::thread::spawn(move || {
            for i in 0..3 {
                p.process(&record(0, i));
            }
            (0..PER_THREAD)
                .map(|i| p.process(&record(0, i)).alloc_bytes.expect("measured"))
                .collect()
        })
        .join()
        .expect("baseline thread")
    };
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = Arc::clone(&pipeline);
            std::thread::spawn(move || {
                for i in 0..3 {
                    p.process(&record(t, i));
                }
                let mut bleed = 0u64;
                let mut measured = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let outcome = p.process(&record(t, i));
                    let line = outcome.line.unwrap_or_default();
                    let own = format!("tok-{t}-{i:06}");
                    if tokens(&line) != [own.as_str()] {
                        bleed += 1;
                    }
                    measured.push(outcome.alloc_bytes.unwrap_or(0));
                }
                (bleed, measured)
            })
        })
        .collect();
    let mut bleed = 0;
    let mut errors: Vec<f64> = Vec::with_capacity(THREADS * PER_THREAD);
    for w in workers {
        let (b, measured) = w.join().expect("worker");
        bleed += b;
        for (i, m) in measured.into_iter().enumerate() {
            // Tokens differ in length by thread only in their digits, which are fixed
            // width: the same index allocates the same on every thread.
            let known = alone[i].max(1) as f64;
            errors.push((m as f64 - known).abs() / known);
        }
    }
    let elapsed = started.elapsed();
    errors.sort_by(f64::total_cmp);
    let p99 = errors[errors.len() * 99 / 100];
    let max = errors.last().copied().unwrap_or(0.0);
    let records = THREADS * PER_THREAD;
    let mut goals = Goals::new("4 shared state");
    goals.goal("records rendered", records, "800000", records == 800_000);
    goals.report(
        "records/s (8 threads, 2 cores)",
        format!("{:.0}", records as f64 / elapsed.as_secs_f64()),
    );
    goals.goal("cross-record bleed", bleed, "0", bleed == 0);
    goals.goal(
        "alloc attribution error p99",
        format!("{:.2}%", p99 * 100.0),
        "<= 5%",
        p99 <= 0.05,
    );
    goals.report(
        "alloc attribution error max",
        format!("{:.2}%", max * 100.0),
    );
    goals.check(format!("bleed {bleed}, p99 error {p99}"));
}
