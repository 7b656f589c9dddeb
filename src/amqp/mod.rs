//! The consumer's side of RabbitMQ (`dlq` and the amqp sink have their own connections).
//!
//! - [`connect`]: one connection, and the jittered backoff between attempts.
//! - [`tls`]: `amqps://`: the `--tls-ca` file checked at start-up, handshake failures explained.
//! - [`topology`]: the queue, `logfence.dlx` and `<queue>.dead`, declared idempotently.
//! - [`delivery`]: what a delivery says about itself: fingerprint, delivery number, suspicion.
//! - [`suspects`]: the long-lived sandbox thread that renders suspects one after another.
//! - [`consumer`]: the loop: take deliveries, decide, write, dead-letter, settle.
//! - [`deadletter`]: publish a marked copy to `logfence.dlx` and wait for the confirm.
//! - [`settle`]: the only place that acks, rejects or nacks a delivery.
//!
//! Rendering itself is [`crate::pipeline`]: synchronous, and never awaited across.

pub mod connect;
pub mod consumer;
pub mod deadletter;
pub mod delivery;
pub mod settle;
pub mod suspects;
pub mod tls;
pub mod topology;

pub use topology::QueueType;

/// What a rejected record becomes (`--on-reject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnReject {
    /// Its marked fallback line goes to the sink; the message is acked.
    Fallback,
    /// A copy goes to the dead-letter queue; no line.
    DeadLetter,
    /// Both: the fallback line, and a copy in the dead-letter queue.
    Both,
}

impl OnReject {
    /// Whether a rejected record gets its fallback line.
    pub fn writes_fallback(self) -> bool {
        matches!(self, OnReject::Fallback | OnReject::Both)
    }

    /// Whether a rejected record is copied to the dead-letter queue.
    pub fn dead_letters(self) -> bool {
        matches!(self, OnReject::DeadLetter | OnReject::Both)
    }
}
