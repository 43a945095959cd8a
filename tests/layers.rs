//! The code's shape, checked: modules call downward only, with no circle between them
//! (`graphql` -> `service` -> `db`, `robot` -> `hypervisor`, and `domain` below all), and
//! the dashboard holds no rule of its own (no role, no state code: it shows what the API
//! offers). Read from the source files, so a change that breaks the shape fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module of `src/` may use besides itself. A module not listed
/// here fails the test until its place is decided.
const MAY_USE: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("clock", &[]),
    ("config", &["domain"]),
    ("db", &["config", "domain"]),
    ("hypervisor", &["config", "domain"]),
    ("error", &["db", "domain"]),
    ("metrics", &["db", "domain", "error"]),
    // What operators load into their monitoring: text, built on `metrics`' names.
    ("monitoring", &[]),
    ("events", &["db", "error", "metrics"]),
    (
        "service",
        &[
            "clock",
            "config",
            "db",
            "domain",
            "error",
            "events",
            "hypervisor",
            "metrics",
        ],
    ),
    (
        "robot",
        &["config", "domain", "hypervisor", "metrics", "service"],
    ),
    // The GraphQL and REST layers read row types from `db::models`, `db::listing` and
    // `db::pages`, and act only through `service`.
    (
        "graphql",
        &["config", "db", "domain", "error", "events", "service"],
    ),
    (
        "http",
        &[
            "config", "db", "domain", "error", "graphql", "metrics", "service",
        ],
    ),
    ("demo", &["domain", "error", "service"]),
    ("cli", &["domain", "error", "graphql"]),
    (
        "server",
        &[
            "clock",
            "config",
            "db",
            "error",
            "events",
            "http",
            "hypervisor",
            "robot",
            "service",
        ],
    ),
];

/// Every `crate::<module>` a file names outside comments.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
        // `use crate::{a, b::C}` names several.
        if let Some(group) = code.trim().strip_prefix("use crate::{") {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        }
    }
    used
}

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Each top-level module and the other top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        // The crate root, and the binary (a crate of its own, which uses the library
        // by its name, never `crate::`).
        if module == "lib" || module == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(module.clone()).or_default();
        used.extend(used_modules(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn modules_use_only_what_lies_below_them() {
    let allowed: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, used) in graph() {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("{module} has no place in MAY_USE"));
            continue;
        };
        for other in used {
            if !may.contains(&other.as_str()) {
                wrong.push(format!("{module} uses {other}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = graph();
    // Depth-first from each module: reaching it again is a circle.
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    panic!("a circle: {} -> {start}", path.join(" -> "));
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
}

#[test]
fn the_dashboard_holds_no_role_or_state_rule() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&web).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "js") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            // A role named, or compared: what a caller may do comes from the API's
            // offers (`actions`), never from who the caller is. A snapshot's state
            // code (`stateCode`) is the REST API's; the page reads the state's name.
            for word in [
                "\"VIEWER\"",
                "\"OPERATOR\"",
                "\"ADMIN\"",
                "role ==",
                "role !=",
                "stateCode",
            ] {
                if line.contains(word) {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
