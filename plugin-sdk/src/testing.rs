//! Run your plugin's logic natively in `cargo test`, over a recorded log and made-up facts.
//!
//! ```no_run
//! # use nixtest_plugin_sdk::prelude::*;
//! # #[derive(Default)] struct MyDetector;
//! # impl Plugin for MyDetector { fn metadata() -> Metadata { Metadata::new("x", "0.1.0") } }
//! # impl Detector for MyDetector { fn feed(&mut self, _: &[Event]) -> Vec<Finding> { vec![] } }
//! use nixtest_plugin_sdk::testing;
//! let findings = testing::detect_file::<MyDetector>("tests/logs/oom.log").unwrap();
//! assert!(findings.iter().any(|f| f.category == "oom"));
//! ```
//!
//! The log goes through the host's own ingest path (`nixtest_events::Ingest` and `Router`):
//! split, parsed and routed exactly as in a run, so a rule that needs a literal missing from
//! your metadata fails here first.

use crate::ProbeOutput;
use crate::{
    Detector, Disk, Event, EventKind, Field, Finding, Gate, GuestFacts, HealContext, Healer,
    HealingAction, Mount, Rule, RuleSet, Severity,
};
use nixtest_events::{Ingest, PatternLimits, Route, Router};
use regex::Regex;
use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

/// How many events the host sends in one batch at most.
pub const BATCH: usize = 256;

/// Runs a detector over a log file.
pub fn detect_file<D: Detector>(path: impl AsRef<Path>) -> std::io::Result<Vec<Finding>> {
    let bytes = std::fs::read(path)?;
    Ok(detect_bytes::<D>(&bytes))
}

/// Runs a detector over log text.
pub fn detect_str<D: Detector>(log: &str) -> Vec<Finding> {
    detect_bytes::<D>(log.as_bytes())
}

/// Runs a detector over raw log bytes, in batches, and returns all its findings.
pub fn detect_bytes<D: Detector>(bytes: &[u8]) -> Vec<Finding> {
    let meta = D::metadata();
    let route = Route {
        literals: &meta.literals,
        patterns: &meta.patterns,
        context: meta.context_lines as usize,
    };
    let mut router = Router::new(&[Some(route)], PatternLimits::default())
        .expect("the metadata's patterns must compile within the host's limits");
    let mut detector = D::default();
    let mut findings = Vec::new();
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut ingest = Ingest::default();
    let mut take = |e: nixtest_events::Event| {
        router.route(&e, |_, e| batch.push(convert(e.clone())));
        router.remember(e, Instant::now());
        if batch.len() >= BATCH {
            findings.extend(detector.feed(&batch));
            batch.clear();
        }
    };
    ingest.push(bytes, &mut take);
    if let Some(e) = ingest.finish() {
        take(e);
    }
    if !batch.is_empty() {
        findings.extend(detector.feed(&batch));
    }
    findings.extend(detector.finish());
    findings
}

/// Only the findings of severity error or fatal.
pub fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| matches!(f.severity, Severity::Error | Severity::Fatal))
        .collect()
}

/// Every line of every file in `dirs` (not recursing), for checks over recorded logs.
pub fn lines_under<P: AsRef<Path>>(
    dirs: impl IntoIterator<Item = P>,
) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    for dir in dirs {
        let mut paths: Vec<_> = std::fs::read_dir(dir.as_ref())?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(&path)?;
            lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
        }
    }
    Ok(lines)
}

/// The recorded lines the built-in plugins' rules are checked on: the corpus beside the
/// checkout (`../shared/corpus`, `../shared/corpus-2`) and the tool messages among the test
/// fixtures; `manifest_dir` is a plugin crate's (`plugins/NAME`). Panics when they cannot be
/// read, so a check over them cannot pass on nothing.
pub fn recorded_lines(manifest_dir: &str) -> Vec<String> {
    let root = format!("{manifest_dir}/../..");
    lines_under([
        format!("{root}/../shared/corpus"),
        format!("{root}/../shared/corpus-2"),
        format!("{root}/tests/fixtures/tool-messages"),
    ])
    .expect("the corpus folders sit beside the checkout in ../shared")
}

/// [`assert_rule_set_agrees`] on [`recorded_lines`], which must match at least 10 lines (else
/// the corpus was not read); returns the lines, for more checks.
pub fn assert_rule_set_agrees_on_recorded_logs(rules: &[Rule], manifest_dir: &str) -> Vec<String> {
    let lines = recorded_lines(manifest_dir);
    let matched = assert_rule_set_agrees(rules, &lines);
    eprintln!("{matched} of {} recorded lines matched a rule", lines.len());
    assert!(
        matched >= 10,
        "only {matched} lines matched: the corpus was not read"
    );
    lines
}

