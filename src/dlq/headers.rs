//! What a dead-lettered message says about why it is there, read from its headers alone, and
//! the original message recovered from it for a replay. Pure: no broker, no I/O.
//!
//! Two kinds of dead letter sit in a logfence dead-letter queue:
//!
//! - ours: the consumer published a marked copy (`x-logfence-rule`, `-detail`, `-deliveries`,
//!   `-fingerprint`, `-dead-lettered-at`; see [`crate::amqp::deadletter`]);
//! - the broker's: a quorum queue's `x-delivery-limit` backstop (or a reject, a TTL, a length
//!   limit) moved the message itself, adding `x-death` (newest event first) and the
//!   `x-first-death-*` headers, and none of ours.
//!
//! Both are listed; ours win when a message carries both.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::amqp::deadletter::{
    DEAD_LETTERED_AT_HEADER, DELIVERIES_HEADER, DETAIL_HEADER, RULE_HEADER,
};
use crate::amqp::delivery::{fingerprint, int_value, ACQUIRED_COUNT_HEADER, DELIVERY_COUNT_HEADER};

/// Every header logfence's consumer adds starts with this.
pub const OURS_PREFIX: &str = "x-logfence-";
/// The broker's record of each dead-lettering, newest first.
pub const X_DEATH: &str = "x-death";
/// `x-first-death-reason`, `-queue`, `-exchange` (and, on newer brokers, `x-last-death-*`).
const BROKER_DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// The rule shown for a message that carries neither our headers nor `x-death`.
pub const UNKNOWN_RULE: &str = "unknown";

/// One dead-lettered message as `dlq list` shows it (docs/commands.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// A rule id (`width-too-large`, `crash`, …), or the broker's reason in kebab case
    /// (`delivery-limit`, `rejected`, `expired`, `maxlen`), or [`UNKNOWN_RULE`].
    pub rule: String,
    /// Why, in words (no message content: the consumer writes none, and the broker's
    /// reason is ours to phrase).
    pub detail: String,
    /// The delivery number at which it was dead-lettered; unknown for the broker's.
    pub deliveries: Option<u64>,
    /// SHA-256 of the body, computed here (so it is right for the broker's too).
    pub fingerprint: String,
    /// Body size in bytes.
    pub size: usize,
    /// When it was dead-lettered: our header, else the newest `x-death` `time`.
    #[serde(serialize_with = "rfc3339")]
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// The queue it was dead-lettered from, where a replay sends it by default: the newest
    /// `x-death` `queue`, else the routing key it arrived with (ours route by queue name).
    pub queue: String,
}

fn rfc3339<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(t)),
        None => s.serialize_none(),
    }
}

/// RFC 3339 in UTC, whole seconds (AMQP timestamps have no more).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl DeadLetter {
    /// Reads one message: its properties, the routing key it was delivered with, its body.
    pub fn read(properties: &BasicProperties, routing_key: &str, body: &[u8]) -> DeadLetter {
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        let death = newest_death(headers);
        let ours = string(headers, RULE_HEADER);
        let (rule, detail) = match (ours, &death) {
            (Some(rule), _) => (rule, string(headers, DETAIL_HEADER).unwrap_or_default()),
            (None, Some(death)) => (death.rule(), death.detail()),
            (None, None) => (UNKNOWN_RULE.to_string(), String::new()),
        };
        let dead_lettered_at = headers
            .inner()
            .get(DEAD_LETTERED_AT_HEADER)
            .and_then(timestamp)
            .or_else(|| death.as_ref().and_then(|d| d.time));
        let queue = match death.as_ref().and_then(|d| d.queue.clone()) {
            Some(q) if string(headers, RULE_HEADER).is_none() => q,
            _ => routing_key.to_string(),
        };
        DeadLetter {
            rule,
            detail,
            deliveries: headers.inner().get(DELIVERIES_HEADER).and_then(int_value),
            fingerprint: fingerprint(body),
            size: body.len(),
            dead_lettered_at,
            queue,
        }
    }
}

/// The newest entry of `x-death`, as far as we read it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Death {
    reason: Option<String>,
    queue: Option<String>,
    time: Option<DateTime<Utc>>,
    count: Option<u64>,
}

