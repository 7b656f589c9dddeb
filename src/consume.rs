//! `logfence consume` (docs/commands.md): flags -> settings -> a tokio runtime running the consumer
//! until SIGTERM, and an exit status.
//!
//! Exit status: 0 after a clean shutdown; 64 (EX_USAGE) for a bad flag value; 78
//! (EX_CONFIG) when the broker's topology or the sink contradicts the configuration (an
//! existing queue with other arguments, an unopenable sink file); 70 (EX_SOFTWARE) when the
//! process cannot set itself up (no runtime, no sandbox, no state directory).

use std::path::PathBuf;
use std::time::Duration;

use crate::amqp::connect::Broker;
use crate::amqp::consumer::{Config, Consumer, FatalError};
use crate::amqp::suspects::Suspects;
use crate::amqp::topology::Topology;
use crate::cli::ConsumeArgs;
use crate::config::Limits;
use crate::lastwords::LastWords;
use crate::memory::{self, MemoryGate};
use crate::pipeline::{OutputFormat, Pipeline};
use crate::shutdown::Shutdown;
use crate::sink::SinkSpec;
use crate::telemetry::{self, health::health};

/// Default `--amqp-url` (when `AMQP_URL` is not set either): the local broker, vhost `/`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `--queue`.
pub const DEFAULT_QUEUE: &str = "logs";
/// Default `--max-deliveries`.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// Exit status after a clean shutdown.
pub const EXIT_OK: u8 = 0;
/// Exit status for a bad flag value (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status when the process cannot set itself up (EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;
/// Exit status when the broker or the sink contradicts the configuration (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The escaped `--line-format` line.
    Text,
    /// One JSON object per line (ts, level, logger, message, fields, findings).
    Json,
}

/// `--log-format`: logfence's own logs on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `consume` runs with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub limits: Limits,
    pub line_format: String,
    /// The effective memory cap: `--memory-limit`, else cgroup v2 `memory.max`.
    pub memory_limit: Option<u64>,
    pub state_dir: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: std::net::SocketAddr,
}

impl Settings {
    /// Checks the flags; `Err` is a usage message.
    pub fn from_args(args: &ConsumeArgs) -> Result<Settings, String> {
        let broker = Broker::from_args(&args.broker)?;
        if let SinkSpec::Amqp { exchange, .. } = &args.sink {
            if exchange == crate::amqp::topology::DLX {
                return Err(format!(
                    "--sink amqp:{exchange}: that is the dead-letter exchange"
                ));
            }
        }
        let topology = Topology::new(&args.queue, args.queue_type, args.max_deliveries)?;
        let limits = args.limits.limits();
        let memory_limit = memory::effective_limit(args.memory_limit);
        let prefetch = memory::prefetch_for(memory_limit, limits.max_body_bytes, args.prefetch);
        let output = match args.output {
            Output::Text => OutputFormat::Text,
            Output::Json => OutputFormat::Json,
        };
        Ok(Settings {
            config: Config {
                broker,
                topology,
                declare: !args.no_declare,
                sink: args.sink.clone(),
                sink_fsync: args.sink_fsync,
                prefetch,
                max_deliveries: args.max_deliveries,
                on_reject: args.on_reject,
                drain_timeout: args.drain_timeout,
                output,
            },
            limits,
            line_format: args.line.line_format.clone(),
            memory_limit,
            state_dir: args.state_dir.clone(),
            metrics_addr: args.metrics_addr,
        })
    }
}

/// Runs `consume`; returns the exit status.
pub fn run(args: &ConsumeArgs) -> u8 {
    init_logging(args.log_format);
    let settings = match Settings::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("logfence consume: {e}");
            return EXIT_USAGE;
        }
    };
    let pipeline = match Pipeline::new(settings.limits.clone(), &settings.line_format) {
        Ok(p) => p.with_output(settings.config.output),
        Err(e) => {
            eprintln!("logfence consume: --line-format: {e}");
            return EXIT_USAGE;
        }
    };
    serve_telemetry(settings.metrics_addr);
    // The loop runs on this thread (`block_on`); one worker runs lapin's internal tasks and
    // the timers and, idle most of the time, drives the IO reactor, which lapin's IO thread
    // waits on for socket readiness. With no worker (a current-thread runtime) only the loop's
    // thread drives that reactor, so the socket is not read while a batch is rendered: large
    // records then crawl. More workers only add hand-offs (futex waits and wake-ups, which
    // the profile showed costing more than everything the loop does).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("logfence-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return EXIT_SOFTWARE;
        }
    };
    let status = runtime.block_on(consume(settings, pipeline));
    // Lapin's tasks may still hold the runtime; do not wait for them after a clean close.
    runtime.shutdown_timeout(Duration::from_secs(1));
    status
}

/// Starts `/metrics`, `/healthz` and `/readyz` on their own thread. An address that cannot
/// be bound is logged, not fatal: the consumer goes on and the endpoint keeps trying.
fn serve_telemetry(addr: std::net::SocketAddr) {
    let handle = match telemetry::install() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "metrics unavailable");
            return;
        }
    };
    match telemetry::server::spawn(addr, handle) {
        Ok(bound) => tracing::info!(addr = %bound, "metrics endpoint listening"),
        Err(e) => tracing::error!(
            %addr,
            error = %e,
            "cannot serve /metrics, /healthz and /readyz; retrying every few seconds"
        ),
    }
}

