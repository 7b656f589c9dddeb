//! `logfence dlq list` and `logfence dlq replay` (docs/commands.md): the on-call side of the
//! dead-letter queue.
//!
//! - [`headers`]: what a dead letter says about itself (ours or the broker's), and the
//!   original message recovered from it. Pure.
//! - [`hold`]: take messages without settling them, give them back in order.
//! - [`list`]: every dead letter, the queue left exactly as found.
//! - [`replay`]: move them back, each confirmed in the work queue before it leaves the
//!   dead-letter queue; with `--check`, only those the sandboxed check now passes.
//!
//! Exit status: 0 done; 1 `replay --check` kept some; 64 (EX_USAGE) bad flags; 66
//! (EX_NOINPUT) a queue does not exist; 69 (EX_UNAVAILABLE) the broker cannot be reached or
//! failed us; 70 (EX_SOFTWARE) we could not set ourselves up; 130 interrupted (SIGINT or
//! SIGTERM), after everything held was given back. Errors name the broker with its password
//! redacted, and nothing here prints message content: only fingerprints, rules and details
//! the consumer wrote.

pub mod headers;
pub mod hold;
pub mod list;
pub mod replay;

use std::time::Duration;

use lapin::types::ShortString;
use lapin::Connection;

use crate::amqp::connect::Broker;
use crate::amqp::topology::MAX_NAME;
use crate::cli::DlqCommand;
use crate::shutdown::Shutdown;

/// Default `--queue`: the dead-letter queue of the default work queue `logs`.
pub const DEFAULT_DLQ: &str = "logs.dead";

/// Exit status: everything listed, or every selected message moved.
pub const EXIT_OK: u8 = 0;
/// Exit status: `replay --check` kept some messages in the dead-letter queue.
pub const EXIT_KEPT: u8 = 1;
/// Exit status: bad flags (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status: a queue does not exist (EX_NOINPUT).
pub const EXIT_NOINPUT: u8 = 66;
/// Exit status: the broker cannot be reached, or failed mid-way (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status: no runtime, no sandbox (EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;
/// Exit status: interrupted by a signal (128 + SIGINT), the queue given back as found.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How long connecting may take before the broker counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `dlq` command stopped. Each variant is one exit status.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("{0}")]
    Usage(String),
    #[error("queue '{queue}' does not exist on {broker}")]
    NoQueue { queue: String, broker: String },
    #[error("cannot reach the broker at {broker}: {reason}")]
    Unreachable { broker: String, reason: String },
    /// The broker failed us mid-way. Nothing held is lost: it requeues what a dead channel
    /// held.
    #[error("the broker failed while {what}: {reason}")]
    Broker { what: String, reason: String },
    #[error("{0}")]
    Software(String),
}

impl DlqError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DlqError::Usage(_) => EXIT_USAGE,
            DlqError::NoQueue { .. } => EXIT_NOINPUT,
            DlqError::Unreachable { .. } | DlqError::Broker { .. } => EXIT_UNAVAILABLE,
            DlqError::Software(_) => EXIT_SOFTWARE,
        }
    }

    /// A mid-way broker failure, while doing `what`.
    pub fn broker(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> DlqError {
        let what = what.into();
        move |e| DlqError::Broker {
            what,
            reason: e.to_string(),
        }
    }
}

/// Runs `dlq list` or `dlq replay`; returns the exit status.
pub fn run(command: &DlqCommand) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("logfence-dlq")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logfence dlq: cannot start the async runtime: {e}");
            return EXIT_SOFTWARE;
        }
    };
    let status = runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr();
        match command {
            DlqCommand::List(args) => list::run(args, &shutdown, &mut out, &mut err).await,
            DlqCommand::Replay(args) => replay::run(args, &shutdown, &mut out, &mut err).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    status
}

/// A queue name lapin can carry, or why not.
pub fn queue_name(flag: &str, name: &str) -> Result<ShortString, DlqError> {
    if name.is_empty() {
        return Err(DlqError::Usage(format!("{flag} must not be empty")));
    }
    ShortString::try_new(name).map_err(|_| {
        DlqError::Usage(format!(
            "{flag} is {} bytes; queue names fit in {MAX_NAME}",
            name.len()
        ))
    })
}

/// Connects to the first node that answers (of a cluster's, starting from a random one, each
/// tried once), within [`CONNECT_TIMEOUT`] in all.
pub async fn connect(broker: &Broker) -> Result<Connection, DlqError> {
    let unreachable = |reason: String| DlqError::Unreachable {
        broker: broker.to_string(),
        reason,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, broker.connect_any()).await {
        Ok(Ok((_, connection))) => Ok(connection),
        Ok(Err(why)) => Err(unreachable(why)),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The ready count of `queue`, on a channel of its own (a missing queue closes it).
pub async fn depth(
    connection: &Connection,
    broker: &Broker,
    queue: &ShortString,
) -> Result<u32, DlqError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(DlqError::broker("opening a channel"))?;
    match hold::ready(&channel, queue).await {
        Ok(ready) => {
            let _ = channel.close(200, "bye".into()).await;
            Ok(ready)
        }
        Err(e) if is_not_found(&e) => Err(DlqError::NoQueue {
            queue: queue.to_string(),
            broker: broker.to_string(),
        }),
        Err(e) => Err(DlqError::broker(format!("looking up queue '{queue}'"))(e)),
    }
}

/// AMQP 404 NOT_FOUND.
fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Closes the connection (best effort: a broker that failed us may be gone already).
pub async fn close(connection: &Connection) {
    let _ = connection.close(200, "bye".into()).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn dlq(args: &[&str]) -> Result<DlqCommand, String> {
        let argv = ["logfence", "dlq"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Dlq(command) = cli.command else {
            panic!("not dlq");
        };
        Ok(command)
    }

    #[test]
    fn dlq_defaults_are_the_spec_defaults() {
        let DlqCommand::List(list) = dlq(&["list"]).unwrap() else {
            panic!("not list");
        };
        assert_eq!(list.queue, "logs.dead");
        assert!(!list.json);
        let DlqCommand::Replay(replay) = dlq(&["replay"]).unwrap() else {
            panic!("not replay");
        };
        assert_eq!(replay.queue, "logs.dead");
        assert_eq!(
            (replay.to.as_deref(), replay.check, replay.limit),
            (None, false, None)
        );
        assert_eq!(replay.limits.max_width, crate::config::DEFAULT_MAX_WIDTH);
    }

    #[test]
    fn dlq_refuses_bad_flags() {
        assert!(dlq(&["replay", "--limit", "0"]).is_err());
        assert!(dlq(&["list", "--bogus"]).is_err());
        assert!(dlq(&[]).is_err());
        assert!(queue_name("--queue", "").is_err());
        assert!(queue_name("--queue", &"q".repeat(256)).is_err());
        assert!(queue_name("--queue", &"q".repeat(255)).is_ok());
    }

    #[test]
    fn each_error_has_its_exit_status() {
        let broker = || "amqp://guest:***@h:5672/%2f".to_string();
        assert_eq!(DlqError::Usage("x".into()).exit_code(), 64);
        let no_queue = DlqError::NoQueue {
            queue: "q.dead".into(),
            broker: broker(),
        };
        assert_eq!(no_queue.exit_code(), 66);
        assert_eq!(
            no_queue.to_string(),
            "queue 'q.dead' does not exist on amqp://guest:***@h:5672/%2f"
        );
        let down = DlqError::Unreachable {
            broker: broker(),
            reason: "refused".into(),
        };
        assert_eq!(down.exit_code(), 69);
    }
}
