//! The only place that acks, rejects or nacks a delivery: one exhaustive `match` over what
//! became of it.
//!
//! Settle with intent. `ack`: the message is done with (its line is on the sink, or its copy
//! is confirmed in the dead-letter queue, or both). `reject` with requeue: *this message*
//! failed (its dead-letter copy was refused), so the broker may count it against the delivery
//! limit. `nack` with requeue: we are letting go of it for reasons of our own (shutting down,
//! the sink failed), so give it to someone else.
//!
//! lapin's `Acker` says `Ok(false)` when its channel is gone (poisoned) or it was already used:
//! that message is *not* settled (the broker requeues it with the channel), and it is not
//! counted as if it were.

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::Acker;

/// What became of a delivery once its side effects are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Rendered; its line is on the sink.
    Formatted,
    /// Rejected; its fallback line is on the sink (and, when `copied`, a copy in the DLQ).
    Fallback { copied: bool },
    /// Its copy is confirmed in the dead-letter queue; no line.
    DeadLettered,
    /// Its dead-letter copy was not confirmed: the message failed, hand it back (`reject`).
    Failed,
    /// Let go unfinished (shutdown, a sink failure, no sandbox): hand it back (`nack`).
    Released,
}

/// How a fate is told to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Ack,
    Reject,
    Nack,
}

impl Fate {
    fn verb(self) -> Verb {
        match self {
            Fate::Formatted | Fate::Fallback { .. } | Fate::DeadLettered => Verb::Ack,
            Fate::Failed => Verb::Reject,
            Fate::Released => Verb::Nack,
        }
    }
}

/// Settled deliveries by what became of them: the outcomes of `logfence_messages_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Line written, acked.
    pub formatted: u64,
    /// Fallback line written (and maybe copied to the DLQ), acked.
    pub fallback: u64,
    /// In the DLQ with no line, acked.
    pub dead_lettered: u64,
    /// Handed back to the broker (rejected or nacked with requeue).
    pub requeued: u64,
    /// Could not be settled: the channel was gone. The broker requeues these by itself.
    pub unsettled: u64,
}

impl Tally {
    fn count(&mut self, fate: Fate) {
        match fate {
            Fate::Formatted => self.formatted += 1,
            Fate::Fallback { .. } => self.fallback += 1,
            Fate::DeadLettered => self.dead_lettered += 1,
            Fate::Failed | Fate::Released => self.requeued += 1,
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.formatted += other.formatted;
        self.fallback += other.fallback;
        self.dead_lettered += other.dead_lettered;
        self.requeued += other.requeued;
        self.unsettled += other.unsettled;
    }

    /// Messages settled, whatever became of them.
    pub fn settled(&self) -> u64 {
        self.formatted + self.fallback + self.dead_lettered + self.requeued
    }
}

/// Settles one delivery. Returns whether the broker was told.
pub async fn settle(acker: &Acker, fate: Fate) -> bool {
    let told = match fate.verb() {
        Verb::Ack => acker.ack(BasicAckOptions::default()).await,
        Verb::Reject => acker.reject(BasicRejectOptions { requeue: true }).await,
        Verb::Nack => {
            acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
        }
    };
    match told {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(?fate, "not settled: the delivery's channel is gone");
            false
        }
        Err(error) => {
            tracing::debug!(?fate, %error, "not settled");
            false
        }
    }
}

/// Settles a batch: every delivery of the channel that is not yet settled, in delivery order.
/// When all of them are acks, one `ack` with `multiple` on the last tag settles them all —
/// safe only because no delivery outside the batch has a lower tag than its last one: the
/// consumer loop takes deliveries in order and settles each batch before taking the next
/// (those the broker sent meanwhile have higher tags and are untouched).
pub async fn settle_batch(batch: Vec<(Acker, Fate)>) -> Tally {
    let mut tally = Tally::default();
    let all_acks = batch.iter().all(|(_, f)| f.verb() == Verb::Ack);
    if all_acks && batch.len() > 1 {
        let Some((last, _)) = batch.last() else {
            return tally;
        };
        match last.ack(BasicAckOptions { multiple: true }).await {
            Ok(true) => batch.iter().for_each(|(_, fate)| tally.count(*fate)),
            Ok(false) | Err(_) => tally.unsettled += batch.len() as u64,
        }
        hold().await;
        return tally;
    }
    for (acker, fate) in &batch {
        if settle(acker, *fate).await {
            tally.count(*fate);
        } else {
            tally.unsettled += 1;
        }
    }
    hold().await;
    tally
}

/// The `settle-hold` failpoint: a settlement held once the broker was told.
async fn hold() {
    if let Some(hold) = crate::faults::settle_hold() {
        tokio::time::sleep(hold).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use lapin::message::Delivery;

    #[test]
    fn every_fate_has_one_verb() {
        assert_eq!(Fate::Formatted.verb(), Verb::Ack);
        assert_eq!(Fate::Fallback { copied: true }.verb(), Verb::Ack);
        assert_eq!(Fate::DeadLettered.verb(), Verb::Ack);
        assert_eq!(Fate::Failed.verb(), Verb::Reject);
        assert_eq!(Fate::Released.verb(), Verb::Nack);
    }

    #[tokio::test]
    async fn a_used_acker_is_not_counted_twice() {
        // A mock delivery has no channel: its first ack "succeeds" locally, the second is
        // refused, as lapin refuses a poisoned or used acker.
        let d = Delivery::mock(1, "".into(), "q".into(), false, b"x".to_vec());
        assert!(settle(&d.acker, Fate::Formatted).await);
        assert!(!settle(&d.acker, Fate::Formatted).await);
        let tally = settle_batch(vec![(d.acker.clone(), Fate::Released)]).await;
        assert_eq!((tally.requeued, tally.unsettled), (0, 1));
    }

    #[tokio::test]
    async fn tally_counts_each_outcome() {
        let ackers: Vec<_> = (1..=4)
            .map(|t| Delivery::mock(t, "".into(), "q".into(), false, vec![]).acker)
            .collect();
        let fates = [
            Fate::Formatted,
            Fate::Fallback { copied: true },
            Fate::DeadLettered,
            Fate::Released,
        ];
        let tally = settle_batch(ackers.into_iter().zip(fates).collect()).await;
        assert_eq!(
            tally,
            Tally {
                formatted: 1,
                fallback: 1,
                dead_lettered: 1,
                requeued: 1,
                unsettled: 0
            }
        );
    }
}