async fn consume(settings: Settings, pipeline: Pipeline) -> u8 {
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            health().set_shutting_down();
        });
    }
    telemetry::metrics().memory_limit(settings.memory_limit);
    let lastwords = match &settings.state_dir {
        None => {
            tracing::info!(
                "no --state-dir: an unclean exit will not be reported at the next start"
            );
            None
        }
        Some(dir) => match LastWords::open(dir) {
            Ok((lw, previous)) => {
                telemetry::metrics().previous_exit_unclean(previous.is_some());
                if let Some(previous) = previous {
                    let in_flight: Vec<String> = previous
                        .fingerprints
                        .iter()
                        .map(|(fp, delivery)| format!("{fp}:{delivery}"))
                        .collect();
                    tracing::warn!(
                        in_flight = in_flight.len(),
                        fingerprints = %in_flight.join(","),
                        "the previous run exited uncleanly; these were in flight (fingerprint:delivery)"
                    );
                }
                Some(lw)
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open the last-words file");
                return EXIT_SOFTWARE;
            }
        },
    };
    let suspects = match Suspects::start(&settings.limits, &settings.line_format) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the sandbox");
            return EXIT_SOFTWARE;
        }
    };
    let gate = MemoryGate::spawn(settings.memory_limit);
    tracing::info!(
        queue = %settings.config.topology.queue,
        queue_type = settings.config.topology.queue_type.as_str(),
        sink = %settings.config.sink,
        prefetch = settings.config.prefetch,
        memory_limit = settings.memory_limit,
        max_deliveries = settings.config.max_deliveries,
        on_reject = ?settings.config.on_reject,
        "logfence consume starting"
    );
    let mut consumer = Consumer::new(
        settings.config,
        pipeline,
        suspects,
        lastwords.clone(),
        gate,
        shutdown,
    );
    let result = consumer.run().await;
    let tally = consumer.tally();
    drop(consumer);
    let status = match result {
        Ok(()) => {
            tracing::info!(
                formatted = tally.formatted,
                fallback = tally.fallback,
                dead_lettered = tally.dead_lettered,
                requeued = tally.requeued,
                "stopped cleanly"
            );
            EXIT_OK
        }
        Err(e @ (FatalError::Topology(_) | FatalError::Sink(_))) => {
            tracing::error!(error = %e, "configuration error");
            eprintln!("logfence consume: {e}");
            EXIT_CONFIG
        }
    };
    if let Some(lw) = lastwords {
        lw.mark_clean();
    }
    crate::faults::before_exit();
    status
}

/// Structured logs on stderr; `RUST_LOG` refines the default `info`. They never carry
/// message content: only fingerprints, rule ids and counts.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_writer(std::io::stderr).try_init(),
        // Every JSON line follows one escaping rule (`line::JsonSafe`): a queue name or an
        // error text holding U+2028 or U+0085 cannot split a log line.
        LogFormat::Json => builder
            .with_writer(|| crate::line::JsonSafe::new(std::io::stderr()))
            .json()
            .try_init(),
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::amqp::{OnReject, QueueType};
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let argv = ["logfence", "consume"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Consume(args) = cli.command else {
            panic!("not consume");
        };
        Settings::from_args(&args)
    }

    #[test]
    fn consume_defaults_are_the_spec_defaults() {
        let s = settings(&["--amqp-url", DEFAULT_AMQP_URL]).unwrap();
        assert_eq!(s.config.topology.queue, "logs");
        assert_eq!(s.config.topology.queue_type, QueueType::Quorum);
        assert_eq!(s.config.max_deliveries, 5);
        assert_eq!(s.config.on_reject, OnReject::Both);
        assert_eq!(s.config.drain_timeout, Duration::from_secs(10));
        assert!(s.config.declare);
        assert_eq!(s.config.sink, SinkSpec::Stdout);
        assert_eq!(s.config.output, OutputFormat::Text);
    }

    #[test]
    fn consume_prefetch_is_lowered_to_fit_the_memory_cap() {
        let s = settings(&[
            "--amqp-url",
            DEFAULT_AMQP_URL,
            "--memory-limit",
            "64MiB",
            "--prefetch",
            "300",
        ])
        .unwrap();
        assert!(s.config.prefetch < 300, "prefetch {}", s.config.prefetch);
        assert!(s.config.prefetch >= 1);
    }

    #[test]
    fn consume_refuses_bad_urls_queues_and_sinks_before_connecting() {
        assert!(settings(&["--amqp-url", "http://x"]).is_err());
        assert!(settings(&[
            "--amqp-url",
            "amqps://u:p@h/%2f",
            "--tls-ca",
            "/nonexistent.pem"
        ])
        .is_err());
        assert!(settings(&["--amqp-url", DEFAULT_AMQP_URL, "--queue", ""]).is_err());
        assert!(settings(&[
            "--amqp-url",
            DEFAULT_AMQP_URL,
            "--sink",
            "amqp:logfence.dlx"
        ])
        .is_err());
        assert!(settings(&["--amqp-url", DEFAULT_AMQP_URL, "--max-deliveries", "0"]).is_err());
        assert!(settings(&["--amqp-url", DEFAULT_AMQP_URL, "--prefetch", "0"]).is_err());
    }

    #[test]
    fn consume_reads_the_url_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "amqp://u:secret@broker:5672/%2f\n").unwrap();
        let s = settings(&["--amqp-url-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            s.config.broker.nodes()[0].url(),
            "amqp://u:secret@broker:5672/%2f"
        );
    }
}
