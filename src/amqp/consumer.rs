//! The consumer loop: sessions (one per connection), and in each, batches of deliveries taken,
//! decided, written, dead-lettered and settled, in that order.
//!
//! A batch is whatever deliveries are ready when the loop looks, up to the prefetch. Each is
//! fingerprinted and numbered; a delivery numbered `--max-deliveries` goes to the DLQ
//! unrendered; a suspect waits for the sandbox; every other one is rendered here and now by
//! the synchronous pipeline (no await inside, so its allocation is its own). Then the
//! batch's lines go to the sink in one write, its dead-letter copies to the DLX with one
//! round of confirms, and only then is it settled. Batches do not overlap: every delivery of
//! the channel that is not yet settled is in the current batch, which is what makes one
//! `ack` with `multiple` safe (see [`settle::settle_batch`]).
//!
//! A session ends with its connection. Its unsettled deliveries go with it (the broker
//! requeues them; their ackers are poisoned), so no tag ever crosses to a new channel.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection};

use super::connect::{Broker, HEALTHY_SESSION};
use super::deadletter::{self, DeadLetterError, DeadLetterer, Reason};
use super::delivery::Facts;
use super::settle::{self, Fate, Ledger, Tally};
use super::suspects::Suspects;
use super::topology::{Topology, TopologyError};
use super::OnReject;
use crate::finding::Rule;
use crate::lastwords::{LastWords, Slot};
use crate::memory::MemoryGate;
use crate::pipeline::{Outcome, OutputFormat, Pipeline, Verdict};
use crate::sandbox::Run;
use crate::shutdown::Shutdown;
use crate::sink::{Sink, SinkError, SinkSpec};
use crate::telemetry::health::health;
use crate::telemetry::metrics;
use crate::telemetry::names::{MessageOutcome, SandboxResult};

/// How long closing a channel or connection may take before we stop waiting for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long past the drain timeout a shutdown still waits for the broker to confirm the
/// consumer's cancel (see [`Consumer::drain`]).
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// How long a memory pause may hold before the consumer takes one more batch anyway. It
/// pauses between batches, holding nothing of its own; if memory has not fallen to the low
/// watermark by then, what holds it is what waiting cannot free (the runtime's own, and the
/// prefetched deliveries in lapin's buffer, which only consuming frees): under a cap that
/// close to the resting allocation, waiting longer would stall for good.
const PAUSE_AT_MOST: Duration = Duration::from_secs(1);

/// Everything the loop needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the broker is: one node or a cluster's (holds passwords: never logged as is).
    pub broker: Broker,
    pub topology: Topology,
    /// Declare the topology at every connect (`--no-declare` turns it off).
    pub declare: bool,
    pub sink: SinkSpec,
    pub sink_fsync: bool,
    pub prefetch: u16,
    /// The delivery whose number reaches this goes to the DLQ unrendered.
    pub max_deliveries: u32,
    pub on_reject: OnReject,
    /// After shutdown, how long in-flight work may take before it is handed back.
    pub drain_timeout: Duration,
    pub output: OutputFormat,
}

/// Why the consumer stopped for good (not a reason to reconnect).
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error(transparent)]
    Topology(TopologyError),
    #[error("the sink cannot work as configured: {0}")]
    Sink(SinkError),
}

/// Why one session ended early: each is followed by a reconnect after a backoff.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect to {node}: {source}")]
    Connect { node: String, source: lapin::Error },
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Topology(TopologyError),
    #[error("sink: {0}")]
    Sink(SinkError),
    #[error("dead-lettering: {0}")]
    DeadLetter(DeadLetterError),
    #[error("sandbox unavailable: {0}")]
    Sandbox(io::Error),
    #[error("the broker cancelled the consumer (was the queue deleted?)")]
    Cancelled,
    #[error(transparent)]
    Fatal(FatalError),
}

