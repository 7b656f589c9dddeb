//! The memory cap: where it comes from, how it sizes prefetch, and when deliveries pause.
//!
//! - **The cap** is `--memory-limit`, else the cgroup v2 `memory.max` of this process (the
//!   tightest one on the path from its cgroup up to the root; `max` means none). Without
//!   either there is no cap: prefetch takes its default and nothing ever pauses.
//! - **Prefetch** is what bounds the broker's side: lapin buffers every delivery the broker
//!   sends, without limit, so the only way to bound that buffer is to bound how many the
//!   broker may send. [`prefetch_for`] keeps `prefetch × max_body_bytes` within a quarter of
//!   the cap, leaving the rest for rendering, output lines, the sink and the runtime.
//! - **Pausing** is the backstop for everything prefetch cannot see (big renders, a slow sink
//!   holding lines). [`MemoryGate`] samples jemalloc's process-wide `stats.allocated` on a
//!   timer (~100 ms), never per message: advancing jemalloc's epoch takes a global lock and
//!   would serialise every worker. At or above the high watermark (75 % of the cap) it
//!   reports paused; the consumer then stops polling for deliveries between batches (it
//!   does not cancel its consumer, nor drop deliveries) and waits in
//!   [`MemoryGate::wait_resumed`] for at most a second before it takes one batch anyway. It
//!   resumes at or below the low watermark (60 %): the gap is there so the consumer does not
//!   flap on and off around one threshold while in-flight work finishes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Prefetch when there is no cap and none was asked for: a window that keeps the consumer
/// busy through the round trip of a batch's ack (the loop takes at most a quarter of it per
/// batch). Measured against 200, it is what brought the default flags level with a raw
/// lapin loop; small records make it a few hundred KiB in lapin's buffer, and a cap lowers it.
pub const DEFAULT_PREFETCH: u16 = 1000;

/// How often [`MemoryGate`] samples `stats.allocated`. Often enough to stop within a few
/// hundred deliveries of a surge; rare enough that the epoch lock costs nothing.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Pause at or above this share of the cap (per cent).
pub const HIGH_WATERMARK_PERCENT: u64 = 75;

/// Resume at or below this share of the cap (per cent).
pub const LOW_WATERMARK_PERCENT: u64 = 60;

/// Share of the cap that prefetched bodies may take at most: one quarter.
const PREFETCH_SHARE_DIVISOR: u64 = 4;

/// The cgroup v2 filesystem, as mounted in a container or on a unified-hierarchy host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The memory limit of this process's cgroup (v2), if it has one.
///
/// Reads `/proc/self/cgroup` for the unified-hierarchy path (`0::/…`) and takes the smallest
/// `memory.max` from that cgroup up to the mount root, since any ancestor's limit applies
/// too. In a container with its own cgroup namespace the path is `/` and this reads
/// `/sys/fs/cgroup/memory.max`. Cgroup v1 is not consulted: `None` there.
pub fn cgroup_memory_max() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok();
    let relative = own.as_deref().and_then(unified_cgroup_path).unwrap_or("/");
    memory_max_under(Path::new(CGROUP_ROOT), relative)
}

/// The path of the cgroup v2 line (`0::/path`) of a `/proc/self/cgroup`.
fn unified_cgroup_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
}

/// The tightest `memory.max` on the way from `root/relative` up to `root`.
fn memory_max_under(root: &Path, relative: &str) -> Option<u64> {
    let mut dir = root.join(relative.trim_start_matches('/'));
    let mut tightest: Option<u64> = None;
    loop {
        if let Some(limit) = read_memory_max(&dir.join("memory.max")) {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
        if dir.as_path() == root || !dir.pop() || !dir.starts_with(root) {
            return tightest;
        }
    }
}

/// One `memory.max` file: a byte count, or `max` for no limit. Missing or unreadable files
/// and anything else are no limit: a cap we cannot read is not a cap.
fn read_memory_max(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_memory_max(&text)
}

fn parse_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        number => number.parse().ok(),
    }
}

/// The cap in force: the flag when given, else the cgroup's.
pub fn effective_limit(flag: Option<u64>) -> Option<u64> {
    flag.or_else(cgroup_memory_max)
}

