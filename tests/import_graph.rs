//! Goal: the crate's import graph has no circle — between components, and
//! between the files of one component — so each file can be read with only
//! what is below it; and no arrow goes from a seam (`host`, `types`,
//! `clock`, `error`, `digest`) to an implementation module. Method: read every source file, draw an arrow from a
//! file to each sibling module it names (`super::x`, `crate::component::x`,
//! an item its folder's `mod.rs` re-exports from `x`, or an item `mod.rs`
//! defines itself: an arrow to `mod.rs`), from `mod.rs` to each child its
//! own code uses (not its `mod` declarations and `pub use` re-exports), and
//! from each top-level module to each other it names (`crate::x`); comments
//! and unit tests left out. Then look for a circle by depth-first search
//! and print it. For the seams: every `crate::x` and `super::x` in their
//! code (comments and unit tests left out) must name another seam.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The text of a source file without its comments (line comments, doc
/// comments) and without its unit-test module.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match unit_test_module(&text) {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the inline unit-test module (`#[cfg(test)]` then `mod tests {`)
/// starts in `text`, if the file has one. A `mod tests;` declaration (the
/// tests live in their own file) is not one: the code after it is checked.
fn unit_test_module(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if let Some(decl) = rest.strip_prefix("mod tests") {
            if decl.trim_start().starts_with('{') {
                return Some(at);
            }
        }
        from = at + 1;
    }
    None
}

/// The identifiers after each occurrence of `prefix` (`prefix::a`, or
/// `prefix::{a, b::c, d}`: a, b, d).
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let id: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !id.is_empty() {
                    out.push(id);
                }
            }
        } else {
            let id: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !id.is_empty() {
                out.push(id);
            }
        }
    }
    out
}

/// The modules of folder `dir`: name → file (`x.rs` or `x/mod.rs`), unit
/// test files (`tests.rs`, `tests_*.rs`) and folders left out.
fn children(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && p.join("mod.rs").exists() && p.file_name().is_some_and(|f| f != "tests") {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            out.insert(name, p.join("mod.rs"));
        } else if p.extension().is_some_and(|x| x == "rs") {
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let unit_tests = name == "tests" || name.starts_with("tests_");
            if !unit_tests && name != "mod" && name != "lib" {
                out.insert(name, p);
            }
        }
    }
    out
}