impl From<TopologyError> for SessionError {
    fn from(e: TopologyError) -> Self {
        match e {
            TopologyError::Mismatch { .. } => SessionError::Fatal(FatalError::Topology(e)),
            TopologyError::Broker { .. } => SessionError::Topology(e),
        }
    }
}

impl From<SinkError> for SessionError {
    fn from(e: SinkError) -> Self {
        if e.is_transient() {
            SessionError::Sink(e)
        } else {
            SessionError::Fatal(FatalError::Sink(e))
        }
    }
}

/// What to do with one delivery, before anything is written.
#[derive(Debug)]
enum Plan {
    /// Delivered before: render it in the sandbox first.
    Suspect,
    /// Decided: a line for the sink and/or a copy for the DLQ (at least one of the two).
    Decided {
        line: Option<String>,
        copy: Option<Reason>,
        /// It had a reject finding (its line, if any, is the fallback).
        rejected: bool,
    },
    /// Let go unfinished.
    Release,
}

/// One delivery in a batch.
#[derive(Debug)]
struct Entry {
    acker: Acker,
    facts: Facts,
    /// Kept only while a dead-letter copy may be needed.
    body: Vec<u8>,
    properties: BasicProperties,
    plan: Plan,
    /// Its last words: recorded before rendering, cleared once its fate is decided (just
    /// before it is settled).
    _slot: Option<Slot>,
}

/// The drain deadline, fixed the first time a loop notices the shutdown.
#[derive(Debug, Clone)]
struct Drain {
    shutdown: Shutdown,
    timeout: Duration,
    deadline: Arc<OnceLock<tokio::time::Instant>>,
}

impl Drain {
    /// Resolves once shutdown was asked for and the drain timeout has passed since.
    async fn expired(&self) {
        self.shutdown.wait().await;
        let deadline = *self
            .deadline
            .get_or_init(|| tokio::time::Instant::now() + self.timeout);
        tokio::time::sleep_until(deadline).await;
    }
}

/// The consumer: its configuration, the pipeline, the sandbox, and what it has done.
#[derive(Debug)]
pub struct Consumer {
    config: Config,
    pipeline: Pipeline,
    suspects: Suspects,
    lastwords: Option<LastWords>,
    gate: MemoryGate,
    shutdown: Shutdown,
    drain: Drain,
    /// Settled deliveries so far, by outcome.
    tally: Tally,
    /// The settlement of the batch in hand, kept here rather than in the future that settles
    /// it: when that future is dropped midway (the drain timeout, a lost connection), what it
    /// had told the broker is still counted, once.
    in_flight: Option<Ledger>,
}

impl Consumer {
    pub fn new(
        config: Config,
        pipeline: Pipeline,
        suspects: Suspects,
        lastwords: Option<LastWords>,
        gate: MemoryGate,
        shutdown: Shutdown,
    ) -> Consumer {
        let drain = Drain {
            shutdown: shutdown.clone(),
            timeout: config.drain_timeout,
            deadline: Arc::new(OnceLock::new()),
        };
        Consumer {
            config,
            pipeline,
            suspects,
            lastwords,
            gate,
            shutdown,
            drain,
            tally: Tally::default(),
            in_flight: None,
        }
    }

    /// What has been settled so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Consumes until shutdown (`Ok`) or a configuration error (`Err`); everything else
    /// (a lost broker, a failing sink) is retried after a jittered backoff. With several
    /// nodes, each session starts on the next node, and only a round in which every node
    /// failed waits (see [`super::connect::Backoff::for_nodes`]).
    pub async fn run(&mut self) -> Result<(), FatalError> {
        let mut backoff = self.config.broker.backoff();
        let mut first = true;
        loop {
            if self.shutdown.is_triggered() {
                return Ok(());
            }
            if !std::mem::take(&mut first) {
                metrics().reconnect_attempt();
            }
            let started = Instant::now();
            let settled_before = self.tally.settled() + self.tally.unsettled;
            match self.session().await {
                Ok(()) => return Ok(()),
                Err(SessionError::Fatal(e)) => return Err(e),
                Err(error) => {
                    tracing::warn!(%error, "session ended");
                }
            }
            if self.shutdown.is_triggered() {
                return Ok(());
            }
            // A session that consumed was a working one: what ended it (a cut connection, a
            // broker restart) is a new failure, not the next of a series. Only sessions that
            // never got to work (refused, unreachable, a flapping broker) make the wait grow.
            let progressed = self.tally.settled() + self.tally.unsettled > settled_before;
            if progressed || started.elapsed() >= HEALTHY_SESSION {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                failures = backoff.failures(),
                "reconnecting after a backoff"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.wait() => return Ok(()),
            }
        }
    }

