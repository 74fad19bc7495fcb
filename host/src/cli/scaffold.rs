//! `nixtest plugin new NAME`: a plugin crate that builds with one command and passes its own
//! test.

use super::{CliResult, Failure};
use anyhow::{Context, anyhow};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The SDK this binary was built with; scaffolds depend on it by path.
const SDK_AT_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

pub fn run(name: &str, path: Option<PathBuf>, sdk: Option<PathBuf>) -> CliResult {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(Failure::usage(anyhow!(
            "plugin name {name:?}: use lowercase letters, digits and '-' (like disk-fix)"
        )));
    }
    let dir = path.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(Failure::usage(anyhow!(
            "{} already exists; choose another --path",
            dir.display()
        )));
    }
    let sdk = sdk.unwrap_or_else(|| PathBuf::from(SDK_AT_BUILD));
    let sdk = sdk.canonicalize().map_err(|_| {
        Failure::usage(anyhow!(
            "the plugin SDK is not at {}; pass --sdk PATH to a nixtest-plugin-sdk checkout",
            sdk.display()
        ))
    })?;
    write_crate(&dir, name, &sdk)
        .with_context(|| format!("cannot write the plugin crate in {}", dir.display()))
        .map_err(Failure::usage)?;
    println!("created plugin {name} in {}", dir.display());
    println!("  test:  cd {} && cargo test", dir.display());
    println!(
        "  build: cargo build --release --target wasm32-wasip2   (-> target/wasm32-wasip2/release/{}.wasm)",
        name.replace('-', "_")
    );
    Ok(ExitCode::SUCCESS)
}

fn write_crate(dir: &Path, name: &str, sdk: &Path) -> anyhow::Result<()> {
    let ty = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>();
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("tests/sample.log", SAMPLE_LOG),
        ("README.md", README),
        (".gitignore", "/target\n"),
    ];
    for (file, template) in files {
        let text = template
            .replace("{{name}}", name)
            .replace("{{type}}", &ty)
            .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/"));
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
nixtest-plugin-sdk = { path = "{{sdk}}" }

[profile.release]
opt-level = "s"
lto = true
strip = true

# A plugin is its own workspace.
[workspace]
"#;

const LIB_RS: &str = r#"//! {{name}}: a nixtest plugin. Edit the rule, the metadata and the healing action.

use nixtest_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct {{type}} {
    /// State kept across batches for the whole run.
    seen: u32,
}

impl Plugin for {{type}} {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .description("Notices the kernel's OOM killer and adds swap")
            .categories(["oom"])
            // Only lines with one of these reach the plugin: keep it fast.
            .literals(["Out of memory: Killed process"])
    }
}

impl Detector for {{type}} {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        let mut found = Vec::new();
        for e in events {
            if e.message.contains("Out of memory: Killed process") {
                self.seen += 1;
                found.push(
                    Finding::new("oom", Severity::Error, "the OOM killer ended a process")
                        .line(e.line),
                );
            }
        }
        found
    }
}

impl Healer for {{type}} {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
        if finding.category != "oom" {
            return Vec::new();
        }
        let mib = cx.facts.swap_size_mib(2048);
        vec![
            HealingAction::new("add-swap", format!("add a {mib} MiB swap file"), 0.7)
                .command(format!("fallocate -l {mib}M /swapfile && chmod 600 /swapfile"))
                .command("mkswap /swapfile && swapon /swapfile")
                .retry(&cx.phase),
        ]
    }
}

nixtest_plugin_sdk::export_plugin!({{type}});

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing::{self, FactsBuilder};

    #[test]
    fn finds_the_oom_killer_in_the_sample_log() {
        let findings = testing::detect_file::<{{type}}>("tests/sample.log").unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].category, "oom");
        assert_eq!(findings[0].lines, vec![3]);
    }

    #[test]
    fn swap_fits_the_free_space() {
        let facts = FactsBuilder::new().mount("/", 8 << 30, 1 << 30).build();
        let cx = testing::context(facts, "install", &[]);
        let finding = Finding::new("oom", Severity::Error, "oom");
        let actions = testing::heal::<{{type}}>(&finding, &cx);
        assert_eq!(actions[0].name, "add-swap");
        assert!(actions[0].commands[0].contains("-l 512M"));
    }
}
"#;

const SAMPLE_LOG: &str = "::PHASE::install\n\
building '/nix/store/abc-linux-6.6.drv'...\n\
[ 1234.5678] Out of memory: Killed process 4242 (cc1plus) total-vm:2000000kB\n\
error: builder for '/nix/store/abc-linux-6.6.drv' failed with exit code 137\n";

const README: &str = r#"# {{name}}

A nixtest plugin.

    cargo test                                   # runs the plugin's logic over tests/sample.log
    cargo build --release --target wasm32-wasip2 # builds the component
    nixtest plugin add target/wasm32-wasip2/release/*.wasm

Needs the target once: `rustup target add wasm32-wasip2`.
"#;
