//! The layers of ARCHITECTURE.md, checked: no module imports from a layer
//! above its own, and inside `backfill` no part imports from a later one.
//! It reads the sources as text: every `crate::…`, `super::…` and `self::…`
//! path (use-groups included), resolved to the module it names.

use std::path::{Path, PathBuf};

/// Top-level modules, lowest first.
const LAYERS: &[&str] = &[
    "error",
    "request_context",
    "access",
    "backfill",
    "console",
    "reporting",
    "app",
    "server",
    "bench",
];

/// The parts of `backfill`, lowest first; `store` and `sinks` stand side by
/// side and may not use each other.
const BACKFILL_PARTS: &[&[&str]] = &[
    &["domain", "transient"],
    &["source"],
    &["identifiers"],
    &["store", "sinks"],
    &["runner"],
    &["engine"],
    &["api"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/backfill/store/mod.rs` → `["backfill", "store"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a path or use-tree at the start of `text` (after its first
/// segment), appending every full path it names to `out`.
fn read_tree(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let Some(after) = rest.strip_prefix("::") else {
            out.push(path);
            return at;
        };
        at += 2;
        let after = after.trim_start();
        at += text[at..].len() - after.len();
        if let Some(group) = after.strip_prefix('{') {
            at += 1;
            let mut depth_text = group;
            loop {
                let trimmed = depth_text.trim_start();
                at += depth_text.len() - trimmed.len();
                if let Some(rest) = trimmed.strip_prefix('}') {
                    let _ = rest;
                    return at + 1;
                }
                if let Some(rest) = trimmed.strip_prefix(',') {
                    at += 1;
                    depth_text = rest;
                    continue;
                }
                let name_len = trimmed
                    .find(|c: char| !is_ident(c))
                    .unwrap_or(trimmed.len());
                if name_len == 0 {
                    // `*`, or an `as` alias's tail: nothing more to resolve here.
                    at += trimmed.chars().next().map_or(1, char::len_utf8);
                    depth_text = &text[at..];
                    continue;
                }
                let mut child = path.clone();
                let name = &trimmed[..name_len];
                if name != "self" {
                    child.push(name.to_string());
                }
                at += name_len;
                at += read_tree(&text[at..], child, out);
                depth_text = &text[at..];
            }
        }
        let name_len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        if name_len == 0 {
            out.push(path);
            return at;
        }
        path.push(after[..name_len].to_string());
        at += name_len;
    }
}

/// Every module path a file names through `crate::`, `super::` or `self::`.
fn paths_named(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for head in ["crate", "super", "self"] {
        for (index, _) in code.match_indices(head) {
            let before = code[..index].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let after = &code[index + head.len()..];
            if !after.starts_with("::") {
                continue;
            }
            let mut base: Vec<String> = match head {
                "crate" => Vec::new(),
                "self" => module.to_vec(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = after;
            while let Some(next) = rest.strip_prefix("::super") {
                base.pop();
                rest = next;
            }
            read_tree(rest, base, &mut out);
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let module = module_of(&src, file);
        let Some(own) = module
            .first()
            .and_then(|top| LAYERS.iter().position(|l| l == top))
        else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in paths_named(&module, &text) {
            let Some(theirs) = target
                .first()
                .and_then(|top| LAYERS.iter().position(|l| l == top))
            else {
                continue;
            };
            checked += 1;
            if theirs > own {
                violations.push(format!(
                    "{}: uses crate::{}",
                    file.display(),
                    target.join("::")
                ));
            }
            let part = |path: &[String]| {
                path.get(1).and_then(|name| {
                    BACKFILL_PARTS
                        .iter()
                        .position(|rank| rank.contains(&name.as_str()))
                })
            };
            if module[0] == "backfill" && target[0] == "backfill" && module.get(1) != target.get(1)
            {
                if let (Some(mine), Some(other)) = (part(&module), part(&target)) {
                    if other >= mine {
                        violations.push(format!(
                            "{}: uses crate::{}",
                            file.display(),
                            target.join("::")
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "the check read only {checked} imports; is the parser broken?"
    );
    assert!(
        violations.is_empty(),
        "imports that point up:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_parser_reads_groups_and_relative_paths() {
    let module: Vec<String> = vec!["backfill".into(), "store".into()];
    let paths = paths_named(
        &module,
        "use super::{domain::*, source::SOURCE_MAX_ID};\nuse crate::server::{http, AppState};\nlet x = super::super::error::AppError::x();",
    );
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    for expected in [
        "backfill::domain::*",
        "backfill::source::SOURCE_MAX_ID",
        "server::http",
        "server::AppState",
        "error::AppError::x",
    ] {
        assert!(
            shown
                .iter()
                .any(|p| p.starts_with(expected.trim_end_matches("::*"))),
            "{expected} not in {shown:?}"
        );
    }
}
