//! `nixtest replay`: the monitor and the healers over a recorded log, no VM.

use crate::actions::HealingAction;
use crate::facts::GuestFacts;
use crate::findings::{Finding, root_cause_order};
use crate::healing::Healers;
use crate::monitor::{FaultRecord, Monitor, MonitorError, Update};
use crate::plugin::{HealRequest, Plugin, ProbeRecord};
use crate::plugins::PluginSet;
use crate::term;
use nixtest_events::{Ingest, Scan, SkipFilter};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

mod input;
pub use input::{Log, MappedLog};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read the log: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("cannot read the configuration folder {path}: {reason}")]
    Config { path: String, reason: String },
}

/// What a replay found, in the JSON shape of shared/DESIGN.md.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub findings: Vec<Finding>,
    pub actions: Vec<HealingAction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeRecord>,
    /// What plugins printed to stdout and stderr (bounded), by plugin.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_output: BTreeMap<String, String>,
    pub lines: u32,
    /// Lines parsed and routed; the others no detector could want, so they were only counted.
    #[serde(skip)]
    pub parsed_lines: u64,
    /// Per phase of the log, its root-cause failure and the text of its evidence lines (what
    /// `--learn` records as a signature).
    #[serde(skip)]
    pub failures: Vec<LoggedFailure>,
}

/// The root cause of a failure in a replayed log's phase.
#[derive(Debug, Clone)]
pub struct LoggedFailure {
    pub phase: String,
    /// Index in [`ReplayReport::findings`].
    pub finding: usize,
    pub lines: Vec<String>,
}

impl ReplayReport {
    /// For people: findings, actions, faults and probes; everything a plugin returned is made
    /// safe for the terminal (`term`).
    pub fn text(&self, verbose: bool) -> String {
        let r = self;
        // Writing to a String cannot fail.
        let mut t = String::new();
        let failures = r
            .findings
            .iter()
            .filter(|f| f.severity.is_failure())
            .count();
        let _ = writeln!(
            t,
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
            let _ = writeln!(
                t,
                "{icon} [{i}] {} {}{kind}: {}  (lines {}; {})",
                f.severity,
                term::line(f.category.as_str()),
                term::line(&f.summary),
                compact_lines(&f.lines),
                term::line(&f.detector)
            );
        }
        for a in &r.actions {
            let _ = writeln!(
                t,
                "🔧 for [{}] {} ({}, confidence {}): {}",
                a.finding,
                term::line(&a.name),
                term::line(&a.healer),
                a.confidence,
                term::line(&a.description)
            );
            for c in &a.commands {
                let _ = writeln!(t, "     $ {}", term::line(c));
            }
            for c in &a.config_changes {
                let _ = writeln!(t, "     ✎ {}", term::line(&c.path));
            }
        }
        for f in &r.faults {
            let _ = writeln!(t, "⛔ {}", term::line(&f.message));
            if verbose && !f.output.is_empty() {
                for l in f.output.lines() {
                    let _ = writeln!(t, "   | {}", term::line(l));
                }
            }
        }
        for p in &r.probes {
            let _ = writeln!(
                t,
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
                let _ = writeln!(t, "📝 {} printed:", term::line(name));
                for l in out.lines() {
                    let _ = writeln!(t, "   | {}", term::line(l));
                }
            }
        }
        t
    }

    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.severity.is_failure())
    }
}

/// Files of a profile's configuration folder, for healers that rewrite them.
pub fn read_config(dir: &Path) -> Result<Vec<(String, String)>, ReplayError> {
    let err = |reason: String| ReplayError::Config {
        path: dir.display().to_string(),
        reason,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            return Err(err(format!(
                "{} is a link; a configuration folder may not hold links",
                path.display()
            )));
        }
        if path.is_file() && path.extension().is_some_and(|e| e == "nix") {
            let content = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
            files.push((entry.file_name().to_string_lossy().into_owned(), content));
        }
    }
    files.sort();
    Ok(files)
}

