//! Taking messages from a queue without settling them, and giving them back in order.
//!
//! `dlq list` reads a queue it must leave exactly as it found it, and `dlq replay --check`
//! leaves the messages it keeps where they were. Both take each message with `basic.get`
//! (no auto-ack), hold it unsettled, and give it back with `basic.nack(requeue)`. The one ack
//! is [`Hold::ack`], for a message `dlq replay` has confirmed in the work queue; a crash loses
//! nothing: the broker requeues whatever a dead channel held.
//!
//! Order is the hard part. Measured on RabbitMQ 3.10.8 (`tests/it/dlq.rs` pins what we rely on):
//!
//! - a classic queue puts a requeued message back at its old position, however it comes
//!   back (closing the channel, one `nack(multiple)` of the whole batch, one by one);
//! - a quorum queue reorders more than 32 messages given back at once: closing the channel,
//!   `nack(multiple)` of the whole batch, and even one `nack` per message (the channel's
//!   queue client merges returns that arrive while a command is in flight) all shuffled a
//!   100-message queue. It applies one return command in the order of an Erlang map of the
//!   message ids, which is key order only up to 32 keys (a "flatmap"); 33 or more come back
//!   in hash order. Batches of 32, each sent once the one before is visible, kept the order
//!   of 100 and of 1,000 messages, three rounds each; batches of 64 did not;
//! - a quorum queue puts a returned message at the *tail*, behind every message still
//!   ready: giving back only the first half of a queue swaps the halves (3.10 without a
//!   delivery limit; with one, and on every 4.x, a return goes to the *head*, in the order
//!   returned: `tests/it/brokers.rs` pins what each version does);
//! - a quorum queue can lose acks sent just before the channel closes (they wait in the
//!   channel's queue client behind commands in flight, and the close drops them): 27 of 60
//!   acked messages came back. A `basic.get` that finds the queue empty, after the acks and
//!   before the close, flushed them every time (12 of 12 runs).
//!
//! So whoever holds part of a queue first takes the rest ([`Hold::take_rest`]): the queue is
//! then held whole and comes back whole (so head or tail makes no difference), and the last `basic.get`, empty, is the barrier
//! that flushes the acks. It goes back in batches of at most [`GIVE_BACK_BATCH`], one
//! `nack(multiple)` each, oldest first, the next batch only once the previous one shows in
//! the ready count: each batch is one return command, in key order, queued behind the one
//! before. That keeps the order on both queue types; a quorum queue pays about 0.1–0.2 s a
//! batch. If a batch does not show within [`BATCH_VISIBLE_WITHIN`] (someone else is
//! consuming the queue), the rest still go back, and [`GiveBack::order_kept`] says the
//! order may have changed. Messages published to the queue while it is held land before
//! the ones given back (on a quorum queue), which is the one change of order left.
//!
//! A SIGKILL, or a lost connection, in the middle still loses nothing, but then the broker
//! requeues everything held at once, and a quorum queue may come back reordered.

use std::time::{Duration, Instant};

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};

/// The most messages given back in one `nack(multiple)`: a quorum queue applies a larger
/// return in hash order (see the module doc).
pub const GIVE_BACK_BATCH: usize = 32;
/// How long one batch may take to show up in the ready count before we stop waiting.
pub const BATCH_VISIBLE_WITHIN: Duration = Duration::from_secs(15);
/// How many more messages than the queue held at the start [`Hold::take_rest`] takes
/// before it gives up on reaching the end of a queue that keeps filling.
pub const REST_SLACK: usize = 1000;
/// First and longest pause between two looks at the ready count.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(25);

/// A channel holding unsettled messages of one queue.
#[derive(Debug)]
pub struct Hold {
    channel: Channel,
    queue: ShortString,
    /// Delivery tags taken and neither acked nor given back, oldest first.
    held: Vec<u64>,
}

/// How a give-back went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveBack {
    /// Messages given back.
    pub returned: usize,
    /// Every batch was seen back in the queue before the next went: the order is kept.
    pub order_kept: bool,
}

impl Hold {
    /// A channel of its own for `queue` (which must exist: a missing one closes it).
    pub async fn open(connection: &Connection, queue: &str) -> Result<Hold, lapin::Error> {
        Ok(Hold {
            channel: connection.create_channel().await?,
            queue: ShortString::from(queue),
            held: Vec::new(),
        })
    }

    /// The queue's ready messages (held ones are not counted).
    pub async fn ready(&self) -> Result<u32, lapin::Error> {
        ready(&self.channel, &self.queue).await
    }

    /// Takes the next message and holds it; `None` when the queue has none ready.
    pub async fn take(&mut self) -> Result<Option<BasicGetMessage>, lapin::Error> {
        let got = self
            .channel
            .basic_get(self.queue.clone(), BasicGetOptions { no_ack: false })
            .await?;
        if let Some(m) = &got {
            self.held.push(m.delivery.delivery_tag);
        }
        pause_point();
        Ok(got)
    }

    /// Acks one held message: it leaves the queue for good (a replay, once its copy is
    /// confirmed in the work queue).
    pub async fn ack(&mut self, tag: u64) -> Result<(), lapin::Error> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await?;
        self.held.retain(|&t| t != tag);
        Ok(())
    }

    /// Takes and holds everything still ready, at most `at_most` messages, so that giving
    /// back restores the whole queue in order, and so that the last `basic.get` (empty)
    /// flushes every ack sent before it (see the module doc). Returns whether it got to
    /// that empty get; not if the queue kept filling faster (then the order of what was
    /// published meanwhile may change, and an ack may be lost: a duplicate, not a loss).
    pub async fn take_rest(&mut self, at_most: usize) -> Result<bool, lapin::Error> {
        for _ in 0..=at_most {
            if self.take().await?.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Messages held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Gives every held message back, in order (see the module doc), and closes the channel.
    pub async fn give_back(mut self) -> Result<GiveBack, lapin::Error> {
        let held = std::mem::take(&mut self.held);
        let mut order_kept = true;
        let mut returned = 0;
        for batch in held.chunks(GIVE_BACK_BATCH) {
            let Some(&last) = batch.last() else { continue };
            let before = self.ready().await?;
            // Everything held up to `last` is exactly this batch: older ones went back
            // already, acked ones are settled.
            self.channel
                .basic_nack(
                    last,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
            returned += batch.len();
            let want = u64::from(before) + batch.len() as u64;
            if !self.wait_ready_at_least(want).await? {
                order_kept = false;
            }
        }
        let _ = self.channel.close(200, "given back".into()).await;
        Ok(GiveBack {
            returned,
            order_kept,
        })
    }

    /// Polls the ready count until it reaches `want`, at most [`BATCH_VISIBLE_WITHIN`].
    async fn wait_ready_at_least(&self, want: u64) -> Result<bool, lapin::Error> {
        let until = Instant::now() + BATCH_VISIBLE_WITHIN;
        let mut pause = POLL_FIRST;
        loop {
            if u64::from(self.ready().await?) >= want {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// `queue.declare(passive)`: the ready count of a queue that exists.
pub async fn ready(channel: &Channel, queue: &ShortString) -> Result<u32, lapin::Error> {
    let q = channel
        .queue_declare(
            queue.clone(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// The `dlq-hold` failpoint, after each message taken: `FAILPOINTS=dlq-hold=sleep(100)`
/// makes a listing slow enough for a test to interrupt it mid-way, deterministically.
fn pause_point() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("dlq-hold");
}
