//! End-to-end consumer throughput: the released `logfence consume` draining a queue
//! of small realistic records to a file sink, against a raw lapin consume+ack loop on the same
//! broker in the same run (raw, logfence, raw again; the two raws averaged), because absolute
//! rates on a shared machine drift and ratios do not. Also the consumer's peak RSS.
//!
//! Run: `cargo bench --bench e2e` (RabbitMQ at 127.0.0.1:5672, guest/guest, or
//! `LOGFENCE_TEST_AMQP_URL`; `scripts/broker.sh` starts one). `LOGFENCE_E2E_N` records per
//! side, default 200,000. Without a broker it says so and exits 0.
//!
//! Both sides get the same topology (logfence's, classic), the same persistent bodies and
//! the same prefetch; the raw side acks `multiple` every [`ACK_EVERY`] deliveries and does
//! nothing else. Each clock starts before its connection is opened, so both include the
//! connect (and logfence its process start and sandbox setup), and stops when the raw side
//! has sent its last ack, or when the sink holds all N lines.

use std::fs::File;
use std::io::Read;
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

const DEFAULT_N: usize = 200_000;
/// The consumer's `--prefetch` and the raw loop's `basic.qos`.
const PREFETCH: u16 = 1000;
/// The raw loop acks `multiple` on every this-many-th delivery (and on the last).
const ACK_EVERY: usize = 100;
/// Publishes in flight before waiting for their confirms.
const CONFIRM_BATCH: usize = 1000;
/// How long a drain may go without progress before the run is declared stuck.
const STALL: Duration = Duration::from_secs(30);
const RSS_TARGET_MIB: f64 = 24.0;
const RATIO_TARGET: f64 = 0.90;

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
    _conn: Connection,
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
            _conn: conn,
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

