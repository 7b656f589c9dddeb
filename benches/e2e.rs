//! End-to-end consumer throughput, in one run on the same broker and the same records:
//!
//! - **logfence**: the released `logfence consume` at its default flags (only the queue, its
//!   type and a file sink given) draining a queue of small realistic records to a file;
//! - **raw**: a raw lapin consume+ack loop (prefetch 1000, one `multiple` ack every 100
//!   deliveries, bodies untouched), in a process of its own (this binary, re-run);
//! - **pika**: the Python peer of `benches/support/pika_peer.py` (pika, `msg % tuple(args)`,
//!   a line written to a file and flushed, a per-message ack, prefetch 1000).
//!
//! Each side drains its own freshly filled queue, in rounds (sides rotated each round), and
//! the figures are medians over the rounds: msgs/s, CPU seconds per 100,000 records, and
//! the peak RSS (the largest over the rounds). Ratios logfence/raw and logfence/pika are
//! printed last, because absolute rates on a shared machine drift and same-run ratios do
//! not. Also, logfence at default flags under a steady publish rate of 10,000 msgs/s: the
//! latency from publish to line on the sink, p50 and p99.
//!
//! Run: `cargo bench --bench e2e` (RabbitMQ at 127.0.0.1:5672, guest/guest, or
//! `LOGFENCE_TEST_AMQP_URL`; `scripts/broker.sh` starts one). `LOGFENCE_E2E_N` records per
//! side and round (default 100,000), `LOGFENCE_E2E_ROUNDS` (default 3, at least 3),
//! `LOGFENCE_E2E_LATENCY_S` seconds of steady publishing (default 5). Without a broker it
//! says so and exits 0. pika comes from a virtualenv the bench makes under the target
//! directory (`e2e-venv`, `pip install pika==1.3.2`) unless `LOGFENCE_E2E_PYTHON` names a
//! python that has it; if neither works the bench fails and says why.
//!
//! `LOGFENCE_E2E_BIN` measures another `logfence` binary than the one built with the bench.
//!
//! Each clock starts before its process is spawned, so it includes connecting (and
//! logfence's process start and sandbox setup), and stops when the raw side has sent its
//! last ack, or when the sink file holds all N lines (logfence, pika).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use logfence::amqp::topology::{QueueType, Topology};
use logfence::consume::DEFAULT_MAX_DELIVERIES;

// The broker address, from the one place the integration tests read it too.
#[path = "../tests/it/broker/address.rs"]
mod address;
use address::{broker_addr, url};

const DEFAULT_N: usize = 100_000;
const DEFAULT_ROUNDS: usize = 3;
const DEFAULT_LATENCY_SECS: u64 = 5;
/// The raw loop's and the pika peer's `basic.qos`.
const PREFETCH: u16 = 1000;
/// The raw loop acks `multiple` on every this-many-th delivery (and on the last).
const ACK_EVERY: usize = 100;
/// Publishes in flight before waiting for their confirms.
const CONFIRM_BATCH: usize = 1000;
/// The steady publish rate of the latency run.
const STEADY_RATE: u64 = 10_000;
/// How long a drain may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(30);
const RSS_TARGET_MIB: f64 = 20.0;
const RATIO_TARGET: f64 = 0.90;
const PIKA_RATIO_TARGET: f64 = 2.5;
/// Set in the environment of this binary re-run as the raw consumer: the queue to drain.
const RAW_CHILD: &str = "LOGFENCE_E2E_RAW_QUEUE";
/// The pika peer's version, pinned.
const PIKA: &str = "pika==1.3.2";

fn broker_answers(addr: &str) -> bool {
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// `cargo bench -- FILTER` runs every bench binary with FILTER: stay out unless it names us.
fn filtered_out() -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    !filters.is_empty() && !filters.iter().any(|f| "e2e".contains(f.as_str()))
}

fn main() -> ExitCode {
    if let Ok(queue) = std::env::var(RAW_CHILD) {
        return match raw_child(&queue) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("e2e raw consumer: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if filtered_out() {
        return ExitCode::SUCCESS;
    }
    let addr = broker_addr();
    if !broker_answers(&addr) {
        println!("e2e: skipped: no broker answers at {addr} (start one with scripts/broker.sh)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e: failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{name}={v:?} is not a positive count")),
        Err(_) => Ok(default),
    }
}

