//! `nixtest report show RUN`, `nixtest report list` and `nixtest report merge`: read back (and
//! join) what `nixtest test` wrote.

use super::test_cmd::report_dir;
use super::{CliResult, Failure};
use anyhow::anyhow;
use nixtest::report::Report;
use nixtest::settings::Settings;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run folders in `dir` (those with a report.json), oldest first: run ids start with the time.
fn runs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("report.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// RUN is a run id in the report folder, `latest`, or the path of a run folder or its
/// report.json.
fn locate(run: &str, dir: &Path) -> Result<PathBuf, Failure> {
    let as_path = Path::new(run);
    if as_path.is_file() && as_path.file_name().is_some_and(|n| n == "report.json") {
        return Ok(as_path.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    if as_path.join("report.json").is_file() {
        return Ok(as_path.to_path_buf());
    }
    let known = runs(dir);
    let found = if run == "latest" {
        known.last().cloned()
    } else {
        known.iter().find(|r| r.as_str() == run).cloned()
    };
    found.map(|r| dir.join(r)).ok_or_else(|| {
        let hint = match known.len() {
            0 => "it has no runs; `nixtest test` writes them, or pass --report-dir".to_string(),
            n => format!(
                "its newest of {n}: {}; see `nixtest report list`",
                known.last().expect("n > 0")
            ),
        };
        Failure::usage(anyhow!("no run {run:?} in {}: {hint}", dir.display()))
    })
}

pub fn show(run: &str, flag_dir: Option<PathBuf>, json: bool) -> CliResult {
    let settings = Settings::load().map_err(Failure::usage)?;
    let dir = report_dir(flag_dir.as_ref(), &settings);
    let run_dir = locate(run, &dir)?;
    let report = Report::load(&run_dir).map_err(|e| Failure::usage(anyhow!(e)))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        // Report files are input like any other: nothing in them reaches the terminal raw.
        print!("{}", nixtest::term::text(&report.text()));
        println!(
            "\nfiles: {} (report.json, junit.xml, report.html, logs/, events/)",
            run_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(flag_dir: Option<PathBuf>) -> CliResult {
    let settings = Settings::load().map_err(Failure::usage)?;
    let dir = report_dir(flag_dir.as_ref(), &settings);
    let known = runs(&dir);
    if known.is_empty() {
        println!("no runs in {}", dir.display());
    }
    for r in known {
        match Report::load(&dir.join(&r)) {
            Ok(rep) => println!(
                "{}",
                nixtest::term::line(&format!(
                    "{r}  {} passed, {} failed, {} errors  {:.1} s  {}",
                    rep.summary.passed,
                    rep.summary.failed,
                    rep.summary.errors,
                    rep.duration_ms as f64 / 1000.0,
                    rep.profiles
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ))
            ),
            Err(e) => println!("{}", nixtest::term::line(&format!("{r}  unreadable: {e}"))),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nixtest report merge DIR... --out DIR`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> CliResult {
    // Into a new or empty folder only: a merge never mixes with what was there.
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Failure::usage(anyhow!(
            "{} is not empty; merge into a new folder",
            out.display()
        )));
    }
    let merged = nixtest::report::merge_dirs(dirs, out).map_err(|e| match e {
        nixtest::report::MergeError::Copy { .. } => Failure::infra(e),
        e => Failure::usage(e),
    })?;
    let s = &merged.summary;
    println!(
        "merged {} profiles: {} passed, {} failed, {} errors; report: {} (report.json, junit.xml, report.html)",
        merged.profiles.len(),
        s.passed,
        s.failed,
        s.errors,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
