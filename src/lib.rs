//! logfence: a memory-capped log-formatting sidecar for RabbitMQ consumers.
//!
//! # Layout
//!
//! - [`config`]: the limits (docs/rules.md), each named, typed and documented with its default.
//! - [`finding`]: rule ids, severities and findings: the vocabulary of every verdict.
//! - [`value`]: the Python value model (int of any size, float, str, list, dict) and
//!   CPython's `str()` / `repr()` / `ascii()` of each.
//! - [`json`]: a bounded JSON decoder that yields Python values exactly as `json.loads`.
//! - [`record`]: the log record (docs/record.md): structured or plain text.
//! - [`format`]: the bounded formatter: `%`, `{}` and `$` styles, pure and synchronous.
//! - [`line`]: the output line template and control-character escaping, and the one escaping
//!   rule of every JSON line (`line::JsonSafe`).
//! - [`detect`]: the warn-only detector (control chars, bidi, lookup syntax, format-like text).
//! - [`alloc`]: the jemalloc global allocator and per-thread allocation measurement.
//! - [`pipeline`]: bytes -> outcome, the one synchronous path `check` and `consume` share.
//! - [`faults`]: failpoints in the render path for fault-injection tests (feature-gated).
//! - [`sandbox`]: a long-lived child worker under rlimits that renders suspects.
//! - [`check`]: the `check` subcommand: read, run, report.
//! - [`audit`]: `check --ndjson`: a capture audited line by line, streaming, on every core.
//! - [`cli`]: clap types; raw flags -> settings (each command validates its own).
//! - [`consume`]: the `consume` subcommand: settings, runtime, exit status.
//! - [`amqp`]: the consumer: connect and reconnect, topology, the loop, settle, dead-letter.
//! - [`shutdown`]: the one process-wide shutdown latch; SIGTERM and SIGINT trigger it.
//! - [`sink`]: stdout, file and amqp sinks; `write` returns once the lines are durable.
//! - [`memory`]: the memory cap, prefetch sized from it, and the pause/resume gate.
//! - [`lastwords`]: the in-flight fingerprints, in a mapped file that survives SIGKILL.
//! - [`dlq`]: `dlq list` and `dlq replay`: the dead-letter queue read in order, and moved back.
//! - [`telemetry`]: the metrics (docs/metrics.md) and `/metrics`, `/healthz`, `/readyz`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod alloc;
pub mod amqp;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod consume;
pub mod detect;
pub mod dlq;
pub mod faults;
pub mod finding;
pub mod format;
pub mod json;
pub mod lastwords;
pub mod line;
pub mod memory;
pub mod pipeline;
pub mod record;
pub mod sandbox;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
pub mod value;