/// The `%`-style records with args among `fixtures/realistic/`, cycled.
fn realistic_bodies() -> Result<Vec<Vec<u8>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/realistic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let body = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let record: serde_json::Value = serde_json::from_slice(&body)?;
        let percent = record.get("style").is_none_or(|s| s == "%");
        let templated = record
            .get("msg")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.contains('%'));
        if percent && templated && record.get("args").is_some() {
            out.push(body);
        }
    }
    if out.is_empty() {
        bail!("no %-style records with args in {}", dir.display());
    }
    Ok(out)
}

/// The bench's own connection: declare, publish, count, delete.
struct Admin {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    ch: Channel,
    /// Every queue declared, deleted (with its `.dead`) at the end, whatever happened.
    declared: std::cell::RefCell<Vec<String>>,
}

impl Admin {
    fn connect() -> Result<Admin> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (conn, ch) = rt.block_on(async {
            let conn = tokio::time::timeout(
                Duration::from_secs(10),
                Connection::connect(&url(), ConnectionProperties::default()),
            )
            .await
            .context("connecting timed out")??;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            anyhow::Ok((conn, ch))
        })?;
        Ok(Admin {
            rt,
            conn,
            ch,
            declared: Default::default(),
        })
    }

    /// A fresh queue with logfence's classic topology, holding `n` persistent records.
    fn fill(&self, what: &str, bodies: &[Vec<u8>], n: usize) -> Result<String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("logfence-e2e-{what}-{}-{nanos}", std::process::id());
        self.declared.borrow_mut().push(name.clone());
        let topology = Topology::new(&name, QueueType::Classic, DEFAULT_MAX_DELIVERIES)
            .map_err(anyhow::Error::msg)?;
        self.rt.block_on(topology.declare(&self.ch))?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let started = Instant::now();
        self.rt.block_on(async {
            let mut next = 0;
            while next < n {
                let end = (next + CONFIRM_BATCH).min(n);
                let mut confirms = Vec::with_capacity(end - next);
                for i in next..end {
                    let body = &bodies[i % bodies.len()];
                    let confirm = self
                        .ch
                        .basic_publish(
                            "".into(),
                            name.as_str().into(),
                            BasicPublishOptions::default(),
                            body,
                            properties.clone(),
                        )
                        .await?;
                    confirms.push(confirm);
                }
                for c in confirms {
                    if !c.await?.is_ack() {
                        bail!("the broker nacked a publish to {name}");
                    }
                }
                next = end;
            }
            anyhow::Ok(())
        })?;
        let ready = self.ready(&name)?;
        if ready as usize != n {
            bail!("{name} holds {ready} messages after publishing {n}");
        }
        println!(
            "e2e:   published {n} to {name} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(name)
    }

    /// Messages ready in `queue` (unacked ones are not counted).
    fn ready(&self, queue: &str) -> Result<u32> {
        let ok = self.rt.block_on(self.ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ))?;
        Ok(ok.message_count())
    }

    fn delete_all(&self) {
        for queue in self.declared.borrow_mut().drain(..) {
            for q in [queue.clone(), format!("{queue}.dead")] {
                let _ = self.rt.block_on(
                    self.ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
                );
            }
        }
    }
}

/// The raw consumer, run as a process of its own (so its CPU and RSS are its own): lapin
/// consuming with prefetch [`PREFETCH`] on one current-thread runtime beside lapin's IO
/// thread, acking `multiple` every [`ACK_EVERY`] deliveries, bodies untouched. Prints
/// `done` at its last ack, then `CPU_MS HWM_KIB`.
fn raw_child(queue: &str) -> Result<()> {
    let n = env_count("LOGFENCE_E2E_N", DEFAULT_N)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "logfence-e2e-raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut got = 0;
        while got < n {
            let delivery = match tokio::time::timeout(STALL, consumer.next()).await {
                Ok(Some(d)) => d?,
                Ok(None) => bail!("the raw consumer's stream ended after {got} of {n}"),
                Err(_) => bail!("the raw consumer stalled after {got} of {n}"),
            };
            got += 1;
            if got % ACK_EVERY == 0 || got == n {
                delivery.ack(BasicAckOptions { multiple: true }).await?;
            }
        }
        println!("done");
        conn.close(200, "done".into()).await?;
        anyhow::Ok(())
    })?;
    let cpu = cpu_time("self").context("reading the CPU time")?;
    let hwm = vm_hwm_kib(std::process::id()).context("reading VmHWM")?;
    println!("{} {hwm}", cpu.as_millis());
    Ok(())
}

