//! Builds a profile's report from its run's events as they arrive (the report's model is
//! this module's; the orchestrator knows none of its fields).

use super::{CheckReport, HealingRecord, Outcome, PhaseReport, ProfileReport, Status};
use crate::findings::{Finding, FindingRef, root_cause_order};
use crate::run_event::{Consumer, RunEvent, What};
use nixtest_events::EventKind;
use std::collections::BTreeMap;

pub struct ReportBuilder {
    report: ProfileReport,
    /// Every finding by its index in the run, as last reported.
    findings: Vec<Option<Finding>>,
    /// The applied action waiting for its retry's verdict (index in `healing`).
    pending: Option<usize>,
}

impl ReportBuilder {
    pub fn new(profile: &str) -> Self {
        ReportBuilder {
            report: ProfileReport {
                name: profile.to_string(),
                status: Status::Error,
                injected_fault: None,
                phases: Vec::new(),
                errors: BTreeMap::new(),
                healing: Vec::new(),
                verification: Vec::new(),
                metrics: BTreeMap::new(),
                detection_latency_ms: Vec::new(),
                error: None,
                duration_ms: 0,
                plugin_faults: Vec::new(),
                plugin_fault_details: Vec::new(),
                detection_complete: true,
                probes: Vec::new(),
                plugin_output: BTreeMap::new(),
                failures: Vec::new(),
                findings: Vec::new(),
            },
            findings: Vec::new(),
            pending: None,
        }
    }

    /// The report as the events so far make it.
    pub fn finish(self) -> ProfileReport {
        self.report
    }

    fn record(&mut self, at: u64, finding: &FindingRef, plugin: &str, confidence: f32) -> usize {
        self.report.healing.push(HealingRecord {
            started_ms: Some(at),
            finding: finding.clone(),
            action: String::new(),
            plugin: plugin.to_string(),
            confidence: crate::actions::Confidence::new(confidence),
            outcome: Outcome::Failed,
            duration_ms: 0,
            config_diff: None,
            commands: Vec::new(),
            reason: None,
            detected_ms: None,
            applied_ms: None,
            guest_line_to_finding_ms: None,
            guest_line_to_applied_ms: None,
            guest_clock_error_ms: None,
            guest_line_to_first_finding_ms: None,
            decisive_line: None,
            guest_decisive_to_finding_ms: None,
            guest_decisive_to_applied_ms: None,
            stopped_early: false,
        });
        self.report.healing.len() - 1
    }

    fn resolve(&mut self, at: u64, healed: bool) {
        if let Some(i) = self.pending.take() {
            let r = &mut self.report.healing[i];
            r.outcome = if healed {
                Outcome::Healed
            } else {
                Outcome::Failed
            };
            r.duration_ms = at.saturating_sub(r.started_ms.unwrap_or(at));
        }
    }
}

impl Consumer for ReportBuilder {
    fn consume(&mut self, e: &RunEvent) {
        let at = e.at_ms;
        let r = &mut self.report;
        match &e.what {
            What::ProfileStarted { injected_fault, .. } => r.injected_fault = *injected_fault,
            What::Line { line } if line.kind == EventKind::Metric => {
                if let (Some(n), Some(v)) = (line.field("name"), line.field("value"))
                    && let Ok(v) = v.parse()
                {
                    r.metrics.insert(n.to_string(), v);
                }
            }
            What::Finding { index, finding } => {
                if self.findings.len() <= *index {
                    self.findings.resize(index + 1, None);
                }
                self.findings[*index] = Some(finding.clone());
            }
            What::PhaseStarted { phase, .. } => {
                if !r.phases.iter().any(|p| &p.name == phase) {
                    r.phases.push(PhaseReport {
                        name: phase.clone(),
                        status: Status::Failed,
                        started_ms: at,
                        duration_ms: 0,
                        attempts: 0,
                    });
                }
            }
            What::PhaseFinished {
                phase,
                attempt,
                status,
                duration_ms,
                ..
            } => {
                if let Some(p) = r.phases.iter_mut().find(|p| &p.name == phase) {
                    p.attempts = *attempt;
                    // The phase's own time: its attempts, not the healing between them.
                    p.duration_ms += duration_ms;
                    p.status = *status;
                }
            }
            What::HealingRefused {
                finding,
                action,
                reason,
            } => {
                let i = self.record(at, finding, &action.healer, action.confidence.get());
                let h = &mut self.report.healing[i];
                h.action = action.name.clone();
                h.outcome = Outcome::Refused;
                h.reason = Some(reason.clone());
            }
            What::HealingSkipped {
                finding,
                detector,
                reason,
            } => {
                let i = self.record(at, finding, detector, 0.0);
                let h = &mut self.report.healing[i];
                h.outcome = Outcome::Skipped;
                h.reason = Some(reason.clone());
            }
            What::HealingApplied {
                finding,
                action,
                config_diff,
                timing,
            } => {
                let i = self.record(at, finding, &action.healer, action.confidence.get());
                let h = &mut self.report.healing[i];
                h.action = action.name.clone();
                h.config_diff = config_diff.clone();
                h.commands = action.commands.clone();
                h.detected_ms = timing.detected_ms;
                h.applied_ms = timing.applied_ms;
                h.guest_line_to_finding_ms = timing.guest_line_to_finding_ms;
                h.guest_line_to_applied_ms = timing.guest_line_to_applied_ms;
                h.guest_clock_error_ms = timing.guest_clock_error_ms;
                h.guest_line_to_first_finding_ms = timing.guest_line_to_first_finding_ms;
                h.decisive_line = timing.decisive_line;
                h.guest_decisive_to_finding_ms = timing.guest_decisive_to_finding_ms;
                h.guest_decisive_to_applied_ms = timing.guest_decisive_to_applied_ms;
                h.stopped_early = timing.stopped_early;
                self.pending = Some(i);
            }
            What::HealingResolved { healed } => self.resolve(at, *healed),
            What::Probe { probe } => r.probes.push(probe.clone()),
            What::PluginFault { fault, .. } => {
                r.plugin_faults.push(fault.message.clone());
                r.plugin_fault_details.push(fault.clone());
            }
            What::PluginOutput { plugin, text } => {
                r.plugin_output.insert(plugin.clone(), text.clone());
            }
            What::Metric { name, value } => {
                r.metrics.insert(name.clone(), *value);
            }
            What::DetectionDone {
                complete,
                latencies_ms,
            } => {
                r.detection_complete = *complete;
                r.detection_latency_ms = latencies_ms.clone();
            }
            What::CheckDone {
                check,
                status,
                output,
            } => r.verification.push(CheckReport {
                check: check.clone(),
                status: *status,
                output: output.clone(),
            }),
            What::ProfileFinished { status, error } => {
                r.status = *status;
                r.error = error.clone();
                r.duration_ms = at;
                // An action whose retry never ended did not heal.
                self.resolve(at, false);
                let findings: Vec<Finding> = self.findings.iter().flatten().cloned().collect();
                let r = &mut self.report;
                r.errors.clear();
                for f in findings.iter().filter(|f| f.severity.is_failure()) {
                    *r.errors.entry(f.category.to_string()).or_default() += 1;
                }
                r.findings = root_cause_order(&findings)
                    .into_iter()
                    .map(|i| findings[i].clone())
                    .collect();
            }
            What::VmStarting
            | What::VmReady
            | What::Line { .. }
            | What::CommandFailed { .. }
            | What::GaveUp { .. }
            | What::Failure { .. }
            | What::Reboot => {}
        }
    }
}
