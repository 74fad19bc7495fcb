//! What detectors report: findings with a category, a severity and evidence lines.

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

/// One problem a detector saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The plugin that reported it.
    pub detector: String,
    pub category: String,
    pub severity: Severity,
    pub permanent: bool,
    pub summary: String,
    /// 1-based line numbers in the log.
    pub lines: Vec<u32>,
}

impl Finding {
    /// Two findings are the same problem when the same detector reports the same category and
    /// summary; the monitor keeps the first and merges evidence.
    pub fn same_problem(&self, other: &Finding) -> bool {
        self.detector == other.detector
            && self.category == other.category
            && self.summary == other.summary
    }
}
