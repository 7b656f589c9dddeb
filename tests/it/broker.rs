//! The tests' own side of the broker, shared by every test that runs `logfence consume`:
//! a lapin connection to declare, publish, inspect and delete, uniquely named queues that
//! delete themselves, and polling helpers.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use logfence::amqp::topology::{QueueType, Topology};

mod address;

pub(crate) use address::{broker_addr, url, URL_VAR};

/// A lapin connection for the test's own side: declare, publish, inspect, delete.
pub(crate) struct Rabbit {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) _conn: Connection,
    pub(crate) ch: Channel,
}

impl Rabbit {
    /// A connection to the test broker ([`url`]); panics, saying what to start, when none
    /// answers. Every test that calls it carries `#[cfg_attr(logfence_skip_broker, ignore =
    /// ...)]`, so `LOGFENCE_SKIP_BROKER_TESTS=1` at build time shows those tests as ignored
    /// instead (see build.rs): a test that could not run never passes.
    pub(crate) fn connect() -> Rabbit {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let conn = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&url(), ConnectionProperties::default()),
            )
            .await
        });
        let conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => no_broker(&e.to_string()),
            Err(_) => no_broker("timed out after 5 s"),
        };
        let ch = rt.block_on(async {
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm mode");
            ch
        });
        Rabbit {
            rt,
            _conn: conn,
            ch,
        }
    }

    /// Declares the topology exactly as the consumer will.
    pub(crate) fn declare(&self, queue: &str, queue_type: QueueType) {
        let topology = Topology::new(queue, queue_type, 5).expect("queue name");
        self.rt
            .block_on(topology.declare(&self.ch))
            .expect("declare topology");
    }

    /// Publishes persistent messages to `queue`, waiting for every confirm.
    pub(crate) fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.publish_with(
            queue,
            bodies,
            BasicProperties::default().with_delivery_mode(2),
        );
    }

    pub(crate) fn publish_with(
        &self,
        queue: &str,
        bodies: &[Vec<u8>],
        properties: BasicProperties,
    ) {
        self.rt.block_on(async {
            for chunk in bodies.chunks(500) {
                let mut confirms = Vec::with_capacity(chunk.len());
                for body in chunk {
                    let c = self
                        .ch
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            body,
                            properties.clone(),
                        )
                        .await
                        .expect("publish");
                    confirms.push(c);
                }
                for c in confirms {
                    assert!(
                        c.await.expect("confirm").is_ack(),
                        "broker nacked a publish"
                    );
                }
            }
        });
    }

    /// Messages ready in `queue` (unacked ones are not counted).
    pub(crate) fn ready(&self, queue: &str) -> u32 {
        self.rt.block_on(async {
            self.ch
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("passive declare")
                .message_count()
        })
    }

    /// Takes every message ready in `queue` (no-ack), body and headers.
    pub(crate) fn take_all(&self, queue: &str) -> Vec<(Vec<u8>, FieldTable)> {
        let n = self.ready(queue) as usize;
        self.rt.block_on(async {
            let mut out = Vec::with_capacity(n);
            if n == 0 {
                return out;
            }
            let mut consumer = self
                .ch
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("basic.consume");
            while out.len() < n {
                let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
                let Ok(Some(Ok(d))) = next else {
                    panic!("only {} of {n} messages of {queue} came", out.len());
                };
                let headers = d.properties.headers().clone().unwrap_or_default();
                out.push((d.data, headers));
            }
            self.ch
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
                .expect("basic.cancel");
            out
        })
    }

    pub(crate) fn delete(&self, queue: &str) {
        self.rt.block_on(async {
            for q in [queue.to_string(), format!("{queue}.dead")] {
                let _ = self
                    .ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        });
    }
}

/// The failure of a broker test that found no broker: what to start, and how to opt out.
fn no_broker(why: &str) -> ! {
    panic!(
        "no RabbitMQ answers at {} ({why}).\n\
         Start one with scripts/broker.sh, or point LOGFENCE_TEST_AMQP_URL at yours. To run \
         without a broker, build the tests with LOGFENCE_SKIP_BROKER_TESTS=1: the broker tests \
         then show as ignored.",
        url()
    )
}

