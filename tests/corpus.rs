//! The built-in detectors on real failure output users pasted from failed installs
//! (`../shared/corpus` and `../shared/corpus-2`, labelled in INDEX.tsv) and on cases written
//! from the tools' own messages (`tests/fixtures/tool-messages`).
//!
//! Per folder it prints how many failures were found (the label among the error/fatal
//! findings), how many had the label as the *first* finding (root cause first, as `replay` and
//! the report order them), and how many benign cases raised an error (false alarms). Every
//! folder must be perfect on all three.

use nixtest::facts::GuestFacts;
use nixtest::plugin::Plugin;
use nixtest::plugin::{HostOptions, PluginHost};
use nixtest::replay::replay;
use nixtest_tests::{corpus_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Default)]
struct Score {
    failures: usize,
    found: usize,
    first_right: usize,
    benign: usize,
    false_alarms: usize,
    wrong: Vec<String>,
}

fn builtins() -> &'static [Plugin] {
    static SET: OnceLock<Vec<Plugin>> = OnceLock::new();
    SET.get_or_init(|| {
        let host = PluginHost::new(HostOptions::default()).unwrap();
        nixtest::plugins::builtins(&host).unwrap()
    })
}

fn score(dir: &Path) -> Score {
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the corpus folders sit beside the checkout in ../shared)",
            dir.display()
        )
    });
    let mut s = Score::default();
    for row in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = row.split('\t');
        let (file, label) = (cols.next().unwrap(), cols.next().unwrap());
        let log = std::fs::File::open(dir.join(file)).unwrap();
        let report = replay(
            nixtest::replay::Log::stream(log),
            builtins(),
            &GuestFacts::default(),
            &[],
        )
        .unwrap();
        assert!(report.faults.is_empty(), "{file}: {:?}", report.faults);
        let failures: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.severity.is_failure())
            .map(|f| f.category.as_str())
            .collect();
        if label == "benign" {
            s.benign += 1;
            if !failures.is_empty() {
                s.false_alarms += 1;
                s.wrong
                    .push(format!("{file}: benign, but found {failures:?}"));
            }
            continue;
        }
        s.failures += 1;
        let found = failures.contains(&label);
        let first = failures.first() == Some(&label);
        s.found += found as usize;
        s.first_right += first as usize;
        if !first {
            s.wrong.push(format!(
                "{file}: labelled {label}, found {failures:?} (root cause first)"
            ));
        }
    }
    s
}

fn check(name: &str, dir: PathBuf, min_cases: usize) {
    let s = score(&dir);
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    println!(
        "{name}: found {}/{} ({:.0}%), first finding right {}/{} ({:.0}%), false alarms {}/{} benign",
        s.found,
        s.failures,
        pct(s.found, s.failures),
        s.first_right,
        s.failures,
        pct(s.first_right, s.failures),
        s.false_alarms,
        s.benign
    );
    assert!(
        s.failures + s.benign >= min_cases,
        "only {} cases in {}",
        s.failures + s.benign,
        dir.display()
    );
    assert!(
        s.wrong.is_empty(),
        "{name}: {} cases wrong:\n{}",
        s.wrong.len(),
        s.wrong.join("\n")
    );
}

#[test]
fn corpus() {
    check("corpus", corpus_dir(), 40);
}

#[test]
fn corpus_2() {
    let dir = std::env::var_os("NIXTEST_CORPUS_2")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus-2"));
    check("corpus-2", dir, 20);
}

#[test]
fn tool_messages() {
    check(
        "tool-messages",
        workspace_root().join("tests/fixtures/tool-messages"),
        20,
    );
}

/// A large flush feeds the detectors side by side on several threads; what they find, and in
/// which order the run records it, must be what feeding them one after another gives.
#[test]
fn detectors_fed_side_by_side_find_what_they_find_one_by_one() {
    use nixtest::monitor::Monitor;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    cases.sort();
    // Between the cases, lines that reach every detector (success markers) and are no
    // failure: the batches fill, and flushes are large. (Raw lines reach a built-in only
    // when one of its rules matches them.)
    let noise: String = (0..600)
        .map(|i| match i % 4 {
            0 => format!(
                "::SUCCESS::partition table of /dev/vdb has {} entries\n",
                i % 8
            ),
            1 => format!("::SUCCESS::these {i} dependencies will be built:\n"),
            2 => format!("::SUCCESS::copying glibc: enough space on /mnt ({i} MiB free)\n"),
            _ => format!("::SUCCESS::resolved openssl in {i} ms\n"),
        })
        .collect();
    let mut log = String::new();
    for case in &cases {
        log.push_str(&noise);
        log.push_str(&std::fs::read_to_string(case).unwrap());
        log.push('\n');
    }
    let run = |monitor: Monitor| {
        let mut m = monitor;
        for e in nixtest_events::parse_log(log.as_bytes()) {
            m.observe(e);
        }
        m.finish();
        assert!(m.faults().is_empty(), "{:?}", m.faults());
        let found: Vec<String> = m
            .findings()
            .iter()
            .map(|f| {
                let evidence: Vec<Option<&str>> = f.lines.iter().map(|l| m.line_text(*l)).collect();
                format!(
                    "{} {} {:?} {} {:?} {evidence:?}",
                    f.detector, f.category, f.severity, f.summary, f.lines
                )
            })
            .collect();
        (found, m.side_by_side_flushes())
    };
    let (side_by_side, flushes) = run(Monitor::new(builtins()).unwrap());
    let (one_by_one, none) = run(Monitor::new(builtins()).unwrap().feed_one_by_one());
    assert_eq!(none, 0);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(flushes > 10, "only {flushes} flushes were fed side by side");
    }
    assert!(one_by_one.len() > cases.len() / 2, "{one_by_one:?}");
    assert_eq!(side_by_side, one_by_one);
    // Fed without waiting (as `replay` feeds them), over a log whose window of evidence
    // moves on while batches are in flight: the same findings, in the same order, with the
    // same evidence.
    let (pipelined, _) = run(Monitor::new(builtins()).unwrap().pipelined());
    assert_eq!(pipelined, one_by_one);
}

/// A detector's first call builds its rules, which outweighs any batch: the first flush feeds
/// the detectors side by side however few its lines, and the small flushes after it do not.
#[test]
fn first_flush_is_fed_side_by_side_the_next_small_ones_are_not() {
    use nixtest::monitor::Monitor;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let mut m = Monitor::new(builtins()).unwrap();
    // Lines every detector is sent (success markers).
    let lines = "::SUCCESS::partition table of /dev/vdb has 4 entries\n\
                 ::SUCCESS::copying glibc: enough space on /mnt (20 MiB free)\n";
    for e in nixtest_events::parse_log(lines.as_bytes()) {
        m.observe(e);
    }
    m.flush();
    assert_eq!(
        m.side_by_side_flushes(),
        1,
        "the first flush went one by one"
    );
    for e in nixtest_events::parse_log(lines.as_bytes()) {
        m.observe(e);
    }
    m.flush();
    assert_eq!(
        m.side_by_side_flushes(),
        1,
        "a small flush went side by side"
    );
    m.finish();
    assert!(m.faults().is_empty(), "{:?}", m.faults());
}
