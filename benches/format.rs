//! Formatter and pipeline benchmarks (criterion). Each group measures logfence against a
//! baseline in the same run, and the ratios are printed at the end, because this machine
//! is shared and noisy: absolute times drift, ratios measured side by side do not.
//!
//! Run: `cargo bench --bench format` (add `-- --quick` for a fast pass).

mod common;

use std::hint::black_box;

use criterion::Criterion;
use logfence::config::Limits;
use logfence::format::{self, Args, Style};
use logfence::line::DEFAULT_LINE_FORMAT;
use logfence::pipeline::Pipeline;
use logfence::value::{Int, Value};

const TYPICAL: &str = "user %s logged in from %s after %d attempts";
const TYPICAL_RECORD: &[u8] = br#"{"msg": "user %s logged in from %s after %d attempts", "args": ["alice", "10.0.0.1", 3], "level": "info", "logger": "auth", "ts": "2026-11-22T10:00:00Z"}"#;
const INCIDENT: &[u8] = br#"{"msg": "Over %2400000000d", "args": [1]}"#;
/// A benign record of the same size as `INCIDENT`.
const BENIGN_SAME_SIZE: &[u8] = br#"{"msg": "Over %10d here", "args": [1]}"#;

fn bench_render(c: &mut Criterion) {
    let limits = Limits::default();
    let args = [
        Value::Str("alice".into()),
        Value::Str("10.0.0.1".into()),
        Value::Int(Int::Small(3)),
    ];
    let mut g = c.benchmark_group("render");
    g.bench_function("logfence_cached", |b| {
        b.iter(|| {
            format::render_cached(
                black_box(TYPICAL),
                Args::Tuple(&args),
                Style::Percent,
                &limits,
            )
        })
    });
    g.bench_function("rust_format", |b| {
        let (user, host, n) = ("alice", "10.0.0.1", 3);
        b.iter(|| {
            format!(
                "user {} logged in from {} after {} attempts",
                black_box(user),
                black_box(host),
                black_box(n)
            )
        })
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let Ok(measured) = Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT) else {
        return;
    };
    let Ok(unmeasured) = Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT) else {
        return;
    };
    let unmeasured = unmeasured.with_alloc_accounting(false);
    let mut g = c.benchmark_group("pipeline");
    g.bench_function("with_accounting", |b| {
        b.iter(|| measured.process(black_box(TYPICAL_RECORD)))
    });
    g.bench_function("without_accounting", |b| {
        b.iter(|| unmeasured.process(black_box(TYPICAL_RECORD)))
    });
    g.finish();

    let mut g = c.benchmark_group("refusal");
    g.bench_function("incident_refused", |b| {
        b.iter(|| measured.process(black_box(INCIDENT)))
    });
    g.bench_function("benign_same_size", |b| {
        b.iter(|| measured.process(black_box(BENIGN_SAME_SIZE)))
    });
    g.finish();
}

fn print_ratios() {
    println!("\n== ratios (measured in this run) ==");
    let pairs = [
        (
            "render",
            "logfence_cached",
            "rust_format",
            "cached render vs format!",
            "<= 2.00x",
        ),
        (
            "pipeline",
            "with_accounting",
            "without_accounting",
            "alloc accounting overhead",
            "<= 1.03x",
        ),
        (
            "refusal",
            "incident_refused",
            "benign_same_size",
            "refusal vs benign render",
            "-",
        ),
    ];
    for (group, a, b, what, target) in pairs {
        match (common::mean_ns(group, a), common::mean_ns(group, b)) {
            (Some(x), Some(y)) if y > 0.0 => println!(
                "{what:<28} {x:>10.1} ns vs {y:>10.1} ns  ratio {:.2}x  (target {target})",
                x / y
            ),
            _ => println!("{what:<28} (not measured in this run)"),
        }
    }
    if let Some(x) = common::mean_ns("refusal", "incident_refused") {
        println!(
            "{:<28} {:>10.2} µs  (target <= 2 µs)",
            "incident refusal",
            x / 1000.0
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_render(&mut c);
    bench_pipeline(&mut c);
    c.final_summary();
    print_ratios();
}
