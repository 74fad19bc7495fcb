//! What happens in a run, as typed events. The orchestrator only produces them; the terminal
//! display, the report builder, the events file and the healing history consume them (each a
//! [`Consumer`] in its own module). A new output is a new consumer: the orchestrator does not
//! change. `events/PROFILE.jsonl` holds these events, one per line, as they happened.

use crate::actions::HealingAction;
use crate::fault::Fault;
use crate::findings::{Finding, FindingRef};
use crate::monitor::PluginFaultDetail;
use crate::plugin::ProbeRecord;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One thing that happened, when, and to which profile (empty for the run as a whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Milliseconds since the profile's run started (since the run started for run events).
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    #[serde(flatten)]
    pub what: What,
}

/// How a phase, a check, a profile or a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// The infrastructure failed (libvirt, SSH, image).
    Error,
}

impl Status {
    /// The name report.json uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the healing of a failed phase stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum GiveUp {
    /// The phase failed and no finding of this attempt explains it.
    Unexplained { exit_code: i32 },
    /// Healing is off: the finding is recorded as skipped.
    HealingDisabled,
    /// Every allowed attempt was used.
    AttemptsUsed { attempts: u32 },
    /// No healer proposed an action that could be applied.
    NoAction { summary: String },
}

/// How long detection and healing took, from the decisive line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// From the line reaching the host to the finding, and to the action applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
    /// The same two from the line being printed in the guest (its clock paired with ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_line_to_finding_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_line_to_applied_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_clock_error_ms: Option<f64>,
    /// From the first failing line printed to the first finding citing it (a temporary one
    /// when the detector waits for more evidence, such as Nix's retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_line_to_first_finding_ms: Option<u64>,
    /// The line that decided the finding (its last evidence when it was made), and the times
    /// from its printing to the finding and to the action applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisive_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_decisive_to_finding_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_decisive_to_applied_ms: Option<u64>,
    /// The phase was stopped at the finding instead of left to end on its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    ProfileStarted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        injected_fault: Option<Fault>,
        /// The wall clock at the start, in ms since the Unix epoch: `at_ms` of later events
        /// counts from here (for consumers in other processes, such as a browser).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch_ms: Option<u64>,
    },
    VmStarting,
    VmReady,
    PhaseStarted {
        phase: String,
        attempt: u32,
    },
    /// A line of the install's output.
    Line {
        line: nixtest_events::Event,
    },
    /// A new finding, or more evidence for one (same `index`).
    Finding {
        index: usize,
        finding: Finding,
    },
    HealingRefused {
        finding: FindingRef,
        action: HealingAction,
        reason: String,
    },
    HealingSkipped {
        finding: FindingRef,
        detector: String,
        reason: String,
    },
    HealingApplied {
        finding: FindingRef,
        action: HealingAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_diff: Option<String>,
        timing: Timing,
    },
    /// A command of the applied action exited non-zero (the retry decides whether it healed).
    CommandFailed {
        command: String,
        status: i32,
        stderr: String,
    },
    /// The retry after the last applied action ended: healed or not.
    HealingResolved {
        healed: bool,
    },
    PhaseFinished {
        phase: String,
        attempt: u32,
        status: Status,
        exit_code: i32,
        duration_ms: u64,
    },
    /// A phase attempt failed: its root cause (the first finding of the attempt in root-cause
    /// order), or none when nothing explains it.
    Failure {
        phase: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finding: Option<FindingRef>,
    },
    GaveUp {
        phase: String,
        #[serde(flatten)]
        why: GiveUp,
    },
    Probe {
        probe: ProbeRecord,
    },
    PluginFault {
        fault: PluginFaultDetail,
        /// A detector's fault leaves detection incomplete.
        detector: bool,
    },
    PluginOutput {
        plugin: String,
        text: String,
    },
    Metric {
        name: String,
        value: f64,
    },
    /// Detection ended: the time from each finding's first line to the finding.
    DetectionDone {
        complete: bool,
        latencies_ms: Vec<u64>,
    },
    Reboot,
    CheckDone {
        check: String,
        status: Status,
        output: String,
    },
    ProfileFinished {
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Something that takes the run's events as they happen.
pub trait Consumer {
    fn consume(&mut self, event: &RunEvent);
}

/// Every consumer of a profile's run, in order.
#[derive(Default)]
pub struct Fanout<'a>(pub Vec<&'a mut dyn Consumer>);

impl Consumer for Fanout<'_> {
    fn consume(&mut self, event: &RunEvent) {
        for c in &mut self.0 {
            c.consume(event);
        }
    }
}

/// Keeps every event (tests, and the events of a short command).
impl Consumer for Vec<RunEvent> {
    fn consume(&mut self, event: &RunEvent) {
        self.push(event.clone());
    }
}

/// Stamps events with their profile and time and hands them on.
pub struct Emitter<'a> {
    profile: String,
    start: Instant,
    out: &'a mut dyn Consumer,
}

impl<'a> Emitter<'a> {
    pub fn new(profile: &str, start: Instant, out: &'a mut dyn Consumer) -> Self {
        Emitter {
            profile: profile.to_string(),
            start,
            out,
        }
    }

    pub fn emit(&mut self, what: What) {
        let event = RunEvent {
            at_ms: self.elapsed_ms(),
            profile: self.profile.clone(),
            what,
        };
        self.out.consume(&event);
    }

    /// The same emitter for a shorter while (a part of the run that emits on its own).
    pub fn reborrow(&mut self) -> Emitter<'_> {
        Emitter {
            profile: self.profile.clone(),
            start: self.start,
            out: &mut *self.out,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_by_name_and_read_back() {
        let e = RunEvent {
            at_ms: 12,
            profile: "vm".into(),
            what: What::GaveUp {
                phase: "disko".into(),
                why: GiveUp::AttemptsUsed { attempts: 3 },
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"at_ms":12,"profile":"vm","event":"gave_up","phase":"disko","reason":"attempts_used","attempts":3}"#
        );
        assert_eq!(serde_json::from_str::<RunEvent>(&json).unwrap(), e);
        let f = RunEvent {
            at_ms: 0,
            profile: "vm".into(),
            what: What::PhaseFinished {
                phase: "p".into(),
                attempt: 1,
                status: Status::Failed,
                exit_code: 1,
                duration_ms: 5,
            },
        };
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""status":"failed""#), "{json}");
        assert_eq!(serde_json::from_str::<RunEvent>(&json).unwrap(), f);
    }
}
