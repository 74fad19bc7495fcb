//! Reports of a run (shared/DESIGN.md, "Reports"): `report.json` (a contract: fields may be
//! added, never renamed), `junit.xml` (one case per profile and phase), `report.html` (one
//! self-contained page), `logs/PROFILE.log` and `events/PROFILE.jsonl`. Every file is written
//! whole or not at all (write, then rename). This module only consumes what the run produced.

pub use crate::findings::FindingRef;
mod builder;
mod html;
mod junit;
mod merge;
mod text;

pub use builder::ReportBuilder;
pub(crate) use html::esc;
pub use merge::{MergeError, merge, merge_dirs};

use crate::actions::Confidence;
use crate::fault::Fault;
use crate::findings::Finding;
pub use crate::monitor::PluginFaultDetail;
use crate::plugin::ProbeRecord;
pub use crate::run_event::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Healed,
    Failed,
    /// Unsafe, or below the minimum confidence.
    Refused,
    /// Healing is disabled.
    Skipped,
}

impl Outcome {
    /// The name report.json uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Healed => "healed",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub status: Status,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealingRecord {
    /// When it was applied (or refused), in ms since the profile's run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    pub finding: FindingRef,
    pub action: String,
    pub plugin: String,
    pub confidence: Confidence,
    pub outcome: Outcome,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_diff: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From the failing line reaching the host to the finding, and to the action applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
    /// The same two from the failing line being printed in the guest (its uptime clock paired
    /// with the host's before the phase, within `guest_clock_error_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_line_to_finding_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_line_to_applied_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_clock_error_ms: Option<f64>,
    /// From the first failing line printed to the first finding citing it (temporary ones
    /// included), and from the line that decided the finding to the finding and the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_line_to_first_finding_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisive_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_decisive_to_finding_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_decisive_to_applied_ms: Option<u64>,
    /// The failing phase was stopped at the finding instead of left to end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub check: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileReport {
    pub name: String,
    pub status: Status,
    pub injected_fault: Option<Fault>,
    pub phases: Vec<PhaseReport>,
    pub errors: BTreeMap<String, u32>,
    pub healing: Vec<HealingRecord>,
    pub verification: Vec<CheckReport>,
    pub metrics: BTreeMap<String, f64>,
    pub detection_latency_ms: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_faults: Vec<String>,
    /// The faults in full: cause, the line it happened at, what the plugin printed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_fault_details: Vec<PluginFaultDetail>,
    /// False when a detector was disabled during the run: its findings may be missing.
    #[serde(default = "yes")]
    pub detection_complete: bool,
    /// Every probe a healer asked for, allowed or refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeRecord>,
    /// What plugins printed to stdout and stderr (bounded), by plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_output: BTreeMap<String, String>,
    /// Each failed phase attempt's signature and how often it has been seen (all runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<crate::signatures::FailureSeen>,
    /// Every finding of the run, the root cause first (severity, what causes what, line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

fn yes() -> bool {
    true
}

/// A plugin fault as the report keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub errors: u32,
    pub healing_attempts: u32,
    pub healing_success_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub started: String,
    pub duration_ms: u64,
    pub profiles: Vec<ProfileReport>,
    pub summary: Summary,
    /// This run was one share of a partitioned run (`--partition`): which, and of what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::partition::Share>,
}

impl Report {
    pub fn new(
        run_id: String,
        started: String,
        duration_ms: u64,
        profiles: Vec<ProfileReport>,
    ) -> Self {
        let count = |s: Status| profiles.iter().filter(|p| p.status == s).count() as u32;
        let attempts: Vec<&HealingRecord> = profiles
            .iter()
            .flat_map(|p| &p.healing)
            .filter(|h| matches!(h.outcome, Outcome::Healed | Outcome::Failed))
            .collect();
        let healed = attempts
            .iter()
            .filter(|h| h.outcome == Outcome::Healed)
            .count();
        let summary = Summary {
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            errors: count(Status::Error),
            healing_attempts: attempts.len() as u32,
            healing_success_rate: if attempts.is_empty() {
                0.0
            } else {
                healed as f64 / attempts.len() as f64
            },
        };
        Report {
            run_id,
            started,
            duration_ms,
            profiles,
            summary,
            share: None,
        }
    }

