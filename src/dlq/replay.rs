//! `logfence dlq replay`: move dead letters back to the work queue, never losing one.
//!
//! Messages are taken unsettled from the head of the dead-letter queue, a batch at a time.
//! Each one that moves is published, as the original (body byte for byte, properties and
//! headers as first published, minus what dead-lettering added: see
//! [`super::headers::original_properties`]), to the default exchange with the work queue as
//! routing key, `mandatory`, on a confirm-mode channel; only once the broker confirms it is
//! the dead letter acked. A crash in between leaves it in both queues (a duplicate), never
//! in neither. With `--check`, each message first goes through the sandboxed `check` with
//! the limit flags given; only verdict `ok` moves. The rest are held, and at the end so is
//! every message not selected (`--limit`), and all go back in order ([`super::hold`]): the
//! kept ones stay where they were, and the acks are flushed before the channel closes.

use std::io::Write;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

use super::headers::original_properties;
use super::hold::{Hold, REST_SLACK};
use super::{DlqError, EXIT_INTERRUPTED, EXIT_KEPT, EXIT_OK};
use crate::amqp::connect::Broker;
use crate::amqp::delivery::fingerprint;
use crate::amqp::topology::DEAD_SUFFIX;
use crate::cli::DlqReplayArgs;
use crate::finding::Severity;
use crate::pipeline::{Outcome, Pipeline, Verdict};
use crate::sandbox::{Run, Sandbox};

/// Messages taken before their copies are published and confirmed together: one confirm
/// round trip per batch instead of per message, and at most this many bodies in memory.
pub const REPLAY_BATCH: usize = 64;

/// A message kept in the dead-letter queue by `--check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub fingerprint: String,
    /// The verdict now: `rejected` or `crashed`.
    pub verdict: Verdict,
    /// The rule that kept it (its `reject` finding, or `crash` / `timeout`).
    pub rule: String,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Confirmed in the work queue and acked out of the dead-letter queue.
    pub moved: usize,
    /// Kept by `--check`, in queue order.
    pub kept: Vec<Kept>,
    /// A signal stopped the replay early.
    pub interrupted: bool,
    /// The kept ones went back in order.
    pub order_kept: bool,
}

/// Runs `dlq replay`; returns the exit status.
pub async fn run(
    args: &DlqReplayArgs,
    shutdown: &crate::shutdown::Shutdown,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let mut kept_lines = Vec::new();
    let result = replay(args, shutdown, |k: &Kept| {
        kept_lines.push(format!(
            "kept  {}  {}  {}",
            k.fingerprint,
            k.verdict.as_str(),
            k.rule
        ));
    })
    .await;
    let summary = match result {
        Ok(s) => s,
        Err((e, partial)) => {
            let _ = writeln!(err, "logfence dlq replay: {e}");
            if partial.moved > 0 {
                let _ = writeln!(
                    err,
                    "logfence dlq replay: {} messages had moved before that; the rest are still in the dead-letter queue",
                    partial.moved
                );
            }
            return e.exit_code();
        }
    };
    for l in &kept_lines {
        let _ = writeln!(out, "{l}");
    }
    let to = target(args).unwrap_or_default();
    let _ = writeln!(
        out,
        "moved {} to {}, kept {} in {}.",
        summary.moved,
        crate::line::escape(&to),
        summary.kept.len(),
        crate::line::escape(&args.queue)
    );
    let _ = out.flush();
    if !summary.order_kept {
        let _ = writeln!(
            err,
            "logfence dlq replay: warning: {} was being consumed meanwhile; the order of the kept messages may have changed",
            args.queue
        );
    }
    if summary.interrupted {
        let _ = writeln!(
            err,
            "logfence dlq replay: interrupted; what had not moved is still in the dead-letter queue"
        );
        EXIT_INTERRUPTED
    } else if summary.kept.is_empty() {
        EXIT_OK
    } else {
        EXIT_KEPT
    }
}

/// `--to`, or `--queue` without its `.dead`.
pub fn target(args: &DlqReplayArgs) -> Result<String, DlqError> {
    let to = match &args.to {
        Some(to) => to.clone(),
        None => match args.queue.strip_suffix(DEAD_SUFFIX) {
            Some(work) if !work.is_empty() => work.to_string(),
            _ => {
                return Err(DlqError::Usage(format!(
                    "--queue {} does not end in '{DEAD_SUFFIX}': say where to replay with --to",
                    args.queue
                )))
            }
        },
    };
    if to == args.queue {
        return Err(DlqError::Usage(format!(
            "--to {to} is the dead-letter queue itself"
        )));
    }
    Ok(to)
}

