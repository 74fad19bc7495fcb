//! The prefilter: which lines a detector wants to see, from its literals and patterns.
//!
//! A plugin's patterns are untrusted: each plugin's set is compiled on its own with a size
//! limit, and must scan a fixed sample of log shapes within a CPU budget, so no pattern can
//! make the host compile or match for seconds. A plugin whose filter fails either check is
//! refused at `plugin add` and, if already installed, disabled for the run with a recorded
//! fault; the run's combined filter (one Aho-Corasick automaton and one `RegexSet` over every
//! plugin that passed) routes each line in a single pass.

use super::PluginMeta;
use super::sandbox::thread_cpu;
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{RegexSet, RegexSetBuilder};
use std::time::Duration;

/// Compiled size one plugin's patterns may take (regex's NFA size limit).
pub const NFA_LIMIT: usize = 2 << 20;
/// The lazy DFA's cache per plugin set.
const DFA_LIMIT: usize = 2 << 20;
/// How deep a pattern may nest.
const NEST_LIMIT: u32 = 64;
/// CPU time one plugin's filter may take to compile, and to scan the sample below.
pub const BUILD_BUDGET: Duration = Duration::from_millis(300);
pub const SCAN_BUDGET: Duration = Duration::from_millis(150);

/// A sample of what logs hold: build noise, long lines, a line at the splitter's length limit,
/// binary-ish and Unicode text. A filter that cannot scan it quickly would slow every run.
fn sample() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..200 {
        lines.push(format!(
            "building '/nix/store/{i:032x}-source.drv'... [{i}/200 built, 3 copied (12.{i} MiB)]"
        ));
    }
    lines.push("a".repeat(64 << 10));
    lines.push("ab0 /-_:".repeat(8 << 10));
    lines.push("é€𝄞 ".repeat(4 << 10));
    lines.push((0..=255u8).map(char::from).cycle().take(32 << 10).collect());
    lines
}

/// One plugin's compiled filter.
#[derive(Debug)]
pub struct PluginFilter {
    patterns: Option<RegexSet>,
}

impl PluginFilter {
    /// Compiles `meta`'s patterns within the limits and checks their cost on the sample.
    pub fn build(meta: &PluginMeta) -> Result<Self, String> {
        if meta.patterns.is_empty() {
            return Ok(PluginFilter { patterns: None });
        }
        let started = thread_cpu();
        let set = builder(&meta.patterns, 1).build().map_err(|e| {
            format!(
                "its prefilter patterns cannot be compiled within the limits: {}",
                regex_error(&e)
            )
        })?;
        let took = thread_cpu().saturating_sub(started);
        if took > BUILD_BUDGET {
            return Err(format!(
                "its prefilter patterns took {} ms of CPU to compile, over the budget of {} ms",
                took.as_millis(),
                BUILD_BUDGET.as_millis()
            ));
        }
        let started = thread_cpu();
        let mut hits = 0usize;
        for line in sample() {
            hits += std::hint::black_box(set.matches(&line)).iter().count();
            if thread_cpu().saturating_sub(started) > SCAN_BUDGET {
                return Err(format!(
                    "its prefilter patterns take more than {} ms of CPU to scan a 200 KiB \
                     sample of log lines; simplify them",
                    SCAN_BUDGET.as_millis()
                ));
            }
        }
        std::hint::black_box(hits);
        Ok(PluginFilter {
            patterns: Some(set),
        })
    }
}

fn builder(patterns: &[String], plugins: usize) -> RegexSetBuilder {
    let mut b = RegexSetBuilder::new(patterns);
    b.size_limit(NFA_LIMIT * plugins)
        .dfa_size_limit(DFA_LIMIT * plugins)
        .nest_limit(NEST_LIMIT);
    b
}

/// A regex error on one line: the syntax error's own words (the last line of regex's
/// multi-line message), or the size it would have needed.
fn regex_error(e: &regex::Error) -> String {
    let text = match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("a pattern compiles to more than {limit} bytes")
        }
        other => other
            .to_string()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    text.chars().take(300).collect()
}

