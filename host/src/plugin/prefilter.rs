//! The prefilter: which lines a detector wants to see, from its literals and patterns.
//!
//! A plugin's patterns are untrusted: each plugin's set is compiled on its own with a size
//! limit, and must scan a fixed sample of log shapes within a CPU budget, so no pattern can
//! make the host compile or match for seconds. A plugin whose filter fails either check is
//! refused at `plugin add` and, if already installed, disabled for the run with a recorded
//! fault; the run's `nixtest_events::Router` over every plugin that passed routes each line
//! in a single pass.

use super::PluginMeta;
use super::sandbox::thread_cpu;
use nixtest_events::{PatternLimits, pattern_set};
use std::time::Duration;

/// Compiled size one plugin's patterns may take (regex's NFA size limit), its lazy DFA's
/// cache, and how deep a pattern may nest.
pub const LIMITS: PatternLimits = PatternLimits {
    size: 2 << 20,
    dfa_size: 2 << 20,
    nest: 64,
};
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

/// Checks a plugin's filter: its patterns compile within the limits and scan the sample
/// within the budget.
pub fn check(meta: &PluginMeta) -> Result<(), String> {
    {
        if meta.patterns.is_empty() {
            return Ok(());
        }
        let started = thread_cpu();
        let set = pattern_set(&meta.patterns, LIMITS, 1).map_err(|e| {
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
        Ok(())
    }
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
        assert!(check(&meta(&[r"(?i)no space left", r"error: \w+ failed"])).is_ok());
    }

    #[test]
    fn an_explosive_pattern_is_refused_quickly() {
        let started = std::time::Instant::now();
        let err = check(&meta(&[r"(?:\w{1,100}){1,100}x"])).unwrap_err();
        assert!(err.contains("compiles to more than"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