/// Replays `args.queue` into [`target`]; `on_kept` hears of each message `--check` keeps.
/// On error, also what had been done by then.
pub async fn replay(
    args: &DlqReplayArgs,
    shutdown: &crate::shutdown::Shutdown,
    mut on_kept: impl FnMut(&Kept),
) -> Result<Summary, (DlqError, Summary)> {
    let mut summary = Summary {
        order_kept: true,
        ..Summary::default()
    };
    let fail = |e: DlqError, s: Summary| Err((e, s));
    let setup = async {
        let queue = super::queue_name("--queue", &args.queue)?;
        let to = target(args)?;
        let to = super::queue_name("--to", &to)?;
        let broker = Broker::from_args(&args.broker).map_err(DlqError::Usage)?;
        let checker = if args.check {
            Some(Checker::new(args)?)
        } else {
            None
        };
        Ok::<_, DlqError>((queue, to, broker, checker))
    };
    let (queue, to, broker, mut checker) = match setup.await {
        Ok(s) => s,
        Err(e) => return fail(e, summary),
    };
    let connection = match super::connect(&broker).await {
        Ok(c) => c,
        Err(e) => return fail(e, summary),
    };
    let result = async {
        let depth = super::depth(&connection, &broker, &queue).await?;
        super::depth(&connection, &broker, &to).await?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(DlqError::broker("opening a channel"))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(DlqError::broker("opening a channel"))?;
        let hold = Hold::open(&connection, queue.as_str())
            .await
            .map_err(DlqError::broker("opening a channel"))?;
        let selected = args.limit.map_or(depth, |l| l.min(depth)) as usize;
        Ok::<_, DlqError>((publisher, hold, depth, selected))
    }
    .await;
    let (publisher, mut hold, depth, selected) = match result {
        Ok(r) => r,
        Err(e) => {
            super::close(&connection).await;
            return fail(e, summary);
        }
    };

    let mut taken = 0usize;
    let mut error = None;
    while taken < selected && !shutdown.is_triggered() {
        let want = REPLAY_BATCH.min(selected - taken);
        let mut movers: Vec<(u64, Vec<u8>, BasicProperties)> = Vec::with_capacity(want);
        let mut empty = false;
        for _ in 0..want {
            let message = match hold.take().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    empty = true;
                    break;
                }
                Err(e) => {
                    error = Some(DlqError::broker(format!("reading '{queue}'"))(e));
                    break;
                }
            };
            taken += 1;
            let d = message.delivery;
            if let Some(checker) = checker.as_mut() {
                match checker.verdict(&d.data) {
                    Ok(None) => {}
                    Ok(Some(kept)) => {
                        on_kept(&kept);
                        summary.kept.push(kept);
                        continue;
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            movers.push((d.delivery_tag, d.data, original_properties(&d.properties)));
        }
        match publish_confirmed(&publisher, &to, &movers).await {
            Ok(confirmed) => {
                for &tag in &confirmed {
                    if let Err(e) = hold.ack(tag).await {
                        error = Some(DlqError::broker(format!("acking out of '{queue}'"))(e));
                        break;
                    }
                    summary.moved += 1;
                }
                if confirmed.len() < movers.len() && error.is_none() {
                    error = Some(DlqError::Broker {
                        what: format!("publishing to '{to}'"),
                        reason: "the broker did not confirm a copy (nacked or unroutable)".into(),
                    });
                }
            }
            Err(e) => error = Some(e),
        }
        if error.is_some() || empty {
            break;
        }
    }
    summary.interrupted = shutdown.is_triggered() && taken < selected && error.is_none();
    // Hold the rest of the queue too, so the kept ones go back where they were, and so the
    // acks above are flushed before the channel closes (see `hold`).
    let rest = (depth as usize).saturating_sub(taken) + REST_SLACK;
    match hold.take_rest(rest).await {
        Ok(reached_end) => summary.order_kept &= reached_end,
        Err(e) => {
            error.get_or_insert(DlqError::broker(format!("reading '{queue}'"))(e));
        }
    }
    match hold.give_back().await {
        Ok(back) => summary.order_kept &= back.order_kept,
        Err(e) => {
            error.get_or_insert(DlqError::broker(format!("giving back to '{queue}'"))(e));
        }
    }
    let _ = publisher.close(200, "bye".into()).await;
    super::close(&connection).await;
    match error {
        Some(e) => fail(e, summary),
        None => Ok(summary),
    }
}

/// Publishes every copy, then waits for every confirm; returns the delivery tags whose
/// copies were confirmed, in order, stopping at the first that was not.
async fn publish_confirmed(
    publisher: &Channel,
    to: &ShortString,
    movers: &[(u64, Vec<u8>, BasicProperties)],
) -> Result<Vec<u64>, DlqError> {
    let publishing = || DlqError::broker(format!("publishing to '{to}'"));
    let mut pending = Vec::with_capacity(movers.len());
    for (tag, body, properties) in movers {
        let confirm = publisher
            .basic_publish(
                "".into(),
                to.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties.clone(),
            )
            .await
            .map_err(publishing())?;
        pending.push((*tag, confirm));
    }
    let mut confirmed = Vec::with_capacity(pending.len());
    let mut all_so_far = true;
    for (tag, confirm) in pending {
        // Every confirm is awaited, so none is left dangling; only an unbroken run of
        // confirmed copies counts, so a failure never lets a later message jump ahead.
        let ok = matches!(
            confirm.await.map_err(publishing())?,
            Confirmation::Ack(None)
        );
        all_so_far &= ok;
        if all_so_far {
            confirmed.push(tag);
        }
    }
    Ok(confirmed)
}

/// `--check`: the sandboxed check with the limits given on the command line.
#[derive(Debug)]
struct Checker {
    sandbox: Sandbox,
}

impl Checker {
    fn new(args: &DlqReplayArgs) -> Result<Checker, DlqError> {
        let limits = args.limits.limits();
        Pipeline::new(limits.clone(), &args.line.line_format)
            .map_err(|e| DlqError::Usage(format!("--line-format: {e}")))?;
        let sandbox = crate::check::sandbox_for(&limits, &args.line.line_format)
            .map_err(|e| DlqError::Software(format!("cannot start the sandbox: {e}")))?;
        Ok(Checker { sandbox })
    }

    /// `None` when the message now passes (verdict `ok`, what `check` exits 0 for), else
    /// why it stays. The sandbox is synchronous; it runs on this worker thread with the
    /// runtime told so, for at most `--format-timeout`.
    fn verdict(&mut self, body: &[u8]) -> Result<Option<Kept>, DlqError> {
        let run = tokio::task::block_in_place(|| self.sandbox.run(body))
            .map_err(|e| DlqError::Software(format!("the sandbox failed: {e}")))?;
        let (verdict, rule) = match run {
            Run::Finished(Outcome {
                verdict: Verdict::Ok,
                ..
            }) => return Ok(None),
            Run::Finished(outcome) => {
                let rule = outcome
                    .findings
                    .iter()
                    .find(|f| f.severity == Severity::Reject)
                    .map_or("unknown", |f| f.rule.id());
                (outcome.verdict, rule.to_string())
            }
            Run::Crashed(_) => (Verdict::Crashed, crate::finding::Rule::Crash.id().into()),
            Run::TimedOut(_) => (Verdict::Crashed, crate::finding::Rule::Timeout.id().into()),
        };
        Ok(Some(Kept {
            fingerprint: fingerprint(body),
            verdict,
            rule,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, DlqCommand};
    use clap::Parser;

    fn replay_args(args: &[&str]) -> Box<DlqReplayArgs> {
        let argv = ["logfence", "dlq", "replay"].iter().chain(args);
        let Command::Dlq(DlqCommand::Replay(a)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not replay");
        };
        a
    }

    #[test]
    fn replay_goes_to_the_queue_the_dead_letter_queue_is_named_after() {
        assert_eq!(target(&replay_args(&[])).unwrap(), "logs");
        assert_eq!(
            target(&replay_args(&["--queue", "orders.dead"])).unwrap(),
            "orders"
        );
        assert_eq!(
            target(&replay_args(&["--queue", "x", "--to", "y"])).unwrap(),
            "y"
        );
    }

    #[test]
    fn replay_without_a_target_or_into_itself_is_a_usage_error() {
        for args in [
            &["--queue", "graveyard"][..],
            &["--queue", ".dead"],
            &["--queue", "a.dead", "--to", "a.dead"],
        ] {
            let e = target(&replay_args(args)).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{args:?}: {e}");
        }
    }
}
