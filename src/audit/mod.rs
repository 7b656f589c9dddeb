//! `logfence check --ndjson`: what logfence would do to a capture of real traffic.
//!
//! Every line of every input is one record body (see [`reader`] for what a line is). The
//! work is laid out so that memory does not grow with the input and the `--json` report
//! keeps input order while every core works:
//!
//! ```text
//!  reader thread ──batches──► worker threads (one per core) ──► per-batch channel ─┐
//!       │                      in process; suspicious records                    │
//!       └──── the batches' channels, in input order ──► this thread: writes, ◄───┘
//!                                                        sums, draws progress
//! ```
//!
//! The reader cuts each input into batches of at most [`BATCH_BYTES`] / [`BATCH_RECORDS`]
//! and queues, in input order, one bounded channel per batch; a worker takes the next
//! batch, checks its records and sends its report lines (in chunks of [`CHUNK_BYTES`])
//! and its counts down that batch's channel; this thread drains the channels in order.
//! At most [`IN_FLIGHT`] batches exist at once, and a worker whose batch is not being
//! written yet waits after two chunks, so what is held is bounded by the limits and
//! these constants, never by the capture. Workers take batches in order, so the batch
//! being written is always one that a worker is on: nothing waits on nothing.
//!
//! Each record is checked in process with [`Pipeline::with_isolation`], so its
//! `alloc_bytes` is its own (the same as `check` of that record alone) whatever the
//! thread saw before, and the `--json` report is the same from run to run. A record that
//! [`suspect`] flags goes to a sandboxed worker process instead (one per thread, started
//! when first needed), as does a record that panics in process.

pub mod progress;
pub mod reader;
pub mod summary;
pub mod suspect;

use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::check::{self, Source, EXIT_CRASHED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE};
use crate::cli::CheckArgs;
use crate::finding::{Finding, Rule};
use crate::pipeline::{Outcome, Pipeline, Unheld, Verdict};
use crate::record;
use crate::sandbox::Sandbox;

use self::progress::Progress;
use self::reader::{Batch, EntryKind, Reader};
use self::summary::{logger_key, Stats, Summary};

/// A batch is handed to a worker once its bodies reach this many bytes...
pub const BATCH_BYTES: usize = 256 << 10;
/// ...or it holds this many records.
pub const BATCH_RECORDS: usize = 2048;
/// Batches read and not yet written, at most.
pub const IN_FLIGHT: usize = 6;
/// A worker sends its report lines in chunks of about this size.
pub const CHUNK_BYTES: usize = 128 << 10;
/// Worker threads at most, whatever the machine has.
const MAX_WORKERS: usize = 8;

/// The logger a refused record is counted under when its body was not decoded.
const UNPARSED_LOGGER: &str = "(body not parsed)";
/// ...and when it crashed a sandboxed run (it is not decoded again here).
const CRASHED_LOGGER: &str = "(crashed: not decoded)";

/// What the audit was asked to do, shared by every thread.
#[derive(Debug)]
struct Settings {
    pipeline: Pipeline,
    json: bool,
    sandbox: bool,
    line_format: String,
}

/// A batch on its way to a worker, with the channel its results go down.
#[derive(Debug)]
struct Job {
    source: Arc<str>,
    batch: Batch,
    results: SyncSender<Chunk>,
}

/// What comes back from a batch, in order.
#[derive(Debug)]
enum Chunk {
    /// Report lines.
    Json(Vec<u8>),
    /// A message for stderr.
    Error(String),
    /// An input that could not be read (counted once).
    Unreadable(String),
    /// The batch's counts; the last chunk of a batch.
    Done(Box<Stats>),
}

