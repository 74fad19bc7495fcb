//! Shared helpers of the host's integration tests: building the fixture plugins from source.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the fixture plugin crates (once per test binary) and returns the folder of their
/// `.wasm` files.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("fixtures");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "hostile",
                "-p",
                "future-contract",
                "-p",
                "disk-fix",
                "-p",
                "prober",
                "-p",
                "contract-v0-1-0",
            ])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the fixture plugins failed");
        target.join("wasm32-wasip2").join("release")
    })
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
pub mod handmade;