/// The run's filter over every detector that passed.
pub struct Prefilter {
    literals: Option<AhoCorasick>,
    literal_owner: Vec<usize>,
    /// One set over all plugins' patterns, or (should that fail) one set per plugin.
    sets: Vec<(RegexSet, Vec<usize>)>,
    sees_all: Vec<usize>,
}

impl Prefilter {
    /// `plugins[i]` is slot `i`; `None` for a slot whose filter was refused (it sees nothing).
    pub fn new(plugins: &[Option<(&PluginMeta, PluginFilter)>]) -> Result<Self, String> {
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut sees_all = Vec::new();
        let mut own_sets = Vec::new();
        let mut with_patterns = 0;
        for (i, p) in plugins.iter().enumerate() {
            let Some((meta, filter)) = p else { continue };
            if meta.literals.is_empty() && meta.patterns.is_empty() {
                sees_all.push(i);
            }
            for l in &meta.literals {
                literals.push(l.clone());
                literal_owner.push(i);
            }
            if let Some(set) = &filter.patterns {
                with_patterns += 1;
                own_sets.push((set.clone(), vec![i; meta.patterns.len()]));
                for r in &meta.patterns {
                    patterns.push(r.clone());
                    pattern_owner.push(i);
                }
            }
        }
        let literals = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    // Past 100 literals the automatic choice is an NFA, several times slower
                    // per byte; the literals are bounded per plugin (metadata caps), so a DFA
                    // stays small enough for every line of the run to go through it.
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .map_err(|e| e.to_string())?,
            )
        };
        let sets = if patterns.is_empty() {
            Vec::new()
        } else {
            match builder(&patterns, with_patterns).build() {
                Ok(set) => vec![(set, pattern_owner)],
                Err(e) => {
                    tracing::warn!(
                        "one prefilter over all detectors failed ({e}); one per detector"
                    );
                    own_sets
                }
            }
        };
        Ok(Prefilter {
            literals,
            literal_owner,
            sets,
            sees_all,
        })
    }

    /// Marks in `wanted` the slots that should see `text`.
    pub fn route(&self, text: &str, wanted: &mut [bool]) {
        for &i in &self.sees_all {
            wanted[i] = true;
        }
        if let Some(ac) = &self.literals {
            for m in ac.find_overlapping_iter(text) {
                wanted[self.literal_owner[m.pattern().as_usize()]] = true;
            }
        }
        for (set, owner) in &self.sets {
            for i in set.matches(text).iter() {
                wanted[owner[i]] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(patterns: &[&str]) -> PluginMeta {
        PluginMeta {
            name: "p".into(),
            version: semver::Version::new(0, 1, 0),
            description: String::new(),
            categories: Vec::new(),
            capabilities: Vec::new(),
            literals: Vec::new(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            context_lines: 0,
        }
    }

    #[test]
    fn ordinary_patterns_pass() {
        assert!(PluginFilter::build(&meta(&[r"(?i)no space left", r"error: \w+ failed"])).is_ok());
    }

    #[test]
    fn an_explosive_pattern_is_refused_quickly() {
        let started = std::time::Instant::now();
        let err = PluginFilter::build(&meta(&[r"(?:\w{1,100}){1,100}x"])).unwrap_err();
        assert!(err.contains("compiles to more than"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn routing_uses_literals_and_patterns() {
        let a = meta(&[r"disk \d+"]);
        let mut b = meta(&[]);
        b.literals = vec!["oom".into()];
        let c = meta(&[]);
        let fa = PluginFilter::build(&a).unwrap();
        let fb = PluginFilter::build(&b).unwrap();
        let fc = PluginFilter::build(&c).unwrap();
        let pre = Prefilter::new(&[Some((&a, fa)), Some((&b, fb)), None, Some((&c, fc))]).unwrap();
        let mut wanted = vec![false; 4];
        pre.route("disk 3 oom", &mut wanted);
        assert_eq!(wanted, [true, true, false, true]);
    }
}
