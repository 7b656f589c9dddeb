//! Several broker addresses (one per node of a cluster): a dead node costs the consumer one
//! failed attempt, not a stall; and the three-node cluster of `scripts/cluster.sh`, for the
//! failover scenario (tests/it/incidents/failover.rs), whose short version runs here.

use super::incidents::failover::scenario;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::broker::{sink_lines, url, wait_until, Rabbit, TestQueue};
use super::consume::{benign, spawn_consumer, ConsumerProcess};
use logfence::amqp::topology::QueueType;

/// Nothing listens on port 1: a connection to it is refused at once, as to a node whose
/// process is gone.
const DEAD: &str = "amqp://guest:dead-node-s3cret@127.0.0.1:1/%2f";

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn a_dead_first_node_costs_one_attempt_not_a_stall() {
    let rabbit = Rabbit::connect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let live = url();
    let url_file = tmp.path().join("amqp-urls");
    std::fs::write(&url_file, format!("{DEAD}\n{live}\n")).expect("url file");
    let env_list = format!("{DEAD},{live}");
    // The three ways to give several nodes: the flag twice, a list in AMQP_URL, a URL file.
    type Way<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let ways: [Way; 3] = [
        (
            "flags",
            vec!["--amqp-url", DEAD, "--amqp-url", &live],
            vec![],
        ),
        ("env", vec![], vec![("AMQP_URL", env_list.as_str())]),
        (
            "file",
            vec!["--amqp-url-file", url_file.to_str().expect("utf-8")],
            vec![],
        ),
    ];
    // The first node is chosen at random: rounds of three consumers until at least one of
    // them started on the dead node (each has an even chance), so the test always shows it.
    let mut started_dead = 0;
    let mut runs = 0;
    for round in 0..10 {
        let mut running: Vec<(String, ConsumerProcess, PathBuf, Instant)> = Vec::new();
        let mut queues = Vec::new();
        for (way, args, env) in &ways {
            let queue = TestQueue::new(&rabbit, &format!("two-urls-{way}"), QueueType::Quorum);
            rabbit.publish(&queue.name, &[benign(round)]);
            let dir = tmp.path().join(format!("{way}-{round}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let sink = dir.join("out.log");
            let started = Instant::now();
            let consumer =
                spawn_consumer(&queue.name, &sink, &dir, args, env, dir.join("stderr.log"));
            running.push((way.to_string(), consumer, sink, started));
            queues.push(queue);
        }
        for (way, consumer, sink, started) in &mut running {
            let consumed = wait_until(Duration::from_secs(10), || !sink_lines(sink).is_empty());
            let took = started.elapsed();
            consumer.terminate();
            consumer.wait_for(Duration::from_secs(15));
            let stderr = consumer.stderr();
            assert!(consumed, "{way}: nothing consumed:\n{stderr}");
            let failed = stderr.matches("cannot connect to").count();
            assert!(failed <= 1, "{way}: {failed} failed attempts:\n{stderr}");
            if failed == 1 {
                assert!(
                    stderr.contains("cannot connect to amqp://guest:***@127.0.0.1:1/%2f"),
                    "{way}: the failed node is not named, redacted:\n{stderr}"
                );
                started_dead += 1;
            }
            assert!(!stderr.contains("dead-node-s3cret"), "{stderr}");
            assert!(
                took < Duration::from_secs(2),
                "{way}: consuming only after {took:?} (started on the dead node: {}):\n{stderr}",
                failed == 1
            );
            runs += 1;
        }
        if started_dead > 0 {
            break;
        }
    }
    assert!(
        started_dead > 0,
        "none of {runs} consumers started on the dead node"
    );
    eprintln!(
        "{started_dead} of {runs} consumers started on the dead node; all consumed within 2 s"
    );
}

/// `dlq list` over a list whose first node is dead answers from the live one.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn dlq_list_tries_the_next_node() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "dlq-two-urls", QueueType::Quorum);
    let dead_queue = format!("{}.dead", queue.name);
    for _ in 0..4 {
        let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .args(["dlq", "list", "--queue", &dead_queue])
            .args(["--amqp-url", DEAD, "--amqp-url", &url()])
            .env_remove("AMQP_URL")
            .output()
            .expect("run dlq list");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("dead-node-s3cret"), "{stderr}");
    }
    // Every node dead: each named, redacted, and the exit says unavailable.
    let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
        .args(["dlq", "list", "--queue", &dead_queue])
        .args([
            "--amqp-url",
            DEAD,
            "--amqp-url",
            &DEAD.replace(":1/", ":2/"),
        ])
        .env_remove("AMQP_URL")
        .output()
        .expect("run dlq list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:1/%2f") && stderr.contains("127.0.0.1:2/%2f"),
        "{stderr}"
    );
    assert!(!stderr.contains("dead-node-s3cret"), "{stderr}");
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

/// One cluster scenario at a time in this process (they restart its nodes).
static CLUSTER: Mutex<()> = Mutex::new(());

/// The three-node cluster of `scripts/cluster.sh`, on AMQP ports 5681-5683. Stopped and
/// removed when dropped if this test started it; left running if it was already up.
pub(crate) struct Cluster {
    pub(crate) urls: Vec<String>,
    started_here: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts it (or finds it up); panics, saying what is missing, when it cannot start.
    pub(crate) fn up() -> Cluster {
        let guard = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let already = (5681..=5683).all(|port| {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1),
            )
            .is_ok()
        });
        let out = Command::new(script()).arg("start").output();
        let urls: Vec<String> = match &out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        if urls.len() != 3 {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            panic!(
                "scripts/cluster.sh start failed (it runs three nodes of Debian's rabbitmq-server, \
                 which scripts/broker.sh installs, on ports 5681-5683; \
                 LOGFENCE_SKIP_BROKER_TESTS=1 skips the broker tests): {why}"
            );
        }
        Cluster {
            urls,
            started_here: !already,
            _one_at_a_time: guard,
        }
    }

    /// Runs `scripts/cluster.sh ARGS`; its stdout, or why it failed.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(script())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "scripts/cluster.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The node (1..3) leading `queue`.
    pub(crate) fn leader(&self, queue: &str) -> Result<usize, String> {
        let out = self.run(&["leader", queue])?;
        out.parse().map_err(|_| format!("leader: {out:?}"))
    }

    /// SIGKILLs node `n`'s Erlang VM: no clean stop, its connections just die.
    pub(crate) fn kill(&self, n: usize) -> Result<(), String> {
        let pid: i32 = self
            .run(&["node-pid", &n.to_string()])?
            .parse()
            .map_err(|e| format!("node-pid: {e}"))?;
        let pid = rustix::process::Pid::from_raw(pid).ok_or("pid 0")?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .map_err(|e| format!("kill -9: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here {
            let _ = self.run(&["stop"]);
        } else {
            // Leave it whole for the next run.
            for n in ["1", "2", "3"] {
                let _ = self.run(&["node-start", n]);
            }
        }
    }
}

/// The failover scenario, short: 20,000 records over the three-node cluster (the full one,
/// 100,000, is `scripts/incidents.sh failover`).
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn failover_short_a_leader_killed_and_a_follower_stopped_lose_nothing() {
    scenario(20_000, Duration::from_secs(20));
}