/// Checks that a [`RuleSet`] finds on each line what trying every rule's regex in order finds,
/// on the lines as given and in upper and lower case: the set runs only the rules whose
/// literals a line holds, and a literal read wrongly from a pattern would hide a failure.
/// Panics with the first line where they differ; returns how many lines matched some rule.
pub fn assert_rule_set_agrees<S: AsRef<str>>(
    rules: &[Rule],
    lines: impl IntoIterator<Item = S>,
) -> usize {
    let set = RuleSet::new(rules);
    let each: Vec<Regex> = rules
        .iter()
        .map(|r| Regex::new(&crate::helpers::ascii_classes(r.pattern)).expect("valid rule"))
        .collect();
    let mut matched = 0;
    for line in lines {
        let line = line.as_ref();
        for text in [line.to_string(), line.to_uppercase(), line.to_lowercase()] {
            let event = Event {
                kind: EventKind::Raw,
                phase: String::new(),
                message: text.clone(),
                line: 1,
                fields: Vec::new(),
            };
            let want = each.iter().position(|re| re.is_match(&text));
            let got = set.check(&event);
            let got_rule = got
                .as_ref()
                .map(|f| (f.category.as_str(), f.summary.as_str()));
            let want_rule = want.map(|i| {
                let caps = each[i].captures(&text).expect("matched");
                let mut summary = String::new();
                caps.expand(rules[i].summary, &mut summary);
                (rules[i].category, summary)
            });
            assert_eq!(
                got_rule,
                want_rule.as_ref().map(|(c, s)| (*c, s.as_str())),
                "the rule set and the rules one by one disagree on {text:?} (rule {want:?}: {})",
                want.map_or("", |i| rules[i].pattern)
            );
            matched += usize::from(want.is_some());
        }
    }
    matched
}

/// Checks that a [`Gate`] over `patterns` names every pattern that matches, on each line as
/// given and in upper and lower case. Returns how many (line, pattern) pairs matched.
pub fn assert_gate_admits<S: AsRef<str>>(
    patterns: &[&str],
    lines: impl IntoIterator<Item = S>,
) -> usize {
    let gate = Gate::new(patterns.iter().copied());
    let each: Vec<Regex> = patterns
        .iter()
        .map(|p| Regex::new(p).expect("valid pattern"))
        .collect();
    let mut matched = 0;
    for line in lines {
        let line = line.as_ref();
        for text in [line.to_string(), line.to_uppercase(), line.to_lowercase()] {
            let candidates = gate.candidates(&text);
            for (i, re) in each.iter().enumerate() {
                if re.is_match(&text) {
                    matched += 1;
                    assert!(
                        candidates.contains(&i),
                        "pattern {:?} matches {text:?} but the gate holds it back",
                        patterns[i]
                    );
                }
            }
        }
    }
    matched
}

/// Asks a healer for actions, sorted best first as the host would rank them on first use.
pub fn heal<H: Healer>(finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
    let mut actions = H::default().heal(finding, cx);
    actions.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    actions
}

type ProbeAnswer = Box<dyn FnMut(&str) -> Result<ProbeOutput, String>>;

thread_local! {
    static PROBE: RefCell<Option<ProbeAnswer>> = const { RefCell::new(None) };
}

/// Runs `f` with `answer` standing in for the guest: each [`crate::probe`] the plugin makes
/// inside gets `answer`'s reply. (In a real run the host also refuses anything that is not a
/// read-only program with plain arguments.)
///
/// ```
/// # use nixtest_plugin_sdk::{testing, ProbeOutput};
/// let out = testing::with_probe(
///     |cmd| Ok(ProbeOutput { status: 0, stdout: format!("ran {cmd}"), stderr: String::new() }),
///     || nixtest_plugin_sdk::probe("lsblk").unwrap().stdout,
/// );
/// assert_eq!(out, "ran lsblk");
/// ```
pub fn with_probe<R>(
    answer: impl FnMut(&str) -> Result<ProbeOutput, String> + 'static,
    f: impl FnOnce() -> R,
) -> R {
    let old = PROBE.with(|p| p.borrow_mut().replace(Box::new(answer)));
    let result = f();
    PROBE.with(|p| *p.borrow_mut() = old);
    result
}

