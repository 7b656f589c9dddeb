//! Telemetry that cannot hurt: the metrics of docs/metrics.md and the `/metrics`,
//! `/healthz` and `/readyz` endpoints.
//!
//! - [`names`]: every metric and label value, declared once.
//! - [`Metrics`]: handles registered once at start, so recording on the consume path is an
//!   atomic add, never a registry lookup, a lock or an allocation; and every series exists
//!   (at 0) before its first event.
//! - [`health`]: the state `/readyz` reads (connected, consuming, shutting down).
//! - [`server`]: the HTTP endpoint on its own thread and runtime, so it answers while the
//!   consumer's runtime is saturated, paused or reconnecting.
//!
//! Without [`install`] (unit tests, `check`) the handles are no-ops.

pub mod health;
pub mod names;
pub mod server;

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::finding::Rule;
use crate::pipeline::Outcome;
use names::{MessageOutcome, SandboxResult};

/// The handles of every series; see the module doc.
#[derive(Debug)]
pub struct Metrics {
    messages: [Counter; MessageOutcome::ALL.len()],
    findings: [Counter; Rule::ALL.len()],
    sandbox_runs: [Counter; SandboxResult::ALL.len()],
    message_alloc: Histogram,
    format_duration: Histogram,
    redeliveries: Counter,
    memory_allocated: Gauge,
    memory_resident: Gauge,
    memory_limit: Gauge,
    consumer_paused: Gauge,
    amqp_connected: Gauge,
    amqp_reconnects: Counter,
    previous_exit_unclean: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and registers every series.
/// Returns the handle the endpoint renders from; `Err` when another recorder was installed
/// first.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::MESSAGE_ALLOC_BYTES.into()),
            &names::ALLOC_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::FORMAT_DURATION_SECONDS.into()),
                &names::DURATION_BUCKETS,
            )
        })
        .map_err(|e| format!("metrics buckets: {e}"))?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
    describe();
    let _ = HANDLE.set(handle.clone());
    let m = metrics();
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    m.memory_limit.set(0.0);
    Ok(handle)
}

/// The registered handles (no-ops when nothing was installed before the first call).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::register)
}

fn describe() {
    use names::*;
    for name in [
        MESSAGES_TOTAL,
        FINDINGS_TOTAL,
        SANDBOX_RUNS_TOTAL,
        REDELIVERIES_TOTAL,
        AMQP_RECONNECTS_TOTAL,
    ] {
        metrics::describe_counter!(name, help(name));
    }
    metrics::describe_histogram!(MESSAGE_ALLOC_BYTES, Unit::Bytes, help(MESSAGE_ALLOC_BYTES));
    metrics::describe_histogram!(
        FORMAT_DURATION_SECONDS,
        Unit::Seconds,
        help(FORMAT_DURATION_SECONDS)
    );
    for name in [
        MEMORY_ALLOCATED_BYTES,
        MEMORY_RESIDENT_BYTES,
        MEMORY_LIMIT_BYTES,
        CONSUMER_PAUSED,
        AMQP_CONNECTED,
        PREVIOUS_EXIT_UNCLEAN,
        BUILD_INFO,
    ] {
        metrics::describe_gauge!(name, help(name));
    }
}

impl Metrics {
    fn register() -> Metrics {
        use names::*;
        Metrics {
            messages: MessageOutcome::ALL
                .map(|o| metrics::counter!(MESSAGES_TOTAL, "outcome" => o.label())),
            findings: Rule::ALL.map(|r| metrics::counter!(FINDINGS_TOTAL, "rule" => r.id())),
            sandbox_runs: SandboxResult::ALL
                .map(|r| metrics::counter!(SANDBOX_RUNS_TOTAL, "result" => r.label())),
            message_alloc: metrics::histogram!(MESSAGE_ALLOC_BYTES),
            format_duration: metrics::histogram!(FORMAT_DURATION_SECONDS),
            redeliveries: metrics::counter!(REDELIVERIES_TOTAL),
            memory_allocated: metrics::gauge!(MEMORY_ALLOCATED_BYTES),
            memory_resident: metrics::gauge!(MEMORY_RESIDENT_BYTES),
            memory_limit: metrics::gauge!(MEMORY_LIMIT_BYTES),
            consumer_paused: metrics::gauge!(CONSUMER_PAUSED),
            amqp_connected: metrics::gauge!(AMQP_CONNECTED),
            amqp_reconnects: metrics::counter!(AMQP_RECONNECTS_TOTAL),
            previous_exit_unclean: metrics::gauge!(PREVIOUS_EXIT_UNCLEAN),
        }
    }

    /// Messages settled with this outcome.
    pub fn messages(&self, outcome: MessageOutcome, n: u64) {
        if n > 0 {
            self.messages[outcome as usize].increment(n);
        }
    }

    pub fn finding(&self, rule: Rule) {
        if let Some(i) = Rule::ALL.iter().position(|r| *r == rule) {
            self.findings[i].increment(1);
        }
    }

    /// One rendered message: its findings, allocation and time.
    pub fn rendered(&self, outcome: &Outcome) {
        for f in &outcome.findings {
            self.finding(f.rule);
        }
        if let Some(bytes) = outcome.alloc_bytes {
            self.message_alloc.record(bytes as f64);
        }
        self.format_duration
            .record(outcome.elapsed_us as f64 / 1_000_000.0);
    }

    pub fn sandbox_run(&self, result: SandboxResult) {
        self.sandbox_runs[result as usize].increment(1);
    }

    pub fn redelivery(&self) {
        self.redeliveries.increment(1);
    }

    pub fn reconnect_attempt(&self) {
        self.amqp_reconnects.increment(1);
    }

    pub fn connected(&self, yes: bool) {
        self.amqp_connected.set(if yes { 1.0 } else { 0.0 });
    }

    pub fn paused(&self, yes: bool) {
        self.consumer_paused.set(if yes { 1.0 } else { 0.0 });
    }

    pub fn memory_limit(&self, limit: Option<u64>) {
        self.memory_limit.set(limit.unwrap_or(0) as f64);
    }

    pub fn previous_exit_unclean(&self, yes: bool) {
        self.previous_exit_unclean.set(if yes { 1.0 } else { 0.0 });
    }

    /// Reads the process's memory now: called at each scrape, so the figure is fresh
    /// without a timer (advancing jemalloc's epoch takes a global lock: per scrape, not per
    /// message).
    pub fn sample_memory(&self) {
        if let Some(allocated) = crate::alloc::process_allocated() {
            self.memory_allocated.set(allocated as f64);
        }
        if let Some(resident) = resident_set_bytes() {
            self.memory_resident.set(resident as f64);
        }
    }
}

/// The process's resident set (what the kernel's OOM killer and a pod's limit see), from
/// `/proc/self/statm`; jemalloc's own `stats.resident` as a fallback elsewhere.
fn resident_set_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    let pages = statm
        .as_deref()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u64>().ok());
    match pages {
        Some(p) => Some(p.saturating_mul(rustix::param::page_size() as u64)),
        None => crate::alloc::process_resident(),
    }
}
