//! The reliability scenarios of issue 7, as ignored-by-default tests: each prints its figures
//! as `FIGURE|scenario|figure|value|goal|met` lines and fails when a goal is missed.
//! `scripts/incidents.sh` runs them (release build, one at a time) and prints the table.

mod cut;
pub(crate) mod failover;
mod fleet;
mod shared_state;
mod soak;
mod stampede;

/// One figure against its goal, printed for the runner's table; returns whether it was met.
pub(crate) fn figure(
    scenario: &str,
    name: &str,
    value: impl std::fmt::Display,
    goal: &str,
    met: bool,
) -> bool {
    println!(
        "FIGURE|{scenario}|{name}|{value}|{goal}|{}",
        if met { "yes" } else { "NO" }
    );
    met
}
