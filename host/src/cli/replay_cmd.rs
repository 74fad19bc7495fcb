//! `nixtest replay LOG`

use super::{CliResult, Failure};
use anyhow::Context;
use nixtest::facts::GuestFacts;
use nixtest::registry::{Registry, RegistryError};
use nixtest::replay::{self, ReplayReport};
use nixtest::term;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(
    log: &Path,
    json: bool,
    verbose: bool,
    extra: &[PathBuf],
    config: Option<&Path>,
    facts: Option<&Path>,
) -> CliResult {
    let (paths, host) = super::plugin_host()?;
    let registry = Registry::new(&paths.data);
    let plugins =
        nixtest::plugins::load_set(&host, Some(&registry), extra).map_err(|e| match e {
            RegistryError::Write { .. } => Failure::infra(e),
            other => Failure::usage(other),
        })?;
    let facts: GuestFacts = match facts {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the facts file {}", p.display()))
                .map_err(Failure::usage)?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not guest facts JSON", p.display()))
                .map_err(Failure::usage)?
        }
        None => GuestFacts::default(),
    };
    let config = match config {
        Some(dir) => replay::read_config(dir).map_err(Failure::usage)?,
        None => Vec::new(),
    };
    let input: Box<dyn Read> = if log.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(log)
                .with_context(|| format!("cannot open the log {}", log.display()))
                .map_err(Failure::usage)?,
        )
    };
    let report = replay::replay_set(input, &plugins, &facts, &config).map_err(Failure::infra)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        print_human(&report, verbose);
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Everything a plugin returned is made safe for the terminal (`term`).
fn print_human(r: &ReplayReport, verbose: bool) {
    let failures = r
        .findings
        .iter()
        .filter(|f| f.severity.is_failure())
        .count();
    println!(
        "{} lines, {} findings ({} failures)",
        r.lines,
        r.findings.len(),
        failures
    );
    for (i, f) in r.findings.iter().enumerate() {
        let icon = if f.severity.is_failure() {
            "❌"
        } else {
            "⚠️ "
        };
        let kind = if f.permanent { "" } else { " (temporary)" };
        println!(
            "{icon} [{i}] {} {}{kind}: {}  (lines {}; {})",
            f.severity,
            term::line(&f.category),
            term::line(&f.summary),
            compact_lines(&f.lines),
            term::line(&f.detector)
        );
    }
    for a in &r.actions {
        println!(
            "🔧 for [{}] {} ({}, confidence {}): {}",
            a.finding,
            term::line(&a.name),
            term::line(&a.healer),
            a.confidence,
            term::line(&a.description)
        );
        for c in &a.commands {
            println!("     $ {}", term::line(c));
        }
        for c in &a.config_changes {
            println!("     ✎ {}", term::line(&c.path));
        }
    }
    for f in &r.faults {
        println!("⛔ {}", term::line(&f.message));
        if verbose && !f.output.is_empty() {
            for l in f.output.lines() {
                println!("   | {}", term::line(l));
            }
        }
    }
    for p in &r.probes {
        println!(
            "🔎 probe by {}: {}{}",
            term::line(&p.plugin),
            term::line(&p.command),
            p.refused
                .as_ref()
                .map(|w| format!(" (refused: {})", term::line(w)))
                .unwrap_or_default()
        );
    }
    if verbose {
        for (name, out) in &r.plugin_output {
            println!("📝 {} printed:", term::line(name));
            for l in out.lines() {
                println!("   | {}", term::line(l));
            }
        }
    }
}

fn compact_lines(lines: &[u32]) -> String {
    let shown: Vec<String> = lines.iter().take(6).map(u32::to_string).collect();
    if lines.len() > 6 {
        format!("{}, … {} in all", shown.join(", "), lines.len())
    } else {
        shown.join(", ")
    }
}
