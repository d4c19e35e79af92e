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