/// Runs `check --ndjson`; returns the exit status (as `check`'s).
pub fn run(args: &CheckArgs, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let started = Instant::now();
    let limits = args.limits.limits();
    let pipeline = match Pipeline::new(limits.clone(), &args.line.line_format) {
        Ok(p) => p.with_isolation(true),
        Err(e) => {
            let _ = writeln!(err, "logfence check: --line-format: {e}");
            return EXIT_USAGE;
        }
    };
    let sources = match check::expand_sources(&args.files) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "logfence check: {e}");
            return EXIT_USAGE;
        }
    };
    let settings = Settings {
        pipeline,
        json: args.json,
        sandbox: !args.no_sandbox,
        line_format: args.line.line_format.clone(),
    };
    let total_bytes = sources
        .iter()
        .map(|s| match s {
            Source::File(p) => std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Source::Stdin => None,
        })
        .sum::<Option<u64>>();
    let progress = Progress::start(total_bytes);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);

    let mut summary = Summary::default();
    let mut failed_write = false;
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (order_tx, order_rx) = mpsc::sync_channel::<Receiver<Chunk>>(IN_FLIGHT);
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let settings = &settings;
            scope.spawn(move || work(settings, &job_rx));
        }
        let sources = &sources;
        let max_body = limits.max_body_bytes;
        let head_len = limits.max_output_bytes.saturating_add(4);
        scope.spawn(move || read_all(sources, max_body, head_len, &job_tx, &order_tx));

        for results in order_rx {
            for chunk in results {
                match chunk {
                    Chunk::Json(bytes) => {
                        if !failed_write && out.write_all(&bytes).is_err() {
                            failed_write = true;
                        }
                    }
                    Chunk::Error(message) => {
                        let _ = writeln!(err, "logfence check: {message}");
                    }
                    Chunk::Unreadable(message) => {
                        summary.unreadable += 1;
                        let _ = writeln!(err, "logfence check: {message}");
                    }
                    Chunk::Done(stats) => {
                        summary.merge(*stats);
                        progress.update(&summary);
                    }
                }
            }
            if failed_write {
                // Dropping the queue stops the reader; the workers then run dry.
                break;
            }
        }
    });
    progress.finish();
    if failed_write {
        return EXIT_USAGE;
    }
    let elapsed = started.elapsed();
    let written = if args.json {
        if args.summary {
            check::write_json_line(out, &summary.to_json(elapsed))
        } else {
            Ok(())
        }
    } else {
        summary.write_table(out, elapsed)
    };
    if written.and_then(|()| out.flush()).is_err() {
        return EXIT_USAGE;
    }
    let t = &summary.total;
    if summary.unreadable > 0 || t.unchecked > 0 {
        EXIT_USAGE
    } else if t.crashed > 0 {
        EXIT_CRASHED
    } else if t.rejected > 0 {
        EXIT_REJECTED
    } else {
        EXIT_OK
    }
}

