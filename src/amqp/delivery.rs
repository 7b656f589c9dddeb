//! What a delivery says about itself, read before anything renders it: its fingerprint (the
//! only thing about a message that may appear in our logs), how many times the broker has
//! delivered it, and so whether it is a suspect.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use sha2::{Digest, Sha256};

/// The header quorum queues stamp on redeliveries (absent on a first delivery).
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// The header RabbitMQ 4.3 and later stamp on every message handed out again, whatever
/// brought it back (`x-delivery-count` there counts failed deliveries only).
pub const ACQUIRED_COUNT_HEADER: &str = "x-acquired-count";

/// SHA-256 of the body, 64 lower-case hex characters: how logs, last words and the
/// `x-logfence-fingerprint` header name a message without showing it.
pub fn fingerprint(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The broker's delivery count: `x-delivery-count` as any integer type, `None` when absent
/// or not an integer (a missing header or 0 means a first delivery).
pub fn delivery_count(properties: &BasicProperties) -> Option<u64> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| header(h, DELIVERY_COUNT_HEADER))
        .and_then(int_value)
}

fn header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    headers.inner().get(name)
}

/// Any AMQP integer (or timestamp) as a u64; negative values and non-integers are `None`.
pub(crate) fn int_value(v: &AMQPValue) -> Option<u64> {
    match *v {
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(n)),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(n)),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(n)),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::Timestamp(n) => Some(n),
        _ => None,
    }
}

/// The facts about one delivery that decide its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// [`fingerprint`] of the body.
    pub fingerprint: String,
    /// Which delivery of this message this is, counting from 1: `x-delivery-count` + 1 when
    /// the broker counts (quorum), else 1, or 2 when `redelivered` (classic).
    pub number: u32,
    /// Delivered before: `redelivered`, or a delivery count of at least 1.
    pub suspect: bool,
}

impl Facts {
    pub fn of(body: &[u8], redelivered: bool, properties: &BasicProperties) -> Facts {
        let count = delivery_count(properties);
        Facts::from_parts(fingerprint(body), redelivered, count)
    }

    fn from_parts(fingerprint: String, redelivered: bool, count: Option<u64>) -> Facts {
        let number = match count {
            Some(n) if n >= 1 => u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX),
            _ if redelivered => 2,
            _ => 1,
        };
        Facts {
            fingerprint,
            number,
            suspect: number > 1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    fn props_with_count(v: AMQPValue) -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert(ShortString::from(DELIVERY_COUNT_HEADER), v);
        BasicProperties::default().with_headers(h)
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fingerprint(b"").len(), 64);
    }

    #[test]
    fn first_delivery_without_header_is_not_suspect() {
        let f = Facts::of(b"x", false, &BasicProperties::default());
        assert_eq!((f.number, f.suspect), (1, false));
    }

    #[test]
    fn zero_delivery_count_is_a_first_delivery() {
        let f = Facts::of(b"x", false, &props_with_count(AMQPValue::LongLongInt(0)));
        assert_eq!((f.number, f.suspect), (1, false));
    }

    #[test]
    fn quorum_count_gives_count_plus_one_whatever_the_integer_type() {
        for v in [
            AMQPValue::LongLongInt(3),
            AMQPValue::LongInt(3),
            AMQPValue::LongUInt(3),
            AMQPValue::ShortShortUInt(3),
        ] {
            let f = Facts::of(b"x", true, &props_with_count(v));
            assert_eq!((f.number, f.suspect), (4, true));
        }
    }

    #[test]
    fn classic_redelivery_is_number_two_and_suspect() {
        let f = Facts::of(b"x", true, &BasicProperties::default());
        assert_eq!((f.number, f.suspect), (2, true));
    }

    #[test]
    fn count_without_redelivered_flag_is_still_suspect() {
        let f = Facts::of(b"x", false, &props_with_count(AMQPValue::LongInt(1)));
        assert_eq!((f.number, f.suspect), (2, true));
    }

    #[test]
    fn non_integer_or_negative_count_is_ignored() {
        let f = Facts::of(
            b"x",
            false,
            &props_with_count(AMQPValue::LongString("5".into())),
        );
        assert_eq!(f.number, 1);
        let f = Facts::of(b"x", false, &props_with_count(AMQPValue::LongInt(-2)));
        assert_eq!(f.number, 1);
    }

    #[test]
    fn huge_count_saturates() {
        let f = Facts::of(
            b"x",
            true,
            &props_with_count(AMQPValue::LongLongInt(i64::MAX)),
        );
        assert_eq!(f.number, u32::MAX);
    }
}
