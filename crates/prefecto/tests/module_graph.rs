//! The library's module graph, read from its `use` lines and paths: the
//! engine never names the parts that fill its seams, no part names the
//! composition root, and no modules depend on each other in a cycle (neither
//! the top-level modules, nor the files inside one module's folder).
//!
//! Run it alone with `cargo test -p prefecto --test module_graph`; a failure
//! names the offending edge or the whole cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules of the engine: they may name only each other.
const ENGINE: &[&str] = &[
    "adopt",
    "args",
    "blocking",
    "clock",
    "concurrency",
    "cancel_scope",
    "context",
    "error",
    "flow",
    "flow_runs",
    "flow_pool",
    "future",
    "inputs",
    "names",
    "parameter_schema",
    "parameters",
    "prefault",
    "progress",
    "queued_body",
    "recorder",
    "recorder_guard",
    "result_store",
    "run_shared",
    "ended_run",
    "runner",
    "seams",
    "served",
    "settings",
    "slot_limiter",
    "stream_args",
    "state",
    "task",
    "task_run_error",
    "text",
    "thread_scope",
];

/// The parts that fill the seams: they may name the engine and each other.
const PARTS: &[&str] = &[
    "deployments",
    "logging",
    "prefect_api",
    "progress_bar",
    "serve",
    "signals",
    "store",
];

/// The composition root: it may name anything; nothing names it (but `lib.rs`).
const ROOT: &[&str] = &["builder"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, as its module path relative to `src`
/// (`store::writer`, `store` for `store/mod.rs`), with its text.
fn modules(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.to_vec();
            if name != "mod" && name != "lib" {
                module.push(name);
            }
            out.push((module, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The text without comments: doc links name modules without depending on them.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                return "";
            }
            // A comment after code; `://` in a URL is no comment.
            match line.find(" //") {
                Some(at) => &line[..at],
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path that starts with `anchor` (`crate::`,
/// `super::`), including every member of a `use anchor{a, b::c}` group.
fn names_after(code: &str, anchor: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(anchor) {
        // `$crate::` in macros counts as `crate::`; `foo_crate::` does not.
        let before = rest[..at].chars().last();
        let after = &rest[at + anchor.len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let first = item.trim().split("::").next().unwrap_or("").trim();
                        let first = first.split_whitespace().next().unwrap_or("");
                        if !first.is_empty() && first != "self" {
                            names.insert(first.to_string());
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// A cycle in `graph`, as the list of its nodes, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut state, &mut Vec::new()))
}

fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let mut files = Vec::new();
    modules(&src(), &[], &mut files);
    let mut top = Graph::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    for (module, text) in &files {
        let Some(own) = module.first() else {
            continue; // lib.rs: the crate root declares and re-exports everything
        };
        let code = code(text);
        let edges = top.entry(own.clone()).or_default();
        for name in names_after(&code, "crate::") {
            if &name != own {
                edges.insert(name);
            }
        }
        // Files of one folder: `super::x` and `crate::own::x` name a sibling.
        if module.len() == 2 {
            let siblings = inner.entry(own.clone()).or_default();
            let me = module[1].clone();
            let mut named = names_after(&code, "super::");
            named.extend(names_after(&code, &format!("crate::{own}::")));
            let entry = siblings.entry(me.clone()).or_default();
            for name in named {
                if name != me {
                    entry.insert(name);
                }
            }
        }
    }
    // Only edges to files of the folder count (`super::Item` names the folder's own mod.rs).
    for siblings in inner.values_mut() {
        let files: BTreeSet<String> = siblings.keys().cloned().collect();
        for edges in siblings.values_mut() {
            edges.retain(|name| files.contains(name));
        }
    }
    (top, inner)
}

#[test]
fn every_module_has_a_layer() {
    let (top, _) = graphs();
    let layered: BTreeSet<&str> = ENGINE.iter().chain(PARTS).chain(ROOT).copied().collect();
    let unknown: Vec<&String> = top
        .keys()
        .filter(|m| !layered.contains(m.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "put these modules in ENGINE, PARTS or ROOT of tests/module_graph.rs: {unknown:?}"
    );
}

#[test]
fn the_engine_names_only_the_engine() {
    let (top, _) = graphs();
    let mut wrong = Vec::new();
    for (module, edges) in &top {
        for to in edges {
            let allowed = if ENGINE.contains(&module.as_str()) {
                ENGINE.contains(&to.as_str())
            } else if PARTS.contains(&module.as_str()) {
                !ROOT.contains(&to.as_str())
            } else {
                true
            };
            if !allowed && top.contains_key(to) {
                wrong.push(format!("{module} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges against the layering (engine -> engine; parts -> engine or parts; only the root names the root): {wrong:?}"
    );
}

#[test]
fn no_modules_depend_on_each_other_in_a_cycle() {
    let (mut top, inner) = graphs();
    let known: BTreeSet<String> = top.keys().cloned().collect();
    for edges in top.values_mut() {
        edges.retain(|to| known.contains(to));
    }
    if let Some(cycle) = find_cycle(&top) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
    for (folder, siblings) in &inner {
        if let Some(cycle) = find_cycle(siblings) {
            panic!("cycle inside {folder}/: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_macro_paths() {
    let code = code(
        "use crate::{a::B, c, d::{e, f}};\n\
         let x: $crate::g::H = crate::i::j();\n\
         // crate::commented\n\
         let url = \"http://crate::not_code\"; // crate::trailing\n\
         use other_crate::k;",
    );
    let names = names_after(&code, "crate::");
    let expected: BTreeSet<String> = ["a", "c", "d", "g", "i", "not_code"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
