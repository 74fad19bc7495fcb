//! What detectors report: findings with a category, a severity and evidence lines.

pub use nixtest_events::Category;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Fatal,
}

impl Severity {
    /// Error or fatal: what makes a run fail and what healing acts on.
    pub fn is_failure(self) -> bool {
        self >= Severity::Error
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The finding a healing record answers: what it was and the lines it cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRef {
    pub category: Category,
    pub summary: String,
    pub lines: Vec<u32>,
}

impl From<&Finding> for FindingRef {
    fn from(f: &Finding) -> Self {
        FindingRef {
            category: f.category.clone(),
            summary: f.summary.clone(),
            lines: f.lines.clone(),
        }
    }
}

/// One problem a detector saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The plugin that reported it.
    pub detector: String,
    pub category: Category,
    pub severity: Severity,
    pub permanent: bool,
    pub summary: String,
    /// 1-based line numbers in the log.
    pub lines: Vec<u32>,
    /// Structured facts for healers (key, value), as the detector gave them (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<(String, String)>,
}

/// Where a category stands among the causes: the built-in categories from the earliest cause
/// to the latest effect ([`Category::BUILT_IN`]: what usually makes the others happen comes
/// first — memory or space running out breaks builds; a missing disk breaks mounts; a boot
/// loader assertion is reported as an evaluation error too). A category nixtest does not know
/// sits before `other`, which is last: it is what no rule explained.
pub fn cause_rank(category: &Category) -> usize {
    let known = Category::BUILT_IN.len() - 1;
    match category {
        Category::Other => known + 1,
        Category::Custom(_) => known,
        c => Category::BUILT_IN
            .iter()
            .position(|b| b == c)
            .expect("a built-in category"),
    }
}

/// The order to show and act on findings in: the root cause first. By severity (fatal first),
/// then by what causes what ([`cause_rank`]), then by the earliest evidence line; ties keep
/// the order they were found in.
pub fn root_cause_order(findings: &[Finding]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..findings.len()).collect();
    order.sort_by_key(|&i| {
        let f = &findings[i];
        (
            std::cmp::Reverse(f.severity),
            cause_rank(&f.category),
            f.lines.iter().min().copied().unwrap_or(u32::MAX),
        )
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(category: &str, severity: Severity, line: u32) -> Finding {
        Finding {
            details: Vec::new(),
            detector: "d".into(),
            category: category.into(),
            severity,
            permanent: true,
            summary: category.into(),
            lines: vec![line],
        }
    }

    #[test]
    fn the_cause_comes_before_its_effects() {
        let found = [
            f("build-failure", Severity::Error, 5),
            f("other", Severity::Error, 1),
            f("oom", Severity::Error, 9),
            f("network", Severity::Warning, 2),
            f("hash-mismatch", Severity::Error, 12),
            f("network", Severity::Error, 14),
        ];
        let order: Vec<&str> = root_cause_order(&found)
            .into_iter()
            .map(|i| found[i].category.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "oom",
                "hash-mismatch",
                "network",
                "build-failure",
                "other",
                "network"
            ]
        );
    }

    #[test]
    fn unknown_categories_sit_between_the_known_and_other() {
        assert!(
            cause_rank(&Category::from("my-category"))
                > cause_rank(&Category::from("build-failure"))
        );
        assert!(cause_rank(&Category::from("my-category")) < cause_rank(&Category::from("other")));
        let found = [
            f("eval-error", Severity::Error, 9),
            f("eval-error", Severity::Error, 3),
        ];
        assert_eq!(root_cause_order(&found), vec![1, 0]);
    }
}
