//! `nixtest plugin new NAME`: a plugin crate that builds with one command and passes its own
//! test.

use super::{CliResult, Failure};
use anyhow::{Context, anyhow};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The SDK this binary was built with; scaffolds depend on it by path.
const SDK_AT_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

pub fn run(name: &str, path: Option<PathBuf>, sdk: Option<PathBuf>) -> CliResult {
    let (dir, sdk) = prepare(name, path, sdk)?;
    write_crate(&dir, name, &sdk, &[])
        .with_context(|| format!("cannot write the plugin crate in {}", dir.display()))
        .map_err(Failure::usage)?;
    done(name, &dir);
    Ok(ExitCode::SUCCESS)
}

/// A detector for a recorded failure signature: one rule per template of its decisive lines
/// (values as `.+?`, so other paths and numbers match), the examples as its test sample.
pub fn from_failure(
    name: &str,
    path: Option<PathBuf>,
    sdk: Option<PathBuf>,
    id: &str,
) -> CliResult {
    use nixtest::signatures::FailureDb;
    let (dir, sdk) = prepare(name, path, sdk)?;
    let paths = nixtest::paths::Paths::from_env().map_err(|e| Failure::usage(anyhow!(e)))?;
    let (db, _) = FailureDb::open(&FailureDb::path_in(&paths.data)).map_err(Failure::infra)?;
    let detail = db.show(id).map_err(Failure::infra)?.ok_or_else(|| {
        Failure::usage(anyhow!(
            "no failure signature {}; `nixtest failures list` shows them",
            nixtest::term::line(id)
        ))
    })?;
    let learnt = Learnt::new(name, &detail);
    let files = [
        ("src/lib.rs", learnt.lib_rs()),
        ("tests/sample.log", learnt.sample.clone()),
    ];
    write_crate(&dir, name, &sdk, &files)
        .with_context(|| format!("cannot write the plugin crate in {}", dir.display()))
        .map_err(Failure::usage)?;
    println!(
        "signature {id}: {} rule(s) from its templates, {} example line(s) in tests/sample.log",
        learnt.rules.len(),
        learnt.sample.lines().count()
    );
    done(name, &dir);
    Ok(ExitCode::SUCCESS)
}

/// What a signature becomes in a detector.
struct Learnt {
    category: String,
    summary: String,
    /// (regex, a literal every match holds)
    rules: Vec<(String, String)>,
    sample: String,
}

impl Learnt {
    fn new(name: &str, d: &nixtest::signatures::Detail) -> Self {
        // The runner's own failure marker is in every failed phase: it says nothing of why.
        let marker = regex::Regex::new(r"^\S+ failed with exit code <\*>$").expect("valid");
        // Of the rest, the lines that read like a cause (the fallback's own measure) make the
        // rules; a line that only happened to come before them would match far too much.
        let candidates: Vec<&String> = d
            .summary
            .templates
            .iter()
            .filter(|t| !marker.is_match(t))
            .collect();
        let mut templates: Vec<&String> = candidates
            .iter()
            .copied()
            .filter(|t| nixtest::fallback::cause_score(t) > 0)
            .collect();
        if templates.is_empty() {
            templates = if candidates.is_empty() {
                d.summary.templates.iter().collect()
            } else {
                candidates
            };
        }
        let rules = templates
            .iter()
            .map(|t| (template_regex(t), longest_literal(t)))
            .collect();
        let category = match d.summary.category.as_deref() {
            Some(c) if c != "other" => c.to_string(),
            _ => name.to_string(),
        };
        let mut sample = String::from("::PHASE::learnt\n");
        for o in d
            .occurrences
            .iter()
            .filter(|o| !o.example.is_empty())
            .take(3)
        {
            for l in o.example.lines() {
                sample.push_str(l);
                sample.push('\n');
            }
            sample.push_str("::PHASE::next\n");
        }
        Learnt {
            category,
            summary: format!("failure signature {} seen again", d.summary.id),
            rules,
            sample,
        }
    }

    fn lib_rs(&self) -> String {
        let rules: String = self
            .rules
            .iter()
            .map(|(re, _)| format!("    {re:?},\n"))
            .collect();
        let literals: Vec<String> = self
            .rules
            .iter()
            .map(|(_, l)| format!("{l:?}"))
            .filter(|l| l.len() > 2)
            .collect();
        LEARNT_RS
            .replace("{{rules}}", &rules)
            .replace("{{literals}}", &literals.join(", "))
            .replace("{{category}}", &format!("{:?}", self.category))
            .replace("{{summary}}", &self.summary)
    }
}

/// A template as a regex: its words literal, its values (`<*>`) any text, its spaces any run
/// of blanks.
fn template_regex(template: &str) -> String {
    let mut re = String::from("^\\s*");
    for (i, part) in template.split("<*>").enumerate() {
        if i > 0 {
            re.push_str(".+?");
        }
        let words: Vec<String> = part.split(' ').map(regex::escape).collect();
        re.push_str(&words.join("\\s+"));
    }
    re.push_str("\\s*$");
    re
}

/// The longest run of literal text in a template (for the plugin's prefilter).
fn longest_literal(template: &str) -> String {
    template
        .split("<*>")
        .flat_map(|p| p.split(' '))
        .max_by_key(|w| w.len())
        .unwrap_or("")
        .to_string()
}

fn prepare(
    name: &str,
    path: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf), Failure> {
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
    Ok((dir, sdk))
}

fn done(name: &str, dir: &Path) {
    println!("created plugin {name} in {}", dir.display());
    println!("  test:  cd {} && cargo test", dir.display());
    println!(
        "  build: cargo build --release --target wasm32-wasip2   (-> target/wasm32-wasip2/release/{}.wasm)",
        name.replace('-', "_")
    );
}

/// Writes the crate; `own` replaces the default files of the same name.
fn write_crate(dir: &Path, name: &str, sdk: &Path, own: &[(&str, String)]) -> anyhow::Result<()> {
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
        let template = own
            .iter()
            .find(|(f, _)| *f == file)
            .map_or(template, |(_, t)| t.as_str());
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

const LEARNT_RS: &str = r#"//! {{name}}: a nixtest detector learnt from a failure signature. Its rules are the
//! signature's templates: the words as they were printed, the values (`.+?`) free, so the same
//! failure with other paths, hashes and numbers matches. Edit them as you learn more.

use nixtest_plugin_sdk::prelude::*;
use nixtest_plugin_sdk::regex::RegexSet;
use std::sync::LazyLock;

/// One per decisive line of the failure.
const RULES: &[&str] = &[
{{rules}}];

static SET: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(RULES).expect("the learnt rules compile"));

#[derive(Default)]
pub struct {{type}};

impl Plugin for {{type}} {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .description("Recognises a failure learnt from its signature")
            .categories([{{category}}])
            .literals([{{literals}}])
    }
}

impl Detector for {{type}} {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        events
            .iter()
            .filter(|e| SET.is_match(&e.message))
            .map(|e| Finding::new({{category}}, Severity::Error, "{{summary}}").line(e.line))
            .collect()
    }
}

nixtest_plugin_sdk::export_detector!({{type}});

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing;

    #[test]
    fn finds_the_failure_in_its_recorded_examples() {
        let findings = testing::detect_file::<{{type}}>("tests/sample.log").unwrap();
        assert!(
            findings.iter().any(|f| f.category == {{category}}),
            "{findings:?}"
        );
    }

    #[test]
    fn a_quiet_log_gives_nothing() {
        let findings = testing::detect_str::<{{type}}>("::PHASE::install\nall good\n");
        assert!(findings.is_empty());
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
