//! henn-nn's floors, checked on the sources: a module only uses modules on its own floor or
//! below (so there is no cycle), and the plaintext ground (IR, import, reference, rewrites,
//! data) uses none of the homomorphic floors.
//!
//! ```text
//! session   client, server, wire types, both in one process
//! approx    activation fits and OLA degrees (costs from the planner)
//! plan      depth, magnitudes, parameters, layout plan, plan checks
//! report    per-layer rows (data for the CLI)
//! exec      scheduler
//! pack      layouts
//! backend   Backend trait and implementations
//! ground    ir, tensor, error, reference, rewrite, onnx, data
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Floors, bottom to top (`report` sits beside the planner, above the executor).
const FLOORS: [&str; 7] = [
    "backend", "pack", "exec", "report", "plan", "approx", "session",
];
/// Modules that know nothing of encryption.
const GROUND: [&str; 8] = [
    "ir",
    "tensor",
    "error",
    "reference",
    "rewrite",
    "onnx",
    "data",
    "lib",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/pack/channel/conv.rs` -> `pack`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<module>` the file's code mentions (comments skipped).
fn uses(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let m: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !m.is_empty() {
                v.push(m);
            }
        }
    }
    v
}

fn floor(m: &str) -> Option<usize> {
    FLOORS.iter().position(|f| *f == m)
}

#[test]
fn modules_use_only_their_floor_and_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut checked = 0;
    let mut violations = Vec::new();
    for f in &files {
        let m = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for used in uses(&text) {
            let bad = match (floor(&m), floor(&used)) {
                // a floor may use ground modules and floors at or below its own
                (Some(a), Some(b)) => b > a,
                (Some(_), None) => false,
                // the ground uses no floor (lib.rs only declares them)
                (None, Some(_)) => m != "lib",
                (None, None) => false,
            };
            if bad {
                violations.push(format!("{} uses crate::{used}", f.display()));
            }
            checked += 1;
        }
        assert!(
            floor(&m).is_some() || GROUND.contains(&m.as_str()),
            "{}: module '{m}' is on no floor; add it to tests/floors.rs",
            f.display()
        );
    }
    assert!(checked > 50, "only {checked} crate paths found");
    assert!(
        violations.is_empty(),
        "upward uses:\n{}",
        violations.join("\n")
    );
}