    /// One connection, from connect to close.
    async fn session(&mut self) -> Result<(), SessionError> {
        let broker = self.config.broker.clone();
        let (node, connection) = tokio::select! {
            (node, c) = broker.connect() => (node, c.map_err(|source| SessionError::Connect {
                node: node.to_string(),
                source,
            })?),
            _ = self.shutdown.wait() => return Ok(()),
        };
        // Listening from the start, so a loss during set-up is not missed.
        let mut events = connection.events_listener();
        tracing::info!(url = %node, "connected");
        health().set_connected(true);
        // When the connection dies, some of lapin's futures (an ack queued for a dead IO loop)
        // never resolve: the loss itself must end the session, wherever it is waiting. What
        // it abandons is unsettled, and the broker requeues it with the connection.
        // A channel closed by the broker is reported here too, while the connection lives:
        // that one is left to the operation on the channel (it fails with its own error,
        // such as a topology mismatch).
        let lost = async {
            while let Some(event) = events.next().await {
                if let lapin::Event::Error(error) = event {
                    if !connection.status().connected() {
                        return error;
                    }
                }
            }
            std::future::pending().await
        };
        let result = tokio::select! {
            r = self.consume_on(&connection) => r,
            error = lost => Err(SessionError::Broker(error)),
        };
        health().set_connected(false);
        if let Some(ledger) = self.in_flight.take() {
            // The loss ended the session in the middle of a batch.
            self.count(ledger.abandon());
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "bye".into())).await;
        result
    }

    async fn consume_on(&mut self, connection: &Connection) -> Result<(), SessionError> {
        if self.config.declare && self.config.topology.declare_on(connection).await? {
            tracing::warn!(
                dead_letter_queue = %self.config.topology.dead_queue(),
                "the dead-letter queue has no delivery limit of its own (declared by an older \
                 logfence); left as it is: give it the policy of deploy/rabbitmq/definitions.json \
                 so that RabbitMQ 4.0-4.2 never apply their default of 20 to it"
            );
        }
        let channel = connection.create_channel().await?;
        let dead = DeadLetterer::open(connection, &self.config.topology.queue).await?;
        let mut sink =
            Sink::open(&self.config.sink, self.config.sink_fsync, Some(connection)).await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let queue = ShortString::try_new(self.config.topology.queue.as_str()).unwrap_or_default();
        let mut deliveries = channel
            .basic_consume(
                queue,
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(
            queue = %self.config.topology.queue,
            prefetch = self.config.prefetch,
            "consuming"
        );
        health().set_consuming(true);
        let result = self.consume_loop(&mut deliveries, &mut sink, &dead).await;
        let result = match result {
            Ok(()) => {
                self.drain(&channel, &mut deliveries, &mut sink, &dead)
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, dead.close()).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "bye".into())).await;
        result
    }

    /// Takes batches until shutdown (`Ok`) or a failure.
    async fn consume_loop(
        &mut self,
        deliveries: &mut lapin::Consumer,
        sink: &mut Sink,
        dead: &DeadLetterer,
    ) -> Result<(), SessionError> {
        loop {
            let mut batch_limit = max_batch(self.config.prefetch);
            if self.gate.is_paused() {
                // After a pause, whatever the broker already sent is taken in one batch: a
                // forced batch under memory pressure is the only progress in that second.
                batch_limit = usize::from(self.config.prefetch);
                // Not polling is what stops deliveries: the broker sends at most the
                // prefetch ahead, and nothing is acked while we wait.
                tokio::select! {
                    _ = self.gate.wait_resumed() => {}
                    _ = tokio::time::sleep(PAUSE_AT_MOST) => {
                        tracing::warn!(
                            after_ms = PAUSE_AT_MOST.as_millis() as u64,
                            "memory has not fallen during the pause; taking one batch anyway"
                        );
                    }
                    _ = self.shutdown.wait() => return Ok(()),
                }
            }
            let first = tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ok(()),
                next = deliveries.next() => next,
            };
            let first = match first {
                None => return Err(SessionError::Cancelled),
                Some(Err(e)) => return Err(SessionError::Broker(e)),
                Some(Ok(d)) => d,
            };
            let mut batch = vec![self.plan(first)];
            let mut ended = None;
            while batch.len() < batch_limit {
                match poll_once(deliveries.next()).await {
                    None => break,
                    Some(Some(Ok(d))) => batch.push(self.plan(d)),
                    Some(Some(Err(e))) => {
                        ended = Some(SessionError::Broker(e));
                        break;
                    }
                    Some(None) => {
                        ended = Some(SessionError::Cancelled);
                        break;
                    }
                }
            }
            if let Some(e) = ended {
                // The channel is gone: this batch cannot be settled; the broker requeues it.
                metrics().messages(MessageOutcome::Requeued, batch.len() as u64);
                return Err(e);
            }
            self.finish_bounded(batch, sink, dead).await?;
        }
    }

    /// After shutdown: stop the consumer, finish what the broker already sent, all within
    /// the drain timeout.
    async fn drain(
        &mut self,
        channel: &Channel,
        deliveries: &mut lapin::Consumer,
        sink: &mut Sink,
        dead: &DeadLetterer,
    ) -> Result<(), SessionError> {
        let drain = self.drain.clone();
        // The cancel-ok is waited for a little past the drain timeout: until it comes, the
        // broker may still be sending, and a delivery that is not in the stream when the
        // channel closes goes back counted (a close is a counted return on every version;
        // the nack below is not, from RabbitMQ 4.3).
        let cancelled = tokio::select! {
            r = channel.basic_cancel(deliveries.tag(), BasicCancelOptions::default()) => r,
            _ = async {
                drain.expired().await;
                tokio::time::sleep(CANCEL_GRACE).await;
            } => Ok(()),
        };
        cancelled?;
        // The cancel-ok came after every delivery the broker sent us, on the same channel:
        // what is left is in the stream already.
        let mut batch = Vec::new();
        while let Some(Some(Ok(d))) = poll_once(deliveries.next()).await {
            batch.push(self.plan(d));
        }
        tracing::info!(in_flight = batch.len(), "draining");
        if !batch.is_empty() {
            self.finish_bounded(batch, sink, dead).await?;
        }
        Ok(())
    }

    /// Adds a batch's settlements to the tally and to `logfence_messages_total`. What could
    /// not be settled (the channel was gone) goes back to the queue all the same: requeued.
    fn count(&mut self, tally: Tally) {
        self.tally.add(tally);
        let m = metrics();
        m.messages(MessageOutcome::Formatted, tally.formatted);
        m.messages(MessageOutcome::Fallback, tally.fallback);
        m.messages(MessageOutcome::DeadLettered, tally.dead_lettered);
        m.messages(MessageOutcome::Requeued, tally.requeued + tally.unsettled);
    }

    /// Decides one delivery; renders it here unless it is a suspect.
    fn plan(&self, delivery: Delivery) -> Entry {
        let Delivery {
            acker,
            redelivered,
            properties,
            data,
            ..
        } = delivery;
        let facts = Facts::of(&data, redelivered, &properties);
        let slot = self
            .lastwords
            .as_ref()
            .map(|lw| lw.record(&facts.fingerprint, facts.number));
        if facts.suspect {
            metrics().redelivery();
        }
        let plan = if facts.number >= self.config.max_deliveries {
            metrics().finding(Rule::DeliveryLimit);
            Plan::Decided {
                line: None,
                copy: Some(Reason {
                    rule: Rule::DeliveryLimit,
                    detail: format!(
                        "delivery {} reached --max-deliveries {}",
                        facts.number, self.config.max_deliveries
                    ),
                }),
                rejected: false,
            }
        } else if facts.suspect {
            Plan::Suspect
        } else {
            decide(self.pipeline.process(&data), self.config.on_reject)
        };
        let keep_body = matches!(plan, Plan::Suspect | Plan::Decided { copy: Some(_), .. });
        Entry {
            acker,
            facts,
            body: if keep_body { data } else { Vec::new() },
            properties,
            plan,
            _slot: slot,
        }
    }

    /// [`Consumer::finish`], unless the drain timeout runs out first: then what is not
    /// settled is handed back (nack, requeue) and the session ends.
    ///
    /// Each delivery is counted once, by what became of it: the batch's [`Ledger`] outlives
    /// `finish`, so when the deadline drops it in the middle of settling, the deliveries it
    /// had already told the broker keep their count, and only the others are handed back.
    async fn finish_bounded(
        &mut self,
        batch: Vec<Entry>,
        sink: &mut Sink,
        dead: &DeadLetterer,
    ) -> Result<(), SessionError> {
        let ackers: Vec<Acker> = batch.iter().map(|e| e.acker.clone()).collect();
        let drain = self.drain.clone();
        let suspects = &self.suspects;
        let pipeline = &self.pipeline;
        let config = &self.config;
        let ledger = self.in_flight.insert(Ledger::new(batch.len()));
        // The deadline first: a batch taken after the drain timeout ran out (what the
        // broker sent before its cancel-ok) is handed back at once, never written and then
        // handed back, which would only make duplicates.
        let finished = tokio::select! {
            biased;
            _ = drain.expired() => None,
            r = finish(batch, suspects, pipeline, config, sink, dead, &mut *ledger) => Some(r),
        };
        let result = match finished {
            Some(result) => result,
            None => {
                let told = ledger.told();
                let requeued_before = ledger.tally().requeued;
                let release: Vec<(Acker, Fate)> =
                    ackers.into_iter().map(|a| (a, Fate::Released)).collect();
                settle::settle_batch(&release, ledger).await;
                tracing::warn!(
                    in_batch = release.len(),
                    already_settled = told,
                    released = ledger.tally().requeued - requeued_before,
                    "drain timeout: unsettled deliveries handed back"
                );
                Ok(())
            }
        };
        if let Some(ledger) = self.in_flight.take() {
            self.count(ledger.tally());
        }
        result
    }
}

