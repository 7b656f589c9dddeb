//! `logfence dlq list`: every dead letter, and the queue left exactly as it was found.
//!
//! Up to the depth seen at the start, each message is taken unsettled ([`super::hold`]) and
//! read for its headers and fingerprint (its body is dropped at once); then all are given
//! back, in order. A signal stops the reading, not the holding: the rest of the queue is
//! still taken (unread) before anything goes back, since a quorum queue would put a
//! half given back out of place. Never an ack for a message that is not already confirmed
//! elsewhere: a crash loses nothing.
//!
//! Each listing hands every message back with a `basic.nack`, which a quorum queue counts as
//! a delivery up to RabbitMQ 4.2 (`x-delivery-count` + 1; from 4.3 only `x-acquired-count`
//! grows). The dead-letter queues logfence declares have a delivery limit that is never
//! reached, but one an older logfence declared has none of its own, and 4.0-4.2 give it a
//! default of 20, past which a message with nowhere to be dead-lettered is dropped. So once
//! a listing sees a message whose count reached [`RENEW_AT`], it renews the queue: each
//! message, from the head, is published again to the tail (the same body, properties and
//! headers, minus the delivery counts) with a publisher confirm, and only then acked; then
//! the queue is held whole and given back once, so that its acks are flushed and its order
//! kept. The queue ends as it was, order included, with its counts back at one; a crash in
//! the middle leaves a duplicate, never a loss. A replay drops both count headers.

use std::io::Write;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::{Confirmation, Connection};

use super::headers::{format_time, without_delivery_counts, DeadLetter};
use super::hold::{Hold, REST_SLACK};
use super::{DlqError, EXIT_INTERRUPTED, EXIT_OK};
use crate::amqp::connect::Broker;
use crate::amqp::delivery::delivery_count;
use crate::cli::DlqListArgs;
use crate::line;
use crate::shutdown::Shutdown;

/// A listing that sees a message with this `x-delivery-count` renews the queue (see the
/// module doc): well below the default limit of 20 that RabbitMQ 4.0-4.2 give a quorum
/// queue without one, so that a listing interrupted or run concurrently still has room.
pub const RENEW_AT: u64 = 10;

/// What one listing found.
#[derive(Debug)]
pub struct Listing {
    /// In queue order.
    pub entries: Vec<DeadLetter>,
    /// Ready messages when the listing started.
    pub depth: u32,
    /// A signal stopped the listing before `depth` messages were read.
    pub interrupted: bool,
    /// Every message went back in order (see [`super::hold`]).
    pub order_kept: bool,
    /// Messages renewed because their delivery count grew (see the module doc).
    pub renewed: usize,
}

/// Runs `dlq list`; returns the exit status.
pub async fn run(
    args: &DlqListArgs,
    shutdown: &Shutdown,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let listing = match list(args, shutdown).await {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(err, "logfence dlq list: {e}");
            return e.exit_code();
        }
    };
    let written = if args.json {
        write_json(out, &listing.entries)
    } else {
        write_table(out, &listing.entries)
            .and_then(|()| writeln!(out, "{}", total_line(&listing, &args.queue)))
    };
    let _ = out.flush();
    if written.is_err() {
        return super::EXIT_SOFTWARE;
    }
    if !listing.order_kept {
        let _ = writeln!(
            err,
            "logfence dlq list: warning: {} was being consumed meanwhile; its order may have changed",
            args.queue
        );
    }
    if listing.renewed > 0 {
        let _ = writeln!(
            err,
            "logfence dlq list: renewed {} messages of {} whose delivery count reached {RENEW_AT}, so the broker's delivery limit never drops them",
            listing.renewed, args.queue
        );
    }
    if listing.interrupted {
        let _ = writeln!(
            err,
            "logfence dlq list: interrupted after {} of {} messages; every message was given back",
            listing.entries.len(),
            listing.depth
        );
        return EXIT_INTERRUPTED;
    }
    EXIT_OK
}

