//! The module graph `src/lib.rs` draws is the one the code has: every `crate::` path of a module
//! names a module of a lower layer, and no modules reach each other in a cycle (siblings inside a
//! module included). The layers are read from the numbered list in lib.rs's documentation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `N. [`a`], `b`, ...: ...` lines of lib.rs's documentation: module name → layer.
fn layers() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut layers = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! ")) {
        let Some((n, rest)) = line.split_once(". ") else { continue };
        let Ok(n) = n.trim().parse::<usize>() else { continue };
        let names = rest.split(':').next().unwrap_or("");
        for name in names.split('`').skip(1).step_by(2) {
            assert!(layers.insert(name.to_string(), n).is_none(), "`{name}` is in two layers");
        }
    }
    layers
}

/// Every source file of the library as its module path (`sampler::half` is `["sampler", "half"]`).
fn modules(dir: &Path, path: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let p = entry.expect("entry").path();
        let name = p.file_stem().and_then(|s| s.to_str()).expect("utf8 name").to_string();
        if p.is_dir() {
            if path.is_empty() && name == "bin" {
                continue;
            }
            let mut sub = path.to_vec();
            sub.push(name);
            modules(&p, &sub, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut m = path.to_vec();
            if name != "mod" && !(path.is_empty() && name == "lib") {
                m.push(name);
            }
            out.insert(m, p);
        }
    }
}

fn ident(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    s.split_at(end)
}

/// The paths of a `use`-style tree starting at `s` (`a::b`, `a::{b, c::d}`, `{a, b}`).
fn tree(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    if s.starts_with('{') {
        let mut i = 1;
        loop {
            let rest = &s[i..];
            i += rest.len() - rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',').len();
            match s[i..].chars().next() {
                None => return i,
                Some('}') => return i + 1,
                // A glob or anything else that names no module.
                Some(c) => match tree(&s[i..], prefix, out) {
                    0 => i += c.len_utf8(),
                    n => i += n,
                },
            }
        }
    }
    let (name, rest) = ident(s);
    if name.is_empty() {
        out.push(prefix.to_vec());
        return 0;
    }
    let mut path = prefix.to_vec();
    if name != "self" {
        path.push(name.to_string());
    }
    match rest.strip_prefix("::") {
        Some(more) => name.len() + 2 + tree(more, &path, out),
        None => {
            out.push(path);
            name.len()
        }
    }
}

/// The module paths `text` (the file of module `me`) refers to through `crate::` and `super::`.
fn references(me: &[String], is_mod_file: bool, text: &str) -> Vec<Vec<String>> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    for (root, base) in [("crate::", Vec::new()), ("super::", me[..me.len().saturating_sub(1)].to_vec())] {
        // A `mod.rs` (or `x.rs` beside `x/`) is its own module: `super` is one level further up.
        let base = if root == "super::" && is_mod_file && !me.is_empty() { me[..me.len() - 1].to_vec() } else { base };
        let mut at = 0;
        while let Some(i) = code[at..].find(root) {
            let start = at + i;
            let before = code[..start].chars().next_back();
            at = start + root.len();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            tree(&code[at..], &base, &mut out);
        }
    }
    out
}

/// The longest prefix of `path` that is a module.
fn resolve<'a>(path: &[String], mods: &'a BTreeMap<Vec<String>, PathBuf>) -> Option<&'a Vec<String>> {
    (1..=path.len()).rev().find_map(|n| mods.get_key_value(&path[..n]).map(|(k, _)| k))
}

#[test]
fn imports_follow_the_layers_of_lib_rs() {
    let layers = layers();
    assert!(layers.len() > 10, "lib.rs lists its layers: {layers:?}");
    let mut mods = BTreeMap::new();
    modules(&src(), &[], &mut mods);
    let tops: BTreeSet<&String> = mods.keys().filter_map(|m| m.first()).collect();
    for top in &tops {
        assert!(layers.contains_key(*top), "module `{top}` has no layer in lib.rs");
    }
    for name in layers.keys() {
        assert!(tops.contains(name), "lib.rs lists `{name}`, which is not a module");
    }

    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (me, file) in &mods {
        let Some(top) = me.first() else { continue }; // lib.rs re-exports every layer
        let text = std::fs::read_to_string(file).expect("read");
        let is_mod_file = file.file_name().is_some_and(|n| n == "mod.rs") || file.with_extension("").is_dir();
        for r in references(me, is_mod_file, &text) {
            let Some(target) = resolve(&r, &mods) else { continue };
            let Some(other) = target.first() else { continue };
            if other != top && layers[other] >= layers[top] {
                wrong.push(format!(
                    "{} (layer {}) uses crate::{} (layer {})",
                    me.join("::"),
                    layers[top],
                    target.join("::"),
                    layers[other]
                ));
            }
            let ancestry = target.starts_with(me) || me.starts_with(target);
            if !ancestry {
                edges.entry(me.clone()).or_default().insert(target.clone());
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers of src/lib.rs:\n{}", wrong.join("\n"));

    // No cycle among modules that are not each other's ancestors (siblings such as two samplers'
    // files, or two top-level modules).
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == m).unwrap_or(0);
                return Some(stack[from..].iter().map(|s| s.join("::")).collect());
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!("modules import each other: {}", cycle.join(" -> "));
        }
    }
}

/// The parser the test relies on, on the forms the code uses.
#[test]
fn use_trees_are_read_whole() {
    let me = vec!["sampler".to_string(), "half".to_string()];
    let text = "use super::Stepper;\nuse crate::denoiser::half::{clean, round};\nuse super::{a::b, c};\n\
                // use crate::ffi::nothing;\nlet x = crate::limits::batch(1);";
    let refs: Vec<String> = references(&me, false, text).iter().map(|r| r.join("::")).collect();
    assert_eq!(
        refs,
        [
            "denoiser::half::clean",
            "denoiser::half::round",
            "limits::batch",
            "sampler::Stepper",
            "sampler::a::b",
            "sampler::c"
        ]
    );
}