/// The most deliveries one batch takes, unless memory paused the loop: a quarter of the
/// prefetch window. While a batch is rendered, written and acked, the broker can still send
/// the rest of the window, so the pipe never runs dry waiting for one big ack, and fewer
/// records are held at once (peak RSS 24.6 -> 23.5 MiB in the e2e bench).
fn max_batch(prefetch: u16) -> usize {
    (usize::from(prefetch) / 4).max(1)
}

/// What the pipeline's outcome means for the sink and the DLQ.
fn decide(outcome: Outcome, on_reject: OnReject) -> Plan {
    metrics().rendered(&outcome);
    let reason_of = |o: &Outcome, fallback: Rule| {
        o.findings
            .iter()
            .find(|f| f.rule.severity() == crate::finding::Severity::Reject)
            .map(|f| Reason {
                rule: f.rule,
                detail: f.detail.clone(),
            })
            .unwrap_or(Reason {
                rule: fallback,
                detail: String::new(),
            })
    };
    match outcome.verdict {
        Verdict::Ok => match outcome.line {
            Some(line) => Plan::Decided {
                line: Some(line),
                copy: None,
                rejected: false,
            },
            None => Plan::Decided {
                line: None,
                copy: Some(Reason {
                    rule: Rule::Crash,
                    detail: "rendered without a line".into(),
                }),
                rejected: false,
            },
        },
        Verdict::Rejected => {
            let reason = reason_of(&outcome, Rule::FormatError);
            let line = outcome.line.filter(|_| on_reject.writes_fallback());
            let copy = (on_reject.dead_letters() || line.is_none()).then_some(reason);
            Plan::Decided {
                line,
                copy,
                rejected: true,
            }
        }
        Verdict::Crashed => Plan::Decided {
            line: None,
            copy: Some(reason_of(&outcome, Rule::Crash)),
            rejected: false,
        },
    }
}

