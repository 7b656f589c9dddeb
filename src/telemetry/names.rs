//! Every metric of docs/metrics.md: its name, help text and the fixed set of its label values,
//! declared here once. Nothing derived from a message becomes a label value: the sets below
//! are all there is, which is what keeps the series count constant however wild the input.

use crate::finding::Rule;

pub const MESSAGES_TOTAL: &str = "logfence_messages_total";
pub const FINDINGS_TOTAL: &str = "logfence_findings_total";
pub const MESSAGE_ALLOC_BYTES: &str = "logfence_message_alloc_bytes";
pub const FORMAT_DURATION_SECONDS: &str = "logfence_format_duration_seconds";
pub const SANDBOX_RUNS_TOTAL: &str = "logfence_sandbox_runs_total";
pub const REDELIVERIES_TOTAL: &str = "logfence_redeliveries_total";
pub const MEMORY_ALLOCATED_BYTES: &str = "logfence_memory_allocated_bytes";
pub const MEMORY_RESIDENT_BYTES: &str = "logfence_memory_resident_bytes";
pub const MEMORY_LIMIT_BYTES: &str = "logfence_memory_limit_bytes";
pub const CONSUMER_PAUSED: &str = "logfence_consumer_paused";
pub const AMQP_CONNECTED: &str = "logfence_amqp_connected";
pub const AMQP_RECONNECTS_TOTAL: &str = "logfence_amqp_reconnects_total";
pub const PREVIOUS_EXIT_UNCLEAN: &str = "logfence_previous_exit_unclean";
pub const BUILD_INFO: &str = "logfence_build_info";

/// Every metric name, for checks that each one is served (and for the deploy/ tests).
pub const ALL: [&str; 14] = [
    MESSAGES_TOTAL,
    FINDINGS_TOTAL,
    MESSAGE_ALLOC_BYTES,
    FORMAT_DURATION_SECONDS,
    SANDBOX_RUNS_TOTAL,
    REDELIVERIES_TOTAL,
    MEMORY_ALLOCATED_BYTES,
    MEMORY_RESIDENT_BYTES,
    MEMORY_LIMIT_BYTES,
    CONSUMER_PAUSED,
    AMQP_CONNECTED,
    AMQP_RECONNECTS_TOTAL,
    PREVIOUS_EXIT_UNCLEAN,
    BUILD_INFO,
];

/// What became of a message: the `outcome` label of `logfence_messages_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageOutcome {
    Formatted,
    Fallback,
    DeadLettered,
    Requeued,
}

impl MessageOutcome {
    pub const ALL: [MessageOutcome; 4] = [
        MessageOutcome::Formatted,
        MessageOutcome::Fallback,
        MessageOutcome::DeadLettered,
        MessageOutcome::Requeued,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MessageOutcome::Formatted => "formatted",
            MessageOutcome::Fallback => "fallback",
            MessageOutcome::DeadLettered => "dead_lettered",
            MessageOutcome::Requeued => "requeued",
        }
    }
}

/// How a sandboxed run ended: the `result` label of `logfence_sandbox_runs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxResult {
    Ok,
    Crashed,
    Timeout,
}

impl SandboxResult {
    pub const ALL: [SandboxResult; 3] = [
        SandboxResult::Ok,
        SandboxResult::Crashed,
        SandboxResult::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SandboxResult::Ok => "ok",
            SandboxResult::Crashed => "crashed",
            SandboxResult::Timeout => "timeout",
        }
    }
}

/// The `rule` label values: the rule ids of docs/rules.md, all of them, nothing else.
pub fn rule_labels() -> impl Iterator<Item = &'static str> {
    Rule::ALL.iter().map(|r| r.id())
}

/// Help texts, as `# HELP` prints them.
pub fn help(name: &str) -> &'static str {
    match name {
        MESSAGES_TOTAL => "Messages settled, once each, by what became of them.",
        FINDINGS_TOTAL => "Findings raised while rendering, by rule id.",
        MESSAGE_ALLOC_BYTES => "Bytes one message allocated while parsed and rendered.",
        FORMAT_DURATION_SECONDS => "Time one message took to parse and render.",
        SANDBOX_RUNS_TOTAL => "Suspect messages rendered in the sandbox, by how the run ended.",
        REDELIVERIES_TOTAL => "Deliveries of messages that had been delivered before.",
        MEMORY_ALLOCATED_BYTES => "Bytes allocated by this process (jemalloc stats.allocated).",
        MEMORY_RESIDENT_BYTES => "Resident set size of this process in bytes.",
        MEMORY_LIMIT_BYTES => {
            "The memory cap in bytes (--memory-limit or cgroup memory.max); 0 when there is none."
        }
        CONSUMER_PAUSED => {
            "1 while deliveries are paused because memory is above the high watermark."
        }
        AMQP_CONNECTED => "1 while connected to the broker.",
        AMQP_RECONNECTS_TOTAL => "Connection attempts after the first one.",
        PREVIOUS_EXIT_UNCLEAN => {
            "1 when the previous run in this --state-dir did not exit cleanly."
        }
        BUILD_INFO => "Always 1; the version label says which logfence this is.",
        _ => "",
    }
}

/// `logfence_message_alloc_bytes` buckets: powers of 4 from 256 B to 64 MiB (the default
/// per-message budget is 8 MiB, so a refusal near it still lands in a bucket of its own).
pub const ALLOC_BUCKETS: [f64; 10] = [
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// `logfence_format_duration_seconds` buckets: powers of 4 from 1 µs to about 1 s (a benign
/// record renders in about a microsecond; the sandbox's default timeout is 250 ms).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.000_001, 0.000_004, 0.000_016, 0.000_064, 0.000_256, 0.001_024, 0.004_096, 0.016_384,
    0.065_536, 0.262_144, 1.0,
];