pub fn replay<'a>(
    log: impl Into<Log<'a>>,
    plugins: &[Plugin],
    facts: &GuestFacts,
    config: &[(String, String)],
) -> Result<ReplayReport, ReplayError> {
    replay_inner(log.into(), plugins, &[], &[], facts, config, true)
}

/// As [`replay`], with the faults of installed plugins that did not load.
pub fn replay_set<'a>(
    log: impl Into<Log<'a>>,
    set: &PluginSet,
    facts: &GuestFacts,
    config: &[(String, String)],
) -> Result<ReplayReport, ReplayError> {
    replay_inner(
        log.into(),
        &set.plugins,
        &set.detector_faults,
        &set.healer_faults,
        facts,
        config,
        true,
    )
}

fn replay_inner(
    log: Log<'_>,
    plugins: &[Plugin],
    detector_faults: &[FaultRecord],
    healer_faults: &[FaultRecord],
    facts: &GuestFacts,
    config: &[(String, String)],
    skipping: bool,
) -> Result<ReplayReport, ReplayError> {
    let mut monitor = Monitor::new(plugins)?.pipelined();
    for f in detector_faults {
        monitor.seed_fault(f.clone());
    }
    let mut ingest = Ingest::default();
    // Lines no detector can want are only counted (grep's way: one search over the buffer).
    let filter = monitor.skip_filter().filter(|_| skipping);
    // Where the latest phases start, to say which phase a finding's lines are in. Bounded: a
    // finding's first line is near the line that raised it, and a log may change phase on
    // every other line.
    let mut phases: VecDeque<(u32, Arc<str>)> = VecDeque::new();
    // The phase of each finding, taken when it is first reported (by index in the monitor).
    let mut finding_phase: HashMap<usize, Arc<str>> = HashMap::new();
    let mut note = |updates: Vec<Update>, monitor: &Monitor, phases: &VecDeque<(u32, Arc<str>)>| {
        for u in updates {
            if let Update::New(i) = u {
                let first = monitor.findings()[i].lines.first().copied().unwrap_or(0);
                finding_phase.insert(i, phase_at(phases, first));
            }
        }
    };
    // Both the lines read and the lines skipped go to the monitor.
    let shared = std::cell::RefCell::new(&mut monitor);
    // A chunk's lines arrived together, when it was read: one clock read per chunk.
    let arrived = std::cell::Cell::new(Instant::now());
    let mut take = |e: nixtest_events::Event| {
        if phases.back().is_none_or(|(_, p)| *p != e.phase) {
            if phases.len() == PHASES_KEPT {
                phases.pop_front();
            }
            phases.push_back((e.line, e.phase.clone()));
        }
        let mut monitor = shared.borrow_mut();
        let updates = monitor.observe_at(e, arrived.get());
        note(updates, &monitor, &phases);
    };
    let mut skipped = |line: u32, text: &[u8]| shared.borrow_mut().skipped(line, text);
    match &filter {
        Some(f) => read_scanned(log, f, |chunk, scan| {
            arrived.set(Instant::now());
            ingest.push_scanned(chunk, scan, f, &mut take, &mut skipped)
        })?,
        None => read_chunks(log, |chunk| {
            arrived.set(Instant::now());
            ingest.push(chunk, &mut take);
        })?,
    }
    if let Some(e) = ingest.finish() {
        take(e);
    }

    let updates = monitor.finish();
    note(updates, &monitor, &phases);

    let mut healers = Healers::new(plugins);
    for f in healer_faults {
        healers.seed_fault(f.clone());
    }
    // Root cause first: the report's order is the order healing is proposed in.
    let order = root_cause_order(monitor.findings());
    let findings: Vec<Finding> = order
        .iter()
        .map(|&i| monitor.findings()[i].clone())
        .collect();
    let mut actions = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if !(f.permanent && f.severity.is_failure()) {
            continue;
        }
        let evidence: Vec<String> = f
            .lines
            .iter()
            .filter_map(|l| monitor.line_text(*l).map(str::to_string))
            .collect();
        let request = HealRequest {
            facts,
            phase: "",
            config,
            evidence: &evidence,
            attempt: 0,
        };
        actions.extend(healers.propose(i, f, &request, |_| 1.0));
    }
    // The first failure in root-cause order of each phase is that phase's root cause.
    let mut failures: Vec<LoggedFailure> = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if !(f.permanent && f.severity.is_failure()) {
            continue;
        }
        let phase = finding_phase
            .get(&order[i])
            .map(|p| p.to_string())
            .unwrap_or_else(|| {
                phase_at(&phases, f.lines.first().copied().unwrap_or(0)).to_string()
            });
        if failures.iter().any(|x| x.phase == phase) {
            continue;
        }
        failures.push(LoggedFailure {
            phase,
            finding: i,
            lines: f
                .lines
                .iter()
                .filter_map(|l| monitor.line_text(*l).map(str::to_string))
                .collect(),
        });
    }
    let mut faults = monitor.faults().to_vec();
    faults.extend(healers.faults().iter().cloned());
    Ok(ReplayReport {
        findings,
        actions,
        faults,
        probes: healers.probes().to_vec(),
        plugin_output: monitor
            .outputs()
            .into_iter()
            .chain(healers.outputs())
            .collect(),
        lines: ingest.lines(),
        parsed_lines: ingest.parsed(),
        failures,
    })
}