    /// Writes report.json, junit.xml and report.html into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).expect("the report serialises");
        write_atomic(&dir.join("report.json"), &json)?;
        write_atomic(&dir.join("junit.xml"), self.junit().as_bytes())?;
        write_atomic(&dir.join("report.html"), self.html().as_bytes())?;
        Ok(())
    }
}

impl Report {
    /// Reads a run's report.json back (`nixtest report show`).
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join("report.json");
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| LoadError::NotAReport { path, source })
    }
}

/// Why a run's report.json could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not a nixtest report ({source}); was it written by another program?",
        path.display()
    )]
    NotAReport {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes a file whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A run's id: its start time to the second and the process id (`20261124-213000-1a2b`), so
/// that runs sort by time and two at once differ.
pub fn run_id(started: std::time::SystemTime) -> String {
    format!(
        "{}-{:04x}",
        humantime::format_rfc3339_seconds(started)
            .to_string()
            .replace(['-', ':'], "")
            .replace('T', "-")
            .trim_end_matches('Z'),
        std::process::id() & 0xffff
    )
}

/// `REPORT_DIR/RUN_ID`.
pub fn run_dir(report_dir: &Path, run_id: &str) -> PathBuf {
    report_dir.join(run_id)
}

/// A unified diff of a configuration file, for the report.
/// Bounded: the diff algorithm stops refining after a deadline (it then gives a coarser but
/// correct diff), and the text is cut at a size.
pub fn config_diff(path: &str, old: &str, new: &str) -> String {
    const DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: usize = 256 << 10;
    let mut diff = similar::TextDiff::configure()
        .timeout(DEADLINE)
        .diff_lines(old, new)
        .unified_diff()
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    if diff.len() > MAX {
        let mut cut = MAX;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        diff.truncate(cut);
        diff.push_str("\n[diff cut at 256 KiB]\n");
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real run's report (disk fault healed), with a refused action added; the tests of
    /// report.html and `nixtest report` read the same file.
    fn sample() -> Report {
        serde_json::from_str(include_str!("../../tests/fixtures/sample-report.json")).unwrap()
    }

    #[test]
    fn json_has_the_contract_fields() {
        let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        let p = &v["profiles"][0];
        assert_eq!(p["status"], "passed");
        assert_eq!(p["phases"][0]["attempts"], 2);
        assert_eq!(p["healing"][0]["outcome"], "refused");
        assert_eq!(p["healing"][1]["outcome"], "healed");
        assert_eq!(p["healing"][1]["plugin"], "disk-fix");
        assert!(p["healing"][1]["guest_line_to_applied_ms"].is_u64());
        assert!(
            p["healing"][1]["config_diff"]
                .as_str()
                .unwrap()
                .contains("-    device = \"/dev/sdz\";")
        );
        assert_eq!(v["summary"]["healing_success_rate"], 1.0);
        assert_eq!(v["summary"]["passed"], 1);
    }

    #[test]
    fn junit_and_html_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        sample().write(dir.path()).unwrap();
        let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
        assert!(junit.contains("disk_partitioning"));
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("&quot;../../etc/fstab&quot;"), "escaped");
        assert!(html.contains("<svg") && !html.contains("<script"));
    }

    #[test]
    fn a_written_report_reads_back_and_reads_well() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample();
        r.write(dir.path()).unwrap();
        let back = Report::load(dir.path()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&r).unwrap()
        );
        let t = back.text();
        assert!(t.contains("1 passed, 0 failed, 0 errors"), "{t}");
        assert!(t.contains("phase disk_partitioning"), "{t}");
        assert!(t.contains("(2 attempts)"), "{t}");
        assert!(
            t.contains("retarget-disko-device by disk-fix (confidence 0.90)"),
            "{t}"
        );
        assert!(t.contains(": healed"), "{t}");
        std::fs::write(dir.path().join("report.json"), "{\"x\": 1}").unwrap();
        let e = Report::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is not a nixtest report"), "{e}");
    }
}
