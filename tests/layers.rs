//! The layers of `src/`, checked: HTTP (server, edge, pages, api, limits, openapi, demo, cli) above the domain
//! (context, flow, tokens, outcome, provider, config), the store below it, and the foundation (telemetry, account,
//! crypto) at the bottom. A module may use its own layer's modules only where the order below allows, and lower
//! layers only: no domain module reaches up into the web layer, and config, provider, store, account and telemetry
//! form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// From the bottom up; a module may use only modules listed before it. The HTTP modules, at the top, are not
/// ordered among themselves.
const ORDERED: &[&str] = &[
    "flight",
    "catalog",
    "crypto",
    "telemetry",
    "account",
    "store",
    "endings",
    "config",
    "provider",
    "context",
    "outcome",
    "flow",
    "tokens",
    "webhooks",
];
const HTTP: &[&str] =
    &["i18n", "assets", "limits", "pages", "api", "proxy", "openapi", "edge", "server", "demo", "cli"];

/// The top-level modules each module of `src/` names with `crate::…`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name").to_owned();
        if name == "main" || name == "lib" {
            continue;
        }
        let mut text = String::new();
        collect(&path, &mut text);
        let mut used = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').expect("closing brace")];
                used.extend(group.split(',').map(|item| first_segment(item.trim())));
            } else {
                used.insert(first_segment(rest));
            }
        }
        used.retain(|module| !module.is_empty() && *module != name);
        graph.insert(name, used);
    }
    graph
}

fn first_segment(path: &str) -> String {
    path.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

fn collect(path: &Path, text: &mut String) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("folder") {
            collect(&entry.expect("entry").path(), text);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        text.push_str(&std::fs::read_to_string(path).expect("source"));
    }
}

#[test]
fn every_module_has_a_place_in_the_layers() {
    for module in imports().keys() {
        assert!(
            ORDERED.contains(&module.as_str()) || HTTP.contains(&module.as_str()),
            "src/{module} is in no layer: add it to tests/layers.rs where it belongs"
        );
    }
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let graph = imports();
    let mut wrong = Vec::new();
    for (position, module) in ORDERED.iter().enumerate() {
        let below = &ORDERED[..position];
        for used in graph.get(*module).into_iter().flatten() {
            if !below.contains(&used.as_str()) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers (bottom up: {ORDERED:?}, then HTTP):\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_imports_of_every_form() {
    // Guards the scan itself: server uses pages through `use crate::{api, pages}` and flow through a path.
    let graph = imports();
    assert!(graph["server"].contains("pages") && graph["server"].contains("api"), "{:?}", graph["server"]);
    assert!(graph["flow"].contains("store") && graph["flow"].contains("context"), "{:?}", graph["flow"]);
}
