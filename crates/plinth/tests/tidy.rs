//! Keeps the architecture honest inside `cargo test`: plinth-core stays pure (no clock, no
//! tokio, no HashMap, no I/O) and every source file opens with a `//!` line.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
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
fn plinth_core_uses_no_clock_no_tokio_no_hashmap_and_no_io() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/plinth-core/src"), &mut files);
    assert!(!files.is_empty());
    let forbidden = [
        "std::time",
        "SystemTime",
        "Instant",
        "tokio",
        "HashMap",
        "HashSet",
        "std::fs",
        "std::net",
        "std::io",
        "rand::",
        "thread_rng",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{}:{}: uses {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "plinth-core must stay deterministic and pure:\n{}",
        found.join("\n")
    );
    let manifest =
        std::fs::read_to_string(workspace().join("crates/plinth-core/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    assert!(
        !deps.contains("tokio"),
        "plinth-core must not depend on tokio"
    );
}

#[test]
fn every_source_file_opens_with_a_doc_line() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without an opening //! line:\n{}",
        missing.join("\n")
    );
}

/// The crates of ours that `krate`'s manifest lists under `[dependencies]` (not dev or build).
fn our_dependencies(krate: &str) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(workspace().join(format!("crates/{krate}/Cargo.toml"))).unwrap();
    let Some(deps) = manifest.split("\n[dependencies]\n").nth(1) else {
        return Vec::new();
    };
    let deps = deps.split("\n[").next().unwrap();
    deps.lines()
        .filter_map(|line| line.split(['.', ' ', '=']).next())
        .filter(|name| name.starts_with("plinth"))
        .map(str::to_owned)
        .collect()
}

/// The arrows of docs/architecture.md, one way only: binary → server → node → core and wal;
/// binary and bench → client → proto. Whatever a crate may use of ours is listed here; anything
/// else in its manifest is a new arrow, to be argued in the architecture first.
#[test]
fn each_crate_depends_only_on_the_crates_the_architecture_allows() {
    let allowed: &[(&str, &[&str])] = &[
        ("plinth-core", &[]),
        ("plinth-wal", &[]),
        ("plinth-proto", &[]),
        ("plinth-client", &["plinth-proto"]),
        ("plinth-node", &["plinth-core", "plinth-wal"]),
        (
            "plinth-server",
            &["plinth-core", "plinth-node", "plinth-proto"],
        ),
        (
            "plinth",
            &[
                "plinth-server",
                "plinth-node",
                "plinth-client",
                "plinth-proto",
            ],
        ),
        ("plinth-bench", &["plinth-client"]),
    ];
    let mut crates: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    crates.sort();
    assert_eq!(
        our_dependencies("plinth-node"),
        ["plinth-core", "plinth-wal"],
        "the manifests are read"
    );
    let mut wrong = Vec::new();
    for krate in &crates {
        let Some((_, allowed)) = allowed.iter().find(|(name, _)| name == krate) else {
            wrong.push(format!(
                "{krate} is not in this test's table of allowed dependencies"
            ));
            continue;
        };
        for dep in our_dependencies(krate) {
            if !allowed.contains(&dep.as_str()) {
                wrong.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows the architecture does not have:\n{}",
        wrong.join("\n")
    );
}

/// openraft is plinth-node's implementation detail: no other crate depends on it or uses its
/// items, so that an upgrade stays inside plinth-node.
#[test]
fn openraft_stays_inside_plinth_node() {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.ends_with("plinth-node") {
            continue;
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        if manifest.contains("openraft") {
            found.push(format!("{}/Cargo.toml", dir.display()));
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // A log filter may name openraft's target; code may not use its items.
            if text.lines().any(|line| {
                let code = line.split("//").next().unwrap_or("");
                code.contains("openraft::") && !code.contains("contains(\"openraft::\")")
            }) {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(
        found.is_empty(),
        "openraft named outside plinth-node:\n{}",
        found.join("\n")
    );
}
