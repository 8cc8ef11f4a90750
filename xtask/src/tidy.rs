//! `cargo xtask tidy`: the workspace's conventions, checked (after rust-analyzer's `tidy.rs`).
//!
//! - no path into the maintainers' private reference folder, and no citation of their private
//!   spec file (the repository stands alone; the method is in docs/method.md);
//! - every `unsafe` block, fn or impl outside tests says why it is sound (`// SAFETY:`);
//! - no `.unwrap()` in library code outside tests (an `expect` that says why, on a proven
//!   invariant, is the exception);
//! - every workspace dependency is used by some crate, and every crate uses what it declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Crates whose code is a binary (an `unwrap` there ends one command, with a message).
const BINARY_CRATES: &[&str] = &["cli", "bench"];

pub fn run(_args: &[String]) -> Result<()> {
    let root = crate::root();
    let problems = check(&root)?;
    if problems.is_empty() {
        println!("tidy: ok");
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    bail!("tidy: {} problem(s)", problems.len())
}

/// Every problem found under `root`, one line each (`path:line: what`).
pub fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in tracked_files(root)? {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // binary files
        };
        problems.extend(no_private_paths(&rel, &text));
        if rel.extension().is_some_and(|e| e == "rs") {
            // This file names the patterns it looks for.
            if rel != Path::new("xtask/src/tidy.rs") {
                problems.extend(unsafe_has_safety(&rel, &text));
            }
            if is_library_source(&rel) {
                problems.extend(no_unwrap(&rel, &text));
            }
        }
    }
    problems.extend(dependencies_used(root)?);
    Ok(problems)
}

fn tracked_files(root: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| root.join(String::from_utf8_lossy(s).as_ref()))
        .filter(|p| p.is_file())
        .collect())
}

/// `crates/<lib>/src/**.rs`, not a binary crate's.
fn is_library_source(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.len() >= 4
        && parts[0] == "crates"
        && parts[2] == "src"
        && !BINARY_CRATES.contains(&parts[1].as_str())
        && !parts.iter().any(|p| p == "bin" || p == "tests")
}

fn no_private_paths(rel: &Path, text: &str) -> Vec<String> {
    // Spelled in pieces so that this file does not match itself.
    let folder = ["shared", "/docs"].concat();
    let spec = ["METHOD", ".md"].concat();
    let rules = [
        (folder, "points into a folder a clone does not have"),
        (
            spec,
            "cites the maintainers' private spec; cite docs/method.md §N",
        ),
    ];
    text.lines()
        .enumerate()
        .flat_map(|(i, l)| {
            rules
                .iter()
                .filter(move |(needle, _)| l.contains(needle.as_str()))
                .map(move |(needle, why)| {
                    format!(
                        "{}:{}: `{needle}` {why}; say it in docs/",
                        rel.display(),
                        i + 1
                    )
                })
        })
        .collect()
}

/// The code of a file before its unit-test module (by convention the last item).
fn non_test_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
}

fn unsafe_has_safety(rel: &Path, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in non_test_lines(text) {
        let code = line.split("//").next().unwrap_or("");
        // Blocks and impls; an `unsafe fn` states its contract in its docs instead.
        let opens_unsafe = code.contains("unsafe {")
            || code.trim_start().starts_with("unsafe impl")
            || code.contains("unsafe extern");
        if !opens_unsafe {
            continue;
        }
        // The comment may sit on the line itself or in the comment block just above (through
        // attributes and the statement's own first lines).
        let documented = line.contains("SAFETY:")
            || lines[..i]
                .iter()
                .rev()
                .take(8)
                .take_while(|l| !l.trim().is_empty())
                .any(|l| l.contains("SAFETY:") || l.contains("# Safety"));
        if !documented {
            out.push(format!(
                "{}:{}: `unsafe` without a `// SAFETY:` comment saying why it is sound",
                rel.display(),
                i + 1
            ));
        }
    }
    out
}

fn no_unwrap(rel: &Path, text: &str) -> Vec<String> {
    non_test_lines(text)
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            code.contains(".unwrap()") && !l.trim_start().starts_with("///")
        })
        .map(|(i, _)| {
            format!(
                "{}:{}: `.unwrap()` in library code: return the error, or `expect` a proven invariant with the reason",
                rel.display(),
                i + 1
            )
        })
        .collect()
}

/// Dependency names of a `[section]` of a Cargo.toml (a light parse: one `name = ...` or
/// `name.workspace = true` per line).
fn section_deps(toml: &str, section: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == format!("[{section}]");
            continue;
        }
        if inside && !t.is_empty() && !t.starts_with('#') {
            if let Some(name) = t.split(['=', '.', ' ']).next() {
                out.insert(name.trim().to_string());
            }
        }
    }
    out
}

