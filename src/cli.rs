//! Command-line types (clap) and their conversion into settings; the commands validate them.
//! Every limit flag also reads its `LOGFENCE_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Limits};

/// logfence: a memory-capped log-formatting sidecar for RabbitMQ consumers.
#[derive(Debug, Parser)]
#[command(name = "logfence", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell what logfence would do with a message, and why, rendering it in a sandbox.
    Check(CheckArgs),
    /// Consume log records from a RabbitMQ queue and write one safe line per record.
    Consume(Box<ConsumeArgs>),
    /// Inspect the dead-letter queue, or move its messages back, losing and reordering none.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Internal: the sandbox worker `check` and `consume` re-execute; reads records on stdin.
    #[command(hide = true, name = "__sandbox-worker")]
    SandboxWorker(SandboxWorkerArgs),
}

/// The limits of docs/rules.md, shared by `check` and `consume`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Bodies larger than this are `body-too-large` and never parsed (bytes; K/M/G, KiB/MiB/GiB suffixes).
    #[arg(long, env = "LOGFENCE_MAX_BODY_BYTES", default_value = "1MiB", value_parser = parse_bytes_usize)]
    pub max_body_bytes: usize,
    /// JSON nested deeper than this is `json-too-deep` (the top-level object is depth 1).
    #[arg(long, env = "LOGFENCE_MAX_JSON_DEPTH", default_value_t = config::DEFAULT_MAX_JSON_DEPTH)]
    pub max_json_depth: usize,
    /// A width above this (literal, `*` or nested) is `width-too-large`.
    #[arg(long, env = "LOGFENCE_MAX_WIDTH", default_value_t = config::DEFAULT_MAX_WIDTH)]
    pub max_width: u64,
    /// A precision above this is `precision-too-large`.
    #[arg(long, env = "LOGFENCE_MAX_PRECISION", default_value_t = config::DEFAULT_MAX_PRECISION)]
    pub max_precision: u64,
    /// More specifiers / replacement fields than this in one template is `too-many-fields`.
    #[arg(long, env = "LOGFENCE_MAX_FIELDS", default_value_t = config::DEFAULT_MAX_FIELDS)]
    pub max_fields: usize,
    /// A rendered message longer than this is `output-too-large` (bytes).
    #[arg(long, env = "LOGFENCE_MAX_OUTPUT_BYTES", default_value = "64KiB", value_parser = parse_bytes_usize)]
    pub max_output_bytes: usize,
    /// Bytes one record may allocate while parsed and rendered (`alloc-budget`).
    #[arg(long, env = "LOGFENCE_ALLOC_BUDGET", default_value = "8MiB", value_parser = parse_bytes_u64)]
    pub alloc_budget: u64,
    /// Wall-clock bound of one sandboxed run (`timeout`): e.g. 250ms, 2s.
    #[arg(long, env = "LOGFENCE_FORMAT_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub format_timeout: Duration,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_json_depth: self.max_json_depth,
            max_width: self.max_width,
            max_precision: self.max_precision,
            max_fields: self.max_fields,
            max_output_bytes: self.max_output_bytes,
            alloc_budget: self.alloc_budget,
            format_timeout: self.format_timeout,
        }
    }
}

/// What the line around each message looks like.
#[derive(Debug, Clone, Args)]
pub struct LineArgs {
    /// The line template: `{`-style over ts, level, logger, message and the record's fields.
    #[arg(long, env = "LOGFENCE_LINE_FORMAT", default_value = crate::line::DEFAULT_LINE_FORMAT)]
    pub line_format: String,
}

/// How to reach the broker, shared by `consume` and `dlq`.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker, as an AMQP URI (the vhost URL-encoded: `%2f` is `/`); `amqps://` for TLS.
    /// A cluster: one URI per node, the flag given again or the URIs separated by commas.
    #[arg(long, env = "AMQP_URL", default_value = crate::consume::DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: Vec<String>,
    /// Read the AMQP URI(s) from this file instead (a mounted secret; several separated by
    /// commas or line breaks), so passwords are in neither the environment nor the process
    /// list. Wins over --amqp-url.
    #[arg(long, env = "LOGFENCE_AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for `amqps://` (a private CA), besides the
    /// built-in public roots (Mozilla's). Read and checked at start-up; only with `amqps://`.
    #[arg(long, env = "LOGFENCE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub line: LineArgs,
    /// One JSON report per record, one per line.
    #[arg(long)]
    pub json: bool,
    /// Render in this process instead of a sandboxed child (faster; a crash is fatal).
    /// With --ndjson: suspicious records too are checked in process.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Audit a capture: every line of every FILE is one record body (`source` FILE:LINE);
    /// checked in process on every core, suspicious records in the sandbox, streaming.
    #[arg(long)]
    pub ndjson: bool,
    /// With --ndjson: end with a summary (records, verdicts, findings per rule, loggers,
    /// costliest records, rate); the default without --json, one JSON object with it.
    #[arg(long, requires = "ndjson")]
    pub summary: bool,
    /// Record files (one record body each), directories (every regular file, by name), or `-`.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `logfence consume` (docs/commands.md). Every flag also reads an environment variable, so a
