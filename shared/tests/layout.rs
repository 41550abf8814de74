//! The shape of `shared/src`, kept by tests rather than by review: modules import one way (no
//! cycle between sibling modules, at any depth), and a file over [`LONG`] lines says at its top
//! why it is one file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines past which a file must give its reason for being one file.
const LONG: usize = 600;

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A file's module path (`control/poll.rs` and `control/poll/mod.rs` are `[control, poll]`).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(root)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its inline test module.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A lower-case identifier at the start of `text`, and what follows it.
fn ident(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// The modules a file's code names: `crate::a::b` and `super::b` (resolved), as full paths.
fn named(module: &[String], code: &str) -> Vec<Vec<String>> {
    let parent = &module[..module.len().saturating_sub(1)];
    let mut found = Vec::new();
    for (prefix, base) in [("crate::", &[][..]), ("super::", parent)] {
        for (i, _) in code.match_indices(prefix) {
            if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let (first, rest) = ident(&code[i + prefix.len()..]);
            if first.is_empty() {
                continue;
            }
            let mut path = base.to_vec();
            path.push(first.to_owned());
            if let Some(rest) = rest.strip_prefix("::") {
                let (second, _) = ident(rest);
                if !second.is_empty() {
                    path.push(second.to_owned());
                }
            }
            found.push(path);
        }
    }
    found
}

/// Edges between sibling modules: `a/x -> a/y` where a file in `a/x` names `a/y`.
fn sibling_edges(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(root) {
        let module = module_of(root, &file);
        if module.iter().any(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for target in named(&module, &code(&text)) {
            let shared = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if shared < module.len() && shared < target.len() {
                let from = module[..=shared].join("/");
                let to = target[..=shared].join("/");
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn modules_import_one_way() {
    let edges = sibling_edges(&src());
    assert!(
        edges.len() > 20,
        "the scan found too few imports: {edges:?}"
    );
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|m| cycle_from(&edges, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_scan_sees_a_cycle() {
    let edges = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        cycle_from(&edges, "a"),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let module = vec!["control".to_owned(), "poll".to_owned()];
    assert_eq!(
        named(&module, "use super::advance;\nuse crate::job::step;"),
        vec![
            vec!["job".to_owned(), "step".to_owned()],
            vec!["control".to_owned(), "advance".to_owned()]
        ]
    );
}

#[test]
fn a_long_file_says_why_it_is_one_file() {
    let root = src();
    let unexplained: Vec<String> = sources(&root)
        .into_iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let long = text.lines().count() > LONG;
            let head: String = text.lines().take(40).collect::<Vec<_>>().join("\n");
            (long && !head.contains("Why one file")).then(|| file.display().to_string())
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "over {LONG} lines with no \"Why one file\" at the top: {unexplained:?}"
    );
}