/// One side's drain: how long, the CPU it took and its peak RSS.
#[derive(Clone, Copy, Debug)]
struct Measured {
    elapsed: Duration,
    cpu: Duration,
    /// VmHWM (or `ru_maxrss`), KiB.
    hwm_kib: u64,
}

/// The raw consumer drains `queue` in a child process.
fn raw_drain(admin: &Admin, queue: &str, n: usize) -> Result<Measured> {
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .env(RAW_CHILD, queue)
        .env("LOGFENCE_E2E_N", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the raw consumer")?;
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().context("the raw consumer's stdout")?;
    let mut out = BufReader::new(stdout).lines();
    let first = out.next().transpose()?;
    let elapsed = started.elapsed();
    if first.as_deref() != Some("done") {
        bail!("the raw consumer failed ({first:?})");
    }
    let stats = out.next().transpose()?.unwrap_or_default();
    let status = child.0.wait()?;
    if !status.success() {
        bail!("the raw consumer exited {status}");
    }
    let mut fields = stats.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(cpu_ms)), Some(Ok(hwm_kib))) = (fields.next(), fields.next()) else {
        bail!("the raw consumer's figures are unreadable: {stats:?}");
    };
    let left = admin.ready(queue)?;
    if left != 0 {
        bail!("{left} messages left in {queue} after the raw drain");
    }
    Ok(Measured {
        elapsed,
        cpu: Duration::from_millis(cpu_ms),
        hwm_kib,
    })
}

/// User + system CPU time of every thread of process `pid` (`self` for this one) so far:
/// less sensitive than wall time to the other tenants of a shared machine.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the name,
    // in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// Counts the newlines appended to a file since the last call, without rereading it.
struct LineCounter {
    path: PathBuf,
    file: Option<File>,
    lines: usize,
    buf: Vec<u8>,
}

impl LineCounter {
    fn new(path: PathBuf) -> LineCounter {
        LineCounter {
            path,
            file: None,
            lines: 0,
            buf: vec![0; 1 << 20],
        }
    }

    fn poll(&mut self) -> Result<usize> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        if let Some(file) = self.file.as_mut() {
            loop {
                let got = file.read(&mut self.buf)?;
                if got == 0 {
                    break;
                }
                self.lines += memchr::memchr_iter(b'\n', &self.buf[..got]).count();
            }
        }
        Ok(self.lines)
    }
}

/// Kills the consumer if the run fails before it is stopped properly.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The binary measured: `LOGFENCE_E2E_BIN` when set (say, a release build measured from a
/// quicker debug build of this bench), else the one cargo built with this bench.
fn logfence_bin() -> PathBuf {
    std::env::var_os("LOGFENCE_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_logfence")))
}

