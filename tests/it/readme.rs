//! README.md against the binary it documents: every flag and environment variable that
//! `--help` of `consume`, `check`, `dlq list` and `dlq replay` prints (read at test time from
//! this build), with `consume`'s defaults in its tables; every metric and rule id, and no
//! metric the code does not serve; and the two commands a new user is given, the second
//! being exactly the test command `.ci/run` runs.

use std::path::Path;
use std::process::Command;

use logfence::finding::Rule;
use logfence::telemetry::names;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn readme() -> String {
    repo_file("README.md")
}

/// `logfence <args> --help`, which must succeed.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run logfence --help");
    assert!(
        out.status.success(),
        "logfence {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// One option of a `--help` page.
#[derive(Debug, Default)]
struct HelpOption {
    flag: String,
    env: Option<String>,
    default: Option<String>,
}

/// The options a help page defines (the `--flag` opening each entry, not flags named in
/// prose), each with its `[env: NAME=]` and `[default: X]`; `--help` and `--version` left out.
fn options(help: &str) -> Vec<HelpOption> {
    let mut out: Vec<HelpOption> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            let flag = trimmed
                .split([' ', ','])
                .find(|t| t.starts_with("--"))
                .map(|t| t.split(['=', '<']).next().unwrap_or(t).to_string());
            if let Some(flag) = flag {
                out.push(HelpOption {
                    flag,
                    ..HelpOption::default()
                });
            }
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        if let Some(rest) = line.split("[env: ").nth(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            current.env = Some(name);
        }
        if let Some(rest) = line.split("[default: ").nth(1) {
            let value = rest.rsplit_once(']').map_or(rest, |(v, _)| v);
            current.default = Some(value.trim_matches('"').to_string());
        }
    }
    out.retain(|o| o.flag != "--help" && o.flag != "--version");
    out
}

/// Whether `text` holds `word` not as part of a longer flag or name (`--queue` is not found
/// in `--queue-type`, `AMQP_URL` not in `LOGFENCE_AMQP_URL_FILE`).
fn mentions(text: &str, word: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// README table rows documenting `flag` (rows that open with it).
fn rows_for<'a>(readme: &'a str, flag: &str) -> Vec<&'a str> {
    let opening = format!("| `{flag}` |");
    readme.lines().filter(|l| l.starts_with(&opening)).collect()
}

#[test]
fn the_help_parser_reads_flags_envs_and_defaults() {
    let page = "Options:\n      --max-width <MAX_WIDTH>\n          Wins over --other\n          \n          \
                [env: LOGFENCE_MAX_WIDTH=]\n          [default: 4096]\n\n      --json\n          One \
                JSON\n      --line-format <F>  The template [env: LOGFENCE_LINE_FORMAT=] [default: \"{ts} \
                {message}\"]\n  -h, --help\n          Print help\n";
    let got: Vec<(String, Option<String>, Option<String>)> = options(page)
        .into_iter()
        .map(|o| (o.flag, o.env, o.default))
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        vec![
            ("--max-width".into(), s("LOGFENCE_MAX_WIDTH"), s("4096")),
            ("--json".into(), None, None),
            (
                "--line-format".into(),
                s("LOGFENCE_LINE_FORMAT"),
                s("{ts} {message}")
            ),
        ]
    );
    assert!(mentions("see `--queue` here", "--queue"));
    assert!(!mentions("see `--queue-type` here", "--queue"));
    assert!(!mentions("LOGFENCE_AMQP_URL_FILE", "AMQP_URL"));
}

#[test]
fn every_flag_and_env_of_every_command_is_in_the_readme() {
    let readme = readme();
    let mut missing = Vec::new();
    for command in [
        &["consume"][..],
        &["check"],
        &["dlq", "list"],
        &["dlq", "replay"],
    ] {
        let page = help(command);
        let opts = options(&page);
        assert!(opts.len() >= 3, "no options read from {command:?}:\n{page}");
        for o in opts {
            if !mentions(&readme, &o.flag) {
                missing.push(format!("{command:?} {}", o.flag));
            }
            if let Some(env) = o.env.filter(|e| !mentions(&readme, e)) {
                missing.push(format!("{command:?} {} [env: {env}]", o.flag));
            }
        }
    }
    assert!(missing.is_empty(), "not in README.md: {missing:#?}");
}

#[test]
fn every_consume_flag_has_a_readme_row_with_its_env_and_default() {
    let readme = readme();
    let mut wrong = Vec::new();
    for o in options(&help(&["consume"])) {
        let rows = rows_for(&readme, &o.flag);
        let fits = |row: &&str| {
            o.env
                .as_ref()
                .is_none_or(|e| row.contains(&format!("`{e}`")))
                && o.default.as_ref().is_none_or(|d| row.contains(d.as_str()))
        };
        if !rows.iter().any(fits) {
            wrong.push(format!(
                "{} (env {:?}, default {:?}): rows {rows:#?}",
                o.flag, o.env, o.default
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md rows missing or disagreeing with `consume --help`: {wrong:#?}"
    );
}

/// The import name of clients/python, which the README names beside the metrics.
const PYTHON_PACKAGE: &str = "logfence_handler";

#[test]
fn every_metric_and_rule_is_in_the_readme_and_no_other_metric() {
    let readme = readme();
    for name in names::ALL {
        assert!(mentions(&readme, name), "metric {name} not in README.md");
    }
    for rule in Rule::ALL {
        let quoted = format!("`{}`", rule.id());
        assert!(readme.contains(&quoted), "rule {quoted} not in README.md");
    }
    // Every metric the README names is served (series suffixes of histograms allowed). The
    // Python handler's import name (and its logger's), `logfence_handler`, is not a metric.
    for (i, _) in readme.match_indices("logfence_") {
        let name: String = readme[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name == PYTHON_PACKAGE {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            names::ALL.contains(&name.as_str()) || names::ALL.contains(&base),
            "README.md names {name}, which logfence does not serve"
        );
    }
}

#[test]
fn the_two_commands_are_the_demo_and_the_ci_test_command() {
    let ci = repo_file(".ci/run");
    let ci_tests: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert_eq!(
        ci_tests.len(),
        1,
        "one test command in .ci/run: {ci_tests:?}"
    );

    let readme = readme();
    let section = readme
        .split("\n## Two commands")
        .nth(1)
        .expect("a `## Two commands` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in `## Two commands`");
    let commands: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands, vec!["scripts/demo.sh", ci_tests[0]]);
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts/demo.sh")
            .exists(),
        "scripts/demo.sh"
    );
}
