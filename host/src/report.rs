//! Reports of a run (shared/DESIGN.md, "Reports"): `report.json` (a contract: fields may be
//! added, never renamed), `junit.xml` (one case per profile and phase), `report.html` (one
//! self-contained page), `logs/PROFILE.log` and `events/PROFILE.jsonl`. Every file is written
//! whole or not at all (write, then rename). This module only consumes what the run produced.

use crate::findings::Finding;
use crate::monitor::FaultRecord;
use crate::plugin::ProbeRecord;
use crate::term;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// The infrastructure failed (libvirt, SSH, image).
    Error,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub status: Status,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingRef {
    pub category: String,
    pub summary: String,
    pub lines: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealingRecord {
    /// When it was applied (or refused), in ms since the profile's run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    pub finding: FindingRef,
    pub action: String,
    pub plugin: String,
    pub confidence: f32,
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
    pub injected_fault: Option<String>,
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
    /// Every finding of the run, the root cause first (severity, what causes what, line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

fn yes() -> bool {
    true
}

/// A plugin fault as the report keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginFaultDetail {
    pub plugin: String,
    pub message: String,
    pub line: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl From<&FaultRecord> for PluginFaultDetail {
    fn from(f: &FaultRecord) -> Self {
        PluginFaultDetail {
            plugin: f.plugin.clone(),
            message: f.message.clone(),
            line: f.line,
            output: f.output.clone(),
        }
    }
}

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

    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut report = quick_junit::Report::new(format!("nixtest {}", self.run_id));
        for p in &self.profiles {
            let mut suite = TestSuite::new(p.name.clone());
            for ph in &p.phases {
                let status = match ph.status {
                    Status::Passed => TestCaseStatus::success(),
                    Status::Failed => {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(format!(
                            "phase {} failed after {} attempt(s)",
                            ph.name, ph.attempts
                        ));
                        s
                    }
                    Status::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
                };
                let mut case = TestCase::new(ph.name.clone(), status);
                case.set_classname(format!("{}.phases", p.name));
                case.set_time(std::time::Duration::from_millis(ph.duration_ms));
                suite.add_test_case(case);
            }
            for c in &p.verification {
                let status = if c.status == Status::Passed {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.output.clone());
                    s
                };
                let mut case = TestCase::new(format!("verify {}", c.check), status);
                case.set_classname(format!("{}.verification", p.name));
                suite.add_test_case(case);
            }
            let overall = match p.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(
                        p.error
                            .clone()
                            .unwrap_or_else(|| "the profile failed".into()),
                    );
                    s
                }
                Status::Error => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(p.error.clone().unwrap_or_default());
                    s
                }
            };
            let mut case = TestCase::new(format!("profile {}", p.name), overall);
            case.set_classname(p.name.clone());
            case.set_time(std::time::Duration::from_millis(p.duration_ms));
            suite.add_test_case(case);
            report.add_test_suite(suite);
        }
        report.to_string().expect("JUnit serialises")
    }

    /// One page, no scripts or external resources: a timeline of phases and healings per
    /// profile, the healing attempts, and errors by category.
    pub fn html(&self) -> String {
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str(&format!("<title>nixtest {}</title>", esc(&self.run_id)));
        h.push_str("<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.passed{color:#17702f}.failed{color:#b3261e}.error{color:#8a5a00}.healed{color:#17702f}.refused,.skipped{color:#666}svg{background:#fafafa;border:1px solid #ddd}pre{background:#f4f4f4;padding:.5em;overflow:auto;max-height:20em}</style></head><body>");
        h.push_str(&format!(
            "<h1>nixtest run {}</h1><p>started {} · {:.1} s · {} passed, {} failed, {} errors · {} healing attempts, success rate {:.0}%</p>",
            esc(&self.run_id),
            esc(&self.started),
            self.duration_ms as f64 / 1000.0,
            self.summary.passed,
            self.summary.failed,
            self.summary.errors,
            self.summary.healing_attempts,
            self.summary.healing_success_rate * 100.0
        ));
        for p in &self.profiles {
            let status = format!("{:?}", p.status).to_lowercase();
            h.push_str(&format!(
                "<h2>{} <span class=\"{status}\">{status}</span></h2>",
                esc(&p.name)
            ));
            if let Some(f) = &p.injected_fault {
                h.push_str(&format!("<p>injected fault: <b>{}</b></p>", esc(f)));
            }
            if let Some(e) = &p.error {
                h.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
            }
            h.push_str(&timeline(p));
            h.push_str("<table><tr><th>phase</th><th>status</th><th>start</th><th>duration</th><th>attempts</th></tr>");
            for ph in &p.phases {
                let s = format!("{:?}", ph.status).to_lowercase();
                h.push_str(&format!(
                    "<tr><td>{}</td><td class=\"{s}\">{s}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td></tr>",
                    esc(&ph.name),
                    ph.started_ms as f64 / 1000.0,
                    ph.duration_ms as f64 / 1000.0,
                    ph.attempts
                ));
            }
            h.push_str("</table>");
            if !p.healing.is_empty() {
                h.push_str("<h3>Healing</h3><table><tr><th>finding</th><th>action</th><th>plugin</th><th>confidence</th><th>outcome</th><th>time</th></tr>");
                for r in &p.healing {
                    let o = format!("{:?}", r.outcome).to_lowercase();
                    h.push_str(&format!(
                        "<tr><td>{}: {} (lines {:?})</td><td>{}</td><td>{}</td><td>{:.2}</td><td class=\"{o}\">{o}{}</td><td>{:.1} s</td></tr>",
                        esc(&r.finding.category),
                        esc(&r.finding.summary),
                        r.finding.lines,
                        esc(&r.action),
                        esc(&r.plugin),
                        r.confidence,
                        r.reason.as_ref().map(|x| format!(": {}", esc(x))).unwrap_or_default(),
                        r.duration_ms as f64 / 1000.0
                    ));
                }
                h.push_str("</table>");
                for r in p.healing.iter().filter(|r| r.config_diff.is_some()) {
                    h.push_str(&format!(
                        "<p>config change of {}:</p><pre>{}</pre>",
                        esc(&r.action),
                        esc(r.config_diff.as_deref().unwrap_or(""))
                    ));
                }
            }
            h.push_str("<h3>Errors by category</h3>");
            if p.errors.is_empty() {
                h.push_str("<p>none</p>");
            } else {
                h.push_str("<table><tr><th>category</th><th>count</th></tr>");
                for (c, n) in &p.errors {
                    h.push_str(&format!("<tr><td>{}</td><td>{n}</td></tr>", esc(c)));
                }
                h.push_str("</table>");
            }
            if !p.verification.is_empty() {
                h.push_str("<h3>Verification after the reboot</h3><table><tr><th>check</th><th>status</th></tr>");
                for c in &p.verification {
                    let s = format!("{:?}", c.status).to_lowercase();
                    h.push_str(&format!(
                        "<tr><td>{}</td><td class=\"{s}\">{s}</td></tr>",
                        esc(&c.check)
                    ));
                }
                h.push_str("</table>");
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// Phases as bars on a time axis, healing attempts as marks under them.
fn timeline(p: &ProfileReport) -> String {
    let end = p
        .phases
        .iter()
        .map(|ph| ph.started_ms + ph.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let width = 900.0;
    let row = 26.0;
    let height = row * (p.phases.len() as f64 + 1.0) + 20.0;
    let mut s = format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of {}\">",
        esc(&p.name)
    );
    for (i, ph) in p.phases.iter().enumerate() {
        let x = 160.0 + ph.started_ms as f64 / end * (width - 180.0);
        let w = (ph.duration_ms as f64 / end * (width - 180.0)).max(2.0);
        let y = 10.0 + i as f64 * row;
        let color = match ph.status {
            Status::Passed => "#4caf50",
            Status::Failed => "#e53935",
            Status::Error => "#fb8c00",
        };
        s.push_str(&format!(
            "<text x=\"4\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"{color}\"><title>{} {:.1} s, {} attempt(s)</title></rect>",
            y + 13.0,
            esc(&ph.name),
            esc(&ph.name),
            ph.duration_ms as f64 / 1000.0,
            ph.attempts
        ));
    }
    let y = 10.0 + p.phases.len() as f64 * row;
    s.push_str(&format!(
        "<text x=\"4\" y=\"{}\" font-size=\"12\">healing</text>",
        y + 13.0
    ));
    for (i, r) in p.healing.iter().enumerate() {
        // At its time; reports from before healing times were kept get evenly spaced marks.
        let at = match r.started_ms {
            Some(t) => (t as f64 / end).min(1.0),
            None => (i + 1) as f64 / (p.healing.len() as f64 + 1.0),
        };
        let x = 160.0 + at * (width - 180.0);
        let color = if r.outcome == Outcome::Healed {
            "#1e88e5"
        } else {
            "#9e9e9e"
        };
        s.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{}\" r=\"7\" fill=\"{color}\"><title>{} ({}, {:.2}): {:?}</title></circle>",
            y + 9.0,
            esc(&r.action),
            esc(&r.plugin),
            r.confidence,
            r.outcome
        ));
    }
    s.push_str("</svg>");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Report {
    /// Reads a run's report.json back (`nixtest report show`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("report.json");
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not a nixtest report ({e}); was it written by another program?",
                path.display()
            )
        })
    }

    /// The report for people, in the terminal.
    pub fn text(&self) -> String {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        let mut t = format!(
            "run {} started {} took {}: {} passed, {} failed, {} errors",
            term::line(&self.run_id),
            term::line(&self.started),
            secs(self.duration_ms),
            self.summary.passed,
            self.summary.failed,
            self.summary.errors
        );
        if self.summary.healing_attempts > 0 {
            t.push_str(&format!(
                "; healing {} of {} attempts ({:.0} %)",
                (self.summary.healing_success_rate * self.summary.healing_attempts as f64).round(),
                self.summary.healing_attempts,
                self.summary.healing_success_rate * 100.0
            ));
        }
        t.push('\n');
        for p in &self.profiles {
            t.push_str(&format!(
                "\n{} {}: {:?} in {}{}\n",
                status_icon(p.status),
                term::line(&p.name),
                p.status,
                secs(p.duration_ms),
                p.injected_fault
                    .as_ref()
                    .map(|f| format!(" (fault injected: {f})"))
                    .unwrap_or_default()
            ));
            if let Some(e) = &p.error {
                t.push_str(&format!("  error: {}\n", term::line(e)));
            }
            for ph in &p.phases {
                let tries = if ph.attempts > 1 {
                    format!(" ({} attempts)", ph.attempts)
                } else {
                    String::new()
                };
                t.push_str(&format!(
                    "  {} phase {:<22} {:>8}{tries}\n",
                    status_icon(ph.status),
                    term::line(&ph.name),
                    secs(ph.duration_ms)
                ));
            }
            if !p.errors.is_empty() {
                let errors: Vec<String> = p
                    .errors
                    .iter()
                    .map(|(c, n)| format!("{} {n}", term::line(c)))
                    .collect();
                t.push_str(&format!("  errors: {}\n", errors.join(", ")));
            }
            for h in &p.healing {
                t.push_str(&format!(
                    "  🔧 {} by {} (confidence {:.2}) for {} \"{}\": {:?}{}\n",
                    term::line(&h.action),
                    term::line(&h.plugin),
                    h.confidence,
                    term::line(&h.finding.category),
                    term::line(&h.finding.summary),
                    h.outcome,
                    h.reason
                        .as_ref()
                        .map(|r| format!(" ({})", term::line(r)))
                        .unwrap_or_default()
                ));
            }
            for c in &p.verification {
                t.push_str(&format!(
                    "  {} check {}\n",
                    status_icon(c.status),
                    term::line(&c.check)
                ));
            }
            for (m, v) in &p.metrics {
                t.push_str(&format!("  📈 {} = {v}\n", term::line(m)));
            }
            for f in &p.plugin_faults {
                t.push_str(&format!("  ⛔ plugin fault: {}\n", term::line(f)));
            }
            if !p.detection_complete {
                t.push_str("  ⚠️  detection incomplete: a detector was disabled during the run\n");
            }
            for pr in &p.probes {
                t.push_str(&format!(
                    "  🔎 probe by {}: {} ({}, {} ms)\n",
                    term::line(&pr.plugin),
                    term::line(&pr.command),
                    match &pr.refused {
                        Some(why) => format!("refused: {}", term::line(why)),
                        None => format!("exit {}", pr.status.map_or("-".into(), |s| s.to_string())),
                    },
                    pr.duration_ms
                ));
            }
        }
        t
    }
}

fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Passed => "✅",
        Status::Failed => "❌",
        Status::Error => "⛔",
    }
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
        serde_json::from_str(include_str!("../tests/fixtures/sample-report.json")).unwrap()
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
        assert!(t.contains("Healed"), "{t}");
        std::fs::write(dir.path().join("report.json"), "{\"x\": 1}").unwrap();
        let e = Report::load(dir.path()).unwrap_err();
        assert!(e.contains("is not a nixtest report"), "{e}");
    }
}
