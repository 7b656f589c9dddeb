//! Rendering one record in a child process that may die without taking us with it.
//!
//! The child is this same binary, re-executed as `logfence __sandbox-worker`, with an
//! address-space limit (a runaway allocation fails there, and an infallible one aborts the
//! child, not us), a CPU-time backstop, no core dumps, and death-on-parent-exit. It is kept
//! alive and fed records one after another over a pipe, because after a connection loss
//! every in-flight message comes back as a suspect at once: a process per suspect is the
//! wrong shape. Each record is named (written) before the child starts on it, so a death
//! names its culprit; the worker is respawned for the next record.
//!
//! Wire format, both ways: a 4-byte little-endian length, then that many bytes. Requests
//! carry a record body; replies carry the JSON of a [`pipeline::Outcome`](crate::pipeline::Outcome).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{Resource, Rlimit};

use crate::pipeline::{Outcome, Pipeline};

/// Default address-space limit of a worker. The binary starts and runs in a few MiB; a
/// record within the default limits needs well under 64 MiB.
pub const DEFAULT_ADDRESS_SPACE: u64 = 512 << 20;
/// A worker is retired after it has been busy this long in total, well before its
/// `RLIMIT_CPU` (twice this) could kill it while rendering an innocent record.
pub const WORKER_BUSY_BUDGET: Duration = Duration::from_secs(30);
/// Largest reply a worker may send: a line is bounded by the output limits, this only
/// guards the parent against a confused child.
const MAX_REPLY_BYTES: u32 = 64 << 20;

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The logfence binary to re-execute (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Arguments after `__sandbox-worker`: the limit and line flags.
    pub worker_args: Vec<OsString>,
    /// `RLIMIT_AS` of the worker, in bytes.
    pub address_space: u64,
    /// Wall-clock bound of one record (`--format-timeout`).
    pub timeout: Duration,
}

/// `wanted`, lowered to the calling process's hard limit of `resource` when that is lower.
fn within_hard_limit(resource: Resource, wanted: u64) -> u64 {
    match rustix::process::getrlimit(resource).maximum {
        Some(hard) => wanted.min(hard),
        None => wanted,
    }
}

/// What one sandboxed run came to.
#[derive(Debug)]
pub enum Run {
    /// The worker rendered the record (whatever its verdict).
    Finished(Outcome),
    /// The worker died on this record: how (`killed by signal 6 (SIGABRT)`).
    Crashed(String),
    /// The worker overran the timeout on this record and was killed.
    TimedOut(Duration),
}

/// A worker process and its pipes.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    /// Total time it has spent on records: its CPU time cannot exceed this (one thread).
    busy: Duration,
}

/// A sandbox: at most one live worker, respawned on demand.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    worker: Option<Worker>,
    /// How many workers have been started (for metrics and tests).
    spawned: u64,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox {
            config,
            worker: None,
            spawned: 0,
        }
    }

    /// Workers started so far.
    pub fn spawned(&self) -> u64 {
        self.spawned
    }

    /// Renders `body` in the worker. An `Err` means no worker could be started or fed for
    /// reasons other than the record (the binary is missing, fork failed).
    pub fn run(&mut self, body: &[u8]) -> io::Result<Run> {
        let mut worker = match self.worker.take() {
            Some(w) => w,
            None => self.spawn()?,
        };
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let sent = write_frame(&mut worker.stdin, body);
        let reply = match sent {
            Ok(()) => read_frame_until(&mut worker.stdout, deadline, MAX_REPLY_BYTES),
            Err(e) => Err(FrameError::Io(e)),
        };
        worker.busy += started.elapsed();
        match reply {
            Ok(bytes) => match serde_json::from_slice::<Outcome>(&bytes) {
                Ok(outcome) => {
                    if worker.busy < WORKER_BUSY_BUDGET {
                        self.worker = Some(worker);
                    } else {
                        retire(worker);
                    }
                    Ok(Run::Finished(outcome))
                }
                Err(e) => {
                    kill(&mut worker);
                    Ok(Run::Crashed(format!("worker sent a malformed reply: {e}")))
                }
            },
            Err(FrameError::TimedOut) => {
                kill(&mut worker);
                Ok(Run::TimedOut(self.config.timeout))
            }
            Err(FrameError::TooLarge(len)) => {
                kill(&mut worker);
                Ok(Run::Crashed(format!(
                    "worker sent an oversized reply ({len} bytes)"
                )))
            }
            Err(e @ (FrameError::Io(_) | FrameError::Eof)) => {
                let status = kill(&mut worker);
                let mut detail = describe_exit(status);
                if let (FrameError::Io(io), None) = (&e, status) {
                    detail = format!("{detail} ({io})");
                }
                let last_words = read_stderr_tail(&mut worker.stderr);
                if !last_words.is_empty() {
                    detail.push_str(": ");
                    detail.push_str(&last_words);
                }
                Ok(Run::Crashed(detail))
            }
        }
    }

    fn spawn(&mut self) -> io::Result<Worker> {
        // Never above what this process may have itself: raising a hard limit is refused
        // (EPERM), and under a pod-like `ulimit -v` the worker would not start at all.
        let address_space = within_hard_limit(Resource::As, self.config.address_space);
        let cpu_seconds = within_hard_limit(
            Resource::Cpu,
            WORKER_BUSY_BUDGET.as_secs().saturating_mul(2).max(2),
        );
        let mut cmd = Command::new(&self.config.exe);
        cmd.arg("__sandbox-worker")
            .args(&self.config.worker_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A crash is reported by its panic message; a backtrace would only cost the
            // worker time inside `--format-timeout` and turn a crash into a timeout.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
        // SAFETY: only async-signal-safe system calls (setrlimit, prctl) run between fork
        // and exec; nothing allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                let limit = |n: u64| Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                };
                rustix::process::setrlimit(Resource::As, limit(address_space))?;
                rustix::process::setrlimit(Resource::Cpu, limit(cpu_seconds))?;
                rustix::process::setrlimit(Resource::Core, limit(0))?;
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        self.spawned += 1;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("sandbox worker started without its pipes"));
        };
        Ok(Worker {
            child,
            stdin,
            stdout,
            stderr,
            busy: Duration::ZERO,
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            retire(worker);
        }
    }
}

