//! The miner against Drain3 (PyPI `drain3`, default settings) on the same files in one run:
//! per set, both grouping accuracies, both speeds (lines per second, time in the mining call
//! only) and the ratio. `cargo bench -p nixtest-miner --bench drain3`.
//!
//! Sets: `../shared/loghub-2k`, or the folder `NIXTEST_LOGHUB` names. Drain3 runs under
//! `NIXTEST_DRAIN3_PYTHON` (default `/var/cache/nixtest-bench/drain3/bin/python`, made by
//! `scripts/drain3-venv.sh`); without it the miner's figures alone are printed.

use nixtest_miner::{Miner, grouping_accuracy};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The miner's groups for `lines`, and its lines per second (the best of 50 passes with a
/// fresh miner each: a set takes about a millisecond).
fn ours(lines: &[&str]) -> (Vec<u64>, f64) {
    let mut best = f64::MAX;
    let mut groups = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let mut m = Miner::default();
        let ids: Vec<_> = lines.iter().map(|l| m.add(l)).collect();
        best = best.min(t.elapsed().as_secs_f64());
        groups = ids.into_iter().map(|i| m.group(i).index() as u64).collect();
    }
    (groups, lines.len() as f64 / best)
}

fn drain3(python: &Path, log: &Path, lines: usize) -> Option<(Vec<u64>, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/drain3_run.py");
    let out = Command::new(python).arg(script).arg(log).output().ok()?;
    if !out.status.success() {
        eprintln!("drain3 failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ids = Vec::new();
    let mut seconds = None;
    for l in text.lines() {
        match l.strip_prefix("seconds ") {
            Some(s) => seconds = s.parse::<f64>().ok(),
            None => ids.push(l.parse().ok()?),
        }
    }
    Some((ids, lines as f64 / seconds?))
}

fn main() {
    let dir = std::env::var_os("NIXTEST_LOGHUB").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/loghub-2k"),
        PathBuf::from,
    );
    let python = PathBuf::from(
        std::env::var_os("NIXTEST_DRAIN3_PYTHON")
            .unwrap_or_else(|| "/var/cache/nixtest-bench/drain3/bin/python".into()),
    );
    let have_drain3 = python.exists();
    if !have_drain3 {
        println!(
            "no Drain3 at {} (scripts/drain3-venv.sh makes it): the miner alone",
            python.display()
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".log").map(str::to_string)
        })
        .collect();
    names.sort();
    println!(
        "{:12} {:>9} {:>9} {:>14} {:>14} {:>8}",
        "set", "acc ours", "acc d3", "lines/s ours", "lines/s d3", "speed×"
    );
    let (mut sa, mut sd, mut so_speed, mut sd_speed, mut n) = (0.0, 0.0, 0.0, 0.0, 0);
    for name in &names {
        let log = dir.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let truth: Vec<String> = std::fs::read_to_string(dir.join(format!("{name}.truth.tsv")))
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
            .collect();
        let (groups, speed) = ours(&lines);
        let a = grouping_accuracy(&groups, &truth);
        sa += a;
        so_speed += speed;
        n += 1;
        match have_drain3
            .then(|| drain3(&python, &log, lines.len()))
            .flatten()
        {
            Some((ids, d_speed)) => {
                let d = grouping_accuracy(&ids, &truth);
                sd += d;
                sd_speed += d_speed;
                println!(
                    "{name:12} {a:9.3} {d:9.3} {speed:14.0} {d_speed:14.0} {:8.1}",
                    speed / d_speed
                );
            }
            None => println!("{name:12} {a:9.3} {:>9} {speed:14.0}", "-"),
        }
    }
    let n = n as f64;
    if have_drain3 {
        println!(
            "{:12} {:9.3} {:9.3} {:14.0} {:14.0} {:8.1}",
            "mean",
            sa / n,
            sd / n,
            so_speed / n,
            sd_speed / n,
            so_speed / sd_speed
        );
    } else {
        println!(
            "{:12} {:9.3} {:>9} {:14.0}",
            "mean",
            sa / n,
            "-",
            so_speed / n
        );
    }
}