/// The floor: lapin consuming with the same prefetch and acking `multiple` every
/// [`ACK_EVERY`] deliveries, bodies untouched.
fn raw_drain(admin: &Admin, queue: &str, n: usize) -> Result<(Duration, Duration)> {
    let cpu_before = cpu_time("self").context("reading this process's CPU time")?;
    let elapsed = admin.rt.block_on(async {
        let started = Instant::now();
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
        let elapsed = started.elapsed();
        conn.close(200, "done".into()).await?;
        anyhow::Ok(elapsed)
    })?;
    let cpu = cpu_time("self").context("reading this process's CPU time")?;
    Ok((elapsed, cpu.saturating_sub(cpu_before)))
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

/// What one logfence run measured.
struct Measured {
    elapsed: Duration,
    /// VmHWM of the consumer process, KiB.
    hwm_kib: u64,
    /// CPU time of the consumer process, start-up included.
    cpu: Duration,
    /// VmHWM of its child processes (the sandbox worker), KiB.
    children_hwm_kib: Vec<u64>,
    lines: usize,
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

/// The released binary consuming `queue` to a file until all `n` lines are there; its peak
/// RSS is read before it is stopped with SIGTERM, and the queue must then be empty (every
/// message acked, none dead-lettered).
fn logfence_drain(admin: &Admin, queue: &str, n: usize) -> Result<Measured> {
    let tmp = tempfile::tempdir()?;
    let sink = tmp.path().join("out.log");
    let stderr_path = tmp.path().join("stderr.log");
    let stderr_of = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let stderr = File::create(&stderr_path)?;
    let mut lines = LineCounter::new(sink.clone());
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_logfence"))
        .args(["consume", "--queue", queue, "--queue-type", "classic"])
        .arg("--sink")
        .arg(format!("file:{}", sink.display()))
        .args(["--prefetch", &PREFETCH.to_string()])
        .arg("--state-dir")
        .arg(tmp.path())
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("AMQP_URL", url())
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .context("spawning logfence consume")?;
    let mut child = Reaper(child);
    let pid = child.0.id();
    let mut last = (0, Instant::now());
    let elapsed = loop {
        let now = lines.poll()?;
        if now >= n {
            break started.elapsed();
        }
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "logfence exited ({status}) after {now} of {n} lines; stderr:\n{}",
                stderr_of()
            );
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "logfence stalled at {now} of {n} lines; stderr:\n{}",
                stderr_of()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let hwm_kib = vm_hwm_kib(pid).context("reading the consumer's VmHWM")?;
    let cpu = cpu_time(&pid.to_string()).context("reading the consumer's CPU time")?;
    let children_hwm_kib = children_of(pid)
        .into_iter()
        .filter_map(vm_hwm_kib)
        .collect();
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
    let left = admin.ready(queue)?;
    let dead = admin.ready(&format!("{queue}.dead"))?;
    if left != 0 || dead != 0 {
        bail!(
            "after logfence stopped, {left} messages were back in {queue} and {dead} dead-lettered"
        );
    }
    Ok(Measured {
        elapsed,
        hwm_kib,
        cpu,
        children_hwm_kib,
        lines: lines.poll()?,
    })
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

fn run() -> Result<()> {
    let n: usize = match std::env::var("LOGFENCE_E2E_N") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("LOGFENCE_E2E_N={v:?} is not a positive count"))?,
        Err(_) => DEFAULT_N,
    };
    let bodies = realistic_bodies()?;
    let mean_size = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    let admin = Admin::connect()?;
    println!(
        "e2e: {n} persistent records per side ({} realistic %-style fixtures cycled, {mean_size} B \
         mean), classic queue, prefetch {PREFETCH}, broker {}",
        bodies.len(),
        broker_addr()
    );
    let result = (|| {
        let mut raws = Vec::new();
        let mut measured = None;
        for side in ["raw", "logfence", "raw"] {
            let queue = admin.fill(side, &bodies, n)?;
            if side == "raw" {
                let (d, cpu) = raw_drain(&admin, &queue, n)?;
                let left = admin.ready(&queue)?;
                if left != 0 {
                    bail!("{left} messages left in {queue} after the raw drain");
                }
                println!(
                    "e2e: raw lapin consume+ack: {n} in {:.2} s = {:.0} msgs/s, CPU {:.2} s",
                    d.as_secs_f64(),
                    rate(n, d),
                    cpu.as_secs_f64()
                );
                raws.push((rate(n, d), cpu.as_secs_f64()));
            } else {
                let m = logfence_drain(&admin, &queue, n)?;
                let children: Vec<String> = m
                    .children_hwm_kib
                    .iter()
                    .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                    .collect();
                let children = if children.is_empty() {
                    "no child process".to_string()
                } else {
                    format!("child processes: {}", children.join(", "))
                };
                println!(
                    "e2e: logfence consume -> render -> file sink -> ack: {n} in {:.2} s = {:.0} \
                     msgs/s, CPU {:.2} s ({} lines), peak RSS {:.1} MiB ({children})",
                    m.elapsed.as_secs_f64(),
                    rate(n, m.elapsed),
                    m.cpu.as_secs_f64(),
                    m.lines,
                    m.hwm_kib as f64 / 1024.0,
                );
                measured = Some(m);
            }
            admin.delete_all();
        }
        Ok((raws, measured))
    })();
    admin.delete_all();
    let (raws, measured) = result?;
    let Some(m) = measured else {
        bail!("logfence was not measured");
    };
    let raw = raws.iter().map(|r| r.0).sum::<f64>() / raws.len() as f64;
    let raw_cpu = raws.iter().map(|r| r.1).sum::<f64>() / raws.len() as f64;
    let ratio = rate(n, m.elapsed) / raw;
    let rss_mib = m.hwm_kib as f64 / 1024.0;
    println!(
        "e2e: logfence/raw = {:.0} / {raw:.0} (mean of the raws) = {ratio:.2} (target >= \
         {RATIO_TARGET:.2}: {})",
        rate(n, m.elapsed),
        verdict(ratio >= RATIO_TARGET)
    );
    println!(
        "e2e: CPU per 100k records: logfence {:.2} s, raw {:.2} s (mean): {:.1}x (reported, \
         not a target)",
        m.cpu.as_secs_f64() * 1e5 / n as f64,
        raw_cpu * 1e5 / n as f64,
        m.cpu.as_secs_f64() / raw_cpu.max(f64::MIN_POSITIVE)
    );
    println!(
        "e2e: peak RSS (VmHWM) {rss_mib:.1} MiB (target <= {RSS_TARGET_MIB} MiB: {})",
        verdict(rss_mib <= RSS_TARGET_MIB)
    );
    Ok(())
}
