//! `nixtest templates FILE|-`: the template of every line, as the failure miner sees it.

use super::{CliResult, Failure};
use anyhow::Context;
use nixtest_events::Ingest;
use nixtest_miner::{GroupId, Miner};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path, json: bool) -> CliResult {
    let mut input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))
                .map_err(Failure::usage)?,
        )
    };
    // Lines are read the way a run reads them (redraws, escapes, markers), then mined.
    let mut ingest = Ingest::default();
    let mut miner = Miner::default();
    let mut ids: Vec<GroupId> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut take = |message: String| {
        ids.push(miner.add(&message));
        if json {
            texts.push(message);
        }
    };
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Failure::usage)?;
        if n == 0 {
            break;
        }
        ingest.push(&buf[..n], |e| take(e.message));
    }
    if let Some(e) = ingest.finish() {
        take(e.message);
    }
    // Ids are numbered by first appearance of each final group, so they do not change with
    // merges made after a line was read.
    let mut number: HashMap<GroupId, usize> = HashMap::new();
    let mut finals = Vec::with_capacity(ids.len());
    for id in &ids {
        let g = miner.group(*id);
        let next = number.len() + 1;
        finals.push((*number.entry(g).or_insert(next), g));
    }
    let mut templates: HashMap<GroupId, String> = HashMap::new();
    let mut counts: HashMap<GroupId, u64> = HashMap::new();
    for (g, t, c) in miner.groups() {
        templates.insert(g, t);
        counts.insert(g, c);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write = || -> std::io::Result<()> {
        for (i, (n, g)) in finals.iter().enumerate() {
            if json {
                let obj = serde_json::json!({
                    "line": i + 1,
                    "text": texts[i],
                    "template_id": n,
                    "template": templates[g],
                });
                writeln!(out, "{obj}")?;
            } else {
                writeln!(out, "T{n}\t{}", nixtest::term::line(&templates[g]))?;
            }
        }
        if !json {
            let mut by_count: Vec<(usize, &GroupId)> =
                number.iter().map(|(g, n)| (*n, g)).collect();
            by_count.sort_by_key(|(n, g)| (std::cmp::Reverse(counts[*g]), *n));
            writeln!(out)?;
            writeln!(out, "{} lines, {} templates", finals.len(), by_count.len())?;
            for (n, g) in by_count {
                writeln!(
                    out,
                    "T{n}\t{}\t{}",
                    counts[g],
                    nixtest::term::line(&templates[g])
                )?;
            }
        }
        out.flush()
    };
    write()
        .context("writing the templates")
        .map_err(Failure::infra)?;
    Ok(ExitCode::SUCCESS)
}