/// A suspect's plan from its sandboxed run.
fn decide_sandboxed(
    run: io::Result<Run>,
    body: &[u8],
    pipeline: &Pipeline,
    config: &Config,
) -> Result<Plan, io::Error> {
    let run = run?;
    metrics().sandbox_run(match &run {
        Run::Finished(_) => SandboxResult::Ok,
        Run::Crashed(_) => SandboxResult::Crashed,
        Run::TimedOut(_) => SandboxResult::Timeout,
    });
    Ok(match run {
        Run::Finished(outcome) => match (config.output, outcome.verdict) {
            // The worker writes text lines; it proved the record harmless, so a JSON line
            // is rendered here.
            (OutputFormat::Json, Verdict::Ok | Verdict::Rejected) => {
                decide(pipeline.process(body), config.on_reject)
            }
            _ => decide(outcome, config.on_reject),
        },
        Run::Crashed(detail) => {
            metrics().finding(Rule::Crash);
            Plan::Decided {
                line: None,
                copy: Some(Reason {
                    rule: Rule::Crash,
                    detail,
                }),
                rejected: false,
            }
        }
        Run::TimedOut(after) => {
            metrics().finding(Rule::Timeout);
            Plan::Decided {
                line: None,
                copy: Some(Reason {
                    rule: Rule::Timeout,
                    detail: format!("no outcome within {} ms", after.as_millis()),
                }),
                rejected: false,
            }
        }
    })
}

