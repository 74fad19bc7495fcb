//! One profile as the dashboard shows it: built from the run's events as they arrive (a live
//! run) or from report.json and the tail of the events file (a past run), and rendered to
//! HTML by one renderer either way. Everything kept is bounded (a tail of the log, capped
//! lists), and every string from the guest or a plugin is escaped.

use crate::findings::Finding;
use crate::report::{CheckReport, Outcome, ProfileReport, Status, esc};
use crate::run_event::{RunEvent, What};
use nixtest_events::EventKind;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;

/// Lines of the log a page shows (the rest is in the raw file).
pub const TAIL: usize = 200;
/// A shown line is cut here: one line cannot make a page huge.
const LINE_CHARS: usize = 2_000;
/// Findings, healing records, checks and plugin faults kept per profile.
const MAX_ITEMS: usize = 500;
/// A configuration diff is shown up to this size.
const DIFF_CHARS: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct PhaseView {
    pub name: String,
    pub started_ms: u64,
    /// The finished attempts' time (the running one is added when shown).
    pub duration_ms: u64,
    pub attempts: u32,
    /// None while an attempt runs.
    pub status: Option<Status>,
    running_since: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct HealingView {
    pub at_ms: Option<u64>,
    pub category: String,
    pub summary: String,
    pub action: String,
    pub plugin: String,
    pub confidence: f32,
    /// applied (waiting for the retry), healed, failed, refused or skipped.
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub diff: Option<String>,
    pub commands: Vec<String>,
}

impl HealingView {
    fn of(at_ms: u64, finding: &crate::findings::FindingRef, outcome: &'static str) -> Self {
        HealingView {
            at_ms: Some(at_ms),
            category: finding.category.to_string(),
            summary: finding.summary.clone(),
            action: String::new(),
            plugin: String::new(),
            confidence: 0.0,
            outcome,
            reason: None,
            diff: None,
            commands: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TailLine {
    pub n: u32,
    pub kind: EventKind,
    pub text: String,
    /// When the host received it, in ms since the profile started.
    pub at_ms: u64,
}

#[derive(Debug, Clone)]
pub struct ProfileView {
    pub name: String,
    /// None while the profile runs.
    pub status: Option<Status>,
    pub error: Option<String>,
    pub injected_fault: Option<String>,
    /// What it is doing now, in words.
    pub stage: String,
    pub phases: Vec<PhaseView>,
    findings: Vec<Option<Finding>>,
    pub healing: Vec<HealingView>,
    pub checks: Vec<CheckReport>,
    pub faults: Vec<String>,
    pub tail: VecDeque<TailLine>,
    /// Lines that are evidence of a finding.
    pub marked: BTreeSet<u32>,
    /// Lines seen in all.
    pub lines: u64,
    /// The latest event's time, in ms since the profile started.
    pub now_ms: u64,
    /// When the profile started, in ms since the Unix epoch (when known).
    pub epoch_ms: Option<u64>,
    pending: Option<usize>,
}

impl ProfileView {
    pub fn new(name: &str) -> Self {
        ProfileView {
            name: name.to_string(),
            status: None,
            error: None,
            injected_fault: None,
            stage: "starting".into(),
            phases: Vec::new(),
            findings: Vec::new(),
            healing: Vec::new(),
            checks: Vec::new(),
            faults: Vec::new(),
            tail: VecDeque::new(),
            marked: BTreeSet::new(),
            lines: 0,
            now_ms: 0,
            epoch_ms: None,
            pending: None,
        }
    }

    /// A finished profile as its report.json has it; the log tail comes from the events file
    /// ([`ProfileView::take_tail`]).
    pub fn from_report(p: &ProfileReport) -> Self {
        let mut v = ProfileView::new(&p.name);
        v.status = Some(p.status);
        v.error = p.error.clone();
        v.injected_fault = p.injected_fault.map(|f| f.name().to_string());
        v.stage = "finished".into();
        v.now_ms = p.duration_ms;
        v.phases = p
            .phases
            .iter()
            .map(|ph| PhaseView {
                name: ph.name.clone(),
                started_ms: ph.started_ms,
                duration_ms: ph.duration_ms,
                attempts: ph.attempts,
                status: Some(ph.status),
                running_since: None,
            })
            .collect();
        v.findings = p
            .findings
            .iter()
            .take(MAX_ITEMS)
            .cloned()
            .map(Some)
            .collect();
        v.marked = p
            .findings
            .iter()
            .flat_map(|f| f.lines.iter().copied())
            .collect();
        v.healing = p
            .healing
            .iter()
            .take(MAX_ITEMS)
            .map(|h| HealingView {
                at_ms: h.started_ms,
                category: h.finding.category.to_string(),
                summary: h.finding.summary.clone(),
                action: h.action.clone(),
                plugin: h.plugin.clone(),
                confidence: h.confidence.get(),
                outcome: h.outcome.as_str(),
                reason: h.reason.clone(),
                diff: h.config_diff.clone(),
                commands: h.commands.clone(),
            })
            .collect();
        v.checks = p.verification.iter().take(MAX_ITEMS).cloned().collect();
        v.faults = p.plugin_faults.iter().take(MAX_ITEMS).cloned().collect();
        v.lines = p.metrics.get("log_lines").map_or(0, |n| *n as u64);
        v
    }

    /// Keeps the log tail of another view of the same profile (read from its events file).
    pub fn take_tail(&mut self, other: ProfileView) {
        self.tail = other.tail;
        self.lines = self.lines.max(other.lines);
        self.epoch_ms = other.epoch_ms;
    }

    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().flatten()
    }

    /// Takes one event of this profile. Returns what changed, for live pages.
    pub fn apply(&mut self, e: &RunEvent) -> Change {
        self.now_ms = self.now_ms.max(e.at_ms);
        match &e.what {
            What::Line { line } => {
                self.lines += 1;
                if self.tail.len() == TAIL {
                    self.tail.pop_front();
                }
                self.tail.push_back(TailLine {
                    n: line.line,
                    kind: line.kind,
                    text: clip(&line.message, LINE_CHARS),
                    at_ms: e.at_ms,
                });
                return Change::Line;
            }
            What::ProfileStarted {
                injected_fault,
                epoch_ms,
            } => {
                self.injected_fault = injected_fault.map(|f| f.name().to_string());
                self.epoch_ms = *epoch_ms;
            }
            What::VmStarting => self.stage = "starting the VM".into(),
            What::VmReady => self.stage = "VM ready".into(),
            What::PhaseStarted { phase, attempt } => {
                self.stage = format!("phase {phase}, attempt {attempt}");
                let full = self.phases.len() >= MAX_ITEMS;
                match self.phases.iter_mut().find(|p| &p.name == phase) {
                    Some(p) => {
                        p.status = None;
                        p.running_since = Some(e.at_ms);
                    }
                    None if !full => self.phases.push(PhaseView {
                        name: phase.clone(),
                        started_ms: e.at_ms,
                        duration_ms: 0,
                        attempts: 0,
                        status: None,
                        running_since: Some(e.at_ms),
                    }),
                    None => {}
                }
            }
            What::PhaseFinished {
                phase,
                attempt,
                status,
                duration_ms,
                ..
            } => {
                if let Some(p) = self.phases.iter_mut().find(|p| &p.name == phase) {
                    p.attempts = *attempt;
                    p.duration_ms += duration_ms;
                    p.status = Some(*status);
                    p.running_since = None;
                }
            }
            What::Finding { index, finding } => {
                if *index >= MAX_ITEMS {
                    return Change::None;
                }
                if self.findings.len() <= *index {
                    self.findings.resize(index + 1, None);
                }
                self.findings[*index] = Some(finding.clone());
                let new: Vec<u32> = finding
                    .lines
                    .iter()
                    .copied()
                    .filter(|n| self.marked.len() < 10 * MAX_ITEMS && self.marked.insert(*n))
                    .collect();
                return Change::Marked(new);
            }
            What::HealingRefused {
                finding,
                action,
                reason,
            } => {
                let mut h = HealingView::of(e.at_ms, finding, Outcome::Refused.as_str());
                h.action = action.name.clone();
                h.plugin = action.healer.clone();
                h.confidence = action.confidence.get();
                h.reason = Some(reason.clone());
                self.record(h);
            }
            What::HealingSkipped {
                finding,
                detector,
                reason,
            } => {
                let mut h = HealingView::of(e.at_ms, finding, Outcome::Skipped.as_str());
                h.plugin = detector.clone();
                h.reason = Some(reason.clone());
                self.record(h);
            }
            What::HealingApplied {
                finding,
                action,
                config_diff,
                ..
            } => {
                self.stage = format!("healing: {}", action.name);
                let mut h = HealingView::of(e.at_ms, finding, "applied");
                h.action = action.name.clone();
                h.plugin = action.healer.clone();
                h.confidence = action.confidence.get();
                h.diff = config_diff.as_deref().map(|d| clip(d, DIFF_CHARS));
                h.commands = action.commands.clone();
                if self.record(h) {
                    self.pending = Some(self.healing.len() - 1);
                }
            }
            What::HealingResolved { healed } => self.resolve(*healed),
            What::PluginFault { fault, .. } if self.faults.len() < MAX_ITEMS => self
                .faults
                .push(format!("{}: {}", fault.plugin, fault.message)),
            What::Reboot => self.stage = "rebooting into the installed system".into(),
            What::CheckDone {
                check,
                status,
                output,
            } if self.checks.len() < MAX_ITEMS => {
                self.stage = "checks".into();
                self.checks.push(CheckReport {
                    check: check.clone(),
                    status: *status,
                    output: clip(output, LINE_CHARS),
                });
            }
            What::ProfileFinished { status, error } => {
                self.resolve(false);
                self.status = Some(*status);
                self.error = error.clone();
                self.stage = "finished".into();
                for p in &mut self.phases {
                    if p.status.is_none() {
                        p.status = Some(Status::Error);
                    }
                }
            }
            _ => return Change::None,
        }
        Change::Summary
    }

    /// Keeps a healing record unless the list is full; whether it was kept.
    fn record(&mut self, h: HealingView) -> bool {
        let room = self.healing.len() < MAX_ITEMS;
        if room {
            self.healing.push(h);
        }
        room
    }

    fn resolve(&mut self, healed: bool) {
        if let Some(i) = self.pending.take() {
            self.healing[i].outcome = if healed {
                Outcome::Healed.as_str()
            } else {
                Outcome::Failed.as_str()
            };
        }
    }

    /// The profile's status as a page shows it.
    pub fn status_word(&self) -> &'static str {
        self.status.map_or("running", Status::as_str)
    }
}

/// What an event changed in a view.
#[derive(Debug, PartialEq)]
pub enum Change {
    None,
    /// A line was added to the tail.
    Line,
    /// The summary (phases, findings, healing, checks, status) changed.
    Summary,
    /// A finding: the summary changed and these lines are now marked as its evidence.
    Marked(Vec<u32>),
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// A name that can be one component of a path or URL as it is: letters, digits, `-`, `_`,
/// `.`, not starting with a dot. Run ids and profile names the server reads must be one.
pub fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The whole section of profile `i` of run `run`: summary and log tail.
pub fn profile_section(run: &str, i: usize, v: &ProfileView) -> String {
    let mut h = format!(
        "<section class=\"profile\" id=\"p{i}\" data-profile=\"{}\"><div id=\"p{i}-sum\">{}</div>",
        esc(&v.name),
        summary(i, v)
    );
    let _ = write!(
        h,
        "<h3>Log</h3><p class=\"muted\">up to the last {TAIL} of <span id=\"p{i}-count\">{}</span> lines",
        v.lines
    );
    if safe_component(run) && safe_component(&v.name) {
        let _ = write!(
            h,
            " · <a href=\"/runs/{run}/logs/{}.log\">raw log</a>",
            v.name
        );
    }
    let _ = write!(h, "</p><div class=\"log\" id=\"p{i}-log\">");
    for l in &v.tail {
        h.push_str(&line(l, v.epoch_ms, v.marked.contains(&l.n)));
    }
    h.push_str("</div></section>");
    h
}

/// One line of the log tail.
pub fn line(l: &TailLine, epoch_ms: Option<u64>, marked: bool) -> String {
    format!(
        "<div class=\"l k-{}{}\" data-n=\"{}\"{}><span class=\"n\">{}</span>{}</div>",
        l.kind.as_str(),
        if marked { " mark" } else { "" },
        l.n,
        epoch_ms
            .map(|e| format!(" data-h=\"{}\"", e + l.at_ms))
            .unwrap_or_default(),
        l.n,
        esc(&l.text)
    )
}

/// The profile's summary: status, timeline, phases, findings, healing, checks, faults.
pub fn summary(i: usize, v: &ProfileView) -> String {
    let status = v.status_word();
    let mut h = format!(
        "<h2>{} <span class=\"badge {status}\" id=\"p{i}-status\">{status}</span></h2><p class=\"muted\">{}{} · {:.1} s</p>",
        esc(&v.name),
        esc(&v.stage),
        v.injected_fault
            .as_deref()
            .map(|f| format!(" · injected fault: {}", esc(f)))
            .unwrap_or_default(),
        v.now_ms as f64 / 1000.0
    );
    if let Some(e) = &v.error {
        let _ = write!(h, "<p class=\"error\">{}</p>", esc(e));
    }
    h.push_str(&timeline(v));
    if !v.phases.is_empty() {
        h.push_str("<table class=\"phases\"><tr><th>phase</th><th>status</th><th>start</th><th>duration</th><th>attempts</th></tr>");
        for p in &v.phases {
            let s = p.status.map_or("running", Status::as_str);
            let _ = write!(
                h,
                "<tr class=\"phase\" data-phase=\"{}\"><td>{}</td><td class=\"{s}\">{s}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.name),
                p.started_ms as f64 / 1000.0,
                shown_duration(p, v.now_ms) as f64 / 1000.0,
                p.attempts.max(u32::from(p.status.is_none()))
            );
        }
        h.push_str("</table>");
    }
    let findings: Vec<&Finding> = v.findings().collect();
    if !findings.is_empty() {
        h.push_str("<h3>Findings</h3><ul class=\"findings\">");
        for f in findings {
            let _ = write!(
                h,
                "<li class=\"finding sev-{}\" data-category=\"{}\"><b>{}</b> {} <span class=\"muted\">({}, {}, lines {})</span></li>",
                f.severity.as_str(),
                esc(f.category.as_str()),
                esc(f.category.as_str()),
                esc(&f.summary),
                esc(&f.detector),
                f.severity.as_str(),
                esc(&lines_text(&f.lines))
            );
        }
        h.push_str("</ul>");
    }
    if !v.healing.is_empty() {
        h.push_str("<h3>Healing</h3><table class=\"healing\"><tr><th>finding</th><th>action</th><th>plugin</th><th>confidence</th><th>outcome</th></tr>");
        for r in &v.healing {
            let _ = write!(
                h,
                "<tr class=\"heal {o}\" data-outcome=\"{o}\"><td>{}: {}</td><td>{}</td><td>{}</td><td>{:.2}</td><td class=\"{o}\">{o}{}</td></tr>",
                esc(&r.category),
                esc(&r.summary),
                esc(&r.action),
                esc(&r.plugin),
                r.confidence,
                r.reason
                    .as_deref()
                    .map(|x| format!(": {}", esc(x)))
                    .unwrap_or_default(),
                o = r.outcome,
            );
        }
        h.push_str("</table>");
        for r in &v.healing {
            if let Some(d) = &r.diff {
                let _ = write!(
                    h,
                    "<p>config change of {}:</p><pre class=\"diff\">{}</pre>",
                    esc(&r.action),
                    esc(d)
                );
            }
            if !r.commands.is_empty() {
                let _ = write!(
                    h,
                    "<p>commands of {}:</p><pre>{}</pre>",
                    esc(&r.action),
                    esc(&r.commands.join("\n"))
                );
            }
        }
    }
    if !v.checks.is_empty() {
        h.push_str("<h3>Checks after the reboot</h3><table class=\"checks\"><tr><th>check</th><th>status</th></tr>");
        for c in &v.checks {
            let s = c.status.as_str();
            let _ = write!(
                h,
                "<tr class=\"check\"><td>{}</td><td class=\"{s}\">{s}</td></tr>",
                esc(&c.check)
            );
        }
        h.push_str("</table>");
    }
    if !v.faults.is_empty() {
        h.push_str("<h3>Plugin faults</h3><ul class=\"faults\">");
        for f in &v.faults {
            let _ = write!(h, "<li>{}</li>", esc(f));
        }
        h.push_str("</ul>");
    }
    h
}

fn shown_duration(p: &PhaseView, now_ms: u64) -> u64 {
    p.duration_ms + p.running_since.map_or(0, |s| now_ms.saturating_sub(s))
}

fn lines_text(lines: &[u32]) -> String {
    let mut s: Vec<String> = lines.iter().take(8).map(u32::to_string).collect();
    if lines.len() > 8 {
        s.push(format!("… {} in all", lines.len()));
    }
    s.join(", ")
}

/// The phases on a time axis, the running one growing to now, healing actions as dots.
fn timeline(v: &ProfileView) -> String {
    let end = v
        .phases
        .iter()
        .map(|p| p.started_ms + shown_duration(p, v.now_ms))
        .chain(std::iter::once(v.now_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (width, row) = (900.0, 24.0);
    let height = row * (v.phases.len() as f64 + 1.0) + 12.0;
    let scale = |ms: u64| 160.0 + ms as f64 / end * (width - 180.0);
    let mut s = format!(
        "<svg class=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline\">"
    );
    for (i, p) in v.phases.iter().enumerate() {
        let y = 6.0 + i as f64 * row;
        let x = scale(p.started_ms);
        // The bar spans from the first attempt to the end of the last one.
        let span = match p.running_since {
            Some(_) => v.now_ms.saturating_sub(p.started_ms),
            None => p.duration_ms,
        };
        let w = (scale(p.started_ms + span) - x).max(2.0);
        let color = match p.status {
            None => "#1e88e5",
            Some(Status::Passed) => "#4caf50",
            Some(Status::Failed) => "#e53935",
            Some(Status::Error) => "#fb8c00",
        };
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\"><title>{} {}</title></rect>",
            y + 12.0,
            esc(&p.name),
            esc(&p.name),
            p.status.map_or("running", Status::as_str)
        );
    }
    let y = 6.0 + v.phases.len() as f64 * row;
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{}\" font-size=\"12\">healing</text>",
        y + 12.0
    );
    for r in &v.healing {
        let Some(at) = r.at_ms else { continue };
        let color = match r.outcome {
            "healed" => "#1e88e5",
            "applied" => "#90caf9",
            _ => "#9e9e9e",
        };
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{}\" r=\"6\" fill=\"{color}\"><title>{} ({}): {}</title></circle>",
            scale(at),
            y + 8.0,
            esc(&r.action),
            esc(&r.plugin),
            r.outcome
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Category, Severity};
    use nixtest_events::Event;

    fn ev(at_ms: u64, what: What) -> RunEvent {
        RunEvent {
            at_ms,
            profile: "vm".into(),
            what,
        }
    }

    fn line(n: u32, text: &str) -> What {
        What::Line {
            line: Event {
                kind: EventKind::Raw,
                phase: "p".into(),
                message: text.into(),
                line: n,
                fields: Vec::new(),
            },
        }
    }

    #[test]
    fn the_tail_is_bounded_and_findings_mark_their_lines() {
        let mut v = ProfileView::new("vm");
        for n in 1..=(TAIL as u32 + 50) {
            assert_eq!(v.apply(&ev(n as u64, line(n, "x"))), Change::Line);
        }
        assert_eq!(v.tail.len(), TAIL);
        assert_eq!(v.tail.front().unwrap().n, 51);
        assert_eq!(v.lines, TAIL as u64 + 50);
        let f = Finding {
            detector: "d".into(),
            category: Category::DiskDevice,
            severity: Severity::Error,
            permanent: true,
            summary: "no <disk>".into(),
            lines: vec![240, 241],
            details: Vec::new(),
        };
        let c = v.apply(&ev(
            300,
            What::Finding {
                index: 0,
                finding: f,
            },
        ));
        assert_eq!(c, Change::Marked(vec![240, 241]));
        let html = profile_section("run-1", 0, &v);
        assert!(html.contains("no &lt;disk&gt;"), "escaped");
        assert!(html.contains("class=\"l k-raw mark\" data-n=\"240\""));
        assert!(!html.contains("data-n=\"50\""), "out of the tail");
    }

    #[test]
    fn guest_text_is_escaped_and_a_huge_line_is_cut() {
        let mut v = ProfileView::new("vm");
        v.apply(&ev(1, line(1, "<script>alert(1)</script>")));
        v.apply(&ev(2, line(2, &"y".repeat(100_000))));
        let html = profile_section("r", 0, &v);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.len() < 10_000, "{}", html.len());
    }

    #[test]
    fn a_running_phase_grows_and_ends_with_its_status() {
        let mut v = ProfileView::new("vm");
        v.apply(&ev(
            10,
            What::PhaseStarted {
                phase: "disko".into(),
                attempt: 1,
            },
        ));
        v.apply(&ev(5_010, line(1, "working")));
        assert!(
            summary(0, &v)
                .contains("<td class=\"running\">running</td><td>0.0 s</td><td>5.0 s</td>")
        );
        v.apply(&ev(
            6_000,
            What::PhaseFinished {
                phase: "disko".into(),
                attempt: 1,
                status: Status::Passed,
                exit_code: 0,
                duration_ms: 5_990,
            },
        ));
        assert!(summary(0, &v).contains("<td class=\"passed\">passed</td>"));
    }

    #[test]
    fn only_plain_names_are_path_components() {
        for ok in ["20261124-213000-1a2b", "vm", "my_profile.v2"] {
            assert!(safe_component(ok), "{ok}");
        }
        for bad in ["..", ".", "", "a/b", "..%2f", "a\\b", ".hidden", "a b", "é"] {
            assert!(!safe_component(bad), "{bad}");
        }
    }
}
