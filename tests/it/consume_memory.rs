//! `logfence consume` under a memory cap, against the real RabbitMQ of
//! `broker::url()` (`LOGFENCE_TEST_AMQP_URL` overrides): large records, a small
//! `--memory-limit`, and what the process shows of it from outside — every record written
//! once, the queue emptied, the pause/resume events it logs, and its peak RSS (`VmHWM`).
//!
//! These tests read pausing from stderr (the `logfence_consumer_paused` gauge shows it too): the
//! memory gate logs "pausing deliveries" / "resuming deliveries" with the sampled
//! `allocated=` figure. Also holds the small broker/process helpers `isolation.rs` reuses.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) use super::broker::{sink_lines, url, wait_until, Rabbit, TestQueue, TS};

const MIB: u64 = 1 << 20;

/// `logfence consume` as a child process on a classic queue, sink a file, stderr in a file.
pub(crate) struct ConsumerProcess {
    pub(crate) child: Child,
    stderr_path: PathBuf,
}

impl ConsumerProcess {
    pub(crate) fn spawn(queue: &str, sink: &Path, dir: &Path, extra: &[&str]) -> ConsumerProcess {
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .arg("consume")
            .args(["--queue", queue, "--queue-type", "classic"])
            .arg("--sink")
            .arg(format!("file:{}", sink.display()))
            .args(extra)
            .env("AMQP_URL", url())
            .env("LOGFENCE_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .env_remove("LOGFENCE_MEMORY_LIMIT")
            .env_remove("LOGFENCE_PREFETCH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn logfence consume");
        ConsumerProcess { child, stderr_path }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Peak resident set size so far, in bytes (`VmHWM`), while the process lives.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// SIGTERM, then the exit status (at most 15 s).
    pub(crate) fn stop(&mut self) -> Option<ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every `tok-NNNNNN` in `text`.
pub(crate) fn tokens_in(text: &str) -> Vec<&str> {
    text.match_indices("tok-")
        .filter_map(|(i, _)| text.get(i..i + 10))
        .collect()
}

/// A ~200 KB record: its one argument is `size` bytes of text (varied per record, so no
/// two bodies are alike), rendered into a message of about that size.
fn large_record(i: usize, size: usize) -> Vec<u8> {
    let unit = format!("{i:06}-abcdefghijklmnopqrstuvwxyz ");
    let filler: String = unit.repeat(size / unit.len() + 1)[..size].to_string();
    serde_json::json!({
        "msg": format!("bulk tok-{i:06} %s"),
        "args": [filler],
        "level": "info", "logger": "bulk", "ts": TS,
    })
    .to_string()
    .into_bytes()
}

/// The `key=N` figure of a log line.
fn figure(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What one run showed.
struct Run {
    lines: Vec<String>,
    left: u32,
    peak_rss: Option<u64>,
    /// The `allocated=` of every pause and every resume event, in order.
    pauses: Vec<u64>,
    resumes: Vec<u64>,
    prefetch: Option<u64>,
    stderr: String,
}

/// Publishes `n` large records, runs the consumer with `flags` until every line is on the
/// sink and the queue is empty, then stops it (reading `VmHWM` just before).
fn run_large(what: &str, n: usize, size: usize, flags: &[&str]) -> Run {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, what);
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| large_record(i, size)).collect();
    rabbit.publish_transient(&queue.name, &bodies);
    drop(bodies);
    let mut args = vec!["--max-output-bytes", "256KiB"];
    args.extend_from_slice(flags);
    let mut consumer = ConsumerProcess::spawn(&queue.name, &sink, tmp.path(), &args);
    let started = Instant::now();
    let done = wait_until(Duration::from_secs(40), || {
        sink_lines(&sink).len() >= n && rabbit.ready(&queue.name) == 0
    });
    let elapsed = started.elapsed();
    let peak_rss = consumer.peak_rss();
    let status = consumer.stop();
    let stderr = consumer.stderr();
    assert!(
        done,
        "{} of {n} lines; stderr:\n{stderr}",
        sink_lines(&sink).len()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; stderr:\n{stderr}"
    );
    let events = |what: &str| -> Vec<u64> {
        stderr
            .lines()
            .filter(|l| l.contains(what))
            .map(|l| figure(l, "allocated=").expect("an allocated= figure"))
            .collect()
    };
    let run = Run {
        lines: sink_lines(&sink),
        left: rabbit.ready(&queue.name),
        peak_rss,
        pauses: events("pausing deliveries"),
        resumes: events("resuming deliveries"),
        prefetch: stderr
            .lines()
            .find(|l| l.contains("consuming"))
            .and_then(|l| figure(l, "prefetch=")),
        stderr,
    };
    eprintln!(
        "{what}: {n} records of {size} B in {elapsed:?}; prefetch {:?}; peak RSS {:?} MiB; \
         {} pauses at {:?}, {} resumes at {:?}",
        run.prefetch,
        run.peak_rss.map(|b| b as f64 / MIB as f64),
        run.pauses.len(),
        run.pauses,
        run.resumes.len(),
        run.resumes,
    );
    run
}

/// Each of the `n` tokens appears in exactly one line, and each line holds one token.
fn assert_each_written_once(lines: &[String], n: usize) {
    assert_eq!(lines.len(), n, "one line per record");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        let tokens = tokens_in(line);
        assert_eq!(tokens.len(), 1, "one token per line: {:.200}", line);
        *seen.entry(tokens[0]).or_default() += 1;
    }
    assert_eq!(seen.len(), n, "every record written");
    assert!(seen.values().all(|&c| c == 1), "no record written twice");
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_large_records_under_a_64mib_cap_stay_under_it_and_all_arrive_once() {
    let cap = 64 * MIB;
    let run = run_large("mem-64mib", 300, 200_000, &["--memory-limit", "64MiB"]);
    // A quarter of the cap over the 1 MiB body limit.
    assert_eq!(run.prefetch, Some(16), "stderr:\n{}", run.stderr);
    assert_each_written_once(&run.lines, 300);
    assert_eq!(run.left, 0, "the queue ends empty");
    let rss = run.peak_rss.expect("VmHWM of the live process");
    assert!(rss < cap, "peak RSS {rss} B over the {cap} B cap");
    // Prefetch keeps this load far below the high watermark (48 MiB), so no pause is
    // expected here; any that did happen must have been sampled under the cap.
    assert_eq!(run.pauses.len(), run.resumes.len(), "every pause resumed");
    for a in run.pauses.iter().chain(&run.resumes) {
        assert!(*a < cap, "sampled allocation {a} B over the cap");
    }
}

/// The events seen under a tight cap: pauses and resumes alternate (a last pause may still
/// hold at the end), pauses sampled at or above the high watermark and under the cap,
/// resumes at or below the low one.
fn assert_pause_events_under(run: &Run, cap: u64) {
    assert!(
        run.resumes.len() <= run.pauses.len() && run.pauses.len() <= run.resumes.len() + 1,
        "pauses and resumes alternate; stderr:\n{}",
        run.stderr
    );
    for a in &run.pauses {
        assert!(*a >= cap * 75 / 100 && *a < cap, "pause sampled at {a} B");
    }
    for a in &run.resumes {
        assert!(*a <= cap * 60 / 100, "resume sampled at {a} B");
    }
}

/// 24 MiB is tuned to this load: 24 prefetched 200 KB bodies (a quarter of the cap over the
/// 256 KiB body limit) rest at about 13-16 MB allocated, around the 60 % low watermark
/// (15.1 MB), while a batch being rendered (bodies, messages and lines of 24 records at
/// once) peaks just above the 75 % high watermark (18.9 MB). Whether a 100 ms sample lands
/// on a peak is chance (0 to 3 pauses per run in trials), so a pause is not required here:
/// that would make a flaky test. What is required: no record lost or doubled across the
/// pauses that do happen, their figures on the right side of the watermarks, and progress
/// even when memory at rest does not fall to the low watermark (before the consumer bounded
/// its pauses this run stalled for good in 2 of 3 trials). Peak RSS is not compared with
/// this cap: the debug binary alone resides in more than 24 MiB; the cap is on allocation.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_large_records_under_a_tight_cap_pause_without_stalling_and_all_arrive_once() {
    let cap = 24 * MIB;
    let flags = ["--memory-limit", "24MiB", "--max-body-bytes", "256KiB"];
    let run = run_large("mem-24mib", 300, 200_000, &flags);
    assert_eq!(run.prefetch, Some(24), "stderr:\n{}", run.stderr);
    assert_each_written_once(&run.lines, 300);
    assert_eq!(run.left, 0, "the queue ends empty");
    assert_pause_events_under(&run, cap);
}

/// A cap so tight that the resting allocation (the runtime's own plus the prefetched bodies
/// lapin holds) is above the low watermark from the first pause on: a pause there cannot
/// end by waiting. Before the consumer bounded its pauses it sat paused for good (at 16
/// MiB: paused at 13.3 MB after 32 of 300 records; at 20 MiB after 167; 8 and 12 MiB
/// alike). Now it takes a batch after each second paused: slow, but every record arrives.
#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_under_a_cap_near_its_resting_allocation_still_makes_progress() {
    let cap = 16 * MIB;
    let flags = ["--memory-limit", "16MiB", "--max-body-bytes", "256KiB"];
    let run = run_large("mem-16mib", 300, 200_000, &flags);
    assert_each_written_once(&run.lines, 300);
    assert_eq!(run.left, 0, "the queue ends empty");
    assert!(
        !run.pauses.is_empty() && run.stderr.contains("taking one batch anyway"),
        "a pause that could not end by waiting; stderr:\n{}",
        run.stderr
    );
    assert_pause_events_under(&run, cap);
}