/// Sandbox, write, dead-letter, settle: one batch, to the end, settled into `ledger` (in
/// batch order). Returns whether the session can go on.
async fn finish(
    mut batch: Vec<Entry>,
    suspects: &Suspects,
    pipeline: &Pipeline,
    config: &Config,
    sink: &mut Sink,
    dead: &DeadLetterer,
    ledger: &mut Ledger,
) -> Result<(), SessionError> {
    let mut failure = None;
    for entry in batch.iter_mut().filter(|e| matches!(e.plan, Plan::Suspect)) {
        if failure.is_some() {
            entry.plan = Plan::Release;
            continue;
        }
        let body = std::mem::take(&mut entry.body);
        let (body, run) = suspects.render(body).await;
        entry.body = body;
        entry.plan = match decide_sandboxed(run, &entry.body, pipeline, config) {
            Ok(plan) => plan,
            Err(e) => {
                failure = Some(SessionError::Sandbox(e));
                Plan::Release
            }
        };
        tracing::debug!(
            fingerprint = %entry.facts.fingerprint,
            delivery = entry.facts.number,
            verdict = plan_label(&entry.plan),
            "suspect rendered in the sandbox"
        );
    }

    let wrote: Vec<bool> = batch.iter().map(|e| plan_has_line(&e.plan)).collect();
    let lines: Vec<String> = batch
        .iter_mut()
        .filter_map(|e| match &mut e.plan {
            Plan::Decided { line, .. } => line.take(),
            _ => None,
        })
        .collect();
    if let Err(e) = sink.write(&lines).await {
        tracing::warn!(error = %e, lines = lines.len(), "sink write failed; handing the batch back");
        let released: Vec<(Acker, Fate)> = batch
            .into_iter()
            .map(|e| (e.acker, Fate::Released))
            .collect();
        settle::settle_batch(&released, ledger).await;
        return Err(e.into());
    }
    drop(lines);

    let copies: Vec<(usize, &[u8], BasicProperties)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.plan {
            Plan::Decided {
                copy: Some(reason), ..
            } => Some((
                i,
                e.body.as_slice(),
                deadletter::marked_properties(&e.properties, reason, &e.facts),
            )),
            _ => None,
        })
        .collect();
    let copied_at: Vec<usize> = copies.iter().map(|(i, _, _)| *i).collect();
    let results = if copies.is_empty() {
        Vec::new()
    } else {
        dead.publish_all(copies.into_iter().map(|(_, b, p)| (b, p)).collect())
            .await
    };
    let mut copy_failed = vec![false; batch.len()];
    for (i, result) in copied_at.into_iter().zip(results) {
        if let Err(e) = result {
            tracing::warn!(
                fingerprint = %batch[i].facts.fingerprint,
                error = %e,
                "dead-letter copy not confirmed; handing the message back"
            );
            copy_failed[i] = true;
            if failure.is_none() {
                failure = Some(SessionError::DeadLetter(e));
            }
        }
    }

    let settled: Vec<(Acker, Fate)> = batch
        .into_iter()
        .zip(wrote.into_iter().zip(copy_failed))
        .map(|(e, (wrote, failed))| {
            let fate = fate_of(&e.plan, wrote, failed);
            log_fate(&e, fate);
            (e.acker, fate)
        })
        .collect();
    settle::settle_batch(&settled, ledger).await;
    failure.map_or(Ok(()), Err)
}

