//! The built-in detectors on real failure output users pasted from failed installs
//! (`../shared/corpus`, labelled in INDEX.tsv): a labelled case must yield its category among
//! the error/fatal findings, and a benign case must yield no error/fatal finding at all.

use nixtest::facts::GuestFacts;
use nixtest::plugin::{HostOptions, PluginHost};
use nixtest::replay::replay;
use nixtest_tests::corpus_dir;

#[test]
fn every_corpus_case_is_recognised_and_benign_ones_stay_quiet() {
    let dir = corpus_dir();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set NIXTEST_CORPUS to the corpus folder)",
            dir.display()
        )
    });
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let plugins = nixtest::plugins::builtins(&host).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for row in index.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = row.split('\t');
        let (file, label) = (cols.next().unwrap(), cols.next().unwrap());
        let log = std::fs::File::open(dir.join(file)).unwrap();
        let report = replay(log, &plugins, &GuestFacts::default(), &[]).unwrap();
        assert!(report.faults.is_empty(), "{file}: {:?}", report.faults);
        let mut got: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.severity.is_failure())
            .map(|f| f.category.as_str())
            .collect();
        got.sort();
        got.dedup();
        let ok = if label == "benign" {
            got.is_empty()
        } else {
            got.contains(&label)
        };
        if !ok {
            failures.push(format!("{file}: labelled {label}, found {got:?}"));
        }
        cases += 1;
    }
    assert!(cases >= 40, "only {cases} cases in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {cases} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
