//! Test gating only; the binary and library are built the same either way.
//!
//! The integration tests that need a RabbitMQ (or `promtool` / `rabbitmqctl`) fail, saying
//! what to start or install, when it is missing: a test that could not run must never be
//! reported as passed. Someone without them opts out explicitly, at build time, and those tests
//! are then compiled as `#[ignore]`d, so the summary counts them as ignored:
//!
//! - `LOGFENCE_SKIP_BROKER_TESTS=1` sets `cfg(logfence_skip_broker)`;
//! - `LOGFENCE_SKIP_TOOL_TESTS=1` sets `cfg(logfence_skip_tools)`.
//!
//! (libtest on stable cannot ignore a test at run time, hence a cfg.) Empty or `0` is unset.

const SWITCHES: [(&str, &str); 2] = [
    ("LOGFENCE_SKIP_BROKER_TESTS", "logfence_skip_broker"),
    ("LOGFENCE_SKIP_TOOL_TESTS", "logfence_skip_tools"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for (var, cfg) in SWITCHES {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let on = std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
        if on {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
