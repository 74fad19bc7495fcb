//! Helpers shared by the corpus and end-to-end tests.

use nixtest::vm::VmSettings;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

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

/// The `nixtest` binary of this checkout, built once per test process.
pub fn nixtest_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "-q", "-p", "nixtest"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building nixtest failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug/nixtest")
    })
}

/// Where the end-to-end tests keep their state: their own VM name prefix (never a user's
/// VMs), and a data dir that persists so the guest image (keyed by nixtest's SSH key) stays
/// cached between runs.
pub const E2E_PREFIX: &str = "nixtest-e2e";
pub const E2E_HOME: &str = "/var/cache/nixtest-e2e";

pub fn e2e_env(cmd: &mut Command) -> &mut Command {
    cmd.env("NIXTEST_VM_PREFIX", E2E_PREFIX)
        .env("NIXTEST_DATA_DIR", format!("{E2E_HOME}/data"))
        .env("NIXTEST_CACHE_DIR", format!("{E2E_HOME}/cache"))
        .env_remove("NIXTEST_LIBVIRT_URI")
        .env_remove("VM_MEMORY")
        .env_remove("VM_DISK_SIZE")
}

pub fn e2e_settings() -> VmSettings {
    VmSettings {
        uri: "qemu:///system".into(),
        memory_mib: 512,
        disk_bytes: 4 << 30,
        vcpus: 1,
        dir: "/var/lib/nixtest".into(),
        prefix: E2E_PREFIX.into(),
    }
}

/// VM tests share the base VM: one at a time.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a plugin crate of the workspace for wasm32-wasip2 and returns its component.
pub fn plugin_wasm(package: &str) -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fixtures");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {package} failed");
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}