/// What became of a delivery once the batch's lines are on the sink (`wrote`: it had one)
/// and its dead-letter copy, if any, was published (`copy_failed`: not confirmed).
fn fate_of(plan: &Plan, wrote: bool, copy_failed: bool) -> Fate {
    match plan {
        Plan::Suspect | Plan::Release => Fate::Released,
        Plan::Decided { copy, rejected, .. } => {
            if copy_failed {
                Fate::Failed
            } else if wrote && *rejected {
                Fate::Fallback {
                    copied: copy.is_some(),
                }
            } else if wrote {
                Fate::Formatted
            } else if copy.is_some() {
                Fate::DeadLettered
            } else {
                Fate::Released
            }
        }
    }
}

/// Whether the plan has a line for the sink.
fn plan_has_line(plan: &Plan) -> bool {
    matches!(plan, Plan::Decided { line: Some(_), .. })
}

fn plan_label(plan: &Plan) -> &'static str {
    match plan {
        Plan::Suspect => "suspect",
        Plan::Release => "released",
        Plan::Decided { copy: None, .. } => "written",
        Plan::Decided {
            line: Some(_),
            copy: Some(_),
            ..
        } => "written-and-dead-lettered",
        Plan::Decided {
            line: None,
            copy: Some(_),
            ..
        } => "dead-lettered",
    }
}

fn log_fate(entry: &Entry, fate: Fate) {
    let rule = match &entry.plan {
        Plan::Decided {
            copy: Some(reason), ..
        } => Some(reason.rule.id()),
        _ => None,
    };
    match fate {
        Fate::DeadLettered | Fate::Fallback { copied: true } => tracing::info!(
            fingerprint = %entry.facts.fingerprint,
            delivery = entry.facts.number,
            rule,
            ?fate,
            "dead-lettered"
        ),
        Fate::Formatted | Fate::Fallback { copied: false } => {}
        Fate::Failed | Fate::Released => tracing::debug!(
            fingerprint = %entry.facts.fingerprint,
            ?fate,
            "handed back"
        ),
    }
}
