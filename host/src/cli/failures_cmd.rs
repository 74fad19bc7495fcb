//! `nixtest failures list|show ID`: failure signatures seen across runs.

use super::{CliResult, Failure};
use anyhow::anyhow;
use nixtest::signatures::FailureDb;
use nixtest::term;
use std::process::ExitCode;

fn open() -> Result<FailureDb, Failure> {
    let paths = nixtest::paths::Paths::from_env().map_err(|e| Failure::usage(anyhow!(e)))?;
    let (db, aside) = FailureDb::open(&FailureDb::path_in(&paths.data)).map_err(Failure::infra)?;
    if let Some(aside) = aside {
        eprintln!(
            "nixtest: the failure database was damaged; it is kept as {} and a new one started",
            aside.display()
        );
    }
    Ok(db)
}

pub fn list(json: bool) -> CliResult {
    let list = open()?.list().map_err(Failure::infra)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("summaries serialise")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no failures recorded yet (nixtest test and nixtest replay --learn record them)");
    }
    for s in &list {
        println!(
            "{}  {:>4} times in {:>3} runs  last {}  {}",
            s.id,
            s.times,
            s.runs,
            s.last_seen,
            term::line(s.category.as_deref().unwrap_or("-"))
        );
        for t in s.templates.iter().take(3) {
            println!("    {}", term::clip(t, 160));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(id: &str, json: bool) -> CliResult {
    let Some(d) = open()?.show(id).map_err(Failure::infra)? else {
        return Err(Failure::usage(anyhow!(
            "no failure signature {}; `nixtest failures list` shows them",
            term::line(id)
        )));
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d).expect("details serialise")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let s = &d.summary;
    println!(
        "signature {}: seen {} times in {} runs",
        s.id, s.times, s.runs
    );
    println!("first seen {}, last seen {}", s.first_seen, s.last_seen);
    if let Some(c) = &s.category {
        println!("category: {}", term::line(c));
    }
    println!("templates:");
    for t in &s.templates {
        println!("    {}", term::line(t));
    }
    println!("runs:");
    for o in &d.occurrences {
        println!(
            "  {}  {} / {} / {}",
            o.time,
            term::line(&o.run_id),
            term::line(&o.profile),
            term::line(&o.phase)
        );
        for l in o.example.lines() {
            println!("      | {}", term::line(l));
        }
    }
    Ok(ExitCode::SUCCESS)
}
