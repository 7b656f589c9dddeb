//! `deploy/prometheus/` and `deploy/grafana/`: the real `promtool` on the rules, their unit
//! tests and the dashboard's queries; every metric name against docs/metrics.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{
    files_in, json_file, promtool, read, repo, yaml_documents, SPEC_HISTOGRAMS, SPEC_METRICS,
};

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yaml";
const DASHBOARD: &str = "deploy/grafana/logfence.json";

/// The alerts deploy/prometheus/alerts.yaml must hold, and the metric each one must watch.
const REQUIRED_ALERTS: [(&str, &str); 6] = [
    (
        "LogfencePoisonMessageDeadLettered",
        "logfence_messages_total",
    ),
    ("LogfenceHighRejectRate", "logfence_messages_total"),
    (
        "LogfenceConsumerPausedForMemory",
        "logfence_consumer_paused",
    ),
    (
        "LogfencePreviousExitUnclean",
        "logfence_previous_exit_unclean",
    ),
    ("LogfenceDisconnected", "logfence_amqp_connected"),
    ("LogfenceMemoryNearLimit", "logfence_memory_limit_bytes"),
];

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo("."))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `logfence_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\blogfence_[a-z0-9_]+").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// The metric (docs/metrics.md) behind a series name (`_bucket`, `_sum`, `_count` of a histogram).
fn spec_metric(series: &str) -> Option<&'static str> {
    if let Some(m) = SPEC_METRICS.iter().find(|m| **m == series) {
        return Some(m);
    }
    SPEC_HISTOGRAMS.iter().copied().find(|h| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| series.strip_suffix(s) == Some(h))
    })
}

fn assert_spec_metrics_only(path: &str) -> BTreeSet<&'static str> {
    let names = metric_names(&read(path));
    assert!(!names.is_empty(), "{path} names no metric");
    names
        .iter()
        .map(|n| spec_metric(n).unwrap_or_else(|| panic!("{path}: {n} is not a documented metric")))
        .collect()
}

/// Every `expr` of the dashboard's panels, with Grafana's variables replaced by what
/// Prometheus would see: intervals by `5m`, label variables by `.*`.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash = json_file(DASHBOARD);
    let var = regex::Regex::new(r"\$\{?[a-z_]+\}?").expect("regex");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("panel title");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut e = expr.to_string();
            for interval in ["$__rate_interval", "$__interval", "$__range"] {
                e = e.replace(interval, "5m");
            }
            let e = var.replace_all(&e, ".*").into_owned();
            out.push((title.to_string(), e));
        }
    }
    out
}

#[test]
fn every_yaml_and_json_file_parses() {
    for name in files_in("deploy/prometheus", &[".yaml", ".yml"]) {
        assert!(!yaml_documents(&format!("deploy/prometheus/{name}")).is_empty());
    }
    for name in files_in("deploy/grafana", &[".json"]) {
        assert!(json_file(&format!("deploy/grafana/{name}")).is_object());
    }
    assert!(json_file("deploy/rabbitmq/definitions.json").is_object());
}

#[test]
#[cfg_attr(logfence_skip_tools, ignore = "LOGFENCE_SKIP_TOOL_TESTS is set")]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    run_promtool(&["check", "rules", ALERTS]);
    run_promtool(&["test", "rules", ALERTS_TEST]);
}

#[test]
fn the_required_alerts_exist_and_each_is_unit_tested() {
    let rules = &yaml_documents(ALERTS)[0];
    let tests = &yaml_documents(ALERTS_TEST)[0];
    let tested: BTreeSet<&str> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|t| t["alertname"].as_str().expect("alertname"))
        .collect();
    let silent: BTreeSet<&str> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| a.is_empty()))
        .map(|t| t["alertname"].as_str().expect("alertname"))
        .collect();
    let all: Vec<&Value> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    for rule in &all {
        let name = rule["alert"].as_str().expect("alerting rules only");
        assert!(
            tested.contains(name),
            "{name} is never shown firing in {ALERTS_TEST}"
        );
        assert!(
            silent.contains(name),
            "{name} is never shown silent in {ALERTS_TEST}"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key].is_string(),
                "{name}: a {key} annotation"
            );
        }
    }
    for (name, metric) in REQUIRED_ALERTS {
        let rule = all
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no {name} alert"));
        let expr = rule["expr"].as_str().expect("expr");
        assert!(expr.contains(metric), "{name} watches {metric}: {expr}");
    }
}

#[test]
fn the_spec_metrics_are_the_ones_the_binary_registers() {
    let spec: BTreeSet<&str> = SPEC_METRICS.into_iter().collect();
    let served: BTreeSet<&str> = logfence::telemetry::names::ALL.into_iter().collect();
    assert_eq!(spec, served, "docs/metrics.md vs src/telemetry/names.rs");
}

#[test]
fn alerts_and_dashboard_name_only_spec_metrics() {
    assert_spec_metrics_only(ALERTS);
    assert_spec_metrics_only(ALERTS_TEST);
    let shown = assert_spec_metrics_only(DASHBOARD);
    let missing: Vec<&&str> = SPEC_METRICS
        .iter()
        .filter(|m| !shown.contains(**m))
        .collect();
    assert!(missing.is_empty(), "the dashboard shows no {missing:?}");
    assert!(
        metric_names(&read(DASHBOARD)).contains("logfence_message_alloc_bytes_bucket"),
        "the allocation heatmap reads the histogram's buckets"
    );
}

#[test]
#[cfg_attr(logfence_skip_tools, ignore = "LOGFENCE_SKIP_TOOL_TESTS is set")]
fn dashboard_queries_pass_promtool_as_recording_rules() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "a dashboard of {} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: logfence_dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        assert!(
            !expr.contains('$'),
            "{title}: a Grafana variable left in {expr}"
        );
        // JSON strings are valid YAML scalars.
        let quoted = serde_json::to_string(expr).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard_rules.yaml");
    std::fs::write(&path, rules).expect("write rules");
    run_promtool(&["check", "rules", path_str(&path)]);
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}