/// A test's queue: unique, deleted (with its `.dead`) when the test ends, even on failure.
pub(crate) struct TestQueue<'a> {
    rabbit: &'a Rabbit,
    pub(crate) name: String,
}

impl<'a> TestQueue<'a> {
    /// A unique name with the consumer's topology declared.
    pub(crate) fn new(rabbit: &'a Rabbit, what: &str, queue_type: QueueType) -> TestQueue<'a> {
        let queue = TestQueue::bare(rabbit, what);
        rabbit.declare(&queue.name, queue_type);
        queue
    }

    /// A unique name, nothing declared.
    pub(crate) fn bare(rabbit: &'a Rabbit, what: &str) -> TestQueue<'a> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("logfence-test-{what}-{}-{nanos}", std::process::id());
        rabbit.delete(&name);
        TestQueue { rabbit, name }
    }
}

impl Drop for TestQueue<'_> {
    fn drop(&mut self) {
        self.rabbit.delete(&self.name);
    }
}

pub(crate) fn sink_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `done` every 50 ms for at most `limit`.
pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

pub(crate) const TS: &str = "2026-11-22T10:00:00Z";

impl Rabbit {
    /// Publishes transient messages (no disk on the broker's side: for large batches).
    pub(crate) fn publish_transient(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.publish_with(queue, bodies, BasicProperties::default());
    }
}

impl<'a> TestQueue<'a> {
    /// A unique classic queue with the consumer's topology declared.
    pub(crate) fn classic(rabbit: &'a Rabbit, what: &str) -> TestQueue<'a> {
        TestQueue::new(rabbit, what, QueueType::Classic)
    }
}

/// What the broker holds for one queue: ready and unacknowledged messages, and consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth {
    pub(crate) ready: u64,
    pub(crate) unacked: u64,
    pub(crate) consumers: u64,
}

