//! The queues and the exchange logfence relies on, declared idempotently (docs/commands.md).
//!
//! Declaring is asserting: an existing queue or exchange with the same arguments is left as
//! it is, and one with other arguments makes the broker refuse (`PRECONDITION_FAILED`), which
//! we report as a configuration error (exit 78). Nothing here ever deletes: a queue full of
//! somebody's messages is never ours to throw away.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

/// The dead-letter exchange: direct, durable, shared by every logfence queue on the vhost
/// (each queue's dead letters are routed by its own name).
pub const DLX: &str = "logfence.dlx";
/// The dead-letter queue of `queue` is `queue` + this.
pub const DEAD_SUFFIX: &str = ".dead";
/// The queue's own `x-delivery-limit` is `--max-deliveries` + this: the broker's backstop,
/// a little above ours, so that ours (which writes the `x-logfence-*` headers) acts first.
pub const BROKER_LIMIT_MARGIN: u32 = 2;
/// The dead-letter queue's own `x-delivery-limit` (quorum): large enough never to be reached.
/// Without one, RabbitMQ 4.0–4.2 apply a default of 20 and count every message handed back,
/// and a queue with no dead-letter exchange of its own drops what passes its limit: twenty
/// `dlq list` runs would empty it. `-1` (unlimited on 4.x) is no way out: 3.x dead-letters
/// such a message on its first return.
pub const DEAD_DELIVERY_LIMIT: i64 = 1_000_000_000;
/// AMQP short strings (queue names) are at most 255 bytes.
pub const MAX_NAME: usize = 255;

/// The type of the queues logfence declares (`--queue-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Replicated; counts deliveries (`x-delivery-count`), so `--max-deliveries` applies.
    Quorum,
    /// Single-node; only `redelivered` tells a redelivery.
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Something exists with other arguments: a configuration problem, not a transient one.
    #[error(
        "the {what} exists with other arguments than logfence declares ({broker}); logfence \
         never deletes anything: remove or fix it, or run with --no-declare"
    )]
    Mismatch { what: String, broker: String },
    /// Any other broker or connection failure: retried after a reconnect.
    #[error("declaring the {what}: {source}")]
    Broker { what: String, source: lapin::Error },
}

/// What to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The queue consumed.
    pub queue: String,
    pub queue_type: QueueType,
    /// `--max-deliveries`: the queue's `x-delivery-limit` is this + [`BROKER_LIMIT_MARGIN`].
    pub max_deliveries: u32,
}

impl Topology {
    /// A topology for `queue`, or why the name cannot work (empty, or too long once
    /// [`DEAD_SUFFIX`] is added).
    pub fn new(
        queue: &str,
        queue_type: QueueType,
        max_deliveries: u32,
    ) -> Result<Topology, String> {
        if queue.is_empty() {
            return Err("--queue must not be empty".to_string());
        }
        if queue.starts_with("amq.") {
            return Err(format!(
                "--queue {queue:?}: names starting with 'amq.' are reserved by the broker"
            ));
        }
        if queue.len() + DEAD_SUFFIX.len() > MAX_NAME {
            return Err(format!(
                "--queue is {} bytes; with '{DEAD_SUFFIX}' it must fit in {MAX_NAME}",
                queue.len()
            ));
        }
        Ok(Topology {
            queue: queue.to_string(),
            queue_type,
            max_deliveries,
        })
    }

    /// The dead-letter queue: `<queue>.dead`.
    pub fn dead_queue(&self) -> String {
        format!("{}{DEAD_SUFFIX}", self.queue)
    }

