//! jemalloc as the global allocator, and per-thread allocation measurement.
//!
//! `measure` reads jemalloc's per-thread `allocated` counter immediately before and after a
//! synchronous closure, on the same thread. That is only correct because the closure never
//! awaits: read across an `.await`, a task may have moved threads and one message would be
//! charged with another's memory. The counter is cumulative (bytes ever allocated by this
//! thread, in jemalloc size classes: a 1,000-byte `Vec` reads 1,024), so the difference is
//! the total a record asked for, not its peak.

use tikv_jemalloc_ctl::thread::{allocatedp, ThreadLocal};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

thread_local! {
    /// A pointer to this thread's counter, looked up once: reading it is then a load.
    static ALLOCATED: Option<ThreadLocal<u64>> =
        allocatedp::mib().and_then(|mib| mib.read()).ok();
}

/// Bytes this thread has allocated since it started; 0 when jemalloc has no statistics.
#[inline]
pub fn thread_allocated() -> u64 {
    ALLOCATED.with(|a| a.as_ref().map_or(0, |p| p.get()))
}

/// Runs `f` and returns its result with the bytes it allocated on this thread.
#[inline]
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = thread_allocated();
    let value = f();
    let after = thread_allocated();
    (value, after.wrapping_sub(before))
}

/// Process-wide allocated bytes (`stats.allocated`), refreshed by advancing jemalloc's
/// epoch; meant for a periodic sampler, not the per-message path.
pub fn process_allocated() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|v| v as u64)
}

/// Process-wide resident bytes (`stats.resident`), refreshed like [`process_allocated`].
pub fn process_resident() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::resident::read()
        .ok()
        .map(|v| v as u64)
}

/// Caps glibc's own malloc at one arena. Rust's allocations go to jemalloc, but glibc still
/// serves its own (thread start-up, name resolution) and by default reserves a 64 MiB arena
/// per thread that touches it: six threads meant 384 MiB of address space for a few KiB of
/// use, enough to fail under an address-space limit (`ulimit -v`, `prlimit --as`) that the
/// memory actually used is far below. Call first thing in `main`, before any thread starts.
pub fn cap_libc_arenas() {
    // SAFETY: mallopt only sets a tunable of glibc's allocator; called before any other
    // thread exists, it races with nothing. Its result (1 on success) is informational.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_sees_an_allocation_in_size_class_bytes() {
        let (v, bytes) = measure(|| vec![0u8; 1000]);
        assert_eq!(v.len(), 1000);
        assert!((1000..=1100).contains(&bytes), "measured {bytes}");
    }

    #[test]
    fn measure_of_nothing_is_zero() {
        let ((), bytes) = measure(|| ());
        assert_eq!(bytes, 0);
    }

    #[test]
    fn measure_is_per_thread() {
        let (_, bytes) = measure(|| {
            std::thread::scope(|s| {
                s.spawn(|| std::hint::black_box(vec![0u8; 1 << 20]));
            });
        });
        assert!(
            bytes < 64 << 10,
            "another thread's MiB was charged here: {bytes}"
        );
    }
}
