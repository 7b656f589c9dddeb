//! `deploy/Dockerfile` and `.dockerignore`, linted (there is no Docker engine to build with):
//! a locked release build on a toolchain at or above the MSRV, and a runtime stage without a
//! shell that runs the binary as a non-root user on the metrics port.

use super::{read, repo, ConsumeHelp};

const DOCKERFILE: &str = "deploy/Dockerfile";

/// One instruction: the keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its `FROM` arguments and what follows.
#[derive(Debug)]
struct Stage {
    from: String,
    body: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.body
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> &str {
        self.all(keyword)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the stage FROM {} has no {keyword}", self.from))
    }
}

fn stages() -> Vec<Stage> {
    let text = read(DOCKERFILE);
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "{DOCKERFILE} ends in a continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (keyword, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            stages.push(Stage {
                from: args,
                body: Vec::new(),
            });
        } else {
            let stage = stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before FROM"));
            stage.body.push(Instruction { keyword, args });
        }
    }
    stages
}

/// The exec (JSON) form, or a failure: the shell form needs /bin/sh, which the image lacks.
fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|_| panic!("{what} {args} is in shell form; use the JSON exec form"))
}

#[test]
fn the_builder_makes_a_locked_release_on_a_toolchain_at_or_above_the_msrv() {
    let stages = stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let builder = &stages[0];
    let re = regex::Regex::new(r"^rust:1\.(\d+)(?:\.\d+)?-bookworm AS (\S+)$").expect("regex");
    let caps = re
        .captures(&builder.from)
        .unwrap_or_else(|| panic!("builder FROM {}", builder.from));
    let minor: u32 = caps[1].parse().expect("minor");
    let msrv = regex::Regex::new(r#"(?m)^rust-version = "1\.(\d+)""#)
        .expect("regex")
        .captures(&read("Cargo.toml"))
        .map(|c| c[1].parse::<u32>().expect("msrv"))
        .expect("Cargo.toml has a rust-version");
    assert!(minor >= msrv, "rust:1.{minor} is below the MSRV 1.{msrv}");
    let runs = builder.all("RUN").join(" && ");
    assert!(
        runs.contains("cargo build --release --locked"),
        "a release build of exactly Cargo.lock: {runs}"
    );

    // Everything the builder copies exists, and .dockerignore does not keep it out.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    for copy in builder.all("COPY") {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: no such path");
            assert!(
                !ignored.iter().any(|i| i == src),
                ".dockerignore excludes {src}"
            );
        }
    }
    for heavy in ["target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == heavy),
            ".dockerignore keeps {heavy} out"
        );
    }
}

#[test]
fn the_runtime_stage_has_no_shell_and_runs_consume_as_non_root_on_the_metrics_port() {
    let stages = stages();
    let builder_name = stages[0]
        .from
        .rsplit(' ')
        .next()
        .expect("builder alias")
        .to_string();
    let runtime = stages.last().expect("a final stage");
    assert!(
        runtime.from.starts_with("gcr.io/distroless/"),
        "a distroless (shell-less) runtime: {}",
        runtime.from
    );
    assert!(
        runtime.all("RUN").is_empty(),
        "the runtime stage has no shell to RUN with"
    );

    let user = runtime.last("USER");
    let name = user.split(':').next().unwrap_or(user);
    assert!(
        !matches!(name, "root" | "0") && name.parse::<u32>().is_ok_and(|uid| uid != 0),
        "USER {user}: numeric and not root, so runAsNonRoot can verify it"
    );

    let port = ConsumeHelp::of_binary().metrics_port();
    let exposed: Vec<&str> = runtime.all("EXPOSE");
    assert_eq!(
        exposed,
        [port.to_string().as_str()],
        "EXPOSE the --metrics-addr port"
    );

    let entrypoint = exec_form("ENTRYPOINT", runtime.last("ENTRYPOINT"));
    let cmd = exec_form("CMD", runtime.last("CMD"));
    assert_eq!(cmd, ["consume"], "runs the sidecar by default");
    let copied = runtime
        .all("COPY")
        .into_iter()
        .find(|c| c.starts_with(&format!("--from={builder_name} ")))
        .expect("the binary is copied from the builder");
    let from_builder: Vec<&str> = copied.split_whitespace().skip(1).collect();
    let (src, dest) = (from_builder[0], from_builder[from_builder.len() - 1]);
    assert!(
        stages[0].all("RUN").join(" ").contains(src),
        "the builder puts the binary at {src}"
    );
    assert_eq!(entrypoint, [dest], "ENTRYPOINT is the copied binary");
}
