//! Goal: `selfheal::prelude` holds every item exported at the crate root, as
//! its doc says, so a host program needs only `use selfheal::prelude::*;` —
//! and the README and every example need nothing else (beyond the feature
//! modules `testing` and `sqlite`).
//! Method: read `src/lib.rs`, collect the names of the root `pub use`
//! statements and of the prelude's `pub use crate::{..}`, and compare; then
//! name the items through the prelude alone, so the list is also checked by
//! the compiler.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The names a `pub use` statement's body brings in (`a::b::C` → C,
/// `a::{B, c::D, E as F}` → B, D, F).
fn imported(body: &str) -> Vec<String> {
    let items = match (body.find('{'), body.rfind('}')) {
        (Some(open), Some(close)) => &body[open + 1..close],
        _ => body,
    };
    items
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.rsplit(" as ").next().unwrap_or(s);
            s.rsplit("::").next().unwrap_or(s).trim().to_owned()
        })
        .collect()
}

/// The `pub use` statements of `text` whose line starts with `indent`
/// exactly, as their bodies (comments left out).
fn pub_uses(text: &str, indent: &str) -> Vec<String> {
    // A newline first, so a statement on the first line is found too.
    let code: String = std::iter::once("")
        .chain(text.lines())
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let lead = format!("\n{indent}pub use ");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(&lead) {
        rest = &rest[i + lead.len()..];
        let end = rest.find(';').expect("a `pub use` ends with `;`");
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

#[test]
fn the_prelude_holds_every_root_item() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let start = lib
        .find("pub mod prelude {")
        .expect("src/lib.rs defines the prelude");
    let root: BTreeSet<String> = pub_uses(&lib[..start], "")
        .iter()
        .flat_map(|b| imported(b))
        .collect();
    let prelude: BTreeSet<String> = pub_uses(&lib[start..], "    ")
        .iter()
        .flat_map(|b| imported(b))
        .collect();
    assert!(root.len() > 40, "root items found: {root:?}");
    let missing: Vec<_> = root.difference(&prelude).collect();
    assert!(
        missing.is_empty(),
        "root items missing from the prelude: {missing:?}"
    );
}

/// The `selfheal::<module>::` paths of `text` whose module is not the
/// prelude or a feature module (`testing`, `sqlite`).
fn module_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("selfheal::") {
        rest = &rest[i + "selfheal::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let is_module = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && rest[name.len()..].starts_with("::");
        if is_module && !["prelude", "testing", "sqlite"].contains(&name.as_str()) {
            out.push(name);
        }
    }
    out
}

#[test]
fn the_readme_and_every_example_use_only_the_prelude_and_the_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 5, "{files:?}");
    let mut found = Vec::new();
    for f in &files {
        for m in module_paths(&fs::read_to_string(f).unwrap()) {
            found.push(format!("{}: selfheal::{m}::", f.display()));
        }
    }
    assert!(
        found.is_empty(),
        "paths past the prelude and the root: {found:#?}"
    );
    assert_eq!(
        module_paths(
            "selfheal::healer::Rule, selfheal::prelude::*, selfheal::Error, selfheal::testing::X"
        ),
        ["healer"]
    );
}

#[test]
fn the_parser_reads_grouped_and_single_uses() {
    let text = "pub use a::B;\npub use c::{D, e::F, G as H};\n// pub use x::Y;\nmod m {\n    pub use crate::{I, J};\n}\n";
    let top: Vec<String> = pub_uses(text, "")
        .iter()
        .flat_map(|b| imported(b))
        .collect();
    assert_eq!(top, ["B", "D", "F", "H"]);
    let inner: Vec<String> = pub_uses(text, "    ")
        .iter()
        .flat_map(|b| imported(b))
        .collect();
    assert_eq!(inner, ["I", "J"]);
}

/// The items the prelude gained for the recovery manager, named through the
/// prelude alone: this file does not compile if one of them is not there.
#[allow(dead_code)]
mod named_through_the_prelude {
    use selfheal::prelude::*;

    fn recovery(
        _: Option<AutoRecoveryManager>,
        _: Option<RecoveryConfig>,
        _: Option<Mode>,
        _: Option<RecoveryEvent>,
        _: Option<RecoveryStats>,
    ) {
    }

    fn failures(_: Option<FailureId>, _: Option<FailureCallback>, _: Option<ReplicaLag>) {}
}
