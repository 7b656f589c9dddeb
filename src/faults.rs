//! Fault injection for tests: failpoints in the render path, compiled in only with the
//! `failpoints` feature (never in release builds). Armed through the `FAILPOINTS`
//! environment variable of the `fail` crate, e.g. `FAILPOINTS=render-abort=return(POISON)`:
//! the argument is a marker, and the fault fires only for a record whose `msg` contains it
//! (no argument: every record). The same marker works in the main process and in the
//! sandbox worker alike, which is what the poison tests need.
//!
//! - `render-panic`: panics.
//! - `render-abort`: aborts the process (SIGABRT), as an infallible allocation failure would.
//! - `render-alloc`: allocates without bound (dies under the sandbox's address-space limit).
//! - `render-loop`: spins forever (the sandbox's timeout ends it).
//!
//! In the consumer, holds that let a test land a signal or a deadline where it wants:
//!
//! - `settle-hold`: `return(MS)` holds a batch's settlement for MS milliseconds once the
//!   broker has been told, so the drain timeout can run out while a settlement is under way
//!   (`1*return(MS)`: the first batch only).
//! - `exit-hold`: `sleep(MS)` holds `consume` for MS milliseconds after it stopped and logged
//!   its totals, so a test can read the final `/metrics` before the process exits.
//!
//! Elsewhere: `dlq-hold` (src/dlq/hold.rs) pauses `dlq list` after each message it holds, so a
//! test can interrupt a listing midway.

use std::time::Duration;

/// Every failpoint name, for tests and docs.
pub const FAILPOINTS: [&str; 4] = [
    "render-panic",
    "render-abort",
    "render-alloc",
    "render-loop",
];

/// Called with the template just before it is rendered.
#[inline]
pub fn before_render(msg: &str) {
    #[cfg(feature = "failpoints")]
    armed::before_render(msg);
    #[cfg(not(feature = "failpoints"))]
    let _ = msg;
}

/// How long to hold a settlement once the broker was told (`settle-hold`); `None` unless armed.
#[inline]
pub fn settle_hold() -> Option<Duration> {
    #[cfg(feature = "failpoints")]
    {
        armed::settle_hold()
    }
    #[cfg(not(feature = "failpoints"))]
    None
}

/// Called once `consume` has stopped and logged its totals, just before it returns.
#[inline]
pub fn before_exit() {
    #[cfg(feature = "failpoints")]
    armed::before_exit();
}

/// Installs the failpoints named in `FAILPOINTS`; a no-op without the feature.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        let scenario = fail::FailScenario::setup();
        // The scenario must outlive the process; it is only torn down at exit.
        std::mem::forget(scenario);
    }
}

#[cfg(feature = "failpoints")]
#[allow(clippy::panic)]
mod armed {
    use std::time::Duration;

    pub fn settle_hold() -> Option<Duration> {
        fail::fail_point!("settle-hold", |arg| {
            arg.and_then(|ms| ms.trim().parse().ok())
                .map(Duration::from_millis)
        });
        None
    }

    pub fn before_exit() {
        fail::fail_point!("exit-hold");
    }

    fn fires(arg: &Option<String>, msg: &str) -> bool {
        match arg.as_deref() {
            None | Some("") => true,
            Some(marker) => msg.contains(marker),
        }
    }

    pub fn before_render(msg: &str) {
        panic_point(msg);
        abort_point(msg);
        alloc_point(msg);
        loop_point(msg);
    }

    fn panic_point(msg: &str) {
        fail::fail_point!("render-panic", |arg| {
            if fires(&arg, msg) {
                panic!("failpoint render-panic");
            }
        });
    }

    fn abort_point(msg: &str) {
        fail::fail_point!("render-abort", |arg| {
            if fires(&arg, msg) {
                std::process::abort();
            }
        });
    }

    fn alloc_point(msg: &str) {
        fail::fail_point!("render-alloc", |arg| {
            if fires(&arg, msg) {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Address space, not pages: the limit is reached in a few steps.
                    let mut chunk: Vec<u8> = Vec::with_capacity(64 << 20);
                    chunk.push(1);
                    hoard.push(chunk);
                    std::hint::black_box(&hoard);
                }
            }
        });
    }

    fn loop_point(msg: &str) {
        fail::fail_point!("render-loop", |arg| {
            if fires(&arg, msg) {
                loop {
                    std::hint::spin_loop();
                }
            }
        });
    }
}