/// How much of the log is read at a time.
const CHUNK: usize = 1 << 20;
/// Chunks searched ahead of the one being parsed, per searching thread (memory: this many
/// more chunks each).
const AHEAD: usize = 2;
/// Threads searching chunks at most. The search reads every byte and is the most of a
/// replay's work on logs of long lines; it needs no state but where the previous chunk
/// ended, so chunks can be searched side by side.
const MAX_SEARCHERS: usize = 4;
/// Chunks parsed before the parser's waiting decides whether to search side by side.
const CHUNKS_BEFORE_SPREADING: u32 = 4;

/// Reads `log` in chunks and hands each to `each`, in order, with the skip filter's search of
/// it. Reading and searching run on threads of their own, chunks ahead, so that the search is
/// done while the plugins work: one thread reads, and one searches, or up to one per core
/// (at most [`MAX_SEARCHERS`]) once the parser has spent half its time waiting for searched
/// chunks. Where the plugins are the bottleneck, more search threads would only take their
/// CPU (and each builds its own lazy DFA). Half, not more: on two cores a second searcher
/// pays once the search outweighs reading and parsing together, i.e. once the parser waits
/// more than reading's share of the search (about a third on long lines); at three quarters
/// a log of long lines, whose parser waits about 65 % of the time, stayed on one searcher
/// in one run of four and took 390 ms instead of 300.
fn read_scanned(
    log: Log<'_>,
    filter: &SkipFilter,
    each: impl FnMut(&[u8], &Scan),
) -> std::io::Result<()> {
    let searchers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_SEARCHERS);
    read_scanned_with(log, filter, CHUNK, searchers, false, each)
}

/// Hands each chunk of `log` to `each`, in order, without a search (no skip filter).
fn read_chunks(log: Log<'_>, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    match log {
        Log::Stream(mut log) => {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match log.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(());
                }
                each(&buf[..n]);
            }
        }
        Log::Bytes(bytes) => bytes.chunks(CHUNK).for_each(each),
        Log::Mapped(map) => {
            let mut released = 0;
            for (i, c) in map.bytes().chunks(CHUNK).enumerate() {
                each(c);
                map.release(&mut released, (i + 1) * CHUNK);
            }
        }
    }
    Ok(())
}

