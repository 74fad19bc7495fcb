//! Typed helpers over the generated types: builders, fact queries and line rules.

use crate::{
    Capability, ConfigChange, Disk, Event, EventKind, Finding, GuestFacts, HealContext,
    HealingAction, Metadata, Mount, Severity,
};
use nixtest_events::Gate;
use regex::Regex;
use std::sync::OnceLock;

const MIB: u64 = 1024 * 1024;

impl Metadata {
    /// Metadata with a name and a semver version; add the rest with the builder methods.
    pub fn new(name: &str, version: &str) -> Self {
        Metadata {
            name: name.to_string(),
            version: version.to_string(),
            description: String::new(),
            categories: Vec::new(),
            capabilities: Vec::new(),
            literals: Vec::new(),
            patterns: Vec::new(),
            context_lines: 0,
        }
    }

    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }

    pub fn categories<'a>(mut self, cats: impl IntoIterator<Item = &'a str>) -> Self {
        self.categories = cats.into_iter().map(str::to_string).collect();
        self
    }

    pub fn capability(mut self, cap: Capability) -> Self {
        self.capabilities.push(cap);
        self
    }

    /// Lines that contain none of these literals (and match none of the patterns) are never
    /// sent to the plugin; marker lines of kind error, warning and success are always sent (every
    /// event carries its phase, so phase markers are sent only when they match). Matching is exact
    /// (case-sensitive), so list each spelling you need.
    pub fn literals<'a>(mut self, lits: impl IntoIterator<Item = &'a str>) -> Self {
        self.literals = lits.into_iter().map(str::to_string).collect();
        self
    }

    /// Adds regular expressions for the host's prefilter, as with [`Metadata::literals`]: a
    /// line is sent when it matches one. The host matches them natively, before any call into
    /// the plugin, so a plugin whose patterns are exactly the lines it acts on (its rules, and
    /// the lines its state follows) is sent nothing else: a line that only shares a word with
    /// a rule costs it nothing.
    pub fn patterns<'a>(mut self, pats: impl IntoIterator<Item = &'a str>) -> Self {
        self.patterns.extend(pats.into_iter().map(str::to_string));
        self
    }

    /// Adds the rules' patterns as a [`RuleSet`] of them matches them (with
    /// [`ascii_classes`]), so the host sends exactly the lines one of the rules matches.
    pub fn rule_patterns(mut self, rules: &[Rule]) -> Self {
        self.patterns
            .extend(rules.iter().map(|r| ascii_classes(r.pattern)));
        self
    }

    /// How many lines before a matching line the plugin also wants to see.
    pub fn context_lines(mut self, n: u32) -> Self {
        self.context_lines = n;
        self
    }
}

impl Finding {
    /// A permanent finding with no evidence yet; `category` is a [`crate::Category`] or a
    /// plugin's own word.
    pub fn new(category: impl AsRef<str>, severity: Severity, summary: impl Into<String>) -> Self {
        Finding {
            category: category.as_ref().to_string(),
            severity,
            summary: summary.into(),
            lines: Vec::new(),
            permanent: true,
            details: Vec::new(),
        }
    }

    /// The finding's category, typed.
    pub fn category(&self) -> crate::Category {
        crate::Category::from(self.category.as_str())
    }

    /// Adds a structured fact for healers (replacing one with the same key), so that they
    /// need not parse the summary.
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.details.iter_mut().find(|f| f.key == key) {
            Some(f) => f.value = value,
            None => self.details.push(crate::Field {
                key: key.to_string(),
                value,
            }),
        }
        self
    }

    /// The value of a detail, if the detector gave it.
    pub fn detail_value(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.as_str())
    }

    pub fn line(mut self, line: u32) -> Self {
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
        self
    }

    pub fn lines(mut self, lines: impl IntoIterator<Item = u32>) -> Self {
        for l in lines {
            self = self.line(l);
        }
        self
    }

    /// Marks the finding as one that may go away by itself (a retry in progress).
    pub fn temporary(mut self) -> Self {
        self.permanent = false;
        self
    }
}

impl HealingAction {
    /// An action with no commands, no config changes and no retry; confidence is clamped to
    /// 0..=1.
    pub fn new(name: &str, description: impl Into<String>, confidence: f32) -> Self {
        HealingAction {
            name: name.to_string(),
            description: description.into(),
            confidence: confidence.clamp(0.0, 1.0),
            commands: Vec::new(),
            config_changes: Vec::new(),
            retry_phase: None,
        }
    }

    /// A shell command run as root in the guest.
    pub fn command(mut self, cmd: impl Into<String>) -> Self {
        self.commands.push(cmd.into());
        self
    }

    /// Replaces a file of the run's configuration copy (a relative path).
    pub fn config_change(mut self, path: &str, content: impl Into<String>) -> Self {
        self.config_changes.push(ConfigChange {
            path: path.to_string(),
            content: content.into(),
        });
        self
    }

