//! The repository's own docs against the code that points at them: no comment cites a file
//! outside the repository or an issue number, every `docs/*.md` a comment names exists, the
//! links inside `docs/` resolve, `docs/README.md` indexes every page, and the module map of
//! `docs/architecture.md` and the `# Layout` of `src/lib.rs` both match the tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;

/// The trees whose comments must point inside the repository.
const SCANNED: [&str; 5] = ["src", "tests", "benches", "scripts", "deploy"];
/// Single files scanned the same way.
const SCANNED_FILES: [&str; 2] = ["Cargo.toml", ".ci/run"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every regular file under `dir`, recursively, sorted; `target` directories skipped.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The scanned files that hold text, each with its path relative to the repository.
fn scanned_files() -> Vec<(String, String)> {
    let mut paths: Vec<PathBuf> = SCANNED
        .iter()
        .flat_map(|d| files_under(&root().join(d)))
        .collect();
    paths.extend(SCANNED_FILES.iter().map(|f| root().join(f)));
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            Some((rel, text))
        })
        .collect()
}

/// The comments of Rust source, one `(line number, text)` per comment line: `//` comments
/// (doc comments included) and `/* */` blocks, never string or char literals.
fn rust_comments(src: &str) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Str,
        RawStr(usize),
        Block(usize),
    }
    let mut out = Vec::new();
    let mut state = State::Code;
    for (n, line) in src.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut comment = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match state {
                State::Code => {
                    if c == '/' && next == Some('/') {
                        comment.extend(&chars[i..]);
                        break;
                    } else if c == '/' && next == Some('*') {
                        state = State::Block(1);
                        i += 2;
                        continue;
                    } else if c == '"' {
                        state = State::Str;
                    } else if c == 'r' && (next == Some('"') || next == Some('#')) {
                        let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                        if chars.get(i + 1 + hashes) == Some(&'"') {
                            state = State::RawStr(hashes);
                            i += hashes + 2;
                            continue;
                        }
                    } else if c == '\'' {
                        // A char literal ('x', '\n', '\u{..}', '"'), else a lifetime.
                        if next == Some('\\') {
                            if let Some(end) = chars[i + 3..].iter().position(|&q| q == '\'') {
                                i += end + 4;
                                continue;
                            }
                        } else if chars.get(i + 2) == Some(&'\'') {
                            i += 3;
                            continue;
                        }
                    }
                }
                State::Str => {
                    if c == '\\' {
                        i += 2;
                        continue;
                    } else if c == '"' {
                        state = State::Code;
                    }
                }
                State::RawStr(hashes) => {
                    if c == '"'
                        && chars[i + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == '#')
                            .count()
                            == hashes
                    {
                        state = State::Code;
                        i += hashes + 1;
                        continue;
                    }
                }
                State::Block(depth) => {
                    comment.push(c);
                    if c == '*' && next == Some('/') {
                        state = if depth == 1 {
                            State::Code
                        } else {
                            State::Block(depth - 1)
                        };
                        i += 2;
                        continue;
                    } else if c == '/' && next == Some('*') {
                        state = State::Block(depth + 1);
                        i += 2;
                        continue;
                    }
                }
            }
            i += 1;
        }
        if !comment.is_empty() {
            out.push((n + 1, comment));
        }
    }
    out
}

/// What a file says outside its code: the comments of Rust source; the whole text of
/// anything else (scripts, manifests, Python, Markdown), where prose and comments dominate.
fn commentary(path: &str, text: &str) -> Vec<(usize, String)> {
    if path.ends_with(".rs") {
        rust_comments(text)
    } else {
        text.lines()
            .enumerate()
            .map(|(n, l)| (n + 1, l.to_string()))
            .collect()
    }
}

/// A citation of something a maintainer cannot follow from the repository: the contract and
/// design notes that lived outside it, or an issue tracker's number.
fn outside_citation() -> Regex {
    Regex::new(
        r"\bSPEC\b|\bDESIGN\b|SPEC\.md|DESIGN\.md|STYLE\.md|\.\./shared|/work/shared|(?i:\bissues? #?[0-9]+)",
    )
    .expect("valid regex")
}

