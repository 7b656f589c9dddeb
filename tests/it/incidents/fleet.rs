//! Scenarios 1 and 2: a fleet of consumers on one quorum queue, each under a pod-like
//! address-space limit (`prlimit --as`), supervised the way Kubernetes would: a process that
//! dies is counted and started again in the same state directory.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::types::AMQPValue;

use super::super::broker::{url, wait_until, Rabbit, TestQueue, TS};
use super::super::consume::benign;
use super::Goals;
use logfence::amqp::topology::QueueType;

const REPLICAS: usize = 4;
/// The pod's memory limit, as an address-space limit on each consumer process.
const POD_LIMIT: &str = "268435456";
const MAX_DELIVERIES: u32 = 5;

struct Replica {
    child: Child,
    dir: PathBuf,
}

pub(crate) struct Fleet {
    replicas: Vec<Replica>,
    queue: String,
    env: Vec<(String, String)>,
    /// Every death seen: (replica, when, how).
    pub(crate) deaths: Vec<(usize, Instant, String)>,
}

impl Fleet {
    fn start(queue: &str, root: &Path, env: &[(&str, &str)]) -> Fleet {
        let mut fleet = Fleet {
            replicas: Vec::new(),
            queue: queue.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deaths: Vec::new(),
        };
        for i in 0..REPLICAS {
            let dir = root.join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).expect("replica dir");
            let child = fleet.spawn(&dir);
            fleet.replicas.push(Replica { child, dir });
        }
        fleet
    }

    fn spawn(&self, dir: &Path) -> Child {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("stderr");
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--as={POD_LIMIT}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_logfence"))
            .args(["consume", "--queue", &self.queue, "--queue-type", "quorum"])
            .args(["--max-deliveries", &MAX_DELIVERIES.to_string()])
            .arg("--sink")
            .arg(format!("file:{}", dir.join("out.log").display()))
            .arg("--state-dir")
            .arg(dir)
            .env("AMQP_URL", url())
            .env("LOGFENCE_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn a replica")
    }

    /// Restarts every replica that died since the last look, counting each death.
    pub(crate) fn supervise(&mut self) {
        for i in 0..self.replicas.len() {
            if let Ok(Some(status)) = self.replicas[i].child.try_wait() {
                self.deaths.push((i, Instant::now(), format!("{status}")));
                let dir = self.replicas[i].dir.clone();
                self.replicas[i].child = self.spawn(&dir);
            }
        }
    }

    /// Every line the fleet wrote.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.replicas
            .iter()
            .flat_map(|r| {
                std::fs::read_to_string(r.dir.join("out.log"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn line_count(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| {
                std::fs::read(r.dir.join("out.log"))
                    .map(|b| memchr::memchr_iter(b'\n', &b).count())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn stderr(&self) -> String {
        self.replicas
            .iter()
            .map(|r| std::fs::read_to_string(r.dir.join("stderr.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// SIGTERM to all; returns how many exited 0 within the drain.
    fn stop(&mut self) -> usize {
        for r in &self.replicas {
            let pid = rustix::process::Pid::from_child(&r.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let mut clean = 0;
        for r in &mut self.replicas {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = r.child.try_wait() {
                    clean += usize::from(status.success());
                    break;
                }
                if Instant::now() > until {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        clean
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// Lines per benign token (tokens are `tok-NNNNNN`).
fn token_counts(lines: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for l in lines {
        if let Some(at) = l.find("tok-") {
            *counts.entry(l[at..at + 10].to_string()).or_default() += 1;
        }
    }
    counts
}

fn header_long(h: &lapin::types::FieldTable, k: &str) -> Option<i64> {
    match h.inner().get(k) {
        Some(AMQPValue::LongLongInt(n)) => Some(*n),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

fn header_str(h: &lapin::types::FieldTable, k: &str) -> String {
    match h.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_the_chat_message_refused_without_an_oom_kill() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "chat-message", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut bodies: Vec<Vec<u8>> = (0..5_000).map(benign).collect();
    // The incident: the operator's link used as the template, with args; and the width it
    // amounted to, spelled out.
    bodies.push(
        serde_json::json!({"msg": "operator shared https://www.amazon.com/gp/goldbox?deals=%10%off&ref=%s",
                           "args": ["chat"], "logger": "chat", "ts": TS})
        .to_string()
        .into_bytes(),
    );
    bodies.push(
        serde_json::json!({"msg": "padding %2400000000d", "args": [1], "logger": "chat", "ts": TS})
            .to_string()
            .into_bytes(),
    );
    bodies.extend((5_000..10_000).map(benign));
    rabbit.publish(&queue.name, &bodies);

    let mut fleet = Fleet::start(&queue.name, tmp.path(), &[]);
    let dead_queue = format!("{}.dead", queue.name);
    let done = wait_until(Duration::from_secs(240), || {
        fleet.supervise();
        fleet.line_count() >= 10_002 && rabbit.ready(&dead_queue) >= 2
    });
    fleet.supervise();
    let deaths = fleet.deaths.clone();
    let clean = fleet.stop();
    assert!(done, "not drained:\n{}", fleet.stderr());

    let lines = fleet.lines();
    let counts = token_counts(&lines);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("[logfence rejected:"))
        .collect();
    let dlq = rabbit.take_all(&dead_queue);
    let rules: Vec<String> = dlq
        .iter()
        .map(|(_, h)| header_str(h, "x-logfence-rule"))
        .collect();

    let mut goals = Goals::new("1 chat message");
    goals.goal("OOM kills / deaths", deaths.len(), "0", deaths.is_empty());
    goals.goal(
        "distinct benign lines",
        counts.len(),
        "10000",
        counts.len() == 10_000,
    );
    goals.goal(
        "duplicate benign lines",
        duplicates,
        "0 (no redelivery)",
        duplicates == 0,
    );
    goals.goal(
        "incident fallback lines",
        refused.len(),
        "2",
        refused.len() == 2,
    );
    goals.goal(
        "incident copies in DLQ",
        rules.join(","),
        "2",
        rules.len() == 2,
    );
    goals.goal("replicas stopped cleanly", clean, "4", clean == REPLICAS);
    goals.check(format!("deaths {deaths:?}\n{}", fleet.stderr()));
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_the_crash_loop_is_one_death_then_the_dlq() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "crash-loop", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    const MARKER: &str = "POISON-ABORT";
    // scripts/compat.sh runs it on every broker version with fewer records
    // (LOGFENCE_CRASH_LOOP_RECORDS); throughput is then too short-lived to measure, so the
    // ratio is reported, not held to its goal.
    const FULL: usize = 200_000;
    let n = std::env::var("LOGFENCE_CRASH_LOOP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 2)
        .unwrap_or(FULL);
    let mut bodies: Vec<Vec<u8>> = (0..n / 2).map(benign).collect();
    bodies.push(
        serde_json::json!({"msg": format!("{MARKER} %s"), "args": ["x"], "ts": TS})
            .to_string()
            .into_bytes(),
    );
    bodies.extend((n / 2..n).map(benign));
    rabbit.publish(&queue.name, &bodies);

    let failpoint = format!("render-abort=return({MARKER})");
    let mut fleet = Fleet::start(&queue.name, tmp.path(), &[("FAILPOINTS", &failpoint)]);
    let dead_queue = format!("{}.dead", queue.name);
    let started = Instant::now();
    // The timeline: (when, lines written so far, poison in the DLQ yet).
    let mut timeline: Vec<(Duration, usize, bool)> = Vec::new();
    let done = wait_until(Duration::from_secs(240), || {
        fleet.supervise();
        let lines = fleet.line_count();
        let dead = rabbit.ready(&dead_queue) >= 1;
        timeline.push((started.elapsed(), lines, dead));
        lines >= n && dead
    });
    fleet.supervise();
    let deaths = fleet.deaths.clone();
    fleet.stop();
    assert!(done, "not drained:\n{}", fleet.stderr());

    let dlq = rabbit.take_all(&dead_queue);
    let deliveries = dlq
        .first()
        .and_then(|(_, h)| header_long(h, "x-logfence-deliveries"))
        .unwrap_or(-1);
    let rule = dlq
        .first()
        .map(|(_, h)| header_str(h, "x-logfence-rule"))
        .unwrap_or_default();

    // Benign throughput before the first death, and during the episode: from the death to
    // the poison's arrival in the DLQ (at least one second, so the window is measurable).
    let died_at = deaths.first().map(|(_, t, _)| t.duration_since(started));
    let resolved_at = timeline
        .iter()
        .find(|(_, _, dead)| *dead)
        .map(|(t, _, _)| *t);
    let lines_at = |t: Duration| {
        timeline
            .iter()
            .take_while(|(at, _, _)| *at <= t)
            .last()
            .map_or(0, |(_, l, _)| *l)
    };
    let (before, during) = match (died_at, resolved_at) {
        (Some(d), Some(r)) => {
            let end = r.max(d + Duration::from_secs(1));
            let first_line = timeline
                .iter()
                .find(|(_, l, _)| *l > 0)
                .map_or(Duration::ZERO, |(t, _, _)| *t);
            let before =
                lines_at(d) as f64 / (d.saturating_sub(first_line)).as_secs_f64().max(0.001);
            let during = (lines_at(end) - lines_at(d)) as f64 / (end - d).as_secs_f64();
            (before, during)
        }
        _ => (0.0, 0.0),
    };
    let ratio = if before > 0.0 { during / before } else { 0.0 };
    let counts = token_counts(&fleet.lines());

    let mut goals = Goals::new("2 crash loop");
    goals.goal(
        "main-process deaths",
        deaths.len(),
        "<= 1",
        deaths.len() <= 1,
    );
    goals.goal(
        "poison deliveries before DLQ",
        deliveries,
        "<= 5",
        (1..=i64::from(MAX_DELIVERIES)).contains(&deliveries),
    );
    goals.goal("poison DLQ rule", &rule, "crash", rule == "crash");
    goals.goal(
        "distinct benign lines",
        counts.len(),
        &n.to_string(),
        counts.len() == n,
    );
    goals.report("benign lines/s before", format!("{before:.0}"));
    goals.report("benign lines/s during episode", format!("{during:.0}"));
    goals.goal(
        "during / before",
        format!("{ratio:.2}"),
        if n == FULL { ">= 0.80" } else { "report" },
        ratio >= 0.8 || n != FULL,
    );
    goals.check(format!("deaths {deaths:?}\n{}", fleet.stderr()));
}