/// A chunk on its way from the log to the parser: read into a buffer of the pool, or lent
/// from bytes in memory (searched where they lie).
enum Piece<'a> {
    Read(Vec<u8>, usize),
    Lent(&'a [u8]),
}

impl Piece<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Read(buf, n) => &buf[..*n],
            Piece::Lent(bytes) => bytes,
        }
    }
}

type Searched<'a> = std::io::Result<(Piece<'a>, Scan)>;

fn read_scanned_with<'a>(
    log: Log<'a>,
    filter: &SkipFilter,
    chunk: usize,
    searchers: usize,
    spread_at_once: bool,
    mut each: impl FnMut(&[u8], &Scan),
) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let spreading = &AtomicBool::new(spread_at_once);
    let mapped = match &log {
        Log::Mapped(map) => Some((*map, map.bytes().as_ptr() as usize)),
        _ => None,
    };
    std::thread::scope(|threads| {
        let (give_back, empty) = mpsc::channel::<Vec<u8>>();
        if matches!(log, Log::Stream(_)) {
            // Per searcher: one queued, one being searched, AHEAD searched; one being read
            // and one being parsed.
            for _ in 0..searchers * (AHEAD + 2) + 2 {
                let _ = give_back.send(vec![0u8; chunk]);
            }
        }
        let mut to_search = Vec::with_capacity(searchers);
        let mut searched = Vec::with_capacity(searchers);
        for _ in 0..searchers {
            let (job, jobs) = mpsc::sync_channel::<std::io::Result<(Piece<'a>, bool)>>(1);
            let (done, results) = mpsc::sync_channel::<Searched<'a>>(AHEAD);
            // Ends when the reader stops sending (it is done) or the results are no longer
            // taken (the caller returned).
            threads.spawn(move || {
                for j in jobs {
                    let result = j.map(|(piece, partial)| {
                        let scan = filter.scan(piece.bytes(), partial);
                        (piece, scan)
                    });
                    if done.send(result).is_err() {
                        break;
                    }
                }
            });
            to_search.push(job);
            searched.push(results);
        }
        // Which searcher has each chunk, in the log's order.
        let (assign, assigned) = mpsc::channel::<usize>();
        threads.spawn(move || {
            let mut partial = false;
            let mut next = 0;
            let mut pick = || {
                if spreading.load(Ordering::Relaxed) {
                    next = (next + 1) % searchers;
                    next
                } else {
                    0
                }
            };
            // Each sent on; false once the log ends, fails, or the caller stops taking.
            let mut send = |job: std::io::Result<Piece<'a>>| {
                let k = pick();
                let job = job.map(|piece| {
                    let before = partial;
                    partial = nixtest_events::ends_inside_line(before, piece.bytes());
                    (piece, before)
                });
                let failed = job.is_err();
                assign.send(k).is_ok() && to_search[k].send(job).is_ok() && !failed
            };
            match log {
                Log::Stream(mut log) => {
                    // Ends at the log's end, or when the caller stops giving buffers back.
                    while let Ok(mut buf) = empty.recv() {
                        let read = loop {
                            match log.read(&mut buf) {
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                                other => break other,
                            }
                        };
                        let job = match read {
                            Ok(0) => break,
                            Ok(n) => Ok(Piece::Read(buf, n)),
                            Err(e) => Err(e),
                        };
                        if !send(job) {
                            break;
                        }
                    }
                }
                Log::Bytes(bytes) => {
                    for c in bytes.chunks(chunk) {
                        if !send(Ok(Piece::Lent(c))) {
                            break;
                        }
                    }
                }
                Log::Mapped(map) => {
                    for c in map.bytes().chunks(chunk) {
                        if !send(Ok(Piece::Lent(c))) {
                            break;
                        }
                    }
                }
            }
        });
        let started = Instant::now();
        let (mut waited, mut parsed) = (std::time::Duration::ZERO, 0u32);
        let mut released = 0;
        for k in assigned {
            let asked = Instant::now();
            let Ok(result) = searched[k].recv() else {
                break;
            };
            if !spreading.load(Ordering::Relaxed) {
                waited += asked.elapsed();
                parsed += 1;
                if parsed >= CHUNKS_BEFORE_SPREADING && waited * 2 > started.elapsed() {
                    spreading.store(true, Ordering::Relaxed);
                }
            }
            let (piece, scan) = result?;
            each(piece.bytes(), &scan);
            match piece {
                Piece::Read(buf, _) => {
                    let _ = give_back.send(buf);
                }
                Piece::Lent(bytes) => {
                    if let Some((map, base)) = mapped {
                        let done = bytes.as_ptr() as usize - base + bytes.len();
                        map.release(&mut released, done);
                    }
                }
            }
        }
        Ok(())
    })
}

