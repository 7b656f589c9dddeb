//! How the tests say they could not run. A test that needs something this machine may lack
//! (the `failpoints` feature, the RabbitMQ broker, `promtool` or `rabbitmqctl`) carries one
//! `#[cfg_attr(..., ignore = "...")]` for it, the same words everywhere, so that it shows as
//! ignored when it is switched off and fails, saying what to start or install, when the thing
//! is missing without an opt-out (build.rs). It never returns early and passes.
//!
//! Checked here over the source of `tests/it/`: what each test needs is read from its body
//! and, through plain calls, the bodies of the helpers it calls (by name, across files); the
//! gates it carries must be exactly the ones that need asks for. Plus: the test broker's
//! address is written in one place only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The gate of a test that arms a failpoint.
const FAILPOINTS: &str =
    r#"#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]"#;
/// The gate of a broker test.
const BROKER: &str =
    r#"#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]"#;
/// A broker test that also arms a failpoint: ignored once, for the first reason that applies.
const BROKER_AFTER_FAILPOINTS: &str = r#"#[cfg_attr(all(feature = "failpoints", logfence_skip_broker), ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]"#;
/// The gate of a test that runs `promtool` or `rabbitmqctl`.
const TOOLS: &str =
    r#"#[cfg_attr(logfence_skip_tools, ignore = "LOGFENCE_SKIP_TOOL_TESTS is set")]"#;
/// A tool test that also needs the broker.
const TOOLS_AFTER_BROKER: &str = r#"#[cfg_attr(all(logfence_skip_tools, not(logfence_skip_broker)), ignore = "LOGFENCE_SKIP_TOOL_TESTS is set")]"#;

/// What a test can need that a machine may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Failpoints,
    Broker,
    Tools,
}

/// A `fn` of the test sources.
struct Item {
    file: String,
    name: String,
    /// The `#[...]` lines right above it.
    attrs: Vec<String>,
    /// The body, as written.
    body: String,
}

