//! What users read, pinned: the live display, `report show`, JUnit, HTML and `replay`, each
//! rendered from one list of events of a healed run (or a replay's result). A change in what
//! users see shows as a snapshot diff (`cargo insta review`). The report builder and the
//! healing history are checked against the same events.

use nixtest::actions::{Confidence, ConfigChange, HealingAction};
use nixtest::display::Console;
use nixtest::fault::Fault;
use nixtest::findings::{Finding, FindingRef, Severity};
use nixtest::history::{History, HistoryRecorder};
use nixtest::monitor::{FaultRecord, PluginFaultDetail};
use nixtest::plugin::PluginFault;
use nixtest::replay::ReplayReport;
use nixtest::report::{Outcome, Report, ReportBuilder, Status};
use nixtest::run_event::{Consumer, GiveUp, RunEvent, Timing, What};
use nixtest_events::Ingest;
use std::io::Write;
use std::sync::{Arc, Mutex};

fn finding() -> Finding {
    Finding {
        details: Vec::new(),
        detector: "disk-fix".into(),
        category: "disk-device".into(),
        severity: Severity::Error,
        permanent: true,
        summary: "disko names a disk the VM does not have: /dev/sdz".into(),
        lines: vec![3],
    }
}

fn retarget() -> HealingAction {
    HealingAction {
        healer: "disk-fix".into(),
        finding: 0,
        name: "retarget-disko-device".into(),
        description: "point disko at /dev/vdb, the VM's empty disk".into(),
        confidence: Confidence::new(0.9),
        commands: Vec::new(),
        config_changes: vec![ConfigChange {
            path: "disko-config.nix".into(),
            content: "device = \"/dev/vdb\";\n".into(),
        }],
        retry_phase: Some("disk_partitioning".into()),
    }
}

/// A healed `--inject disk` run of the vm profile, as the orchestrator reports it.
fn healed_run() -> Vec<RunEvent> {
    let mut whats = vec![
        (
            0,
            What::ProfileStarted {
                injected_fault: Some(Fault::Disk),
                epoch_ms: None,
            },
        ),
        (5, What::VmStarting),
        (20_000, What::VmReady),
        (
            20_000,
            What::Metric {
                name: "boot_to_ssh_ms".into(),
                value: 20_000.0,
            },
        ),
        (
            20_100,
            What::PhaseStarted {
                phase: "disk_partitioning".into(),
                attempt: 1,
            },
        ),
    ];
    let log = "::PHASE::disk_partitioning\n+ sgdisk --zap-all /dev/sdz\nError: /dev/sdz: No such file or directory\n::ERROR::disk_partitioning failed with exit code 1\n";
    for line in Ingest::parse_all(log.as_bytes()) {
        whats.push((20_500, What::Line { line }));
    }
    whats.extend([
        (20_510, What::Finding {
            index: 0,
            finding: finding(),
        }),
        (21_600, What::PhaseFinished {
            phase: "disk_partitioning".into(),
            attempt: 1,
            status: Status::Failed,
            exit_code: 1,
            duration_ms: 1500,
        }),
        (21_700, What::HealingRefused {
            finding: FindingRef::from(&finding()),
            action: HealingAction {
                name: "rewrite-passwd".into(),
                config_changes: vec![ConfigChange {
                    path: "../../etc/passwd".into(),
                    content: String::new(),
                }],
                ..retarget()
            },
            reason: "\"../../etc/passwd\" leaves the configuration copy".into(),
        }),
        (21_800, What::HealingApplied {
            finding: FindingRef::from(&finding()),
            action: retarget(),
            config_diff: Some(
                "--- a/disko-config.nix\n+++ b/disko-config.nix\n-device = \"/dev/sdz\";\n+device = \"/dev/vdb\";\n"
                    .into(),
            ),
            timing: Timing {
                detected_ms: Some(10),
                applied_ms: Some(1300),
                guest_line_to_finding_ms: Some(45),
                guest_line_to_applied_ms: Some(1335),
                guest_clock_error_ms: Some(0.4),
                ..Timing::default()
            },
        }),
        (21_900, What::PhaseStarted {
            phase: "disk_partitioning".into(),
            attempt: 2,
        }),
        (23_900, What::PhaseFinished {
            phase: "disk_partitioning".into(),
            attempt: 2,
            status: Status::Passed,
            exit_code: 0,
            duration_ms: 2000,
        }),
        (23_900, What::HealingResolved { healed: true }),
        (23_950, What::PhaseStarted {
            phase: "install".into(),
            attempt: 1,
        }),
    ]);
    for line in Ingest::parse_all(b"::PHASE::install\n::PROGRESS::copying::path 3 of 40\n::METRIC::closure_mb::212\n::SUCCESS::install done\n") {
        whats.push((30_000, What::Line { line }));
    }
    whats.extend([
        (
            40_000,
            What::PhaseFinished {
                phase: "install".into(),
                attempt: 1,
                status: Status::Passed,
                exit_code: 0,
                duration_ms: 16_050,
            },
        ),
        (
            40_010,
            What::DetectionDone {
                complete: true,
                latencies_ms: vec![10],
            },
        ),
        (40_020, What::Reboot),
        (
            55_000,
            What::CheckDone {
                check: "hostname".into(),
                status: Status::Passed,
                output: String::new(),
            },
        ),
        (
            55_100,
            What::CheckDone {
                check: "sshd-active".into(),
                status: Status::Passed,
                output: "412".into(),
            },
        ),
        (
            55_100,
            What::Metric {
                name: "reboot_to_ssh_ms".into(),
                value: 15_000.0,
            },
        ),
        (
            55_200,
            What::ProfileFinished {
                status: Status::Passed,
                error: None,
            },
        ),
    ]);
    whats
        .into_iter()
        .map(|(at_ms, what)| RunEvent {
            at_ms,
            profile: "vm".into(),
            what,
        })
        .collect()
}