/// Lists `args.queue` and gives every message back.
pub async fn list(args: &DlqListArgs, shutdown: &Shutdown) -> Result<Listing, DlqError> {
    let queue = super::queue_name("--queue", &args.queue)?;
    let broker = Broker::from_args(&args.broker).map_err(DlqError::Usage)?;
    let connection = super::connect(&broker).await?;
    let depth = super::depth(&connection, &broker, &queue).await?;
    let mut hold = Hold::open(&connection, &args.queue)
        .await
        .map_err(DlqError::broker("opening a channel"))?;
    let mut entries = Vec::with_capacity(depth.min(100_000) as usize);
    let mut most_counted = 0;
    while entries.len() < depth as usize && !shutdown.is_triggered() {
        let taken = hold
            .take()
            .await
            .map_err(DlqError::broker(format!("reading '{}'", args.queue)))?;
        let Some(message) = taken else { break };
        let d = &message.delivery;
        most_counted = most_counted.max(delivery_count(&d.properties).unwrap_or(0));
        entries.push(DeadLetter::read(
            &d.properties,
            d.routing_key.as_str(),
            &d.data,
        ));
    }
    let interrupted = shutdown.is_triggered() && entries.len() < depth as usize;
    // Interrupted or not, the queue is held whole before it goes back (see `hold`).
    let rest = (depth as usize).saturating_sub(entries.len()) + REST_SLACK;
    let reached_end = hold
        .take_rest(rest)
        .await
        .map_err(DlqError::broker(format!("reading '{}'", args.queue)))?;
    let back = hold
        .give_back()
        .await
        .map_err(DlqError::broker(format!("giving back '{}'", args.queue)))?;
    let mut order_kept = back.order_kept && reached_end;
    let mut renewed = 0;
    if most_counted >= RENEW_AT && !interrupted && order_kept {
        let (n, kept) = renew(&connection, &args.queue, back.returned)
            .await
            .map_err(DlqError::broker(format!("renewing '{}'", args.queue)))?;
        renewed = n;
        order_kept = kept;
    }
    super::close(&connection).await;
    Ok(Listing {
        entries,
        depth,
        interrupted,
        order_kept,
        renewed,
    })
}

/// Renews the first `n` messages of `queue` (see the module doc); returns how many, and
/// whether the order was kept. On an error, whatever is held goes back with the channel
/// (counted once more), and nothing unconfirmed was acked.
pub async fn renew(
    connection: &Connection,
    queue: &str,
    n: usize,
) -> Result<(usize, bool), lapin::Error> {
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut hold = Hold::open(connection, queue).await?;
    let mut renewed = 0;
    while renewed < n {
        let Some(message) = hold.take().await? else {
            break;
        };
        let d = message.delivery;
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &d.data,
                without_delivery_counts(&d.properties),
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            // Not in the queue: the original stays, held, and goes back below.
            break;
        }
        hold.ack(d.delivery_tag).await?;
        renewed += 1;
    }
    let reached_end = hold.take_rest(n + REST_SLACK).await?;
    let back = hold.give_back().await?;
    let _ = publisher.close(200, "renewed".into()).await;
    Ok((renewed, reached_end && back.order_kept))
}