/// Closes the worker's stdin so it exits by itself, and reaps it.
fn retire(worker: Worker) {
    let Worker {
        mut child, stdin, ..
    } = worker;
    drop(stdin);
    let _ = child.wait();
}

/// Kills and reaps the worker; returns how it ended.
fn kill(worker: &mut Worker) -> Option<ExitStatus> {
    // It may already be dead (that is usually why we are here): then kill fails harmlessly
    // and wait returns its real status.
    if let Ok(Some(status)) = worker.child.try_wait() {
        return Some(status);
    }
    // Give a dying child a moment to finish dying, so its own signal is reported rather
    // than our SIGKILL.
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until {
        if let Ok(Some(status)) = worker.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = worker.child.kill();
    worker.child.wait().ok()
}

/// `killed by signal 6 (SIGABRT)` / `exited with status 101`.
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        None => "worker vanished".to_string(),
        Some(s) => match (s.signal(), s.code()) {
            (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
            (None, Some(code)) => format!("exited with status {code}"),
            (None, None) => "ended abnormally".to_string(),
        },
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

/// The last line the worker wrote to stderr (a panic message), bounded.
fn read_stderr_tail(stderr: &mut ChildStderr) -> String {
    let mut buf = Vec::new();
    let _ = stderr.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    // A panic is reported as "thread 'main' panicked at FILE:LINE:COL:" then its message.
    let words = match lines.iter().position(|l| l.contains("panicked")) {
        Some(i) => lines[i..]
            .iter()
            .take(2)
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" "),
        None => lines.last().map_or(String::new(), |l| l.trim().to_string()),
    };
    words.chars().take(300).collect()
}

#[derive(Debug)]
enum FrameError {
    Eof,
    TimedOut,
    TooLarge(u32),
    Io(io::Error),
}

fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record larger than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame, waiting at most until `deadline` for each chunk.
fn read_frame_until(
    r: &mut ChildStdout,
    deadline: Instant,
    max: u32,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    read_exact_until(r, &mut len, deadline)?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len as usize];
    read_exact_until(r, &mut buf, deadline)?;
    Ok(buf)
}

fn read_exact_until(
    r: &mut ChildStdout,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), FrameError> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TimedOut);
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&*r, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Err(FrameError::TimedOut),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(FrameError::Io(e.into())),
        }
        match r.read(buf) {
            Ok(0) => return Err(FrameError::Eof),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// The worker's side: reads records from `input` until it closes, answering each with its
/// outcome. Runs in the child process.
pub fn serve(pipeline: &Pipeline, mut input: impl Read, mut output: impl Write) -> io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        let mut body = Vec::new();
        body.try_reserve_exact(len).map_err(io::Error::other)?;
        body.resize(len, 0);
        input.read_exact(&mut body)?;
        let outcome = pipeline.process(&body);
        drop(body);
        let reply = serde_json::to_vec(&outcome).map_err(io::Error::other)?;
        write_frame(&mut output, &reply)?;
    }
}
