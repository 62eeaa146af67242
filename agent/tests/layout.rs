//! The agent's layout invariants (ARCHITECTURE.md), checked on its sources so they hold by
//! test rather than by review:
//! - only `wire/` knows protobuf (`health_proto`, `prost`);
//! - the top-level modules depend on each other one way: no cycle among them;
//! - within a folder, sibling modules do not depend on each other in a cycle either;
//! - no file holds more than 800 lines of code before its `#[cfg(test)]` part.
//!
//! A dependency is a `crate::path` written in code (comments and tests are left out).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 800;

struct Source {
    /// The module path inside the crate, e.g. `["action", "path"]`; `mod.rs` is its folder.
    module: Vec<String>,
    /// The file's code before its tests, without comment lines.
    code: String,
    file: PathBuf,
    code_lines: usize,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src");
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if matches!(module.as_slice(), [m] if m == "lib" || m == "main") {
                continue;
            }
            if module.last().is_some_and(|m| m == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read file");
            let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
            let code_lines = before_tests.lines().count();
            let code: String = before_tests
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.push(Source {
                module,
                code,
                file: path,
                code_lines,
            });
        }
    }
    out
}

/// Every `crate::a::b…` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    code.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &code[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn has_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn only_wire_knows_protobuf() {
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|s| s.module[0] != "wire")
        .filter(|s| s.code.contains("health_proto") || s.code.contains("prost"))
        .map(|s| s.file.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "protobuf outside wire/: {offenders:?}"
    );
}

#[test]
fn top_level_modules_depend_one_way() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources() {
        let from = s.module[0].clone();
        for p in crate_paths(&s.code) {
            if let Some(to) = p.first().filter(|t| **t != from) {
                graph.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    assert!(graph.contains_key("wire"), "the scan found the modules");
    assert_eq!(has_cycle(&graph), None, "a cycle among {graph:?}");
}

#[test]
fn sibling_modules_depend_one_way() {
    let all = sources();
    // (folder, sibling) -> siblings it uses, through `crate::folder::sibling` or `super::sibling`.
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for s in &all {
        let Some((me, folder)) = s.module.split_last() else {
            continue;
        };
        let mut uses = BTreeSet::new();
        for p in crate_paths(&s.code) {
            if p.len() > folder.len() && p[..folder.len()] == *folder {
                uses.insert(p[folder.len()].clone());
            }
        }
        for (i, _) in s.code.match_indices("super::") {
            let rest = &s.code[i + "super::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            uses.insert(rest[..end].to_string());
        }
        let siblings: BTreeSet<String> = all
            .iter()
            .filter(|o| o.module.len() == s.module.len() && o.module[..folder.len()] == *folder)
            .map(|o| o.module[folder.len()].clone())
            .collect();
        let edges = uses
            .into_iter()
            .filter(|u| u != me && siblings.contains(u))
            .collect();
        graphs
            .entry(folder.to_vec())
            .or_default()
            .insert(me.clone(), edges);
    }
    for (folder, graph) in &graphs {
        assert_eq!(
            has_cycle(graph),
            None,
            "a cycle among the modules of {folder:?}: {graph:?}"
        );
    }
}

#[test]
fn no_file_holds_more_than_800_lines_of_code() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.code_lines > MAX_CODE_LINES)
        .map(|s| format!("{} ({} lines)", s.file.display(), s.code_lines))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_CODE_LINES} lines of code: {long:?}"
    );
}
