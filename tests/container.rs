//! The container build reads everything the binary compiles in: every file or folder the sources pull in at compile
//! time (`include_str!`, askama templates, the Fluent files, build.rs) is copied by the Dockerfile's build stage and
//! let through by `.dockerignore`. No container engine is needed: the check reads the files.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The string literals that follow each `marker` in `text`.
fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            let start = rest.find('"')? + 1;
            let end = start + rest[start..].find('"')?;
            Some(&rest[start..end])
        })
        .collect()
}

/// The top-level entry of the package that `path` (relative to `base`, inside the package) lies in.
fn top_level(base: &Path, path: &str) -> String {
    let mut parts: Vec<String> =
        base.strip_prefix(root()).unwrap().iter().map(|p| p.to_string_lossy().into()).collect();
    for component in Path::new(path).components() {
        match component {
            Component::ParentDir => {
                parts.pop().expect("a compile-time path outside the package");
            }
            Component::Normal(part) => parts.push(part.to_string_lossy().into()),
            _ => {}
        }
    }
    parts.into_iter().next().expect("a compile-time path naming the package itself")
}

/// Every top-level file or folder the build reads.
fn compile_time_inputs() -> BTreeSet<String> {
    let mut inputs: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "src"].map(String::from).into();
    for optional in ["build.rs", "askama.toml"] {
        if root().join(optional).exists() {
            inputs.insert(optional.into());
        }
    }
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for marker in ["include_str!(", "include_bytes!("] {
            for path in literals_after(&text, marker) {
                inputs.insert(top_level(dir, path));
            }
        }
        // askama reads templates/ (its default, without an askama.toml) relative to the package.
        if text.contains("#[template(") {
            inputs.insert("templates".into());
        }
        // fluent-templates' static_loader! reads its `locales` folder relative to the package.
        if text.contains("static_loader!") {
            for path in literals_after(&text, "locales:") {
                inputs.insert(top_level(&root(), path));
            }
        }
    }
    inputs
}

fn normalized(source: &str) -> String {
    source.trim_start_matches("./").trim_end_matches('/').to_owned()
}

#[test]
fn the_dockerfile_copies_every_folder_the_build_reads() {
    let inputs = compile_time_inputs();
    for known in ["templates", "locales", "static", "migrations"] {
        assert!(inputs.contains(known), "the scan of src/ should find {known}/ (found {inputs:?})");
    }

    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // The build stage: from the first FROM to the next.
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a multi-stage Dockerfile");
    let copied: BTreeSet<String> = build_stage
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.contains("--from="))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len().saturating_sub(1)].iter().map(|w| normalized(w)).collect::<Vec<_>>()
        })
        .collect();
    let missing: Vec<&String> = inputs.iter().filter(|input| !copied.contains(*input)).collect();
    assert!(missing.is_empty(), "the Dockerfile's build stage does not COPY {missing:?} (copies {copied:?})");
}

#[test]
fn dockerignore_lets_through_every_folder_the_build_reads() {
    let inputs = compile_time_inputs();
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(
        lines.first(),
        Some(&"*"),
        ".dockerignore starts by leaving everything out, then lets the build's inputs in"
    );
    let allowed: BTreeSet<String> = lines.iter().filter_map(|l| l.strip_prefix('!')).map(normalized).collect();
    let missing: Vec<&String> = inputs.iter().filter(|input| !allowed.contains(*input)).collect();
    assert!(missing.is_empty(), ".dockerignore leaves out {missing:?}, which the build reads");
}
