//! The import rule, read from the source: edges (`http`, `ws`, the accept loop, the shell)
//! import services, services import the engine, the engine imports the backends' traits
//! and the vocabulary, and nothing imports upwards or into an edge; no two top-level
//! modules import each other, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its layer, lowest first. A module may import its
/// own layer's and lower layers' modules only.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &["domain", "clock", "config", "test_support"]),
    ("vocabulary", &["message", "presence", "protocol", "auth"]),
    ("backends", &["store", "bus"]),
    ("engine", &["hub", "metrics", "limits"]),
    (
        "services",
        &["state", "chat", "snapshot", "reads", "activity", "admission", "revocation", "sweeper", "error"],
    ),
    ("edges", &["http", "ws", "serve", "telemetry"]),
    ("shell", &["app", "lib", "main"]),
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
        .unwrap_or_else(|| panic!("src/{module}: add it to a layer in tests/api/architecture.rs"))
}

/// The top-level module a file belongs to (`src/ws/native.rs` -> `ws`).
fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a file's code (comments left out) refers to as `crate::x`, or in
/// a group, `crate::{x, y::z}` (a group spanning lines included).
fn imports(source: &str) -> BTreeSet<String> {
    let code: String =
        source.lines().map(str::trim).filter(|l| !l.starts_with("//")).collect::<Vec<_>>().join("\n");
    let name = |text: &str| -> String {
        text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut found = BTreeSet::new();
    for part in code.split("crate::").skip(1) {
        if let Some(group) = part.strip_prefix('{') {
            // Top-level entries only, up to the group's own closing brace: `a::{b, c}`
            // inside the group names `a`.
            let mut depth = 0;
            let mut entry = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(name(&entry));
                        entry.clear();
                        continue;
                    }
                    _ => {}
                }
                entry.push(c);
            }
            found.insert(name(&entry));
        } else {
            found.insert(name(part));
        }
    }
    found.remove("");
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module -> the other top-level modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&file, &src);
        let mut used = imports(&std::fs::read_to_string(&file).unwrap());
        used.remove(&module);
        graph.entry(module).or_default().extend(used);
    }
    graph
}

#[test]
fn imports_run_down_the_layers_and_never_into_an_edge() {
    let mut wrong = Vec::new();
    for (module, used) in graph() {
        let own = layer_of(&module);
        for import in used {
            if layer_of(&import) > own {
                wrong.push(format!(
                    "{module} ({}) imports {import} ({})",
                    LAYERS[own].0,
                    LAYERS[layer_of(&import)].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_modules_import_each_other_around_a_circle() {
    let graph = graph();
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let mut circle: Vec<String> = path[at..].iter().map(|m| (*m).to_owned()).collect();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let circle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "an import circle: {}", circle.unwrap().join(" -> "));
    }
}

#[test]
fn the_rule_reader_sees_imports() {
    let used = imports("use crate::hub::Outbox;\n// crate::ws in a comment\nlet x = crate::domain::now();");
    assert_eq!(used, BTreeSet::from(["hub".to_owned(), "domain".to_owned()]));
    let grouped = imports("use crate::{\n    http, store::{self, Store},\n    ws,\n};");
    assert_eq!(grouped, BTreeSet::from(["http".to_owned(), "store".to_owned(), "ws".to_owned()]));
}
