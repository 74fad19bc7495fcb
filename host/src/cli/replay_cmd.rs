//! `nixtest replay LOG`

use super::{CliResult, Failure};
use anyhow::Context;
use nixtest::facts::GuestFacts;
use nixtest::registry::{Registry, RegistryError};
use nixtest::replay::{self, Log, MappedLog};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(
    log: &Path,
    json: bool,
    learn: bool,
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
    // A file is mapped and searched where it lies; stdin, a pipe or a device is read.
    let (file, map) = if log.as_os_str() == "-" {
        (None, None)
    } else {
        let file = std::fs::File::open(log)
            .with_context(|| format!("cannot open the log {}", log.display()))
            .map_err(Failure::usage)?;
        let map = MappedLog::new(&file, log)
            .with_context(|| format!("cannot map the log {}", log.display()))
            .map_err(Failure::infra)?;
        (Some(file), map)
    };
    let input = match (&map, file) {
        (Some(map), _) => Log::Mapped(map),
        (None, Some(file)) => Log::stream(file),
        (None, None) => Log::stream(std::io::stdin()),
    };
    let report = replay::replay_set(input, &plugins, &facts, &config).map_err(Failure::infra)?;
    if learn {
        learn_from(&paths.data, log, &report)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        print!("{}", report.text(verbose));
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Records the root cause of each failed phase of the log as a failure signature, as a run of
/// its own (`replay-TIME-PID`).
fn learn_from(data: &Path, log: &Path, report: &replay::ReplayReport) -> Result<(), Failure> {
    use nixtest::signatures::{FailureDb, Occurrence, Signature, example};
    let (mut db, aside) = FailureDb::open(&FailureDb::path_in(data)).map_err(Failure::infra)?;
    if let Some(aside) = aside {
        eprintln!(
            "nixtest: the failure database was damaged; it is kept as {} and a new one started",
            aside.display()
        );
    }
    let now = std::time::SystemTime::now();
    let run_id = format!("replay-{}", nixtest::report::run_id(now));
    let source = if log.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        log.display().to_string()
    };
    for f in &report.failures {
        let lines: Vec<&str> = f.lines.iter().map(String::as_str).collect();
        let Some(sig) = Signature::of_lines(lines.iter().copied()) else {
            continue;
        };
        let category = report.findings[f.finding].category.to_string();
        let occ = Occurrence {
            run_id: run_id.clone(),
            profile: format!("replay of {source}"),
            phase: f.phase.clone(),
            time: humantime::format_rfc3339_seconds(now).to_string(),
            category: Some(category.clone()),
            example: example(&lines),
        };
        let seen = db.record(&sig, &occ).map_err(Failure::infra)?;
        eprintln!(
            "learnt: {} in phase {}: signature {}, seen {} times in {} runs",
            nixtest::term::line(&category),
            nixtest::term::line(if f.phase.is_empty() { "-" } else { &f.phase }),
            sig.id,
            seen.times,
            seen.runs
        );
    }
    Ok(())
}