/// A circle in `graph`, if there is one, as the path that closes it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == m).unwrap();
                    let mut c = path[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The arrows between the files of the component in `dir` (its module path
/// from the crate root is `path`), checked for a circle; then each
/// subfolder the same way.
fn check_folder(dir: &Path, path: &str, circles: &mut Vec<String>) {
    let kids = children(dir);
    let mod_code = code(&dir.join("mod.rs"));
    // Items mod.rs re-exports, by the child that defines them.
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    for vis in ["pub use ", "pub(crate) use ", "pub(super) use "] {
        for kid in kids.keys() {
            for item in names_after(&mod_code, &format!("{vis}{kid}::")) {
                reexported.insert(item, kid.clone());
            }
        }
    }
    // Names mod.rs takes from outside the folder: an arrow to those is not
    // an arrow to mod.rs.
    let from_outside: BTreeSet<String> = mod_code
        .split_inclusive(';')
        .map(str::trim_start)
        .filter(|stmt| {
            [
                "use crate::",
                "use std::",
                "pub use crate::",
                "pub(crate) use crate::",
            ]
            .iter()
            .any(|p| stmt.starts_with(p))
        })
        .flat_map(|stmt| {
            stmt.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (kid, file) in &kids {
        let text = code(file);
        let mut named = names_after(&text, "super::");
        named.extend(names_after(&text, &format!("crate::{path}::")));
        let arrows = graph.entry(kid.clone()).or_default();
        for n in named {
            let to = if kids.contains_key(&n) {
                Some(n)
            } else if let Some(k) = reexported.get(&n) {
                Some(k.clone())
            } else if n == "super" || from_outside.contains(&n) {
                None
            } else {
                // An item defined in mod.rs itself.
                Some("mod".to_owned())
            };
            if let Some(to) = to.filter(|t| t != kid) {
                arrows.insert(to);
            }
        }
    }
    // mod.rs's own arrows: the children its code uses, leaving out the
    // declarations and re-exports that make the folder one module.
    let own: String = mod_code
        .split_inclusive(';')
        .filter(|stmt| {
            let t = stmt.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub(super) "))
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            !(t.starts_with("mod ")
                || (t.starts_with("use ") && stmt.trim_start().starts_with("pub")))
        })
        .collect();
    let arrows = graph.entry("mod".to_owned()).or_default();
    for kid in kids.keys() {
        if !names_after(&own, &format!("{kid}::")).is_empty() {
            arrows.insert(kid.clone());
        }
    }
    if let Some(c) = circle(&graph) {
        circles.push(format!("{}: {}", dir.display(), c.join(" -> ")));
    }
    for (kid, file) in &kids {
        if file.ends_with("mod.rs") {
            check_folder(file.parent().unwrap(), &format!("{path}::{kid}"), circles);
        }
    }
}

#[test]
fn the_import_graph_has_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let top = children(&src);
    let mut circles = Vec::new();

    // Between components (top-level modules).
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in &top {
        let mut files = vec![file.clone()];
        if file.ends_with("mod.rs") {
            let mut stack = vec![file.parent().unwrap().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        // A unit-test folder (`tests/mod.rs`) is left out
                        // like a `tests.rs` file.
                        if p.file_name().is_some_and(|f| f != "tests") {
                            stack.push(p);
                        }
                    } else if p.extension().is_some_and(|x| x == "rs")
                        && p.file_stem().and_then(|f| f.to_str()).is_some_and(|f| {
                            // Unit-test files: `tests.rs`, `tests_*.rs`.
                            f != "tests" && !f.starts_with("tests_")
                        })
                    {
                        files.push(p);
                    }
                }
            }
        }
        let arrows = graph.entry(name.clone()).or_default();
        for f in files {
            for n in names_after(&code(&f), "crate::") {
                if top.contains_key(&n) && &n != name {
                    arrows.insert(n);
                }
            }
        }
    }
    if let Some(c) = circle(&graph) {
        circles.push(format!("src: {}", c.join(" -> ")));
    }

    // Between the files of each component.
    for (name, file) in &top {
        if file.ends_with("mod.rs") {
            check_folder(file.parent().unwrap(), name, &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// The seams: the host traits and the vocabulary every component shares.
const SEAMS: [&str; 5] = ["host", "types", "clock", "error", "digest"];

/// What the seam in `text` (its code) names from the crate that is not a
/// seam: `crate::x` or `super::x` (a top-level file's `super` is the crate
/// root) for any `x` but a seam.
fn non_seam_imports(text: &str) -> Vec<String> {
    let mut named = names_after(text, "crate::");
    named.extend(names_after(text, "super::"));
    named.retain(|n| !SEAMS.contains(&n.as_str()));
    named
}

#[test]
fn the_seams_import_no_implementation_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut arrows = Vec::new();
    for seam in SEAMS {
        let file = src.join(format!("{seam}.rs"));
        assert!(file.exists(), "{} is a seam", file.display());
        for n in non_seam_imports(&code(&file)) {
            arrows.push(format!("src/{seam}.rs -> crate::{n}"));
        }
    }
    assert!(
        arrows.is_empty(),
        "a seam imports an implementation module (seams may use only each other, std and dependencies):\n{}",
        arrows.join("\n")
    );
}

#[test]
fn the_seam_check_finds_an_implementation_import() {
    let seam_only = "use crate::error::{Error, Result};\nuse crate::types::{Lsn, PageId};\nlet d = crate::digest::RangeDigest::new();\nuse std::sync::Arc;";
    assert!(non_seam_imports(seam_only).is_empty());
    assert_eq!(
        non_seam_imports(
            "use crate::repair::RangeDigest;\nuse super::{types::PageId, worker::Job};"
        ),
        ["repair", "worker"]
    );
    assert_eq!(
        non_seam_imports("use crate::{Error, DataRepairer};"),
        ["Error", "DataRepairer"]
    );
}

#[test]
fn the_checker_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        names_after(
            "use super::{x, y::Z, w};\nlet q = super::v::f();",
            "super::"
        ),
        ["x", "y", "w", "v"]
    );
    assert!(names_after("a_super::x", "super::").is_empty());
}

#[test]
fn only_an_inline_test_module_ends_the_code() {
    // A `mod tests;` declaration near the top: the code after it is read.
    let declared = "mod a;\n#[cfg(test)]\nmod tests;\n\nuse super::b::X;\nfn f() {}\n";
    assert_eq!(unit_test_module(declared), None);
    // An inline test module: the code stops where it starts.
    let inline = "use super::b::X;\n\n#[cfg(test)]\nmod tests {\n    use super::c::Y;\n}\n";
    let at = unit_test_module(inline).unwrap();
    assert_eq!(names_after(&inline[..at], "super::"), ["b"]);
    // Both: the declaration is passed over, the inline module ends the code.
    let both = format!("{declared}{inline}");
    let at = unit_test_module(&both).unwrap();
    assert_eq!(names_after(&both[..at], "super::"), ["b", "b"]);
    assert!(unit_test_module("#[cfg(test)]\nmod testsuite {}\n").is_none());
}
