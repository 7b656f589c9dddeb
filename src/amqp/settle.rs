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

    /// Moves one delivery counted by its fate to `unsettled`: the broker was not told after all.
    fn unsettle(&mut self, fate: Fate) {
        let n = match fate {
            Fate::Formatted => &mut self.formatted,
            Fate::Fallback { .. } => &mut self.fallback,
            Fate::DeadLettered => &mut self.dead_lettered,
            Fate::Failed | Fate::Released => &mut self.requeued,
        };
        *n = n.saturating_sub(1);
        self.unsettled += 1;
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

/// One batch's settlement as it goes, held by the caller rather than by the future that
/// settles: the drain timeout may drop that future midway, and what it had already told the
/// broker must still be counted, once, by what it was, and never be told a second verdict.
///
/// A delivery is entered in the same poll that hands its verdict to lapin (an `Acker` queues
/// its frame when first polled, and the frame goes out even if the future is dropped while it
/// waits), and corrected in the poll that learns the verdict was refused: at every await
/// point the ledger agrees with what the broker is told.
#[derive(Debug)]
pub struct Ledger {
    /// Per delivery of the batch, in batch order: its verdict was handed to lapin (or refused).
    told: Vec<bool>,
    /// What the told deliveries became.
    tally: Tally,
}

impl Ledger {
    /// A ledger for a batch of `len` deliveries, none told yet.
    pub fn new(len: usize) -> Ledger {
        Ledger {
            told: vec![false; len],
            tally: Tally::default(),
        }
    }

    /// What the told deliveries became.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// How many deliveries were told (or refused) so far.
    pub fn told(&self) -> usize {
        self.told.iter().filter(|t| **t).count()
    }

    /// What the batch came to when its session ended midway (the connection was lost): the
    /// deliveries not told go back to the queue with the channel, unsettled.
    pub fn abandon(self) -> Tally {
        let untold = self.told.iter().filter(|t| !**t).count() as u64;
        let mut tally = self.tally;
        tally.unsettled += untold;
        tally
    }

    fn tell(&mut self, i: usize, fate: Fate) {
        if let Some(told) = self.told.get_mut(i) {
            *told = true;
        }
        self.tally.count(fate);
    }

    fn is_told(&self, i: usize) -> bool {
        self.told.get(i).copied().unwrap_or(true)
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

/// Settles a batch, entering each delivery in `ledger` (same order as `batch`): every
/// delivery of the channel that is not yet settled, in delivery order. Deliveries the ledger
/// already holds are skipped, so settling the same batch again (a release after a settlement
/// that was cut short) tells only those that were not told.
///
/// When all of them are acks and none was told yet, one `ack` with `multiple` on the last tag
/// settles them all — safe only because no delivery outside the batch has a lower tag than
/// its last one: the consumer loop takes deliveries in order and settles each batch before
/// taking the next (those the broker sent meanwhile have higher tags and are untouched).
pub async fn settle_batch(batch: &[(Acker, Fate)], ledger: &mut Ledger) {
    let fresh = (0..batch.len()).all(|i| !ledger.is_told(i));
    let all_acks = batch.iter().all(|(_, f)| f.verb() == Verb::Ack);
    if fresh && all_acks && batch.len() > 1 {
        let Some((last, _)) = batch.last() else {
            return;
        };
        for (i, (_, fate)) in batch.iter().enumerate() {
            ledger.tell(i, *fate);
        }
        match last.ack(BasicAckOptions { multiple: true }).await {
            Ok(true) => {}
            Ok(false) | Err(_) => batch
                .iter()
                .for_each(|(_, fate)| ledger.tally.unsettle(*fate)),
        }
        hold().await;
        return;
    }
    for (i, (acker, fate)) in batch.iter().enumerate() {
        if ledger.is_told(i) {
            continue;
        }
        ledger.tell(i, *fate);
        if !settle(acker, *fate).await {
            ledger.tally.unsettle(*fate);
        }
    }
    hold().await;
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

    async fn settle_all(batch: &[(Acker, Fate)]) -> Tally {
        let mut ledger = Ledger::new(batch.len());
        settle_batch(batch, &mut ledger).await;
        ledger.tally()
    }

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
        let tally = settle_all(&[(d.acker.clone(), Fate::Released)]).await;
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
        let batch: Vec<_> = ackers.into_iter().zip(fates).collect();
        let tally = settle_all(&batch).await;
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

    fn mocks(n: u64) -> Vec<Acker> {
        (1..=n)
            .map(|t| Delivery::mock(t, "".into(), "q".into(), false, vec![]).acker)
            .collect()
    }

    #[tokio::test]
    async fn a_release_after_a_cut_short_settlement_tells_only_the_untold() {
        // A settlement cut short after the first two of four (one ack with `multiple` on the
        // second tag): the release that follows nacks the last two only, and the first two
        // stay counted as what they were (not as requeued, not as unsettled).
        let ackers = mocks(4);
        let done: Vec<_> = ackers
            .iter()
            .map(|a| (a.clone(), Fate::Formatted))
            .collect();
        let mut ledger = Ledger::new(4);
        settle_batch(&done[..2], &mut ledger).await;
        assert_eq!(ledger.told(), 2);
        let release: Vec<_> = ackers.iter().map(|a| (a.clone(), Fate::Released)).collect();
        settle_batch(&release, &mut ledger).await;
        assert_eq!(ledger.told(), 4);
        assert_eq!(
            ledger.tally(),
            Tally {
                formatted: 2,
                requeued: 2,
                ..Tally::default()
            }
        );
        // The lower tag of the multiple ack was never handed a second verdict.
        assert!(ackers[0].usable(), "tag 1 was settled by the ack on tag 2");
    }

    #[tokio::test]
    async fn a_refused_verdict_is_counted_unsettled_once() {
        let ackers = mocks(2);
        let mut ledger = Ledger::new(2);
        // Tag 2 was used elsewhere: its acker refuses; the batch is not all acks, so each
        // delivery is told on its own.
        assert!(settle(&ackers[1], Fate::Released).await);
        let batch = [
            (ackers[0].clone(), Fate::Formatted),
            (ackers[1].clone(), Fate::Failed),
        ];
        settle_batch(&batch, &mut ledger).await;
        settle_batch(&batch, &mut ledger).await;
        assert_eq!(
            ledger.tally(),
            Tally {
                formatted: 1,
                unsettled: 1,
                ..Tally::default()
            }
        );
    }
}