fn it_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// `text` with every comment blanked, and with the contents of every string and character
/// literal blanked too when `strings`; same length, same line breaks, so offsets carry over.
fn blank(text: &str, strings: bool) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        // Non-ASCII bytes stay, so the text remains UTF-8 (only ASCII is searched for).
        for c in &mut out[from..to] {
            if c.is_ascii() && *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let at = |k: usize| b.get(k).copied().unwrap_or(0);
        if b[i] == b'/' && at(i + 1) == b'/' {
            let end = memchr_nl(b, i);
            wipe(&mut out, i, end);
            i = end;
        } else if b[i] == b'/' && at(i + 1) == b'*' {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            wipe(&mut out, i, end);
            i = end;
        } else if b[i] == b'r'
            && (at(i + 1) == b'"' || at(i + 1) == b'#')
            && !is_ident(at(i.wrapping_sub(1)))
        {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if at(i + 1 + hashes) != b'"' {
                i += 1;
                continue;
            }
            let open = i + 2 + hashes;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = text[open..].find(&close).map_or(b.len(), |e| open + e);
            if strings {
                wipe(&mut out, open, end);
            }
            i = end + close.len();
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            if strings {
                wipe(&mut out, i + 1, j.min(b.len()));
            }
            i = j + 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '{') or a lifetime ('a).
            let end = if at(i + 1) == b'\\' {
                text[i + 2..].find('\'').map(|e| i + 2 + e)
            } else {
                let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (at(i + 1 + len) == b'\'').then_some(i + 1 + len)
            };
            match end {
                Some(end) => {
                    if strings {
                        wipe(&mut out, i + 1, end);
                    }
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8")
}

/// `s` without its whitespace.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn memchr_nl(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `fn` with a body in `text`.
fn items(file: &str, text: &str) -> Vec<Item> {
    let code = blank(text, true);
    let cb = code.as_bytes();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("fn ") {
        let at = from + found;
        from = at + 3;
        if at > 0 && is_ident(cb[at - 1]) {
            continue;
        }
        let name: String = code[at + 3..]
            .bytes()
            .take_while(|&c| is_ident(c))
            .map(char::from)
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body: the first `{` before any `;` (a declaration without a body has none).
        let Some(open) = code[at..].find(['{', ';']).map(|o| at + o) else {
            continue;
        };
        if cb[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut close = open;
        for (k, &c) in cb.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let line = code[..at].matches('\n').count();
        let mut attrs = Vec::new();
        let mut k = line;
        while k > 0 {
            let t = lines[k - 1].trim();
            if t.starts_with("//") {
                k -= 1;
            } else if t.starts_with("#[") {
                attrs.push(t.to_string());
                k -= 1;
            } else if let Some(first) = (t.ends_with(']'))
                .then(|| (k.saturating_sub(8)..k - 1).rev())
                .and_then(|mut r| r.find(|&j| lines[j].trim_start().starts_with("#[")))
            {
                // The last line of an attribute rustfmt wrapped: the whole of it, in one line.
                attrs.push(lines[first..k].iter().map(|l| l.trim()).collect());
                k = first;
            } else {
                break;
            }
        }
        attrs.reverse();
        out.push(Item {
            file: file.to_string(),
            name,
            attrs,
            body: text[open..=close].to_string(),
        });
    }
    out
}

/// The names `body` calls plainly (`name(`, not `.name(` or `Type::name(`).
fn calls(body: &str) -> BTreeSet<String> {
    let code = blank(body, true);
    let b = code.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i])
            && (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':' || b[i - 1] == b'.'))
        {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            if b.get(i) == Some(&b'(') {
                out.insert(code[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// What `body` needs by itself.
fn direct_needs(body: &str) -> BTreeSet<Need> {
    let mut needs = BTreeSet::new();
    // The three-node cluster is RabbitMQ too (scripts/cluster.sh), under the same opt-out.
    if body.contains("Rabbit::connect()") || body.contains("Cluster::up()") {
        needs.insert(Need::Broker);
    }
    if body.matches("\"FAILPOINTS\"").count() > body.matches("env_remove(\"FAILPOINTS\")").count() {
        needs.insert(Need::Failpoints);
    }
    let called = calls(body);
    if called.contains("promtool") || called.contains("rabbitmqctl") {
        needs.insert(Need::Tools);
    }
    needs
}

/// Every item of `tests/it/` but this file's own.
fn all_items() -> Vec<Item> {
    let mut files = Vec::new();
    rust_files(&it_dir(), &mut files);
    let mut out = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(it_dir())
            .expect("under tests/it")
            .display()
            .to_string();
        if rel == "gating.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a test source");
        out.extend(items(&rel, &text));
    }
    out
}

/// What each name needs, its own body's needs and those of every fn it calls plainly.
fn needs_by_name(items: &[Item]) -> BTreeMap<String, BTreeSet<Need>> {
    let mut needs: BTreeMap<String, BTreeSet<Need>> = BTreeMap::new();
    let mut callees: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in items {
        needs
            .entry(item.name.clone())
            .or_default()
            .extend(direct_needs(&item.body));
        callees
            .entry(item.name.clone())
            .or_default()
            .extend(calls(&item.body));
    }
    loop {
        let mut grew = false;
        for (name, called) in &callees {
            let inherited: BTreeSet<Need> = called
                .iter()
                .filter(|c| *c != name)
                .filter_map(|c| needs.get(c))
                .flatten()
                .copied()
                .collect();
            let mine = needs.entry(name.clone()).or_default();
            let before = mine.len();
            mine.extend(inherited);
            grew |= mine.len() > before;
        }
        if !grew {
            return needs;
        }
    }
}

/// The gates a test with these needs carries, in this order.
fn gates_for(needs: &BTreeSet<Need>) -> Vec<&'static str> {
    let mut gates = Vec::new();
    let fp = needs.contains(&Need::Failpoints);
    let broker = needs.contains(&Need::Broker);
    if fp {
        gates.push(FAILPOINTS);
    }
    if broker {
        gates.push(if fp { BROKER_AFTER_FAILPOINTS } else { BROKER });
    }
    if needs.contains(&Need::Tools) {
        assert!(
            !fp,
            "a test needing failpoints and a tool: no gate is defined for it"
        );
        gates.push(if broker { TOOLS_AFTER_BROKER } else { TOOLS });
    }
    gates
}

#[test]
fn every_test_that_needs_failpoints_a_broker_or_a_tool_says_so_one_way() {
    let items = all_items();
    let needs = needs_by_name(&items);
    let mut wrong = Vec::new();
    let mut counts: BTreeMap<Need, usize> = BTreeMap::new();
    let mut tests = 0;
    for item in &items {
        if !item
            .attrs
            .iter()
            .any(|a| a == "#[test]" || a.starts_with("#[tokio::test"))
        {
            continue;
        }
        tests += 1;
        // Compared without whitespace: rustfmt wraps long attributes.
        let gates: Vec<String> = item
            .attrs
            .iter()
            .filter(|a| a.starts_with("#[cfg_attr(") && a.contains("ignore"))
            .map(|a| squash(a))
            .collect();
        // Ignored for good (run by hand or by a script): it needs no gate.
        if item.attrs.iter().any(|a| a.starts_with("#[ignore")) {
            assert!(
                gates.is_empty(),
                "{}: {} is ignored already, and gated too",
                item.file,
                item.name
            );
            continue;
        }
        let need = needs.get(&item.name).cloned().unwrap_or_default();
        for n in &need {
            *counts.entry(*n).or_default() += 1;
        }
        let want: Vec<String> = gates_for(&need).into_iter().map(squash).collect();
        if gates != want {
            wrong.push(format!(
                "{}: {} needs {need:?}\n    has  {gates:?}\n    want {want:?}",
                item.file, item.name
            ));
        }
    }
    eprintln!("{tests} tests; needing each: {counts:?}");
    assert!(wrong.is_empty(), "gates to fix:\n{}", wrong.join("\n"));
    // The reading above found what it is meant to find (it is not vacuous).
    assert!(
        counts.get(&Need::Broker).is_some_and(|&n| n >= 30),
        "{counts:?}"
    );
    assert!(
        counts.get(&Need::Failpoints).is_some_and(|&n| n >= 8),
        "{counts:?}"
    );
    assert!(
        counts.get(&Need::Tools).is_some_and(|&n| n >= 4),
        "{counts:?}"
    );
}

#[test]
fn no_test_skips_by_returning_early() {
    let mut files = Vec::new();
    rust_files(&it_dir(), &mut files);
    for path in files {
        if path.ends_with("gating.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a test source");
        let code = blank(&text, false);
        for banned in [
            "cfg!(feature = \"failpoints\")",
            "#[cfg(feature = \"failpoints\")]",
            "SKIPPED",
            "Rabbit::connect()?",
            "Rabbit::connect() else",
        ] {
            assert!(
                !code.contains(banned),
                "{} has {banned}: a test that cannot run is gated, never passed",
                path.display()
            );
        }
    }
}

/// The tests and benches find the broker in one place (`tests/it/broker/address.rs`).
#[test]
fn the_test_broker_address_is_written_in_one_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests/it"), &mut files);
    rust_files(&root.join("benches"), &mut files);
    // Not yet converted: its own owner moves it to `broker_addr()`.
    let pending = ["tests/it/incidents/cut.rs"];
    for path in files {
        let rel = path.strip_prefix(root).expect("in the repo");
        if rel == Path::new("tests/it/broker/address.rs")
            || rel == Path::new("tests/it/gating.rs")
            || pending.iter().any(|p| rel == Path::new(p))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a source");
        let code = blank(&text, false);
        assert!(
            !code.contains(":5672") && !code.contains("\"LOGFENCE_TEST_AMQP_URL\""),
            "{}: the broker's address comes from broker::url() / broker_addr()",
            rel.display()
        );
    }
}

#[test]
fn the_source_reader_sees_through_strings_comments_and_chars() {
    let text = "fn a() { let s = \"}{\"; let c = '{'; // }\n helper(x); b::c(); y.d(); }\n\
                /// doc\n#[test]\nfn e<'a>(x: &'a str) { a() }\n\
                #[test]\n#[cfg_attr(\n    all(p, q),\n    ignore = \"r\"\n)]\nfn f() {}\n";
    let found = items("x.rs", text);
    let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a", "e", "f"]);
    assert_eq!(
        found[2].attrs,
        ["#[test]", "#[cfg_attr(all(p, q),ignore = \"r\")]"]
    );
    assert_eq!(
        calls(&found[0].body),
        BTreeSet::from(["helper".to_string()])
    );
    assert_eq!(found[1].attrs, ["#[test]"]);
    assert_eq!(calls(&found[1].body), BTreeSet::from(["a".to_string()]));
}

/// The opt-outs build.rs reads are the ones the README and the failure messages name.
#[test]
fn the_opt_outs_are_named_in_the_readme_and_read_by_build_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("read a repo file");
    let (build, readme) = (read("build.rs"), read("README.md"));
    let messages = read("tests/it/broker.rs") + &read("tests/it/deploy.rs");
    for (var, cfg) in [
        ("LOGFENCE_SKIP_BROKER_TESTS", "logfence_skip_broker"),
        ("LOGFENCE_SKIP_TOOL_TESTS", "logfence_skip_tools"),
    ] {
        assert!(
            build.contains(&format!("(\"{var}\", \"{cfg}\")")),
            "build.rs: {var}"
        );
        assert!(readme.contains(var), "README.md names {var}");
        assert!(messages.contains(var), "the failure message names {var}");
    }
    assert!(messages.contains("scripts/broker.sh"));
    assert!(messages.contains("apt-get install prometheus"));
}