    pub fn retry(mut self, phase: &str) -> Self {
        self.retry_phase = Some(phase.to_string());
        self
    }
}

impl Disk {
    /// No partitions and nothing mounted.
    pub fn is_empty(&self) -> bool {
        self.partitions == 0 && self.mountpoints.is_empty()
    }
}

impl GuestFacts {
    /// The install target a person would pick: the largest empty disk that is not the boot
    /// medium and not removable.
    pub fn largest_empty_disk(&self) -> Option<&Disk> {
        self.disks
            .iter()
            .filter(|d| !d.boot_medium && !d.removable && d.is_empty() && d.size_bytes > 0)
            .max_by_key(|d| d.size_bytes)
    }

    pub fn disk(&self, path: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.path == path)
    }

    /// The mount that holds `path` (the longest mount point that is a prefix of it).
    pub fn mount_for(&self, path: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| {
                path == m.path
                    || m.path == "/"
                    || path
                        .strip_prefix(m.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|m| m.path.len())
    }

    pub fn free_bytes(&self, path: &str) -> Option<u64> {
        self.mount_for(path).map(|m| m.free_bytes)
    }

    /// A swap file size in MiB for `path`'s filesystem: `wanted` MiB, but never more than half
    /// of the free space there, rounded down to whole MiB. `None` if less than 64 MiB fits.
    pub fn swap_size_mib_at(&self, path: &str, wanted: u64) -> Option<u64> {
        let free = self.free_bytes(path)?;
        let size = wanted.min(free / 2 / MIB);
        (size >= 64).then_some(size)
    }

    /// As [`GuestFacts::swap_size_mib_at`] for `/`, with 64 MiB when nothing is known.
    pub fn swap_size_mib(&self, wanted: u64) -> u64 {
        self.swap_size_mib_at("/", wanted).unwrap_or(64)
    }
}

impl HealContext {
    /// The content of a configuration file of the run, by relative path.
    pub fn config(&self, path: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.content.as_str())
    }
}

impl Event {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.as_str())
    }

    pub fn is_error_marker(&self) -> bool {
        self.kind == EventKind::Error
    }
}

/// One line rule: a category, a severity, a pattern and a summary template (`$name` and `$1`
/// expand to the pattern's captures).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub category: &'static str,
    pub severity: Severity,
    pub pattern: &'static str,
    pub summary: &'static str,
}

impl Rule {
    pub const fn new(
        category: &'static str,
        severity: Severity,
        pattern: &'static str,
        summary: &'static str,
    ) -> Self {
        Rule {
            category,
            severity,
            pattern,
            summary,
        }
    }

    pub const fn error(
        category: &'static str,
        pattern: &'static str,
        summary: &'static str,
    ) -> Self {
        Rule::new(category, Severity::Error, pattern, summary)
    }

    /// A rule for noise worth showing but never a failure by itself.
    pub const fn warning(
        category: &'static str,
        pattern: &'static str,
        summary: &'static str,
    ) -> Self {
        Rule::new(category, Severity::Warning, pattern, summary)
    }
}

/// A set of [`Rule`]s checked together: one Aho-Corasick pass over the line finds the rules
/// whose literals it holds (read from each pattern, see the `gate` module), and only those
/// run their regexes, in order, until one matches. A rule with no certain literal runs on
/// every line.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    gate: Gate,
    patterns: Vec<String>,
    regexes: Vec<OnceLock<Regex>>,
}

impl RuleSet {
    /// Panics on an invalid pattern: rules are constants of the plugin, and a bad one should
    /// fail the plugin's own tests, not a user's run.
    pub fn new(rules: &[Rule]) -> Self {
        let patterns: Vec<String> = rules.iter().map(|r| ascii_classes(r.pattern)).collect();
        for p in &patterns {
            if let Err(e) = regex_syntax::parse(p) {
                panic!("invalid rule pattern: {e}");
            }
        }
        // Each rule's regex is built the first time a line holds its literal: most never
        // do, and building them all would cost a plugin's first call its CPU budget.
        let regexes = patterns.iter().map(|_| OnceLock::new()).collect();
        RuleSet {
            rules: rules.to_vec(),
            gate: Gate::new(patterns.iter().map(String::as_str)),
            patterns,
            regexes,
        }
    }

    /// The first rule (in the order given) that matches the event, as a finding.
    pub fn check(&self, event: &Event) -> Option<Finding> {
        let text = event.message.as_str();
        self.gate.first(text, |i| {
            let re = self.regexes[i].get_or_init(|| {
                Regex::new(&self.patterns[i])
                    .unwrap_or_else(|e| panic!("invalid rule pattern: {e}"))
            });
            // Most candidates do not match: the cheaper search first, the captures after.
            if !re.is_match(text) {
                return None;
            }
            let caps = re.captures(text)?;
            let rule = &self.rules[i];
            let mut summary = String::new();
            caps.expand(rule.summary, &mut summary);
            Some(Finding::new(rule.category, rule.severity, summary).line(event.line))
        })
    }
}