fn dependencies_used(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let ws = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let declared = section_deps(&ws, "workspace.dependencies");
    let mut manifests: BTreeMap<PathBuf, String> = BTreeMap::new();
    for dir in std::fs::read_dir(root.join("crates"))?.flatten() {
        let m = dir.path().join("Cargo.toml");
        if m.exists() {
            manifests.insert(m.clone(), std::fs::read_to_string(&m)?);
        }
    }
    let xtask = root.join("xtask/Cargo.toml");
    manifests.insert(xtask.clone(), std::fs::read_to_string(&xtask)?);
    for name in &declared {
        let used = manifests.values().any(|m| {
            ["dependencies", "dev-dependencies", "build-dependencies"]
                .iter()
                .any(|s| section_deps(m, s).contains(name))
                || m.contains(&format!("{name}.workspace"))
        });
        if !used {
            problems.push(format!(
                "Cargo.toml: workspace dependency `{name}` is used by no crate"
            ));
        }
    }
    for (manifest, text) in &manifests {
        let dir = manifest.parent().expect("a manifest has a folder");
        let mut sources = String::new();
        for sub in ["src", "tests", "examples", "benches"] {
            collect_rs(&dir.join(sub), &mut sources);
        }
        for section in ["dependencies", "dev-dependencies"] {
            for name in section_deps(text, section) {
                // `md-5` is `md5` in code, `foo-bar` is `foo_bar`.
                let idents = [name.replace('-', "_"), name.replace('-', "")];
                let used = idents.iter().any(|ident| {
                    sources.contains(&format!("{ident}::"))
                        || sources.contains(&format!("use {ident}"))
                        || sources.contains(&format!("extern crate {ident}"))
                })
                    // Pulled in only to turn a feature on (e.g. candle-nn's CUDA kernels).
                    || text.contains(&format!("\"{name}/"));
                if !used {
                    problems.push(format!(
                        "{}: `{name}` ([{section}]) is not used by the crate's code",
                        manifest.strip_prefix(root).unwrap_or(manifest).display()
                    ));
                }
            }
        }
    }
    Ok(problems)
}

fn collect_rs(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            if let Ok(t) = std::fs::read_to_string(&p) {
                out.push_str(&t);
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_catches_its_violation() {
        let p = Path::new("crates/x/src/lib.rs");
        let folder = ["shared", "/docs"].concat();
        let spec = ["METHOD", ".md"].concat();
        assert_eq!(
            no_private_paths(p, &format!("see ../{folder}/x.md")).len(),
            1
        );
        assert_eq!(no_private_paths(p, &format!("see {spec} §3")).len(), 1);
        // Both rules on one line: two problems.
        assert_eq!(
            no_private_paths(p, &format!("see ../{folder}/{spec}")).len(),
            2
        );
        assert!(no_private_paths(p, "see docs/method.md §3").is_empty());
        // The Rust constant of a method module is not a citation.
        assert!(no_private_paths(p, "pub const METHOD: Method = Method {").is_empty());

        let bad = "fn f() {\n    let x = unsafe { g() };\n}\n";
        assert_eq!(unsafe_has_safety(p, bad).len(), 1);
        let good =
            "fn f() {\n    // SAFETY: g has no preconditions.\n    let x = unsafe { g() };\n}\n";
        assert!(unsafe_has_safety(p, good).is_empty());
        let in_tests = "fn f() {}\n#[cfg(test)]\nmod tests {\n    fn t() { unsafe { g() } }\n}\n";
        assert!(unsafe_has_safety(p, in_tests).is_empty());

        assert_eq!(no_unwrap(p, "let x = y.unwrap();\n").len(), 1);
        assert!(no_unwrap(p, "let x = y.expect(\"checked above\");\n").is_empty());
        assert!(no_unwrap(p, "/// `x.unwrap()` in a doc\n").is_empty());
        assert!(is_library_source(Path::new("crates/models/src/lib.rs")));
        assert!(!is_library_source(Path::new("crates/cli/src/main.rs")));
        assert!(!is_library_source(Path::new("crates/models/tests/a.rs")));

        let toml = "[dependencies]\nserde.workspace = true\nfoo = { path = \"x\" }\n\n[dev-dependencies]\ntempfile = \"3\"\n";
        assert_eq!(
            section_deps(toml, "dependencies"),
            ["foo", "serde"].iter().map(|s| s.to_string()).collect()
        );
    }

    #[test]
    fn the_workspace_is_tidy() {
        let problems = check(&crate::root()).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
