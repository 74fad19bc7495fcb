//! `nixtest replay LOG`

use super::{CliResult, Failure};
use anyhow::Context;
use nixtest::facts::GuestFacts;
use nixtest::registry::{Registry, RegistryError};
use nixtest::replay;
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
        print!("{}", report.text(verbose));
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
