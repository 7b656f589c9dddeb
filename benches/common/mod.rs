//! What the criterion benches share: reading back a figure criterion measured in this run,
//! so each bench can print its ratio against a baseline measured beside it.

use std::path::PathBuf;

/// The mean time criterion measured for `group/name` in this run, in nanoseconds.
pub fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"))
                .join("criterion")
        });
    let path = root
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}
