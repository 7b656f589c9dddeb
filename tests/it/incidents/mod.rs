//! The reliability scenarios (README.md "The incident scenarios"), as ignored-by-default
//! tests: each prints its figures as `FIGURE|scenario|figure|value|goal|met` lines and
//! fails when a goal is missed.
//! `scripts/incidents.sh` runs them (release build, one at a time) and prints the table.
//!
//! Every figure goes through [`Goals`]: a figure with a goal is asserted when the scenario
//! ends, so no goal can be printed and then forgotten.

use std::fmt::Display;

mod cut;
pub(crate) mod failover;
mod fleet;
mod shared_state;
mod soak;
mod stampede;

/// One scenario's figures against their goals.
pub(crate) struct Goals {
    scenario: &'static str,
    /// The goals missed so far, each as `name: value (goal ...)`.
    missed: Vec<String>,
    /// Whether [`Goals::check`] ran (a `Goals` dropped unchecked fails the test).
    checked: bool,
}

impl Goals {
    pub(crate) fn new(scenario: &'static str) -> Goals {
        Goals {
            scenario,
            missed: Vec::new(),
            checked: false,
        }
    }

    /// A figure with a goal: printed for the runner's table, and asserted by
    /// [`Goals::check`]. Returns whether it was met.
    pub(crate) fn goal(&mut self, name: &str, value: impl Display, goal: &str, met: bool) -> bool {
        let value = value.to_string();
        self.print(name, &value, goal, met);
        if !met {
            self.missed.push(format!("{name}: {value} (goal {goal})"));
        }
        met
    }

    /// A figure reported for the table, with no goal.
    pub(crate) fn report(&mut self, name: &str, value: impl Display) {
        self.print(name, &value.to_string(), "report", true);
    }

    /// Fails the scenario when any goal was missed, naming each, then `context`.
    pub(crate) fn check(mut self, context: impl Display) {
        self.checked = true;
        assert!(
            self.missed.is_empty(),
            "{}: goals missed: {}\n{context}",
            self.scenario,
            self.missed.join("; ")
        );
    }

    fn print(&self, name: &str, value: &str, goal: &str, met: bool) {
        println!(
            "FIGURE|{}|{name}|{value}|{goal}|{}",
            self.scenario,
            if met { "yes" } else { "NO" }
        );
    }
}

impl Drop for Goals {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            panic!(
                "{}: goals printed but never checked (end the scenario with Goals::check)",
                self.scenario
            );
        }
    }
}

#[test]
fn a_missed_goal_fails_the_scenario() {
    let mut goals = Goals::new("test");
    goals.report("elapsed", "1 s");
    assert!(goals.goal("met", 1, "1", true));
    assert!(!goals.goal("lost records", 3, "0", false));
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| goals.check("ctx")));
    let message = failed
        .expect_err("a missed goal must fail the scenario")
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(message.contains("lost records: 3 (goal 0)"), "{message}");

    let mut goals = Goals::new("test");
    goals.goal("met", 1, "1", true);
    goals.check("all met");
}

#[test]
fn goals_never_checked_fail_the_scenario() {
    let unchecked = std::panic::catch_unwind(|| {
        let mut goals = Goals::new("test");
        goals.goal("duplicates", 0, "<= 10000", true);
    });
    assert!(unchecked.is_err(), "a scenario that never checks its goals");
}

/// Every scenario prints its figures through `Goals` and ends by checking them: a figure
/// printed any other way (the old `figure()` returned whether it was met, and fleet's clean
/// stops and cut's duplicates bound were printed and never asserted) is a goal nobody checks.
#[test]
fn every_scenario_checks_every_goal_it_prints() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/incidents");
    let mut scenarios = 0;
    for entry in std::fs::read_dir(&dir).expect("incidents dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "mod.rs" || !name.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("scenario source");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !code.contains("figure(") && !code.contains("FIGURE|"),
            "{name} prints a figure outside Goals (its goal would go unchecked)"
        );
        let tests = code.matches("#[test]").count();
        let created = code.matches("Goals::new(").count();
        let checked = code.matches(".check(").count();
        assert!(
            created >= tests && checked >= created,
            "{name}: {tests} scenarios, {created} Goals, {checked} checks"
        );
        scenarios += tests;
    }
    assert!(scenarios >= 6, "only {scenarios} scenarios found");
}
