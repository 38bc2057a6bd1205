//! The runtime's module tree stays layered: `runtime/src/lib.rs` lists every
//! module in its `# Layout` (the order a job meets them) and in one of its
//! `# Layers`, and no module uses a module of a layer above its own. Read from
//! the sources, so the list in `lib.rs` and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src")
}

/// The modules `lib.rs` declares.
fn declared(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

/// The ``[`name`]`` links of the doc section that starts at `heading`.
fn section<'a>(lib: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = lib.lines().skip_while(|l| l.trim() != heading).skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let Some(doc) = l.strip_prefix("//!") else {
            break;
        };
        if doc.trim_start().starts_with('#') {
            break;
        }
        out.push(doc);
    }
    out
}

fn links(text: &str) -> Vec<String> {
    text.split("[`")
        .skip(1)
        .filter_map(|s| s.split_once("`]").map(|(name, _)| name.to_owned()))
        .collect()
}

/// Layer of each module, from the numbered list under `# Layers`.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layer = 0;
    let mut out = BTreeMap::new();
    for line in section(lib, "//! # Layers") {
        let t = line.trim_start();
        if let Some((n, _)) = t.split_once(". ")
            && let Ok(n) = n.parse::<usize>()
        {
            layer = n;
        }
        if layer > 0 {
            for name in links(line) {
                let before = out.insert(name.clone(), layer);
                assert!(before.is_none(), "`{name}` is in two layers of lib.rs");
            }
        }
    }
    out
}

/// The top-level modules `text` (a file of module `own`) refers to as
/// `crate::NAME`, comments and test modules left out.
fn uses(text: &str, own: &str) -> BTreeSet<String> {
    let mut code = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if !t.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for part in code.split("crate::").skip(1) {
        if let Some(group) = part.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first name of each item.
            let mut depth = 1;
            let mut item_start = true;
            let mut rest = group;
            while depth > 0 && !rest.is_empty() {
                let c = rest.chars().next().unwrap();
                if item_start && (c.is_ascii_alphabetic() || c == '_') {
                    out.insert(ident(rest));
                    item_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
                rest = &rest[c.len_utf8()..];
            }
        } else {
            out.insert(ident(part));
        }
    }
    out.remove(own);
    out
}

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

#[test]
fn every_module_is_listed_once_in_the_layout_and_the_layers() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let modules = declared(&lib);
    assert!(modules.len() > 10, "lib.rs declares {modules:?}");
    let layout: BTreeSet<String> = section(&lib, "//! # Layout")
        .into_iter()
        .flat_map(|l| l.trim_start().strip_prefix("- ").map(links))
        .flatten()
        .collect();
    let layered: BTreeSet<String> = layers(&lib).into_keys().collect();
    for m in &modules {
        assert!(layout.contains(m), "`{m}` is not in lib.rs's `# Layout`");
        assert!(layered.contains(m), "`{m}` is in no layer of lib.rs");
    }
    for m in layout.iter().chain(&layered) {
        assert!(
            modules.contains(m),
            "lib.rs lists `{m}`, which it does not declare"
        );
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let layer = layers(&lib);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in files {
        let rel = file.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let own = first.trim_end_matches(".rs").to_owned();
        let Some(&own_layer) = layer.get(&own) else {
            // lib.rs and main.rs: the roots.
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text, &own) {
            if let Some(&l) = layer.get(&used) {
                seen += 1;
                if l > own_layer {
                    wrong.push(format!(
                        "{} (layer {own_layer}) uses `crate::{used}` (layer {l})",
                        rel.display()
                    ));
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} uses found: the scan is broken");
    assert!(
        wrong.is_empty(),
        "uses against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_sees_grouped_and_nested_uses() {
    let text = "use crate::{alpha, beta::x, gamma::{y, z}};\nfn f() { crate::delta::g(); }\n// crate::comment\n#[cfg(test)]\nmod tests { use crate::late; }\n";
    let found: Vec<String> = uses(text, "delta").into_iter().collect();
    assert_eq!(found, ["alpha", "beta", "gamma"]);
}