/// Phase starts a replay remembers.
const PHASES_KEPT: usize = 4096;

/// The phase in force at `line`, from the latest phase starts (empty before the first).
fn phase_at(phases: &VecDeque<(u32, Arc<str>)>, line: u32) -> Arc<str> {
    let at = phases.partition_point(|(start, _)| *start <= line);
    at.checked_sub(1)
        .map_or_else(|| Arc::from(""), |i| phases[i].1.clone())
}

fn compact_lines(lines: &[u32]) -> String {
    let shown: Vec<String> = lines.iter().take(6).map(u32::to_string).collect();
    if lines.len() > 6 {
        format!("{}, … {} in all", shown.join(", "), lines.len())
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_searched_side_by_side_come_back_in_order() {
        let literals = ["error".to_string()];
        let router = nixtest_events::Router::new(
            &[Some(nixtest_events::Route {
                literals: &literals,
                patterns: &[],
                context: 1,
            })],
            nixtest_events::PatternLimits::default(),
        )
        .unwrap();
        let filter = router.skip_filter().unwrap();
        let mut log = String::new();
        for i in 0..3000 {
            match i % 17 {
                3 => log.push_str(&format!("error number {i}\n")),
                5 => log.push_str(&format!("::PHASE::p{i}\n")),
                9 => log.push_str(&"long line without it ".repeat(i % 40)),
                _ => log.push_str(&format!("noise {i}\n")),
            }
        }
        let run = |chunk: usize, searchers: usize, lent: bool| {
            let mut ingest = Ingest::default();
            let mut seen = Vec::new();
            let mut skipped = 0u32;
            read_scanned_with(
                if lent {
                    Log::Bytes(log.as_bytes())
                } else {
                    Log::stream(log.as_bytes())
                },
                &filter,
                chunk,
                searchers,
                true,
                |c, scan| {
                    ingest.push_scanned(
                        c,
                        scan,
                        &filter,
                        |e| seen.push((e.line, e.message.to_string())),
                        &mut |_, _| skipped += 1,
                    )
                },
            )
            .unwrap();
            seen.extend(ingest.finish().map(|e| (e.line, e.message.to_string())));
            (seen, skipped, ingest.lines())
        };
        let whole = run(1 << 20, 1, false);
        assert!(whole.0.iter().any(|(_, m)| m == "error number 2995"));
        assert!(whole.1 > 1000, "most lines are skipped: {}", whole.1);
        assert_eq!(run(1 << 20, 3, false), whole);
        // Bytes in memory are searched where they lie, and make the same of each chunk.
        assert_eq!(run(1 << 20, 1, true), whole);
        assert_eq!(run(1 << 20, 3, true), whole);
        // Smaller chunks skip less (a line across two chunks is parsed); what one searcher
        // makes of them, several make too, in the same order, read or lent.
        for chunk in [13, 64, 4096] {
            let one = run(chunk, 1, false);
            for (searchers, lent) in [(1, true), (2, false), (3, true), (4, false), (4, true)] {
                let many = run(chunk, searchers, lent);
                let first_difference = one.0.iter().zip(&many.0).position(|(a, b)| a != b);
                assert_eq!(
                    first_difference, None,
                    "{chunk} bytes, {searchers} searchers, lent {lent}"
                );
                assert_eq!(
                    (one.0.len(), one.1, one.2),
                    (many.0.len(), many.1, many.2),
                    "{chunk} bytes, {searchers} searchers, lent {lent}"
                );
            }
        }
    }

    #[test]
    fn a_mapped_file_replays_as_the_same_file_read() {
        // Several release units, so pages are given back behind the parser while evidence
        // from them is still reported.
        let mut log = String::new();
        let mut phase = 0;
        while log.len() < 3 * (2 << 20) + 12345 {
            log.push_str(&format!("::PHASE::p{phase}\n"));
            for i in 0..4000 {
                log.push_str(&format!(
                    "noise line {i} of phase {phase} {}\n",
                    "x".repeat(i % 90)
                ));
            }
            log.push_str("cannot stat the thing: permission denied\n");
            log.push_str(&format!("::ERROR::p{phase} failed with exit code 1\n"));
            phase += 1;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        std::fs::write(&path, &log).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = MappedLog::new(&file, &path)
            .unwrap()
            .expect("a regular file is mapped");
        let run = |log: Log<'_>| {
            replay_inner(log, &[], &[], &[], &GuestFacts::default(), &[], true).unwrap()
        };
        let mapped = run(Log::Mapped(&map));
        let read = run(Log::stream(std::fs::File::open(&path).unwrap()));
        assert!(mapped.findings.len() >= phase, "{:?}", mapped.findings);
        assert_eq!(mapped.lines, read.lines);
        assert_eq!(mapped.findings, read.findings);
        let texts = |r: &ReplayReport| -> Vec<Vec<String>> {
            r.failures.iter().map(|f| f.lines.clone()).collect()
        };
        assert_eq!(texts(&mapped), texts(&read));
        // The first phase's evidence lay in pages given back long before the end.
        assert_eq!(mapped.failures.len(), phase);
        assert_eq!(mapped.failures[0].phase, "p0");
        assert!(
            texts(&mapped)[0]
                .iter()
                .any(|l| l.contains("permission denied")),
            "{:?}",
            texts(&mapped)[0]
        );
    }

    #[test]
    fn skipping_lines_finds_what_reading_every_line_finds() {
        // Phases whose failures no rule explains: the fallback cites the most likely lines
        // of each phase's tail, which skipping must keep.
        let mut log = String::new();
        for phase in 0..40 {
            log.push_str(&format!("::PHASE::p{phase}\n"));
            for i in 0..(37 * phase % 300) {
                match i % 53 {
                    7 => log.push_str("cannot stat the thing: permission denied\n"),
                    11 => log.push('\n'),
                    13 => log.push_str("\x1b[31mcoloured\x1b[0m noise\n"),
                    _ => log.push_str(&format!("noise line {i} of phase {phase}\n")),
                }
            }
            if phase % 3 == 0 {
                log.push_str(&format!("::ERROR::p{phase} failed with exit code 1\n"));
            } else if phase % 3 == 1 {
                log.push_str(&format!("\x1b[1m::ERROR::\x1b[0mp{phase} failed\n"));
            }
        }
        let run = |skipping: bool| {
            replay_inner(
                log.as_bytes().into(),
                &[],
                &[],
                &[],
                &GuestFacts::default(),
                &[],
                skipping,
            )
            .unwrap()
        };
        let (fast, slow) = (run(true), run(false));
        assert!(
            fast.parsed_lines < slow.parsed_lines / 2,
            "{} of {}",
            fast.parsed_lines,
            slow.parsed_lines
        );
        assert_eq!(fast.lines, slow.lines);
        assert!(slow.findings.len() >= 20, "{:?}", slow.findings);
        assert_eq!(fast.findings, slow.findings);
    }
}
