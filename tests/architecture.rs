//! The shape of the code, checked: the library crates' modules form no cycle, the engine
//! takes no command-line or terminal dependency and never prints, its operations do not
//! call one another, and the CLI stays a thin layer over it.
//!
//! Read from the source as text (`crate::a::b` paths, `use crate::{…}` groups, `super::`):
//! what it finds is what `grep` finds, so a failure names the file and the path to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, as (module path like `ops/download`, text).
fn sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(base).unwrap().with_extension("");
                let mut module = rel.to_string_lossy().replace('\\', "/");
                if let Some(parent) = module.strip_suffix("/mod") {
                    module = parent.to_string();
                }
                out.push((module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The node a module path counts as: its top-level module, or for the folders that are
/// only a list of siblings (`ops/`, `commands/`) the module inside.
fn node(module: &str) -> Option<String> {
    let mut parts = module.split('/');
    let first = parts.next()?;
    if first == "lib" || first == "main" || first.is_empty() {
        return None;
    }
    match (first, parts.next()) {
        ("ops" | "commands", Some(second)) => Some(format!("{first}/{second}")),
        _ => Some(first.to_string()),
    }
}

/// The source without comments (line comments and doc comments), so prose naming a path
/// is no import.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `text` names through `crate::` (whole paths, and the items of
/// `use crate::{…}` groups) and `super::`.
fn referenced_paths(module: &str, text: &str) -> Vec<Vec<String>> {
    // `a::b::c(…)`: the segments up to the first that is not followed by `::`.
    let ident = |s: &str| -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = s.trim_start();
        loop {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_string());
            match rest[end..].strip_prefix("::") {
                Some(next) => rest = next,
                None => break,
            }
        }
        parts
    };
    let mut out = Vec::new();
    let code = code_only(text);
    for (i, _) in code.match_indices("crate::") {
        // `snapport_core::x` or `$crate::` is not this crate.
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each item.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || !item.contains('{') {
                    item.push(c);
                }
            }
            out.push(ident(&item));
        } else {
            out.push(ident(rest));
        }
    }
    for (i, _) in code.match_indices("super::") {
        let parent: Vec<String> = module.split('/').map(String::from).collect();
        let mut path = parent[..parent.len().saturating_sub(1)].to_vec();
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        path.extend(ident(&code[i + "super::".len()..]));
        out.push(path);
    }
    out
}

/// The crate's graph: node → the nodes it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    // `pub use x::{A, B}` in lib.rs: `crate::A` is module x.
    let mut reexports = BTreeMap::new();
    for (m, text) in &files {
        if m != "lib" {
            continue;
        }
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let rest = rest.trim_end_matches(';');
            if let Some((module, items)) = rest.split_once("::") {
                for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                    let item = item.split(" as ").last().unwrap_or("").trim();
                    reexports.insert(item.to_string(), module.trim().to_string());
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (m, text) in &files {
        let Some(from) = node(m) else { continue };
        edges.entry(from.clone()).or_default();
        for path in referenced_paths(m, text) {
            // The longest module the path names.
            let mut target = None;
            for n in (1..=path.len()).rev() {
                let candidate = path[..n].join("/");
                if modules.contains(&candidate) {
                    target = Some(candidate);
                    break;
                }
            }
            let target = target.or_else(|| path.first().and_then(|p| reexports.get(p)).cloned());
            let Some(to) = target.as_deref().and_then(node) else {
                continue;
            };
            if to != from {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{m}.rs names crate::{}", path.join("::")));
            }
        }
    }
    edges
}

/// A cycle of `edges`, if there is one, as the nodes around it.
fn find_cycle(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for next in edges.get(n).into_iter().flat_map(|e| e.keys()) {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str()) {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn library_crates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.join("lib.rs").is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn no_library_crate_has_an_import_cycle() {
    let crates = library_crates();
    assert!(crates.len() >= 7, "library crates found: {crates:?}");
    let mut problems = Vec::new();
    for src in crates {
        let edges = graph(&src);
        if let Some(cycle) = find_cycle(&edges) {
            let why: Vec<String> = cycle
                .windows(2)
                .map(|w| edges[&w[0]][&w[1]].clone())
                .collect();
            problems.push(format!(
                "{}: {} ({})",
                src.display(),
                cycle.join(" -> "),
                why.join("; ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn engine_operations_stand_alone() {
    let src = root().join("crates/engine/src");
    let edges = graph(&src);
    let mut problems = Vec::new();
    for (from, tos) in &edges {
        for (to, why) in tos {
            let from_op = from.starts_with("ops/");
            let to_op = to.starts_with("ops/");
            if to_op && from_op {
                problems.push(format!("an operation calls another: {why}"));
            } else if to_op {
                problems.push(format!("a domain module calls an operation: {why}"));
            }
        }
    }
    assert!(
        edges.keys().any(|n| n.starts_with("ops/")),
        "no operations under crates/engine/src/ops: {:?}",
        edges.keys()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_engine_never_prints_nor_parses_a_command_line() {
    let manifest = std::fs::read_to_string(root().join("crates/engine/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|d| d.split("\n[").next())
        .unwrap_or_default();
    for banned in ["clap", "indicatif", "snapport ="] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "crates/engine depends on {banned}"
        );
    }
    let mut problems = Vec::new();
    for (module, text) in sources(&root().join("crates/engine/src")) {
        for (n, line) in code_only(&text).lines().enumerate() {
            for banned in [
                "println!",
                "eprintln!",
                "print!(",
                "eprint!(",
                "process::exit",
                "_exit(",
                "STDERR_FILENO",
                "STDOUT_FILENO",
                "sigaction",
                "clap::",
            ] {
                if line.contains(banned) {
                    problems.push(format!("crates/engine/src/{module}.rs:{}: {line}", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the engine prints or exits:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_cli_is_a_thin_layer() {
    let lines: usize = sources(&root().join("crates/cli/src"))
        .iter()
        .map(|(_, text)| text.lines().count())
        .sum();
    assert!(
        lines <= 3000,
        "crates/cli/src holds {lines} lines (budget ~3,000)"
    );
}