/// The prefetch (AMQP `basic.qos` count) to ask the broker for.
///
/// Without a cap: `requested`, else [`DEFAULT_PREFETCH`]. With a cap, either is lowered so
/// that `prefetch × max_body_bytes` stays within a quarter of the cap, because a prefetched
/// delivery sits in lapin's buffer, body and all, before we see it. A requested value is
/// honoured only up to that bound: an explicit `--prefetch` cannot buy past the cap. The
/// result is at least 1, even when one maximal body alone is over the quarter (the consumer
/// must take something to make progress), and 0 is never returned, because to AMQP 0 means
/// "unlimited", the one value that would defeat the cap entirely.
pub fn prefetch_for(limit: Option<u64>, max_body_bytes: usize, requested: Option<u16>) -> u16 {
    let wanted = requested.unwrap_or(DEFAULT_PREFETCH).max(1);
    let Some(limit) = limit else {
        return wanted;
    };
    let body = (max_body_bytes as u64).max(1);
    let bound = (limit / PREFETCH_SHARE_DIVISOR) / body;
    let bound = u16::try_from(bound).unwrap_or(u16::MAX).max(1);
    wanted.min(bound)
}

/// `percent` of `limit`, without overflow for any `u64` limit.
fn share(limit: u64, percent: u64) -> u64 {
    u64::try_from(u128::from(limit) * u128::from(percent) / 100).unwrap_or(u64::MAX)
}

/// A sampled `allocated` that means "no sample": jemalloc without statistics.
const NO_SAMPLE: u64 = u64::MAX;

/// The pause switch driven by sampled allocation. Cheap to clone; the sampling task stops
/// once every gate and every [`MemoryGate::subscribe`] receiver is dropped.
#[derive(Debug, Clone)]
pub struct MemoryGate {
    /// The cap this gate enforces; `None` never pauses.
    limit: Option<u64>,
    /// `true` while paused, as last decided by the sampling task.
    paused: watch::Receiver<bool>,
    /// The last `stats.allocated` sample (for the `logfence_memory_allocated_bytes` gauge),
    /// or [`NO_SAMPLE`].
    last_sample: Arc<AtomicU64>,
}

impl MemoryGate {
    /// Starts sampling jemalloc's `stats.allocated` every [`SAMPLE_PERIOD`]. Must be called
    /// inside a tokio runtime.
    pub fn spawn(limit: Option<u64>) -> MemoryGate {
        Self::spawn_with(limit, SAMPLE_PERIOD, crate::alloc::process_allocated)
    }

    /// As [`MemoryGate::spawn`], with the sampling source and period given: tests drive the
    /// gate with a fake allocation figure. A sampler that returns `None` (no statistics)
    /// leaves the state as it was: the gate fails open rather than stall the consumer on a
    /// figure it cannot read.
    pub fn spawn_with<F>(limit: Option<u64>, period: Duration, mut sample: F) -> MemoryGate
    where
        F: FnMut() -> Option<u64> + Send + 'static,
    {
        let (tx, paused) = watch::channel(false);
        let last_sample = Arc::new(AtomicU64::new(NO_SAMPLE));
        let gate = MemoryGate {
            limit,
            paused,
            last_sample: Arc::clone(&last_sample),
        };
        let watermarks = limit.map(Watermarks::of);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = ticker.tick() => {}
                }
                let Some(allocated) = sample() else {
                    if !warned {
                        tracing::warn!("allocation statistics unavailable; memory gate open");
                        warned = true;
                    }
                    continue;
                };
                last_sample.store(allocated, Ordering::Relaxed);
                let Some(marks) = watermarks else { continue };
                tx.send_if_modified(|paused| {
                    let next = marks.next_state(*paused, allocated);
                    if next != *paused {
                        if next {
                            tracing::warn!(
                                allocated,
                                high_watermark = marks.high,
                                "memory above the high watermark; pausing deliveries"
                            );
                        } else {
                            tracing::info!(
                                allocated,
                                low_watermark = marks.low,
                                "memory below the low watermark; resuming deliveries"
                            );
                        }
                        *paused = next;
                        crate::telemetry::metrics().paused(next);
                        true
                    } else {
                        false
                    }
                });
            }
        });
        gate
    }

    /// The cap this gate enforces.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The last sampled `stats.allocated`, once there is one.
    pub fn last_sample(&self) -> Option<u64> {
        match self.last_sample.load(Ordering::Relaxed) {
            NO_SAMPLE => None,
            bytes => Some(bytes),
        }
    }

    /// Whether deliveries should pause now.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Resolves once not paused (at once if not paused now). Cancel-safe.
    pub async fn wait_resumed(&self) {
        let mut rx = self.paused.clone();
        // Closed only when the sampling task is gone (runtime shutting down): nothing will
        // pause us any more, so returning is right.
        let _ = rx.wait_for(|paused| !*paused).await;
    }

    /// A receiver of the paused state, for loops that select on its changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.paused.clone()
    }
}

