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
        let out = std::process::Command::new("rabbitmqctl")
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