    /// The consumed queue's arguments. On a quorum queue, the broker's own dead-lettering
    /// (the backstop) is at-least-once, which needs `overflow=reject-publish`.
    pub fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string(self.queue_type.as_str()));
        args.insert("x-dead-letter-exchange".into(), long_string(DLX));
        args.insert("x-dead-letter-routing-key".into(), long_string(&self.queue));
        if self.queue_type == QueueType::Quorum {
            let limit = self.max_deliveries.saturating_add(BROKER_LIMIT_MARGIN);
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(limit)),
            );
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
        args
    }

    /// The dead-letter queue's arguments: the same type, and for quorum a delivery limit
    /// that is never reached ([`DEAD_DELIVERY_LIMIT`]).
    pub fn dead_queue_arguments(&self) -> FieldTable {
        let mut args = self.dead_queue_arguments_before_limit();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DEAD_DELIVERY_LIMIT),
            );
        }
        args
    }

    /// What logfence declared its dead-letter queues with before they had a delivery limit
    /// of their own: the type only. Such a queue is still accepted (see [`Topology::declare_on`]).
    pub fn dead_queue_arguments_before_limit(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string(self.queue_type.as_str()));
        args
    }

    /// [`Topology::declare`] on a channel of its own, and if the dead-letter queue exists
    /// from before dead-letter queues had a delivery limit of their own (the broker refuses
    /// a redeclaration with another argument and closes the channel), accepts it as it is
    /// on a second channel: an upgrade keeps working, and nothing is deleted. Such a queue
    /// is covered by the `delivery-limit` of the policy in `deploy/rabbitmq/definitions.json`,
    /// and `logfence dlq list` renews messages whose delivery count grows (see
    /// `src/dlq/list.rs`). Returns whether that older form was found.
    pub async fn declare_on(&self, connection: &Connection) -> Result<bool, TopologyError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| classify("a channel for declaring".into(), e))?;
        let first = self.declare(&channel).await;
        let older = match first {
            Err(TopologyError::Mismatch { ref what, .. })
                if self.queue_type == QueueType::Quorum && *what == self.dead_what() =>
            {
                let retry = connection
                    .create_channel()
                    .await
                    .map_err(|e| classify("a channel for declaring".into(), e))?;
                let older = self
                    .declare_with(&retry, self.dead_queue_arguments_before_limit())
                    .await;
                let _ = retry.close(200, "declared".into()).await;
                older?;
                true
            }
            other => {
                let _ = channel.close(200, "declared".into()).await;
                other?;
                false
            }
        };
        Ok(older)
    }

    fn dead_what(&self) -> String {
        format!("dead-letter queue '{}'", self.dead_queue())
    }

    /// Declares the exchange, both queues and the binding. Idempotent.
    pub async fn declare(&self, channel: &Channel) -> Result<(), TopologyError> {
        self.declare_with(channel, self.dead_queue_arguments())
            .await
    }

    async fn declare_with(
        &self,
        channel: &Channel,
        dead_arguments: FieldTable,
    ) -> Result<(), TopologyError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let exchange_what = format!("exchange '{DLX}'");
        channel
            .exchange_declare(
                DLX.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(exchange_what, e))?;
        let dead = self.dead_queue();
        channel
            .queue_declare(short(&dead), durable, dead_arguments)
            .await
            .map_err(|e| classify(self.dead_what(), e))?;
        channel
            .queue_bind(
                short(&dead),
                DLX.into(),
                short(&self.queue),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(format!("binding of '{dead}' to '{DLX}'"), e))?;
        channel
            .queue_declare(short(&self.queue), durable, self.queue_arguments())
            .await
            .map_err(|e| classify(format!("queue '{}'", self.queue), e))?;
        Ok(())
    }
}

/// A name already checked against [`MAX_NAME`] by [`Topology::new`].
fn short(name: &str) -> ShortString {
    ShortString::try_new(name).unwrap_or_default()
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// `PRECONDITION_FAILED` is a mismatch; everything else is the broker's or the network's.
fn classify(what: String, e: lapin::Error) -> TopologyError {
    if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
        if amqp.get_id() == 406 {
            return TopologyError::Mismatch {
                what,
                broker: amqp.get_message().to_string(),
            };
        }
    }
    TopologyError::Broker { what, source: e }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn quorum_queue_gets_dead_lettering_and_a_broker_limit_above_ours() {
        let t = Topology::new("logs", QueueType::Quorum, 5).expect("valid");
        let args = t.queue_arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-dead-letter-exchange"), Some(long_string(DLX)));
        assert_eq!(get("x-dead-letter-routing-key"), Some(long_string("logs")));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongLongInt(7)));
        assert_eq!(t.dead_queue(), "logs.dead");
        let dead = t.dead_queue_arguments();
        assert_eq!(
            dead.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(DEAD_DELIVERY_LIMIT))
        );
        assert!(!t
            .dead_queue_arguments_before_limit()
            .contains_key("x-delivery-limit"));
    }

    #[test]
    fn classic_queue_has_no_delivery_limit() {
        let t = Topology::new("logs", QueueType::Classic, 5).expect("valid");
        let args = t.queue_arguments();
        assert!(!args.contains_key("x-delivery-limit"));
        assert!(!args.contains_key("x-overflow"));
        assert!(!t.dead_queue_arguments().contains_key("x-delivery-limit"));
        assert_eq!(
            args.inner().get("x-queue-type"),
            Some(&long_string("classic"))
        );
    }

    #[test]
    fn queue_names_are_checked_before_they_reach_lapin() {
        assert!(Topology::new("", QueueType::Quorum, 5).is_err());
        assert!(Topology::new("amq.logs", QueueType::Quorum, 5).is_err());
        assert!(Topology::new(&"q".repeat(250), QueueType::Quorum, 5).is_ok());
        assert!(Topology::new(&"q".repeat(251), QueueType::Quorum, 5).is_err());
    }
}