/// The two thresholds of one cap.
#[derive(Debug, Clone, Copy)]
struct Watermarks {
    high: u64,
    low: u64,
}

impl Watermarks {
    fn of(limit: u64) -> Watermarks {
        Watermarks {
            high: share(limit, HIGH_WATERMARK_PERCENT),
            low: share(limit, LOW_WATERMARK_PERCENT),
        }
    }

    /// Hysteresis: pause at or above `high`, resume at or below `low`, else stay.
    fn next_state(self, paused: bool, allocated: u64) -> bool {
        if paused {
            allocated > self.low
        } else {
            allocated >= self.high
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::fs;
    use tokio::time::timeout;

    const MIB: u64 = 1 << 20;

    #[test]
    fn memory_max_reads_bytes_and_max_means_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.max");
        fs::write(&path, "268435456\n").expect("write");
        assert_eq!(read_memory_max(&path), Some(268_435_456));
        fs::write(&path, "max\n").expect("write");
        assert_eq!(read_memory_max(&path), None);
        fs::write(&path, "garbage\n").expect("write");
        assert_eq!(read_memory_max(&path), None);
        assert_eq!(read_memory_max(&dir.path().join("missing")), None);
    }

    #[test]
    fn memory_max_takes_the_tightest_limit_up_the_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        let leaf = root.path().join("kubepods/pod1/ctr");
        fs::create_dir_all(&leaf).expect("mkdir");
        fs::write(leaf.join("memory.max"), "max\n").expect("write");
        fs::write(root.path().join("kubepods/pod1/memory.max"), "1000\n").expect("write");
        fs::write(root.path().join("kubepods/memory.max"), "5000\n").expect("write");
        assert_eq!(
            memory_max_under(root.path(), "/kubepods/pod1/ctr"),
            Some(1000)
        );
        assert_eq!(memory_max_under(root.path(), "/kubepods"), Some(5000));
        // A namespaced container: its own cgroup is the mount root.
        fs::write(root.path().join("memory.max"), "300\n").expect("write");
        assert_eq!(memory_max_under(root.path(), "/"), Some(300));
        assert_eq!(
            memory_max_under(root.path(), "/kubepods/pod1/ctr"),
            Some(300)
        );
    }

    #[test]
    fn memory_max_never_walks_above_the_root() {
        let outer = tempfile::tempdir().expect("tempdir");
        fs::write(outer.path().join("memory.max"), "7\n").expect("write");
        let root = outer.path().join("cgroup");
        fs::create_dir_all(root.join("a")).expect("mkdir");
        assert_eq!(memory_max_under(&root, "/a"), None);
        assert_eq!(memory_max_under(&root, "/"), None);
    }

    #[test]
    fn unified_cgroup_path_is_found_among_v1_lines() {
        let text = "4:memory:/x\n0::/system.slice/app.service\n1:cpu:/\n";
        assert_eq!(unified_cgroup_path(text), Some("/system.slice/app.service"));
        assert_eq!(unified_cgroup_path("4:memory:/x\n"), None);
    }

    #[test]
    fn effective_limit_prefers_the_flag() {
        assert_eq!(effective_limit(Some(42)), Some(42));
    }

    #[test]
    fn prefetch_defaults_without_a_cap_and_honours_a_request() {
        assert_eq!(prefetch_for(None, 1 << 20, None), DEFAULT_PREFETCH);
        assert_eq!(prefetch_for(None, 1 << 20, Some(1000)), 1000);
        assert_eq!(prefetch_for(None, 1 << 20, Some(0)), 1);
    }

    #[test]
    fn prefetch_keeps_prefetched_bodies_within_a_quarter_of_the_cap() {
        // 64 MiB cap, 1 MiB bodies: 16 bodies make the quarter.
        assert_eq!(prefetch_for(Some(64 * MIB), MIB as usize, None), 16);
        assert_eq!(prefetch_for(Some(64 * MIB), MIB as usize, Some(300)), 16);
        assert_eq!(prefetch_for(Some(64 * MIB), MIB as usize, Some(5)), 5);
        // Plenty of room: the default stands.
        assert_eq!(prefetch_for(Some(64 * MIB), 4096, None), DEFAULT_PREFETCH);
        for (limit, body, requested) in [
            (64 * MIB, MIB as usize, None),
            (1000, 7, Some(u16::MAX)),
            (u64::MAX, 1, Some(u16::MAX)),
        ] {
            let p = prefetch_for(Some(limit), body, requested);
            assert!(u128::from(p) * body as u128 <= u128::from(limit / 4));
        }
    }

