//! Detector throughput and the price of the sandbox (criterion), each against a baseline
//! measured in the same run; the ratios are printed at the end.
//!
//! Run: `cargo bench --bench detect`.

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput};
use logfence::check::worker_args;
use logfence::config::Limits;
use logfence::line::DEFAULT_LINE_FORMAT;
use logfence::pipeline::Pipeline;
use logfence::sandbox::{Sandbox, SandboxConfig, DEFAULT_ADDRESS_SPACE};

/// Benign log text without findings: what most of a day's traffic looks like.
fn benign_text(bytes: usize) -> String {
    let line = "2026-11-22 10:00:00 INFO chat: user alice joined room general from web client \
                v4.2 after 3 attempts; latency 41 ms, queue depth 12, shard 7 of 16. ";
    line.repeat(bytes / line.len() + 1)[..bytes].to_string()
}

fn bench_detector(c: &mut Criterion) {
    let text = benign_text(64 << 10);
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("detector_benign_ascii", |b| {
        b.iter(|| logfence::detect::detect(black_box(&text), true, std::iter::empty(), false))
    });
    // The floor: one pass looking for the bytes any template or control needs.
    g.bench_function("memchr3_scan", |b| {
        b.iter(|| memchr::memchr3_iter(b'%', b'{', b'$', black_box(text.as_bytes())).count())
    });
    g.finish();
}

fn bench_sandbox(c: &mut Criterion) {
    let record: &[u8] = br#"{"msg": "user %s logged in from %s after %d attempts", "args": ["alice", "10.0.0.1", 3]}"#;
    let limits = Limits::default();
    let Ok(pipeline) = Pipeline::new(limits.clone(), DEFAULT_LINE_FORMAT) else {
        return;
    };
    let mut sandbox = Sandbox::new(SandboxConfig {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_logfence")),
        worker_args: worker_args(&limits, DEFAULT_LINE_FORMAT),
        address_space: DEFAULT_ADDRESS_SPACE,
        timeout: limits.format_timeout,
    });
    let mut g = c.benchmark_group("check");
    g.bench_function("sandboxed", |b| {
        b.iter(|| sandbox.run(black_box(record)).is_ok())
    });
    g.bench_function("in_process", |b| {
        b.iter(|| pipeline.process(black_box(record)))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_detector(&mut c);
    bench_sandbox(&mut c);
    c.final_summary();
    println!("\n== ratios (measured in this run) ==");
    if let (Some(d), Some(m)) = (
        common::mean_ns("detect", "detector_benign_ascii"),
        common::mean_ns("detect", "memchr3_scan"),
    ) {
        let bytes = (64 << 10) as f64;
        println!(
            "detector on benign ASCII: {:.2} GB/s; memchr3 floor {:.2} GB/s; ratio {:.2}x (target >= 1 GB/s)",
            bytes / d,
            bytes / m,
            d / m
        );
    }
    if let (Some(s), Some(p)) = (
        common::mean_ns("check", "sandboxed"),
        common::mean_ns("check", "in_process"),
    ) {
        println!(
            "check per record: sandboxed {:.1} µs vs in-process {:.1} µs; ratio {:.1}x",
            s / 1000.0,
            p / 1000.0,
            s / p
        );
    }
}
