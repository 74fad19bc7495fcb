//! Helpers shared by the corpus and end-to-end tests.

use std::path::PathBuf;

/// The workspace root (the folder of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared/corpus` beside the checkout, or `NIXTEST_CORPUS`.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("NIXTEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"))
}