impl Rabbit {
    /// The queue's depth as the broker's node reports it (`rabbitmqctl list_queues`): a passive
    /// declare counts only the ready messages, and a test that checks nothing was lost must
    /// count the unacknowledged ones too. Panics (the test could not check) when rabbitmqctl is
    /// missing or does not list the queue.
    pub(crate) fn depth(&self, queue: &str) -> Depth {
        let out = rabbitmqctl_command()
            .args(["list_queues", "--quiet", "--no-table-headers", "--timeout", "30"])
            .args(["name", "messages_ready", "messages_unacknowledged", "consumers"])
            .output()
            .unwrap_or_else(|e| {
                panic!("rabbitmqctl is needed to count unacknowledged messages ({e}); install rabbitmq-server (scripts/broker.sh)")
            });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rabbitmqctl list_queues failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let row = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() == 4 && f[0] == queue)
            .unwrap_or_else(|| panic!("rabbitmqctl does not list {queue}:\n{text}"));
        let n = |s: &str| s.parse::<u64>().expect("a count");
        Depth {
            ready: n(row[1]),
            unacked: n(row[2]),
            consumers: n(row[3]),
        }
    }

    /// The depth once no consumer holds anything any more (a stopped consumer's connection may
    /// take the broker a moment to close): waits up to `limit` for no consumer and nothing
    /// unacknowledged, then returns the depth whatever it is.
    pub(crate) fn depth_at_rest(&self, queue: &str, limit: Duration) -> Depth {
        let until = Instant::now() + limit;
        loop {
            let depth = self.depth(queue);
            if (depth.consumers == 0 && depth.unacked == 0) || Instant::now() >= until {
                return depth;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The command that reaches the test broker's `rabbitmqctl`: `LOGFENCE_TEST_RABBITMQCTL`,
/// split on whitespace (for a broker in a chroot, e.g. what `scripts/broker.sh env 4.3`
/// prints), else the host's own `rabbitmqctl`. Set it together with
/// `LOGFENCE_TEST_AMQP_URL`: the two name the same broker.
pub(crate) fn rabbitmqctl_command() -> std::process::Command {
    let words = std::env::var("LOGFENCE_TEST_RABBITMQCTL").unwrap_or_default();
    let mut words = words.split_whitespace();
    let mut command = std::process::Command::new(words.next().unwrap_or("rabbitmqctl"));
    command.args(words);
    command
}

/// A RabbitMQ version, as the broker announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BrokerVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) patch: u32,
}

impl std::fmt::Display for BrokerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl BrokerVersion {
    fn parse(text: &str) -> Option<BrokerVersion> {
        let mut parts = text
            .split(|c: char| !c.is_ascii_digit())
            .map(str::parse::<u32>);
        Some(BrokerVersion {
            major: parts.next()?.ok()?,
            minor: parts.next()?.ok()?,
            patch: parts.next().and_then(Result::ok).unwrap_or(0),
        })
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Whether a quorum queue counts `basic.nack` with requeue in `x-delivery-count` (and
    /// against its delivery limit): up to 4.2; from 4.3 only failures count
    /// (`basic.reject`, a lost consumer) and a nack adds to `x-acquired-count` instead.
    pub(crate) fn counts_nack(self) -> bool {
        !self.at_least(4, 3)
    }

    /// Whether the broker stamps `x-acquired-count` (4.3 and later).
    pub(crate) fn has_acquired_count(self) -> bool {
        self.at_least(4, 3)
    }

    /// Whether a quorum queue without a limit of its own gets a default delivery limit (20,
    /// from 4.0).
    pub(crate) fn has_default_delivery_limit(self) -> bool {
        self.at_least(4, 0)
    }

    /// Whether a quorum queue cancels a consumer that holds a message past its consumer
    /// timeout (`basic.cancel`, the message returned uncounted) rather than closing its
    /// channel: 4.3 and later.
    pub(crate) fn cancels_on_consumer_timeout(self) -> bool {
        self.at_least(4, 3)
    }
}

/// The test broker's version, from the `server_properties` of its `connection.start`
/// (lapin reads them but does not keep them, so the test opens a bare socket, reads the
/// frame, and hangs up before authenticating).
pub(crate) fn broker_version() -> BrokerVersion {
    use std::io::{Read, Write};
    let url = url();
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .unwrap_or_else(|e| panic!("LOGFENCE_TEST_AMQP_URL is not an AMQP URL: {e}"));
    let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
    let mut socket = std::net::TcpStream::connect(&addr)
        .unwrap_or_else(|e| panic!("no broker at {addr} to ask its version: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket.write_all(b"AMQP\x00\x00\x09\x01").expect("header");
    let mut head = [0u8; 7];
    socket.read_exact(&mut head).expect("connection.start");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size];
    socket.read_exact(&mut payload).expect("connection.start");
    // The table entry: short string "version", type 'S', a long string.
    let key = b"\x07versionS";
    let at = payload
        .windows(key.len())
        .position(|w| w == key)
        .unwrap_or_else(|| panic!("{addr} announced no version"));
    let rest = &payload[at + key.len()..];
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let text = String::from_utf8_lossy(&rest[4..4 + len]).into_owned();
    BrokerVersion::parse(&text).unwrap_or_else(|| panic!("{addr} announced version {text:?}"))
}

#[test]
fn broker_version_parses_what_rabbitmq_announces() {
    let v = |s| BrokerVersion::parse(s).expect("a version");
    assert_eq!(
        v("3.10.8"),
        BrokerVersion {
            major: 3,
            minor: 10,
            patch: 8
        }
    );
    assert!(v("3.10.8").counts_nack() && !v("3.13.7").has_default_delivery_limit());
    assert!(v("4.0.5").counts_nack() && v("4.0.5").has_default_delivery_limit());
    assert!(!v("4.3.6").counts_nack() && v("4.3.6").has_acquired_count());
    assert!(v("4.10.0").cancels_on_consumer_timeout());
    assert_eq!(v("4.3.0-rc.1").to_string(), "4.3.0");
}

/// A figure of a broker-facing test, printed as `FIGURE|test|figure|value|goal|met` for
/// `scripts/compat.sh`'s table; returns whether it was met (the test asserts it).
pub(crate) fn figure(
    test: &str,
    name: &str,
    value: impl std::fmt::Display,
    goal: &str,
    met: bool,
) -> bool {
    println!(
        "FIGURE|{test}|{name}|{value}|{goal}|{}",
        if met { "yes" } else { "NO" }
    );
    met
}