/// `logfence consume` at its default flags on `queue`, to a file sink in `dir`.
fn spawn_logfence(queue: &str, dir: &Path, sink: &Path) -> Result<Reaper> {
    let stderr = File::create(dir.join("stderr.log"))?;
    let child = Command::new(logfence_bin())
        .args(["consume", "--queue", queue, "--queue-type", "classic"])
        .arg("--sink")
        .arg(format!("file:{}", sink.display()))
        .arg("--state-dir")
        .arg(dir)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("AMQP_URL", url())
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        .env_remove("LOGFENCE_PREFETCH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .context("spawning logfence consume")?;
    Ok(Reaper(child))
}

/// Stops logfence with SIGTERM; it must exit 0.
fn stop_logfence(mut child: Reaper, dir: &Path) -> Result<()> {
    let stderr_of = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let pid = rustix::process::Pid::from_child(&child.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if Instant::now() > until {
            bail!(
                "logfence did not exit after SIGTERM; stderr:\n{}",
                stderr_of()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!(
            "logfence exited {status} after SIGTERM; stderr:\n{}",
            stderr_of()
        );
    }
    Ok(())
}

/// Polls `sink` until it holds `n` lines; `child` must stay alive and make progress.
fn wait_for_lines(child: &mut Child, sink: &Path, n: usize, what: &str) -> Result<()> {
    let mut lines = LineCounter::new(sink.to_path_buf());
    let mut last = (0, Instant::now());
    loop {
        let now = lines.poll()?;
        if now >= n {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) after {now} of {n} lines");
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!("{what} stalled at {now} of {n} lines");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// logfence at default flags draining `queue` to a file until all `n` lines are there; its
/// CPU and peak RSS are read before it is stopped with SIGTERM, and the queue must then be
/// empty (every message acked, none dead-lettered).
fn logfence_drain(admin: &Admin, queue: &str, n: usize) -> Result<Measured> {
    let tmp = tempfile::tempdir()?;
    let sink = tmp.path().join("out.log");
    let started = Instant::now();
    let mut child = spawn_logfence(queue, tmp.path(), &sink)?;
    let pid = child.0.id();
    if let Err(e) = wait_for_lines(&mut child.0, &sink, n, "logfence") {
        let stderr = std::fs::read_to_string(tmp.path().join("stderr.log")).unwrap_or_default();
        bail!("{e:#}; stderr:\n{stderr}");
    }
    let elapsed = started.elapsed();
    let hwm_kib = vm_hwm_kib(pid).context("reading the consumer's VmHWM")?;
    let cpu = cpu_time(&pid.to_string()).context("reading the consumer's CPU time")?;
    let children: Vec<u64> = children_of(pid)
        .into_iter()
        .filter_map(vm_hwm_kib)
        .collect();
    if !children.is_empty() {
        println!("e2e:   logfence child processes (the sandbox worker), VmHWM KiB: {children:?}");
    }
    stop_logfence(child, tmp.path())?;
    let left = admin.ready(queue)?;
    let dead = admin.ready(&format!("{queue}.dead"))?;
    if left != 0 || dead != 0 {
        bail!(
            "after logfence stopped, {left} messages were back in {queue} and {dead} dead-lettered"
        );
    }
    Ok(Measured {
        elapsed,
        cpu,
        hwm_kib,
    })
}

/// A python3 that can import pika: `LOGFENCE_E2E_PYTHON`, else the bench's own virtualenv
/// under the target directory, made (and pika installed into it) on first use.
fn pika_python() -> Result<PathBuf> {
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import pika"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(python) = std::env::var_os("LOGFENCE_E2E_PYTHON") {
        let python = PathBuf::from(python);
        if works(&python) {
            return Ok(python);
        }
        bail!(
            "LOGFENCE_E2E_PYTHON={} cannot import pika",
            python.display()
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("e2e-venv");
    let python = venv.join("bin/python");
    if works(&python) {
        return Ok(python);
    }
    println!(
        "e2e: making {} with {PIKA} for the Python peer",
        venv.display()
    );
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !made.success() {
        bail!("python3 -m venv {} failed ({made})", venv.display());
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", PIKA])
        .status()
        .context("running pip")?;
    if !installed.success() || !works(&python) {
        bail!(
            "cannot install {PIKA} into {} ({installed}); set LOGFENCE_E2E_PYTHON to a python \
             that has pika",
            venv.display()
        );
    }
    Ok(python)
}

/// The Python peer draining `queue` to a file; it exits by itself after acking `n`.
fn pika_drain(admin: &Admin, python: &Path, queue: &str, n: usize) -> Result<Measured> {
    let tmp = tempfile::tempdir()?;
    let sink = tmp.path().join("out.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/pika_peer.py");
    let started = Instant::now();
    let child = Command::new(python)
        .arg(&script)
        .arg(url())
        .arg(queue)
        .arg(&sink)
        .arg(n.to_string())
        .arg(PREFETCH.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the pika peer")?;
    let mut child = Reaper(child);
    wait_for_lines(&mut child.0, &sink, n, "the pika peer")?;
    let elapsed = started.elapsed();
    let mut stdout = child.0.stdout.take().context("the pika peer's stdout")?;
    let mut report = String::new();
    stdout.read_to_string(&mut report)?;
    let status = child.0.wait()?;
    if !status.success() {
        bail!("the pika peer exited {status}");
    }
    let report: serde_json::Value =
        serde_json::from_str(report.trim()).context("the pika peer's figures")?;
    let cpu_s = report["cpu_s"].as_f64().context("cpu_s")?;
    let hwm_kib = report["hwm_kib"].as_u64().context("hwm_kib")?;
    let left = admin.ready(queue)?;
    if left != 0 {
        bail!("{left} messages left in {queue} after the pika drain");
    }
    Ok(Measured {
        elapsed,
        cpu: Duration::from_secs_f64(cpu_s),
        hwm_kib,
    })
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A record whose rendered line carries the time it was published.
fn probe(nanos: u64) -> Vec<u8> {
    format!(
        r#"{{"msg": "latency probe %d sent", "args": [{nanos}], "level": "info", "logger": "bench.latency", "ts": "2026-12-05T00:00:00.000Z"}}"#
    )
    .into_bytes()
}

/// Reads the lines appended to a sink file and, for each probe, the time from its publish
/// to now.
struct ProbeReader {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    latencies: Vec<u64>,
}

impl ProbeReader {
    fn poll(&mut self) -> Result<usize> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let mut chunk = vec![0; 1 << 16];
        loop {
            let got = file.read(&mut chunk)?;
            if got == 0 {
                break;
            }
            self.partial.extend_from_slice(&chunk[..got]);
        }
        let now = unix_nanos();
        let whole = self
            .partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in self.partial[..whole].split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            if let Some(rest) = text.split("latency probe ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(sent) = digits.parse::<u64>() {
                    self.latencies.push(now.saturating_sub(sent));
                }
            }
        }
        self.partial.drain(..whole);
        Ok(self.latencies.len())
    }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[i.min(sorted.len() - 1)])
}

/// logfence at default flags on an empty queue, then `secs` of publishing at
/// [`STEADY_RATE`]: the publish-to-line latency of every record, p50 and p99.
fn latency(admin: &Admin, secs: u64) -> Result<(Duration, Duration, usize)> {
    let queue = admin.fill("latency", &[], 0)?;
    let tmp = tempfile::tempdir()?;
    let sink = tmp.path().join("out.log");
    let mut child = spawn_logfence(&queue, tmp.path(), &sink)?;
    let mut reader = ProbeReader {
        path: sink.clone(),
        file: None,
        partial: Vec::new(),
        latencies: Vec::new(),
    };
    let channel = admin.rt.block_on(admin.conn.create_channel())?;
    let publish_one = |channel: Channel, queue: String| async move {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &probe(unix_nanos()),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        anyhow::Ok(())
    };
    // Warm up: one probe through, so the clock below does not count the start.
    admin
        .rt
        .block_on(publish_one(channel.clone(), queue.clone()))?;
    let until = Instant::now() + STALL;
    while reader.poll()? < 1 {
        if child.0.try_wait()?.is_some() || Instant::now() > until {
            bail!("logfence did not write the warm-up probe");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reader.latencies.clear();
    let total = (STEADY_RATE * secs) as usize;
    let publisher = admin.rt.spawn({
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            let started = Instant::now();
            let mut sent = 0usize;
            while sent < total {
                let due =
                    ((started.elapsed().as_secs_f64() * STEADY_RATE as f64) as usize).min(total);
                while sent < due {
                    publish_one(channel.clone(), queue.clone()).await?;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(started.elapsed())
        }
    });
    let mut last = (0, Instant::now());
    loop {
        let got = reader.poll()?;
        if got >= total {
            break;
        }
        if child.0.try_wait()?.is_some() {
            bail!("logfence exited during the latency run after {got} of {total}");
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!("logfence stalled at {got} of {total} probes");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let published_in = admin.rt.block_on(publisher)??;
    println!(
        "e2e:   latency run: {total} probes published in {:.2} s ({:.0} msgs/s achieved)",
        published_in.as_secs_f64(),
        total as f64 / published_in.as_secs_f64()
    );
    stop_logfence(child, tmp.path())?;
    let mut sorted = std::mem::take(&mut reader.latencies);
    sorted.sort_unstable();
    Ok((
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        sorted.len(),
    ))
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

const SIDES: [&str; 3] = ["raw", "logfence", "pika"];

/// One side's figures over the rounds.
struct Summary {
    rate: f64,
    cpu_per_100k: f64,
    hwm_mib: f64,
}

fn summarize(n: usize, runs: &[Measured]) -> Summary {
    Summary {
        rate: median(runs.iter().map(|m| rate(n, m.elapsed)).collect()),
        cpu_per_100k: median(
            runs.iter()
                .map(|m| m.cpu.as_secs_f64() * 1e5 / n as f64)
                .collect(),
        ),
        hwm_mib: runs.iter().map(|m| m.hwm_kib).max().unwrap_or(0) as f64 / 1024.0,
    }
}

fn run() -> Result<()> {
    let n = env_count("LOGFENCE_E2E_N", DEFAULT_N)?;
    let rounds = env_count("LOGFENCE_E2E_ROUNDS", DEFAULT_ROUNDS)?.max(3);
    let latency_secs = env_count("LOGFENCE_E2E_LATENCY_S", DEFAULT_LATENCY_SECS as usize)? as u64;
    let python = pika_python()?;
    let bodies = realistic_bodies()?;
    let mean_size = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    let admin = Admin::connect()?;
    println!(
        "e2e: {n} persistent records per side and round, {rounds} rounds ({} realistic \
         %-style fixtures cycled, {mean_size} B mean), classic queues, broker {}; logfence at \
         default flags, raw lapin and pika at prefetch {PREFETCH}",
        bodies.len(),
        broker_addr()
    );
    type Runs = ([Vec<Measured>; 3], (Duration, Duration, usize));
    let result = (|| -> Result<Runs> {
        let mut runs: [Vec<Measured>; 3] = Default::default();
        for round in 0..rounds {
            for k in 0..SIDES.len() {
                let side = (round + k) % SIDES.len();
                let name = SIDES[side];
                let queue = admin.fill(name, &bodies, n)?;
                let m = match name {
                    "raw" => raw_drain(&admin, &queue, n)?,
                    "logfence" => logfence_drain(&admin, &queue, n)?,
                    _ => pika_drain(&admin, &python, &queue, n)?,
                };
                println!(
                    "e2e: round {}: {name:<8} {n} in {:.2} s = {:>6.0} msgs/s, CPU {:.2} s, \
                     peak RSS {:.1} MiB",
                    round + 1,
                    m.elapsed.as_secs_f64(),
                    rate(n, m.elapsed),
                    m.cpu.as_secs_f64(),
                    m.hwm_kib as f64 / 1024.0
                );
                runs[side].push(m);
                admin.delete_all();
            }
        }
        let latency = latency(&admin, latency_secs)?;
        Ok((runs, latency))
    })();
    admin.delete_all();
    let (runs, (p50, p99, probes)) = result?;
    let [raw, logfence, pika] = [0, 1, 2].map(|i| summarize(n, &runs[i]));
    for (name, s) in SIDES.iter().zip([&raw, &logfence, &pika]) {
        println!(
            "e2e: {name:<8} median {:>6.0} msgs/s, CPU {:.2} s per 100k records, peak RSS \
             {:.1} MiB",
            s.rate, s.cpu_per_100k, s.hwm_mib
        );
    }
    println!(
        "e2e: latency at a steady {STEADY_RATE} msgs/s, publish -> line on the sink \
         ({probes} records): p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "e2e: CPU per 100k records: logfence {:.2} s / raw {:.2} s = {:.2}x; pika {:.2} s \
         (reported, not a target)",
        logfence.cpu_per_100k,
        raw.cpu_per_100k,
        logfence.cpu_per_100k / raw.cpu_per_100k.max(f64::MIN_POSITIVE),
        pika.cpu_per_100k
    );
    println!(
        "e2e: peak RSS of logfence (VmHWM) {:.1} MiB (target <= {RSS_TARGET_MIB} MiB: {}); raw \
         {:.1} MiB, pika {:.1} MiB",
        logfence.hwm_mib,
        verdict(logfence.hwm_mib <= RSS_TARGET_MIB),
        raw.hwm_mib,
        pika.hwm_mib
    );
    let vs_raw = logfence.rate / raw.rate;
    let vs_pika = logfence.rate / pika.rate;
    println!(
        "e2e: logfence/raw  = {:.0} / {:.0} = {vs_raw:.2} (target >= {RATIO_TARGET:.2}: {})",
        logfence.rate,
        raw.rate,
        verdict(vs_raw >= RATIO_TARGET)
    );
    println!(
        "e2e: logfence/pika = {:.0} / {:.0} = {vs_pika:.2} (target >= {PIKA_RATIO_TARGET:.1}: {})",
        logfence.rate,
        pika.rate,
        verdict(vs_pika >= PIKA_RATIO_TARGET)
    );
    Ok(())
}