/// One JSON object per message, in queue order, one line each for every line reader (see
/// `line::JsonSafe`).
pub fn write_json(out: &mut impl Write, entries: &[DeadLetter]) -> std::io::Result<()> {
    for e in entries {
        serde_json::to_writer(line::JsonSafe::new(&mut *out), e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Fingerprints are shown by their first 16 hex digits in the table (enough to find one in
/// the consumer's logs); `--json` has all 64.
pub const SHORT_FINGERPRINT: usize = 16;

const HEADINGS: [&str; 7] = [
    "DEAD-LETTERED",
    "RULE",
    "DELIVERIES",
    "SIZE",
    "FINGERPRINT",
    "QUEUE",
    "DETAIL",
];

/// One aligned row per message. Header text comes from whoever published the message, so
/// every cell is escaped like a log line: a header can never repaint the terminal.
pub fn write_table(out: &mut impl Write, entries: &[DeadLetter]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 7]> = entries.iter().map(row).collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_row(out, &HEADINGS.map(str::to_string), &widths)?;
    for r in &rows {
        write_row(out, r, &widths)?;
    }
    Ok(())
}

fn row(e: &DeadLetter) -> [String; 7] {
    [
        e.dead_lettered_at
            .as_ref()
            .map_or_else(|| "-".to_string(), format_time),
        line::escape(&e.rule).into_owned(),
        e.deliveries
            .map_or_else(|| "-".to_string(), |n| n.to_string()),
        e.size.to_string(),
        e.fingerprint.chars().take(SHORT_FINGERPRINT).collect(),
        line::escape(&e.queue).into_owned(),
        line::escape(&e.detail).into_owned(),
    ]
}

/// Cells padded to their column; numbers right-aligned; the last column unpadded.
fn write_row(
    out: &mut impl Write,
    cells: &[String; 7],
    widths: &[usize; 7],
) -> std::io::Result<()> {
    let mut text = String::new();
    for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        let pad = w.saturating_sub(cell.chars().count());
        let numeric = i == 2 || i == 3;
        if i == cells.len() - 1 {
            text.push_str(cell);
        } else if numeric {
            text.push_str(&" ".repeat(pad));
            text.push_str(cell);
            text.push_str("  ");
        } else {
            text.push_str(cell);
            text.push_str(&" ".repeat(pad + 2));
        }
    }
    writeln!(out, "{}", text.trim_end())
}

/// `3 messages (1,234 bytes) in logs.dead, left as found.`
pub fn total_line(listing: &Listing, queue: &str) -> String {
    let n = listing.entries.len();
    let bytes: usize = listing.entries.iter().map(|e| e.size).sum();
    let noun = if n == 1 { "message" } else { "messages" };
    let tail = if listing.interrupted {
        format!(" (interrupted; {} were ready)", listing.depth)
    } else {
        String::new()
    };
    format!(
        "{n} {noun} ({} bytes) in {}{tail}, left as found.",
        thousands(bytes as u64),
        line::escape(queue)
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn entry(rule: &str, detail: &str, size: usize) -> DeadLetter {
        DeadLetter {
            rule: rule.into(),
            detail: detail.into(),
            deliveries: Some(1),
            fingerprint: "0123456789abcdef".repeat(4),
            size,
            dead_lettered_at: DateTime::from_timestamp(1_795_000_000, 0),
            queue: "logs".into(),
        }
    }

    fn listing(entries: Vec<DeadLetter>) -> Listing {
        Listing {
            depth: entries.len() as u32,
            entries,
            interrupted: false,
            order_kept: true,
            renewed: 0,
        }
    }

    #[test]
    fn table_rows_are_aligned_and_cells_escaped() {
        let mut e2 = entry("crash", "killed\nby signal 6", 12345);
        e2.deliveries = None;
        e2.dead_lettered_at = None;
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[entry("width-too-large", "width 2400000000 > 4096", 7), e2],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let col = |l: &str| l.find("0123456789abcdef").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
        assert_eq!(lines[0].find("FINGERPRINT").unwrap(), col(lines[1]));
        assert!(lines[2].contains("killed\\nby signal 6"), "{text}");
        assert!(lines[2].starts_with("-  "), "{text}");
        assert!(lines[1].starts_with("2026-11-18T11:06:40Z  width-too-large"));
        assert!(
            !text.contains(&"0123456789abcdef".repeat(2)),
            "short fingerprint"
        );
    }

    #[test]
    fn an_empty_queue_gives_only_the_total_line() {
        let mut out = Vec::new();
        write_table(&mut out, &[]).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            total_line(&listing(vec![]), "logs.dead"),
            "0 messages (0 bytes) in logs.dead, left as found."
        );
        assert_eq!(
            total_line(&listing(vec![entry("crash", "", 1234)]), "q.dead"),
            "1 message (1,234 bytes) in q.dead, left as found."
        );
    }

    #[test]
    fn json_lines_are_one_object_per_message_with_full_fingerprints() {
        let mut out = Vec::new();
        write_json(&mut out, &[entry("crash", "d", 1), entry("timeout", "", 2)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let objs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["rule"], "timeout");
        assert_eq!(objs[0]["fingerprint"].as_str().unwrap().len(), 64);
        assert_eq!(objs[0]["dead_lettered_at"], "2026-11-18T11:06:40Z");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