/// The reader thread: every input, cut into batches, each queued for the writer (in
/// order) and for a worker.
fn read_all(
    sources: &[Source],
    max_body: usize,
    head_len: usize,
    jobs: &SyncSender<Job>,
    order: &SyncSender<Receiver<Chunk>>,
) {
    for source in sources {
        let name: Arc<str> = Arc::from(source.name());
        let input: Box<dyn io::Read> = match source {
            Source::Stdin => Box::new(io::stdin().lock()),
            Source::File(path) => match std::fs::File::open(path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    if !report(order, Chunk::Unreadable(format!("{name}: {e}"))) {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut reader = Reader::new(input, max_body, head_len);
        while !reader.is_done() {
            let mut batch = Batch::default();
            let filled = reader.fill(&mut batch, BATCH_BYTES, BATCH_RECORDS);
            if !batch.is_empty() {
                let (results, receiver) = mpsc::sync_channel(2);
                if order.send(receiver).is_err() {
                    return;
                }
                let job = Job {
                    source: Arc::clone(&name),
                    batch,
                    results,
                };
                if jobs.send(job).is_err() {
                    return;
                }
            }
            if let Err(e) = filled {
                let line = reader.line();
                if !report(order, Chunk::Unreadable(format!("{name}:{line}: {e}"))) {
                    return;
                }
                break;
            }
        }
    }
}

/// Queues one message for the writer, in order; false when the writer is gone.
fn report(order: &SyncSender<Receiver<Chunk>>, chunk: Chunk) -> bool {
    let (tx, rx) = mpsc::sync_channel(1);
    let _ = tx.send(chunk);
    order.send(rx).is_ok()
}

/// A worker thread: batches until the reader is done.
fn work(settings: &Settings, jobs: &Mutex<Receiver<Job>>) {
    Pipeline::warm_up_thread();
    let mut sandbox: Option<Sandbox> = None;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        check_batch(settings, &mut sandbox, job);
    }
}

/// Checks every record of one batch and sends its report lines and counts.
fn check_batch(settings: &Settings, sandbox: &mut Option<Sandbox>, job: Job) {
    let Job {
        source,
        batch,
        results,
    } = job;
    let mut stats = Stats {
        bytes: batch.bytes,
        empty_lines: batch.empty_lines,
        ..Stats::default()
    };
    let mut lines = Vec::new();
    let limits = settings.pipeline.limits();
    for entry in &batch.entries {
        let bytes = batch.bytes_of(entry);
        let source_name = || format!("{source}:{}", entry.line);
        let (outcome, logger) = match entry.kind {
            EntryKind::Body { .. } => {
                let outcome = match check_body(settings, sandbox, bytes, &mut stats) {
                    Ok(o) => o,
                    Err(e) => {
                        stats.unchecked += 1;
                        let message = format!("{}: the sandbox failed: {e}", source_name());
                        if results.send(Chunk::Error(message)).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let logger = match outcome.verdict {
                    Verdict::Ok => None,
                    Verdict::Crashed => Some(CRASHED_LOGGER.to_string()),
                    Verdict::Rejected => Some(match record::decode(bytes, limits) {
                        Ok(r) => logger_key(&r.logger),
                        Err(_) => UNPARSED_LOGGER.to_string(),
                    }),
                };
                (outcome, logger)
            }
            EntryKind::Unheld {
                len, decoded_len, ..
            } => {
                let outcome = settings.pipeline.process_unheld(Unheld {
                    head: bytes,
                    len,
                    decoded_len,
                });
                (outcome, Some(UNPARSED_LOGGER.to_string()))
            }
        };
        stats.add(&outcome, || logger.unwrap_or_default(), source_name);
        if settings.json {
            // Writing to a Vec cannot fail.
            let _ = check::write_json(&mut lines, &source_name(), &outcome);
            if lines.len() >= CHUNK_BYTES {
                let full = std::mem::take(&mut lines);
                if results.send(Chunk::Json(full)).is_err() {
                    return;
                }
            }
        }
    }
    if !lines.is_empty() && results.send(Chunk::Json(lines)).is_err() {
        return;
    }
    let _ = results.send(Chunk::Done(Box::new(stats)));
}

/// One held body: in process, or in the sandbox when it is suspicious or panicked here.
fn check_body(
    settings: &Settings,
    sandbox: &mut Option<Sandbox>,
    body: &[u8],
    stats: &mut Stats,
) -> io::Result<Outcome> {
    if settings.sandbox && suspect::suspicion(body).is_some() {
        stats.sandboxed += 1;
        return sandboxed(settings, sandbox, body);
    }
    let started = Instant::now();
    match panic::catch_unwind(AssertUnwindSafe(|| settings.pipeline.process(body))) {
        Ok(outcome) => Ok(outcome),
        Err(_) if settings.sandbox => {
            stats.sandboxed += 1;
            sandboxed(settings, sandbox, body)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Ok(Outcome {
                verdict: Verdict::Crashed,
                message: None,
                line: None,
                msg: None,
                findings: vec![Finding::new(
                    Rule::Crash,
                    None,
                    format!("the formatter panicked in process (--no-sandbox): {what}"),
                )],
                alloc_bytes: None,
                elapsed_us: started.elapsed().as_micros() as u64,
            })
        }
    }
}

fn sandboxed(
    settings: &Settings,
    sandbox: &mut Option<Sandbox>,
    body: &[u8],
) -> io::Result<Outcome> {
    let sandbox = match sandbox {
        Some(s) => s,
        None => sandbox.insert(check::sandbox_for(
            settings.pipeline.limits(),
            &settings.line_format,
        )?),
    };
    check::run_sandboxed(sandbox, body)
}