impl Death {
    /// `delivery_limit` -> `delivery-limit`: rule ids are kebab case.
    fn rule(&self) -> String {
        match &self.reason {
            Some(r) if !r.is_empty() => r.replace('_', "-"),
            _ => UNKNOWN_RULE.to_string(),
        }
    }

    fn detail(&self) -> String {
        let reason = self.reason.as_deref().unwrap_or("unknown reason");
        let mut detail = format!("dead-lettered by the broker ({reason})");
        if let Some(q) = &self.queue {
            detail.push_str(&format!(" from queue '{q}'"));
        }
        if let Some(n) = self.count.filter(|&n| n > 1) {
            detail.push_str(&format!(", {n} times"));
        }
        detail
    }
}

fn newest_death(headers: &FieldTable) -> Option<Death> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get(X_DEATH)? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    Some(Death {
        reason: string(newest, "reason"),
        queue: string(newest, "queue"),
        time: newest.inner().get("time").and_then(timestamp),
        count: newest.inner().get("count").and_then(int_value),
    })
}

/// A string header (long or short string); invalid UTF-8 is decoded lossily.
fn string(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// An AMQP timestamp (seconds since the epoch), or an integer holding one.
fn timestamp(v: &AMQPValue) -> Option<DateTime<Utc>> {
    let secs = int_value(v)?;
    DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)
}

