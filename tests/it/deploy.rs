//! Every file under `deploy/`, checked by a real tool or against the built binary:
//!
//! - `deploy/k8s/*.yaml` ([`manifests`]): parsed, and cross-checked with `logfence consume
//!   --help` (env names, flags, the metrics port) and with clap's own value parsers (every
//!   ConfigMap value), plus the pod rules: probes, memory request == limit, non-root, the
//!   grace period against the drain timeout, the two shapes (native sidecar, consumer).
//! - `deploy/prometheus/*.yaml` and `deploy/grafana/logfence.json` ([`prometheus`]): the real
//!   `promtool check rules` / `test rules`, the dashboard's PromQL through `promtool check
//!   rules`, every metric name against docs/metrics.md.
//! - `deploy/Dockerfile` and `.dockerignore` ([`dockerfile`]): linted (no Docker engine here).
//! - `deploy/rabbitmq/definitions.json` ([`rabbitmq`]): compared with the topology logfence
//!   declares, then imported into the real broker in a scratch vhost and consumed by the real
//!   `logfence consume --no-declare`, then by a `consume` that declares.

mod dockerfile;
mod manifests;
mod prometheus;
mod rabbitmq;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The metrics of docs/metrics.md: the contract the alerts and the dashboard are written against.
pub(crate) const SPEC_METRICS: [&str; 14] = [
    "logfence_messages_total",
    "logfence_findings_total",
    "logfence_message_alloc_bytes",
    "logfence_format_duration_seconds",
    "logfence_sandbox_runs_total",
    "logfence_redeliveries_total",
    "logfence_memory_allocated_bytes",
    "logfence_memory_resident_bytes",
    "logfence_memory_limit_bytes",
    "logfence_consumer_paused",
    "logfence_amqp_connected",
    "logfence_amqp_reconnects_total",
    "logfence_previous_exit_unclean",
    "logfence_build_info",
];

/// The two histograms of docs/metrics.md: their series carry `_bucket`, `_sum` and `_count`.
pub(crate) const SPEC_HISTOGRAMS: [&str; 2] = [
    "logfence_message_alloc_bytes",
    "logfence_format_duration_seconds",
];

pub(crate) fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every document of a YAML file, as JSON values (so YAML and JSON files are queried alike).
pub(crate) fn yaml_documents(path: &str) -> Vec<Value> {
    let docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"));
    docs.iter()
        .filter(|d| !d.is_null())
        .map(|d| to_json(d, path))
        .collect()
}

pub(crate) fn json_file(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

fn to_json(y: &Yaml, path: &str) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => {
            let f: f64 = r
                .parse()
                .unwrap_or_else(|_| panic!("{path}: bad float {r}"));
            Value::from(f)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(|i| to_json(i, path)).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (key_string(k, path), to_json(v, path)))
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{path}: aliases and bad values are not used"),
    }
}

fn key_string(k: &Yaml, path: &str) -> String {
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("{path}: unexpected mapping key {other:?}"),
    }
}

/// The file names (not paths) directly under `dir` that end with one of `exts`, sorted.
pub(crate) fn files_in(dir: &str, exts: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| exts.iter().any(|x| n.ends_with(x)))
        .collect();
    names.sort();
    names
}

/// What the built binary says about `consume`: its env variables, flags and metrics default.
pub(crate) struct ConsumeHelp {
    pub(crate) text: String,
    pub(crate) envs: BTreeSet<String>,
    pub(crate) flags: BTreeSet<String>,
}

impl ConsumeHelp {
    pub(crate) fn of_binary() -> ConsumeHelp {
        let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .args(["consume", "--help"])
            .output()
            .expect("run logfence consume --help");
        assert!(out.status.success(), "consume --help failed: {out:?}");
        let text = String::from_utf8(out.stdout).expect("help is UTF-8");
        let env_re = regex::Regex::new(r"\[env: ([A-Z0-9_]+)[=\]]").expect("regex");
        let flag_re = regex::Regex::new(r"(?m)^\s+(?:-[a-zA-Z], )?(--[a-z0-9-]+)").expect("regex");
        let envs: BTreeSet<String> = env_re
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .collect();
        let flags: BTreeSet<String> = flag_re
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .collect();
        assert!(
            envs.contains("LOGFENCE_QUEUE") && flags.contains("--queue"),
            "the help text was not understood:\n{text}"
        );
        ConsumeHelp { text, envs, flags }
    }

    /// The port of `--metrics-addr`'s default, as the binary prints it.
    pub(crate) fn metrics_port(&self) -> u16 {
        let re =
            regex::Regex::new(r"--metrics-addr[^\n]*(?:\n[^\n-][^\n]*)*?\[default: [^\]]*:(\d+)\]")
                .expect("regex");
        let caps = re
            .captures(&self.text)
            .unwrap_or_else(|| panic!("no --metrics-addr default in:\n{}", self.text));
        caps[1].parse().expect("a port")
    }
}

/// `promtool`; panics, saying how to install it, where it is missing. Every test that calls
/// it carries `#[cfg_attr(logfence_skip_tools, ignore = ...)]`: `LOGFENCE_SKIP_TOOL_TESTS=1` at
/// build time shows them as ignored instead (see build.rs).
pub(crate) fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| missing_tool("promtool", "apt-get install prometheus"))
}

/// The failure of a test that needs a tool this machine lacks: how to get it, how to opt out.
pub(crate) fn missing_tool(tool: &str, install: &str) -> ! {
    panic!(
        "{tool} is not installed, so this check could not run. Install it ({install}), or \
         build the tests with LOGFENCE_SKIP_TOOL_TESTS=1 and the tests that need it show as \
         ignored."
    )
}