/// `\d`, `\s`, `\w` and `\b` as their ASCII forms. Logs are ASCII where these matter, and
/// the Unicode classes make automata many times larger: a set of rules over a long log would
/// keep clearing its DFA cache and fall back to a slow engine, costing a plugin its CPU budget.
pub fn ascii_classes(pattern: &str) -> String {
    const SPACE: &str = r"\t\n\x0B\x0C\r ";
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    let mut depth = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push(c);
                    break;
                };
                let inside = depth > 0;
                match (n, inside) {
                    ('d', false) => out.push_str("[0-9]"),
                    ('d', true) => out.push_str("0-9"),
                    ('D', false) => out.push_str("[^0-9]"),
                    ('s', false) => {
                        out.push('[');
                        out.push_str(SPACE);
                        out.push(']');
                    }
                    ('s', true) => out.push_str(SPACE),
                    ('S', false) => {
                        out.push_str("[^");
                        out.push_str(SPACE);
                        out.push(']');
                    }
                    ('w', false) => out.push_str("[0-9A-Za-z_]"),
                    ('w', true) => out.push_str("0-9A-Za-z_"),
                    ('W', false) => out.push_str("[^0-9A-Za-z_]"),
                    ('b', false) => out.push_str("(?-u:\\b)"),
                    ('B', false) => out.push_str("(?-u:\\B)"),
                    _ => {
                        out.push(c);
                        out.push(n);
                    }
                }
            }
            '[' => {
                depth += 1;
                out.push(c);
                // A `]` right after `[` or `[^` is a literal, not the end.
                let mut peek = chars.clone();
                match peek.next() {
                    Some('^') => {
                        out.push('^');
                        chars.next();
                        if chars.clone().next() == Some(']') {
                            out.push(']');
                            chars.next();
                        }
                    }
                    Some(']') => {
                        out.push(']');
                        chars.next();
                    }
                    _ => {}
                }
            }
            ']' if depth > 0 => {
                depth -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FactsBuilder;

    #[test]
    fn ascii_classes_keep_the_meaning_on_ascii() {
        for (p, yes, no) in [
            (r"line \d+:\s+\w+", "line 12: abc", "line x: abc"),
            (r"[\w.+-]+: not found", "a.b-c: not found", ": not found"),
            (r"[^:\s]+:\d", "abc:1", " :1"),
            (r"\bKilled\b", "was Killed now", "wasKilled"),
            (r"\S+ port \d+", "host port 22", " port 22"),
            (r"[]x]\d", "]1", "y1"),
        ] {
            let re = Regex::new(&ascii_classes(p)).unwrap();
            assert!(re.is_match(yes), "{p} on {yes}");
            assert!(!re.is_match(no), "{p} on {no}");
        }
    }

    #[test]
    fn largest_empty_disk_skips_boot_medium_and_used_disks() {
        let facts = FactsBuilder::new()
            .disk("/dev/vda", 2 << 30, true, &["/"])
            .disk("/dev/vdb", 8 << 30, false, &[])
            .disk("/dev/vdc", 20 << 30, false, &["/data"])
            .disk("/dev/vdd", 4 << 30, false, &[])
            .build();
        assert_eq!(facts.largest_empty_disk().unwrap().path, "/dev/vdb");
    }

    #[test]
    fn mount_for_picks_longest_prefix() {
        let facts = FactsBuilder::new()
            .mount("/", 10 << 30, 5 << 30)
            .mount("/mnt", 8 << 30, 1 << 30)
            .build();
        assert_eq!(facts.mount_for("/mnt/nix/store").unwrap().path, "/mnt");
        assert_eq!(facts.mount_for("/mntx").unwrap().path, "/");
        assert_eq!(facts.mount_for("/tmp").unwrap().path, "/");
    }

    #[test]
    fn swap_fits_half_the_free_space() {
        let facts = FactsBuilder::new().mount("/", 10 << 30, 1 << 30).build();
        assert_eq!(facts.swap_size_mib_at("/", 4096), Some(512));
        assert_eq!(facts.swap_size_mib_at("/", 256), Some(256));
        let tiny = FactsBuilder::new().mount("/", 1 << 30, 100 * MIB).build();
        assert_eq!(tiny.swap_size_mib_at("/", 4096), None);
    }

    #[test]
    fn confidence_is_clamped() {
        assert_eq!(HealingAction::new("a", "b", 3.0).confidence, 1.0);
        assert_eq!(HealingAction::new("a", "b", -1.0).confidence, 0.0);
    }
}