/// Kubernetes manifest can configure the sidecar without a command line.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub line: LineArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The queue to consume; its dead-letter queue is `<queue>.dead`.
    #[arg(long, env = "LOGFENCE_QUEUE", default_value = crate::consume::DEFAULT_QUEUE)]
    pub queue: String,
    /// The type of the queues logfence declares. Only quorum queues count deliveries
    /// (`x-delivery-count`); on a classic queue `redelivered` is the only signal.
    #[arg(long, env = "LOGFENCE_QUEUE_TYPE", value_enum, default_value_t = crate::amqp::QueueType::Quorum)]
    pub queue_type: crate::amqp::QueueType,
    /// Where the lines go: `stdout`, `file:PATH` (appended) or `amqp:EXCHANGE[/ROUTING_KEY]`.
    #[arg(long, env = "LOGFENCE_SINK", default_value = "stdout")]
    pub sink: crate::sink::SinkSpec,
    /// fsync a file sink after every batch, before its messages are acked (regular files only).
    #[arg(long, env = "LOGFENCE_SINK_FSYNC")]
    pub sink_fsync: bool,
    /// The shape of each line: the escaped `--line-format` text, or one JSON object.
    #[arg(long, env = "LOGFENCE_OUTPUT", value_enum, default_value_t = crate::consume::Output::Text)]
    pub output: crate::consume::Output,
    /// Unacked deliveries the broker may send ahead (default: 1000, lowered to fit the memory cap).
    #[arg(long, env = "LOGFENCE_PREFETCH", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: Option<u16>,
    /// The delivery whose number reaches this is dead-lettered (`delivery-limit`) unrendered.
    #[arg(long, env = "LOGFENCE_MAX_DELIVERIES", default_value_t = crate::consume::DEFAULT_MAX_DELIVERIES,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_deliveries: u32,
    /// What a rejected record becomes: its marked fallback line, a dead-lettered copy, or both.
    #[arg(long, env = "LOGFENCE_ON_REJECT", value_enum, default_value_t = crate::amqp::OnReject::Both)]
    pub on_reject: crate::amqp::OnReject,
    /// The memory cap (bytes; K/M/G, KiB/MiB/GiB suffixes); default: cgroup v2 `memory.max`.
    #[arg(long, env = "LOGFENCE_MEMORY_LIMIT", value_parser = parse_bytes_u64)]
    pub memory_limit: Option<u64>,
    /// Where /metrics, /healthz and /readyz are served (their own thread; port 0 picks one).
    #[arg(long, env = "LOGFENCE_METRICS_ADDR", default_value = "0.0.0.0:9898")]
    pub metrics_addr: std::net::SocketAddr,
    /// Where the last-words file lives (in-flight fingerprints that survive a kill); without
    /// it, a crash is not reported at the next start.
    #[arg(long, env = "LOGFENCE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not declare the queues and the exchange; they must exist.
    #[arg(long, env = "LOGFENCE_NO_DECLARE")]
    pub no_declare: bool,
    /// After SIGTERM, how long in-flight messages may take before they are handed back.
    #[arg(long, env = "LOGFENCE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The format of logfence's own log lines on stderr.
    #[arg(long, env = "LOGFENCE_LOG_FORMAT", value_enum, default_value_t = crate::consume::LogFormat::Text)]
    pub log_format: crate::consume::LogFormat,
}

/// `logfence dlq` (docs/commands.md).
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List every dead-lettered message (rule, detail, deliveries, fingerprint, size, time)
    /// and leave the queue exactly as found, order included.
    List(DlqListArgs),
    /// Move dead-lettered messages back to the work queue, each confirmed there before it
    /// leaves the dead-letter queue.
    Replay(Box<DlqReplayArgs>),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The dead-letter queue to list.
    #[arg(long, default_value = crate::dlq::DEFAULT_DLQ)]
    pub queue: String,
    /// One JSON object per message, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The dead-letter queue to replay from.
    #[arg(long, default_value = crate::dlq::DEFAULT_DLQ)]
    pub queue: String,
    /// The queue to move messages to (default: --queue without its `.dead` suffix).
    #[arg(long)]
    pub to: Option<String>,
    /// Run each message through the sandboxed `check` first (with the limit flags given
    /// here); only those whose verdict is now `ok` move, the rest stay, in their order.
    #[arg(long)]
    pub check: bool,
    /// Replay at most this many messages, from the head of the queue.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub line: LineArgs,
}

#[derive(Debug, Args)]
pub struct SandboxWorkerArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub line: LineArgs,
}

/// `4096`, `64KiB`, `1MiB`, `1M`, `2G`: binary multiples for `Ki/Mi/Gi` and `K/M/G` alike
/// (memory limits are binary in practice; Kubernetes' `Mi` is accepted too).
pub fn parse_bytes_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a byte size (e.g. 4096, 64KiB, 1MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn parse_bytes_usize(s: &str) -> Result<usize, String> {
    let n = parse_bytes_u64(s)?;
    usize::try_from(n).map_err(|_| format!("'{s}' is too large"))
}

/// `250ms`, `2s`, `1.5s`, or a plain number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("'{s}' is not a duration (e.g. 250ms, 2s)");
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(v * scale).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_accept_binary_suffixes() {
        assert_eq!(parse_bytes_u64("4096"), Ok(4096));
        assert_eq!(parse_bytes_u64("64KiB"), Ok(65536));
        assert_eq!(parse_bytes_u64("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes_u64("256Mi"), Ok(256 << 20));
        assert!(parse_bytes_u64("12 parsecs").is_err());
        assert!(parse_bytes_u64("99999999999999999999").is_err());
    }

    #[test]
    fn durations_accept_ms_and_s() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
