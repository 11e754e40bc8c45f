#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shared reference material (`../shared` beside the checkout, or `DG_SHARED`).
/// `None` on a clone without it; tests that need it say so and pass vacuously there.
pub fn shared_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("DG_SHARED") {
        return Some(PathBuf::from(dir));
    }
    let candidate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if candidate.join("fixtures").is_dir() {
        return candidate.canonicalize().ok();
    }
    if std::env::var("CI").is_ok() {
        panic!("CI run without ../shared: the reference fixtures are required in CI");
    }
    eprintln!("skipping: ../shared (reference fixtures) not found; set DG_SHARED");
    None
}

/// Reads every file below `root` (relative posix paths), skipping `skip`.
pub fn read_tree(root: &Path, skip: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                if rel != skip {
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
    }
    out
}