    #[test]
    fn prefetch_is_at_least_one_even_when_one_body_exceeds_the_quarter() {
        assert_eq!(prefetch_for(Some(MIB), 1 << 20, None), 1);
        assert_eq!(prefetch_for(Some(0), 1 << 20, Some(50)), 1);
        assert_eq!(prefetch_for(Some(MIB), 0, None), DEFAULT_PREFETCH);
    }

    #[test]
    fn watermarks_pause_at_high_and_resume_only_at_low() {
        let m = Watermarks::of(1000);
        assert_eq!((m.high, m.low), (750, 600));
        assert!(!m.next_state(false, 749));
        assert!(m.next_state(false, 750));
        assert!(m.next_state(true, 700), "between the marks a pause holds");
        assert!(!m.next_state(true, 600));
        assert!(!m.next_state(false, 700), "between the marks running holds");
        let huge = Watermarks::of(u64::MAX);
        assert!(huge.high > huge.low && huge.low > 0);
    }

    /// A fake `stats.allocated` the test moves by hand.
    fn fake(initial: u64) -> (Arc<AtomicU64>, impl FnMut() -> Option<u64> + Send + 'static) {
        let figure = Arc::new(AtomicU64::new(initial));
        let source = Arc::clone(&figure);
        (figure, move || Some(source.load(Ordering::Relaxed)))
    }

    /// Waits for the gate's first sample (the machine may be slow to schedule its task).
    async fn sampled(gate: &MemoryGate) {
        timeout(Duration::from_secs(5), async {
            while gate.last_sample().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("first sample in time");
    }

    async fn until(rx: &mut watch::Receiver<bool>, want: bool) {
        timeout(Duration::from_secs(5), rx.wait_for(|p| *p == want))
            .await
            .expect("state reached in time")
            .expect("gate alive");
    }

    #[tokio::test]
    async fn gate_pauses_above_high_and_resumes_below_low() {
        let (figure, source) = fake(100 * MIB);
        let gate = MemoryGate::spawn_with(Some(1000 * MIB), Duration::from_millis(5), source);
        let mut rx = gate.subscribe();
        sampled(&gate).await;
        assert!(!gate.is_paused());
        assert_eq!(gate.last_sample(), Some(100 * MIB));

        figure.store(800 * MIB, Ordering::Relaxed);
        until(&mut rx, true).await;
        assert!(gate.is_paused());

        // Between the watermarks: still paused, and wait_resumed keeps waiting.
        figure.store(650 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(gate.is_paused());
        assert!(timeout(Duration::from_millis(50), gate.wait_resumed())
            .await
            .is_err());

        figure.store(500 * MIB, Ordering::Relaxed);
        timeout(Duration::from_secs(5), gate.wait_resumed())
            .await
            .expect("resumed below the low watermark");
        assert!(!gate.is_paused());
        until(&mut rx, false).await;
    }

    #[tokio::test]
    async fn gate_without_a_limit_never_pauses_but_still_samples() {
        let (_figure, source) = fake(u64::MAX - 1);
        let gate = MemoryGate::spawn_with(None, Duration::from_millis(5), source);
        sampled(&gate).await;
        assert!(!gate.is_paused());
        assert_eq!(gate.last_sample(), Some(u64::MAX - 1));
        assert_eq!(gate.limit(), None);
    }

    #[tokio::test]
    async fn gate_fails_open_when_statistics_are_missing() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let gate = MemoryGate::spawn_with(Some(1), Duration::from_millis(5), move || {
            counter.fetch_add(1, Ordering::Relaxed);
            None
        });
        timeout(Duration::from_secs(5), async {
            while calls.load(Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("sampled");
        assert!(!gate.is_paused());
        assert_eq!(gate.last_sample(), None);
    }

    #[tokio::test]
    async fn gate_task_ends_when_every_handle_is_dropped() {
        let (_figure, source) = fake(0);
        let alive = Arc::new(());
        let witness = Arc::clone(&alive);
        let gate = MemoryGate::spawn_with(Some(MIB), Duration::from_millis(5), {
            let mut source = source;
            move || {
                let _hold = &witness;
                source()
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(gate);
        timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&alive) > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("sampling task stopped");
    }

    #[tokio::test]
    async fn real_sampler_reads_jemalloc() {
        let gate = MemoryGate::spawn(None);
        sampled(&gate).await;
        assert!(gate.last_sample().is_some_and(|b| b > 0));
    }
}
