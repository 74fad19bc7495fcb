//! Builds the built-in plugins (every crate under `plugins/`) for wasm32-wasip2 and embeds the
//! components, so `cargo build -p nixtest` alone gives a binary that carries them.
//!
//! The plugins are built by a nested cargo in its own target directory (no lock contention
//! with the outer build), with the `plugin` profile. `NIXTEST_PREBUILT_PLUGINS=DIR` uses
//! `DIR/NAME.wasm` files instead, for builds without the wasm target.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for dir in ["plugins", "plugin-sdk", "events", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // The workspace manifest holds the `plugin` profile the plugins are built with.
    for file in ["Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=NIXTEST_PREBUILT_PLUGINS");

    let plugins = plugin_crates(&root.join("plugins"));
    let wasm_dir = match std::env::var_os("NIXTEST_PREBUILT_PLUGINS") {
        Some(dir) => PathBuf::from(dir),
        None => build_plugins(&root, &plugins),
    };

    let mut src = String::from(
        "/// (crate name, component bytes, their hex sha256) of each built-in plugin.\n",
    );
    src.push_str("pub static BUILTIN_PLUGINS: &[(&str, &[u8], &str)] = &[\n");
    for name in &plugins {
        let file = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| {
            panic!(
                "built-in plugin {name}: {} was not built ({e})",
                file.display()
            )
        });
        // The hash is taken here, not at every start (it was a tenth of a replay's fixed
        // cost), of a copy in OUT_DIR that the binary embeds: the bytes hashed are the bytes
        // carried.
        let copy = out_dir.join(format!("{name}.wasm"));
        std::fs::write(&copy, &bytes).unwrap();
        src.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}), {:?}),\n",
            copy.display().to_string(),
            hex::encode(Sha256::digest(&bytes)),
        ));
    }
    src.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), src).unwrap();
}

fn plugin_crates(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("plugins/ exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn build_plugins(root: &Path, plugins: &[String]) -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in plugins {
        cmd.args(["-p", p]);
    }
    // The outer build's settings are not the plugins' business.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_")
            && key != "CARGO_HOME"
            && !key.starts_with("CARGO_REGISTRIES")
            && !key.starts_with("CARGO_NET")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "DEBUG"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "NUM_JOBS"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the built-in plugins: {e}"));
    if !status.success() {
        panic!(
            "building the built-in plugins failed (see above). If the target is missing, run \
             `rustup target add wasm32-wasip2`."
        );
    }
    target_dir.join("wasm32-wasip2").join("plugin")
}