/// What [`crate::probe`] does outside WebAssembly (a plugin's native `cargo test`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn native_probe(command: &str) -> Result<ProbeOutput, String> {
    PROBE.with(|p| match p.borrow_mut().as_mut() {
        Some(answer) => answer(command),
        None => Err(
            "no guest in a native test: answer probes with nixtest_plugin_sdk::testing::with_probe"
                .to_string(),
        ),
    })
}

/// A heal context for tests.
pub fn context(facts: GuestFacts, phase: &str, config: &[(&str, &str)]) -> HealContext {
    HealContext {
        facts,
        phase: phase.to_string(),
        config: config
            .iter()
            .map(|(p, c)| crate::ConfigFile {
                path: p.to_string(),
                content: c.to_string(),
            })
            .collect(),
        evidence: Vec::new(),
        attempt: 0,
    }
}

fn convert(e: nixtest_events::Event) -> Event {
    Event {
        kind: match e.kind {
            nixtest_events::EventKind::Phase => EventKind::Phase,
            nixtest_events::EventKind::Success => EventKind::Success,
            nixtest_events::EventKind::Error => EventKind::Error,
            nixtest_events::EventKind::Warning => EventKind::Warning,
            nixtest_events::EventKind::Context => EventKind::Context,
            nixtest_events::EventKind::Progress => EventKind::Progress,
            nixtest_events::EventKind::Metric => EventKind::Metric,
            nixtest_events::EventKind::Raw => EventKind::Raw,
        },
        phase: e.phase.to_string(),
        message: e.message,
        line: e.line,
        fields: e
            .fields
            .into_iter()
            .map(|(key, value)| Field { key, value })
            .collect(),
    }
}

/// Builds realistic [`GuestFacts`] for healer tests.
#[derive(Debug, Clone)]
pub struct FactsBuilder {
    facts: GuestFacts,
}

impl Default for FactsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FactsBuilder {
    /// 2 GiB of memory, no swap, one CPU, nothing else.
    pub fn new() -> Self {
        FactsBuilder {
            facts: GuestFacts {
                disks: Vec::new(),
                mounts: Vec::new(),
                memory_total_bytes: 2 << 30,
                memory_available_bytes: 1 << 30,
                swap_total_bytes: 0,
                swap_free_bytes: 0,
                cpus: 1,
                resolvers: Vec::new(),
                substituters: Vec::new(),
            },
        }
    }

    /// A disk; `boot` marks the boot medium; `mountpoints` non-empty means it is in use.
    pub fn disk(mut self, path: &str, size: u64, boot: bool, mountpoints: &[&str]) -> Self {
        self.facts.disks.push(Disk {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: path.to_string(),
            size_bytes: size,
            partitions: u32::from(!mountpoints.is_empty()),
            mountpoints: mountpoints.iter().map(|m| m.to_string()).collect(),
            boot_medium: boot,
            removable: false,
        });
        self
    }

    pub fn mount(mut self, path: &str, size: u64, free: u64) -> Self {
        self.facts.mounts.push(Mount {
            path: path.to_string(),
            device: String::new(),
            fs_type: "ext4".into(),
            size_bytes: size,
            free_bytes: free,
            free_inodes: 100_000,
            read_only: false,
        });
        self
    }

    pub fn memory(mut self, total: u64, available: u64) -> Self {
        self.facts.memory_total_bytes = total;
        self.facts.memory_available_bytes = available;
        self
    }

    pub fn swap(mut self, total: u64, free: u64) -> Self {
        self.facts.swap_total_bytes = total;
        self.facts.swap_free_bytes = free;
        self
    }

    pub fn cpus(mut self, n: u32) -> Self {
        self.facts.cpus = n;
        self
    }

    pub fn resolver(mut self, addr: &str) -> Self {
        self.facts.resolvers.push(addr.to_string());
        self
    }

    pub fn substituter(mut self, url: &str) -> Self {
        self.facts.substituters.push(url.to_string());
        self
    }

    pub fn build(self) -> GuestFacts {
        self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_answered_inside_with_probe_only() {
        let e = crate::probe("lsblk").unwrap_err();
        assert!(e.contains("testing::with_probe"), "{e}");
        let mut asked = Vec::new();
        let status = with_probe(
            |cmd| {
                Ok(ProbeOutput {
                    status: if cmd.starts_with("test") { 1 } else { 0 },
                    stdout: String::new(),
                    stderr: String::new(),
                })
            },
            || {
                asked.push(crate::probe("test -d /mnt/tmp").unwrap().status);
                asked.push(crate::probe("df /mnt").unwrap().status);
                asked.clone()
            },
        );
        assert_eq!(status, [1, 0]);
        assert!(
            crate::probe("lsblk").is_err(),
            "the answer is gone afterwards"
        );
    }
}
