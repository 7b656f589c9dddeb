//! Dead-lettering: publish a marked copy to `logfence.dlx`, wait for the broker's confirm,
//! and only then let the original be acked.
//!
//! The copy keeps the body byte for byte and every property (headers included) and gains
//! `x-logfence-rule`, `x-logfence-detail`, `x-logfence-deliveries` (a long-long integer) and
//! `x-logfence-fingerprint` and `x-logfence-dead-lettered-at` (an AMQP timestamp, read by
//! `dlq list`). It is published `mandatory` on a channel of its own in confirm
//! mode, so an unroutable copy (no `<queue>.dead` bound) comes back as a failure instead of
//! vanishing. A crash between the confirm and the ack yields a duplicate in the DLQ, never
//! a loss.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::delivery::Facts;
use super::topology::DLX;
use crate::finding::Rule;

pub const RULE_HEADER: &str = "x-logfence-rule";
pub const DETAIL_HEADER: &str = "x-logfence-detail";
pub const DELIVERIES_HEADER: &str = "x-logfence-deliveries";
pub const FINGERPRINT_HEADER: &str = "x-logfence-fingerprint";
/// When the copy was made: an AMQP timestamp (seconds since the epoch, UTC).
pub const DEAD_LETTERED_AT_HEADER: &str = "x-logfence-dead-lettered-at";

/// Why a message goes to the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// A reject rule, or `crash` / `timeout` / `delivery-limit`.
    pub rule: Rule,
    /// Human text for `x-logfence-detail`.
    pub detail: String,
}

/// Why a copy did not make it.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("publishing to {DLX}: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker nacked the copy")]
    Nacked,
    #[error("the copy was unroutable ({code} {text}): is the dead-letter queue bound to {DLX}?")]
    Returned { code: u16, text: String },
}

/// The publishing side of dead-lettering: a confirm-mode channel and the routing key.
#[derive(Debug)]
pub struct DeadLetterer {
    channel: Channel,
    /// The binding key of `<queue>.dead` on the DLX: the queue's name.
    routing_key: ShortString,
}

impl DeadLetterer {
    /// Opens a channel in confirm mode for copies of `queue`'s messages.
    pub async fn open(connection: &Connection, queue: &str) -> Result<DeadLetterer, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(DeadLetterer {
            channel,
            routing_key: ShortString::try_new(queue).unwrap_or_default(),
        })
    }

    /// Publishes every copy, then waits for every confirm: one round trip for a batch.
    /// The results are in the order of `copies`.
    pub async fn publish_all(
        &self,
        copies: Vec<(&[u8], BasicProperties)>,
    ) -> Vec<Result<(), DeadLetterError>> {
        let mut pending = Vec::with_capacity(copies.len());
        for (body, properties) in copies {
            let published = self
                .channel
                .basic_publish(
                    DLX.into(),
                    self.routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    body,
                    properties,
                )
                .await;
            pending.push(published);
        }
        let mut results = Vec::with_capacity(pending.len());
        for published in pending {
            let result = match published {
                Err(e) => Err(DeadLetterError::Broker(e)),
                Ok(confirm) => match confirm.await {
                    Err(e) => Err(DeadLetterError::Broker(e)),
                    Ok(Confirmation::Ack(None)) => Ok(()),
                    Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                        Err(DeadLetterError::Returned {
                            code: returned.reply_code,
                            text: returned.reply_text.to_string(),
                        })
                    }
                    Ok(Confirmation::Nack(None)) => Err(DeadLetterError::Nacked),
                    Ok(Confirmation::NotRequested) => Err(DeadLetterError::Nacked),
                },
            };
            results.push(result);
        }
        results
    }

    /// Closes the channel (best effort: the connection may already be gone).
    pub async fn close(&self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}

/// The copy's properties: the original's, with the `x-logfence-*` headers added, stamped
/// with the current time.
pub fn marked_properties(
    original: &BasicProperties,
    reason: &Reason,
    facts: &Facts,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(
        RULE_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.rule.id())),
    );
    headers.insert(
        DETAIL_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.detail.as_str())),
    );
    headers.insert(
        DELIVERIES_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(facts.number)),
    );
    headers.insert(
        FINGERPRINT_HEADER.into(),
        AMQPValue::LongString(LongString::from(facts.fingerprint.as_str())),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    headers.insert(DEAD_LETTERED_AT_HEADER.into(), AMQPValue::Timestamp(now));
    original.clone().with_headers(headers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    #[test]
    fn marked_copy_keeps_properties_and_headers_and_adds_ours() {
        let mut h = FieldTable::default();
        h.insert("trace-id".into(), AMQPValue::LongString("t1".into()));
        let original = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h);
        let facts = Facts {
            fingerprint: "ab".repeat(32),
            number: 3,
            suspect: true,
        };
        let reason = Reason {
            rule: Rule::Crash,
            detail: "killed by signal 6 (SIGABRT)".into(),
        };
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let marked = marked_properties(&original, &reason, &facts);
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(marked.content_type(), original.content_type());
        assert_eq!(marked.delivery_mode(), &Some(2));
        let h = marked.headers().clone().unwrap_or_default();
        let get = |k: &str| h.inner().get(k).cloned();
        assert_eq!(get("trace-id"), Some(AMQPValue::LongString("t1".into())));
        assert_eq!(
            get(RULE_HEADER),
            Some(AMQPValue::LongString("crash".into()))
        );
        assert_eq!(get(DELIVERIES_HEADER), Some(AMQPValue::LongLongInt(3)));
        assert_eq!(
            get(FINGERPRINT_HEADER),
            Some(AMQPValue::LongString("ab".repeat(32).into()))
        );
        assert_eq!(
            get(DETAIL_HEADER),
            Some(AMQPValue::LongString("killed by signal 6 (SIGABRT)".into()))
        );
        match get(DEAD_LETTERED_AT_HEADER) {
            Some(AMQPValue::Timestamp(t)) => assert!((before..=after).contains(&t), "{t}"),
            other => panic!("no dead-lettering time: {other:?}"),
        }
    }
}