/// Whether a header was added on the way into the dead-letter queue (by us or the broker),
/// or by a quorum queue's delivery counting (`x-delivery-count`, and from RabbitMQ 4.3
/// `x-acquired-count`), and so is no part of the original message.
pub fn is_added(name: &str) -> bool {
    name.starts_with(OURS_PREFIX)
        || name == X_DEATH
        || name == DELIVERY_COUNT_HEADER
        || name == ACQUIRED_COUNT_HEADER
        || BROKER_DEATH_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The original message's properties: every property and header as published, minus what
/// [`is_added`]. `x-delivery-count` (and `x-acquired-count`) go too, or the work queue's consumer would take the
/// replayed message for a redelivery. A header table left empty is dropped, as most
/// publishers send none.
pub fn original_properties(properties: &BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers() else {
        return properties.clone();
    };
    let mut kept = FieldTable::default();
    for (name, value) in headers {
        if !is_added(name.as_str()) {
            kept.insert(name.clone(), value.clone());
        }
    }
    let original = without_headers(properties);
    if kept.inner().is_empty() {
        original
    } else {
        original.with_headers(kept)
    }
}

/// The properties as they are, minus the broker's delivery counts (`x-delivery-count`,
/// `x-acquired-count`): what a renewed dead letter is published with (see `super::list`).
pub fn without_delivery_counts(properties: &BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers() else {
        return properties.clone();
    };
    let mut kept = FieldTable::default();
    for (name, value) in headers {
        let n = name.as_str();
        if n != DELIVERY_COUNT_HEADER && n != ACQUIRED_COUNT_HEADER {
            kept.insert(name.clone(), value.clone());
        }
    }
    without_headers(properties).with_headers(kept)
}

/// Every property but the header table (lapin offers no way to unset one).
fn without_headers(p: &BasicProperties) -> BasicProperties {
    let mut o = BasicProperties::default();
    if let Some(v) = p.content_type() {
        o = o.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        o = o.with_content_encoding(v.clone());
    }
    if let Some(v) = *p.delivery_mode() {
        o = o.with_delivery_mode(v);
    }
    if let Some(v) = *p.priority() {
        o = o.with_priority(v);
    }
    if let Some(v) = p.correlation_id() {
        o = o.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        o = o.with_reply_to(v.clone());
    }
    if let Some(v) = p.expiration() {
        o = o.with_expiration(v.clone());
    }
    if let Some(v) = p.message_id() {
        o = o.with_message_id(v.clone());
    }
    if let Some(v) = *p.timestamp() {
        o = o.with_timestamp(v);
    }
    if let Some(v) = p.kind() {
        o = o.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        o = o.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        o = o.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        o = o.with_cluster_id(v.clone());
    }
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::amqp::deadletter::FINGERPRINT_HEADER;
    use lapin::types::{FieldArray, LongString};

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn props(pairs: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut h = FieldTable::default();
        for (k, v) in pairs {
            h.insert(k.into(), v);
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h)
    }

    /// What the broker (3.10) adds when a quorum queue's delivery limit is reached.
    fn broker_death(queue: &str, reason: &str, time: u64, count: i64) -> AMQPValue {
        let mut d = FieldTable::default();
        d.insert("count".into(), AMQPValue::LongLongInt(count));
        d.insert("reason".into(), long(reason));
        d.insert("queue".into(), long(queue));
        d.insert("time".into(), AMQPValue::Timestamp(time));
        d.insert("exchange".into(), long(""));
        d.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long(queue)])),
        );
        let mut older = FieldTable::default();
        older.insert("reason".into(), long("rejected"));
        older.insert("queue".into(), long("elsewhere"));
        older.insert("time".into(), AMQPValue::Timestamp(1));
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::FieldTable(d),
            AMQPValue::FieldTable(older),
        ]))
    }

    #[test]
    fn our_headers_give_rule_detail_deliveries_and_time() {
        let p = props(vec![
            ("trace-id", long("t1")),
            (RULE_HEADER, long("width-too-large")),
            (DETAIL_HEADER, long("width 2400000000 > limit 4096")),
            (DELIVERIES_HEADER, AMQPValue::LongLongInt(3)),
            (FINGERPRINT_HEADER, long(&"ab".repeat(32))),
            (DEAD_LETTERED_AT_HEADER, AMQPValue::Timestamp(1_795_000_000)),
        ]);
        let d = DeadLetter::read(&p, "logs", b"abc");
        assert_eq!(d.rule, "width-too-large");
        assert_eq!(d.detail, "width 2400000000 > limit 4096");
        assert_eq!(d.deliveries, Some(3));
        assert_eq!(
            d.fingerprint,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.size, 3);
        assert_eq!(
            d.dead_lettered_at.map(|t| format_time(&t)),
            Some("2026-11-18T11:06:40Z".to_string())
        );
        assert_eq!(d.queue, "logs");
    }

    #[test]
    fn broker_dead_letter_is_listed_from_the_newest_x_death() {
        let p = props(vec![
            (
                "x-death",
                broker_death("work", "delivery_limit", 1_795_000_000, 1),
            ),
            ("x-first-death-reason", long("rejected")),
            (DELIVERY_COUNT_HEADER, AMQPValue::LongLongInt(0)),
        ]);
        let d = DeadLetter::read(&p, "routed-by-key", b"");
        assert_eq!(d.rule, "delivery-limit");
        assert_eq!(
            d.detail,
            "dead-lettered by the broker (delivery_limit) from queue 'work'"
        );
        assert_eq!(d.deliveries, None);
        assert_eq!(d.queue, "work");
        assert_eq!(
            d.dead_lettered_at.map(|t| t.timestamp()),
            Some(1_795_000_000)
        );
    }

    #[test]
    fn our_headers_win_over_x_death_but_its_time_fills_in() {
        let p = props(vec![
            (
                "x-death",
                broker_death("work", "rejected", 1_700_000_000, 4),
            ),
            (RULE_HEADER, long("crash")),
            (DETAIL_HEADER, long("killed by signal 6 (SIGABRT)")),
        ]);
        let d = DeadLetter::read(&p, "logs", b"x");
        assert_eq!((d.rule.as_str(), d.queue.as_str()), ("crash", "logs"));
        assert_eq!(
            d.dead_lettered_at.map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
        let only_death = props(vec![("x-death", broker_death("w", "rejected", 5, 4))]);
        assert_eq!(
            DeadLetter::read(&only_death, "k", b"").detail,
            "dead-lettered by the broker (rejected) from queue 'w', 4 times"
        );
    }

    #[test]
    fn a_message_without_any_dead_letter_header_is_still_listed() {
        let d = DeadLetter::read(&BasicProperties::default(), "logs", b"hi");
        assert_eq!(d.rule, UNKNOWN_RULE);
        assert_eq!(d.detail, "");
        assert_eq!((d.deliveries, d.dead_lettered_at), (None, None));
        assert_eq!((d.size, d.queue.as_str()), (2, "logs"));
    }

    #[test]
    fn malformed_headers_are_read_as_absent_not_as_errors() {
        let p = props(vec![
            (RULE_HEADER, AMQPValue::LongLongInt(7)),
            (DELIVERIES_HEADER, long("3")),
            (DEAD_LETTERED_AT_HEADER, AMQPValue::LongLongInt(-5)),
            ("x-death", long("not an array")),
        ]);
        let d = DeadLetter::read(&p, "q", b"");
        assert_eq!(d.rule, UNKNOWN_RULE);
        assert_eq!((d.deliveries, d.dead_lettered_at), (None, None));
        let short = props(vec![
            (RULE_HEADER, AMQPValue::ShortString("crash".into())),
            (DELIVERIES_HEADER, AMQPValue::ShortShortUInt(2)),
            (DEAD_LETTERED_AT_HEADER, AMQPValue::LongLongInt(60)),
        ]);
        let d = DeadLetter::read(&short, "q", b"");
        assert_eq!((d.rule.as_str(), d.deliveries), ("crash", Some(2)));
        assert_eq!(
            d.dead_lettered_at.map(|t| format_time(&t)),
            Some("1970-01-01T00:01:00Z".to_string())
        );
    }

    #[test]
    fn json_keys_are_stable_and_time_is_rfc3339_or_null() {
        let p = props(vec![
            (RULE_HEADER, long("crash")),
            (DEAD_LETTERED_AT_HEADER, AMQPValue::Timestamp(0)),
        ]);
        let v = serde_json::to_value(DeadLetter::read(&p, "logs", b"")).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "rule",
            "detail",
            "deliveries",
            "fingerprint",
            "size",
            "dead_lettered_at",
            "queue",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["dead_lettered_at"], "1970-01-01T00:00:00Z");
        let none =
            serde_json::to_value(DeadLetter::read(&BasicProperties::default(), "q", b"")).unwrap();
        assert!(none["dead_lettered_at"].is_null());
        assert!(none["deliveries"].is_null());
    }

    #[test]
    fn original_properties_drop_ours_and_the_brokers_and_keep_the_rest() {
        let p = props(vec![
            ("trace-id", long("t1")),
            ("x-custom", AMQPValue::LongLongInt(9)),
            (RULE_HEADER, long("crash")),
            (DETAIL_HEADER, long("d")),
            (DELIVERIES_HEADER, AMQPValue::LongLongInt(2)),
            (FINGERPRINT_HEADER, long("f")),
            (DEAD_LETTERED_AT_HEADER, AMQPValue::Timestamp(1)),
            ("x-death", broker_death("w", "rejected", 1, 1)),
            ("x-first-death-queue", long("w")),
            ("x-first-death-reason", long("rejected")),
            ("x-first-death-exchange", long("")),
            (DELIVERY_COUNT_HEADER, AMQPValue::LongLongInt(3)),
            (ACQUIRED_COUNT_HEADER, AMQPValue::LongLongInt(5)),
        ])
        .with_message_id("m-1".into())
        .with_content_encoding("gzip".into())
        .with_priority(4)
        .with_correlation_id("c".into())
        .with_reply_to("r".into())
        .with_expiration("60000".into())
        .with_timestamp(17)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("cl".into());
        let o = original_properties(&p);
        let mut want_headers = FieldTable::default();
        want_headers.insert("trace-id".into(), long("t1"));
        want_headers.insert("x-custom".into(), AMQPValue::LongLongInt(9));
        assert_eq!(o, p.clone().with_headers(want_headers));
        assert_eq!(o.content_type(), p.content_type());
        assert_eq!(o.delivery_mode(), &Some(2));
        assert_eq!(o.message_id(), p.message_id());
        let h = o.headers().clone().unwrap();
        let names: Vec<&str> = h.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["trace-id", "x-custom"]);
        assert_eq!(h.inner().get("x-custom"), Some(&AMQPValue::LongLongInt(9)));
    }

    #[test]
    fn original_properties_have_no_header_table_when_only_added_headers_were_there() {
        let p = props(vec![(RULE_HEADER, long("crash"))]);
        assert_eq!(original_properties(&p).headers(), &None);
        let bare = BasicProperties::default().with_priority(3);
        assert_eq!(original_properties(&bare), bare);
    }
}