#[test]
fn comments_cite_nothing_outside_the_repository() {
    let cite = outside_citation();
    let mut bad = Vec::new();
    for (path, text) in scanned_files() {
        for (line, comment) in commentary(&path, &text) {
            if let Some(m) = cite.find(&comment) {
                bad.push(format!(
                    "{path}:{line}: `{}` in: {}",
                    m.as_str(),
                    comment.trim()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "comments must point at docs/ or at code, not at files outside the repository or at \
         issue numbers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_citation_check_sees_comments_and_only_comments() {
    let src = concat!(
        "const A: &str = \"SPEC §1 in a string\"; // a comment naming docs/record.md\n",
        "let c = '\"'; let r = r#\"DESIGN.md \"# ; /* issue 4 */\n",
        "fn f<'a>(x: &'a str) {} /// see SPEC §2\n",
    );
    let comments = rust_comments(src);
    let cite = outside_citation();
    let hits: Vec<usize> = comments
        .iter()
        .filter(|(_, c)| cite.is_match(c))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(hits, vec![2, 3], "{comments:?}");
    assert!(comments[0].1.contains("docs/record.md"));
}

#[test]
fn every_docs_page_a_comment_names_exists() {
    let link = Regex::new(r"docs/[A-Za-z0-9_.-]+\.md").expect("valid regex");
    let mut texts = scanned_files();
    for readme in [
        "README.md",
        "deploy/README.md",
        "fixtures/poison/README.md",
        "fixtures/fuzz/README.md",
    ] {
        texts.push((readme.to_string(), read(&root().join(readme))));
    }
    let mut named = 0;
    let mut missing = Vec::new();
    for (path, text) in texts {
        for (line, comment) in commentary(&path, &text) {
            for m in link.find_iter(&comment) {
                named += 1;
                if !root().join(m.as_str()).is_file() {
                    missing.push(format!("{path}:{line}: {}", m.as_str()));
                }
            }
        }
    }
    assert!(
        named > 20,
        "only {named} references to docs/ found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "comments name docs pages that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every `docs/*.md` page, by file name.
fn docs_pages() -> BTreeSet<String> {
    files_under(&root().join("docs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            p.file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn links_inside_docs_resolve_and_the_index_lists_every_page() {
    let link = Regex::new(r"\]\(([^)#\s]+)(#[^)]*)?\)").expect("valid regex");
    let docs = root().join("docs");
    let mut broken = Vec::new();
    for page in docs_pages() {
        let text = read(&docs.join(&page));
        for c in link.captures_iter(&text) {
            let target = &c[1];
            if target.contains("://") {
                continue;
            }
            if !docs.join(target).exists() {
                broken.push(format!("docs/{page}: ({target})"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere:\n{}",
        broken.join("\n")
    );

    let index = read(&docs.join("README.md"));
    let unlisted: Vec<String> = docs_pages()
        .into_iter()
        .filter(|p| p != "README.md" && !index.contains(&format!("]({p})")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "docs/README.md does not list: {unlisted:?}"
    );
}

/// `a/{b,c}.rs` -> `a/b.rs`, `a/c.rs` (one brace group, as the module map writes them).
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .map(|alt| format!("{}{}{}", &path[..open], alt, &path[close + 1..]))
            .collect(),
        _ => vec![path.to_string()],
    }
}

#[test]
fn the_module_map_matches_the_tree() {
    let text = read(&root().join("docs/architecture.md"));
    let map = text
        .split("## Module map")
        .nth(1)
        .expect("docs/architecture.md has a \"## Module map\" section");
    let map = map.split("\n## ").next().unwrap_or(map);
    let path = Regex::new(r"src/[A-Za-z0-9_/{},.-]+\.rs").expect("valid regex");
    let named: BTreeSet<String> = path
        .find_iter(map)
        .flat_map(|m| expand(m.as_str()))
        .collect();
    let tree: BTreeSet<String> = files_under(&root().join("src"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.strip_prefix(root()).unwrap_or(&p).display().to_string())
        .collect();
    let gone: Vec<&String> = named.difference(&tree).collect();
    let unmapped: Vec<&String> = tree.difference(&named).collect();
    assert!(
        gone.is_empty() && unmapped.is_empty(),
        "docs/architecture.md \"Module map\" is out of date: names files that do not exist \
         {gone:?}; does not name {unmapped:?}"
    );
}

#[test]
fn the_layout_of_lib_rs_names_every_module() {
    let lib = read(&root().join("src/lib.rs"));
    let module = Regex::new(r"(?m)^pub mod ([a-z_]+);").expect("valid regex");
    let mut unlisted = Vec::new();
    let mut count = 0;
    for c in module.captures_iter(&lib) {
        count += 1;
        let entry = format!("//! - [`{}`]", &c[1]);
        if !lib.contains(&entry) {
            unlisted.push(c[1].to_string());
        }
    }
    assert!(count > 10, "only {count} modules found in src/lib.rs");
    assert!(
        unlisted.is_empty(),
        "src/lib.rs `# Layout` does not describe: {unlisted:?}"
    );
}