/// A failed run: a detector faulted, nothing explained the failure.
fn failed_run() -> Vec<RunEvent> {
    let fault = FaultRecord::new("hostile", PluginFault::Timeout(100), 2, String::new());
    [
        What::ProfileStarted {
            injected_fault: None,
            epoch_ms: None,
        },
        What::VmStarting,
        What::PluginFault {
            fault: PluginFaultDetail::from(&fault),
            detector: true,
        },
        What::PhaseStarted {
            phase: "install".into(),
            attempt: 1,
        },
        What::PhaseFinished {
            phase: "install".into(),
            attempt: 1,
            status: Status::Failed,
            exit_code: 100,
            duration_ms: 700,
        },
        What::GaveUp {
            phase: "install".into(),
            why: GiveUp::Unexplained { exit_code: 100 },
        },
        What::DetectionDone {
            complete: false,
            latencies_ms: Vec::new(),
        },
        What::ProfileFinished {
            status: Status::Failed,
            error: None,
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, what)| RunEvent {
        at_ms: i as u64 * 100,
        profile: "server".into(),
        what,
    })
    .collect()
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn display(events: &[RunEvent], verbose: bool) -> String {
    let buf = Buffer::default();
    let mut console = Console::plain(verbose, Box::new(buf.clone()));
    for e in events {
        console.consume(e);
    }
    drop(console);
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

fn report() -> Report {
    let mut vm = ReportBuilder::new("vm");
    for e in healed_run() {
        vm.consume(&e);
    }
    let mut server = ReportBuilder::new("server");
    for e in failed_run() {
        server.consume(&e);
    }
    Report::new(
        "20261124-120000-abcd".into(),
        "2026-11-24T12:00:00Z".into(),
        60_000,
        vec![vm.finish(), server.finish()],
    )
}

#[test]
fn the_live_display() {
    let mut events = healed_run();
    events.extend(failed_run());
    insta::assert_snapshot!(display(&events, false));
}

#[test]
fn the_report_model_follows_the_events() {
    let r = report();
    let vm = &r.profiles[0];
    assert_eq!(vm.status, Status::Passed);
    assert_eq!(vm.injected_fault, Some(Fault::Disk));
    assert_eq!(vm.duration_ms, 55_200);
    let phases: Vec<(&str, u32, u64, Status)> = vm
        .phases
        .iter()
        .map(|p| (p.name.as_str(), p.attempts, p.duration_ms, p.status))
        .collect();
    assert_eq!(
        phases,
        [
            ("disk_partitioning", 2, 3500, Status::Passed),
            ("install", 1, 16_050, Status::Passed)
        ]
    );
    let outcomes: Vec<Outcome> = vm.healing.iter().map(|h| h.outcome).collect();
    assert_eq!(outcomes, [Outcome::Refused, Outcome::Healed]);
    assert_eq!(vm.healing[1].duration_ms, 2100);
    assert_eq!(vm.healing[1].guest_line_to_finding_ms, Some(45));
    assert_eq!(vm.errors["disk-device"], 1);
    assert_eq!(vm.metrics["closure_mb"], 212.0);
    assert_eq!(vm.metrics["boot_to_ssh_ms"], 20_000.0);
    assert_eq!(vm.verification.len(), 2);
    assert_eq!(vm.findings, [finding()]);
    assert_eq!(vm.detection_latency_ms, [10]);
    let server = &r.profiles[1];
    assert!(!server.detection_complete);
    assert_eq!(server.plugin_faults.len(), 1);
    assert_eq!(r.summary.healing_attempts, 1);
    assert_eq!(r.summary.healing_success_rate, 1.0);
    // report.json names statuses, outcomes and the fault by their serde names.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["profiles"][0]["injected_fault"], "disk");
    assert_eq!(json["profiles"][0]["healing"][1]["outcome"], "healed");
    assert_eq!(json["profiles"][1]["status"], "failed");
}

#[test]
fn report_show() {
    insta::assert_snapshot!(report().text());
}

#[test]
fn junit() {
    insta::assert_snapshot!(report().junit());
}

#[test]
fn html() {
    insta::assert_snapshot!(report().html());
}

#[test]
fn replay() {
    let r = ReplayReport {
        findings: vec![
            finding(),
            Finding {
                details: Vec::new(),
                detector: "network-fix".into(),
                category: "network".into(),
                severity: Severity::Warning,
                permanent: false,
                summary: "cache.nixos.org timed out; Nix retries".into(),
                lines: (10..20).collect(),
            },
        ],
        actions: vec![retarget()],
        faults: vec![FaultRecord::new(
            "hostile",
            PluginFault::Timeout(100),
            7,
            "looping\n".into(),
        )],
        probes: Vec::new(),
        plugin_output: Default::default(),
        lines: 42,
        parsed_lines: 42,
        failures: Vec::new(),
    };
    insta::assert_snapshot!(r.text(true));
}

#[test]
fn the_history_learns_from_applied_actions() {
    let data = tempfile::tempdir().unwrap();
    let history = Mutex::new(History::load(data.path()));
    let mut recorder = HistoryRecorder::new(&history);
    for e in healed_run() {
        recorder.consume(&e);
    }
    drop(recorder);
    let tally = history
        .lock()
        .unwrap()
        .tally("disk-fix", "retarget-disko-device");
    assert_eq!((tally.applied, tally.healed), (1, 1));
    // Saved when the profile finished: a new load sees it.
    let again = History::load(data.path());
    assert_eq!(again.tally("disk-fix", "retarget-disko-device").healed, 1);
}
