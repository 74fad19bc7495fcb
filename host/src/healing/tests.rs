//! The healing loop against a scripted guest and scripted healers: every outcome, no VM.

use super::*;
use crate::actions::{Confidence, ConfigChange};
use crate::findings::Category;
use crate::guest::fake::{Attempt, ScriptedGuest};
use crate::run_event::{Emitter, RunEvent};
use crate::watch::Watch;

/// Healers that answer a finding whose evidence holds `needle` with `action`.
#[derive(Default)]
struct ScriptedHealers(Vec<(&'static str, HealingAction)>);

impl Propose for ScriptedHealers {
    fn propose(&mut self, index: usize, finding: &Finding, request: &HealRequest<'_>) -> Proposal {
        let text = format!("{} {}", finding.summary, request.evidence.join(" "));
        let actions = self
            .0
            .iter()
            .filter(|(needle, _)| text.contains(needle))
            .map(|(_, a)| HealingAction {
                finding: index,
                ..a.clone()
            })
            .collect();
        Proposal {
            actions,
            ..Proposal::default()
        }
    }
}

fn action(name: &str, confidence: f32, path: &str, retry: Option<&str>) -> HealingAction {
    HealingAction {
        healer: "scripted".into(),
        finding: 0,
        name: name.into(),
        description: format!("does {name}"),
        confidence: Confidence::new(confidence),
        commands: vec![format!("echo {name}")],
        config_changes: vec![ConfigChange {
            path: path.into(),
            content: format!("# changed by {name}\n"),
        }],
        retry_phase: retry.map(str::to_string),
    }
}

const POLICY: Policy = Policy {
    heal: true,
    max_attempts: 3,
    min_confidence: 0.3,
    stop_early: true,
};

struct Outcome {
    ending: Ending,
    events: Vec<RunEvent>,
    guest: ScriptedGuest,
    config: Vec<(String, String)>,
}

impl Outcome {
    fn whats(&self) -> Vec<&What> {
        self.events.iter().map(|e| &e.what).collect()
    }

    fn phases_run(&self) -> Vec<&str> {
        self.guest
            .calls
            .iter()
            .filter_map(|c| c.strip_prefix("phase "))
            .collect()
    }

    fn applied(&self) -> Vec<&str> {
        self.whats()
            .into_iter()
            .filter_map(|w| match w {
                What::HealingApplied { action, .. } => Some(action.name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn resolved(&self) -> Vec<bool> {
        self.whats()
            .into_iter()
            .filter_map(|w| match w {
                What::HealingResolved { healed } => Some(*healed),
                _ => None,
            })
            .collect()
    }

    fn gave_up(&self) -> Option<&GiveUp> {
        self.whats().into_iter().find_map(|w| match w {
            What::GaveUp { why, .. } => Some(why),
            _ => None,
        })
    }

    fn refused(&self) -> Vec<&str> {
        self.whats()
            .into_iter()
            .filter_map(|w| match w {
                What::HealingRefused { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn run(mut guest: ScriptedGuest, mut healers: ScriptedHealers, policy: Policy) -> Outcome {
    let profile = Profile::load("vm").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ConfigCopy::create(dir.path().to_path_buf(), &profile.config).unwrap();
    let mut events: Vec<RunEvent> = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ending = {
        let emitter = Emitter::new("vm", Instant::now(), &mut events);
        let monitor = crate::monitor::Monitor::new(&[]).unwrap();
        let mut watch = Watch::new(emitter, monitor, &mut raw);
        let ending = rt
            .block_on(run_phases(
                &mut guest,
                &mut watch,
                &mut healers,
                &mut config,
                &profile,
                policy,
            ))
            .unwrap();
        watch.finish();
        ending
    };
    Outcome {
        ending,
        events,
        guest,
        config: config.files().to_vec(),
    }
}

fn failing(phase: &str, cause: &str) -> Attempt {
    Attempt::new(phase, &["working...", cause], 1)
}

#[test]
fn a_failure_healed_by_the_first_action_passes() {
    let guest = ScriptedGuest::default().phase(
        "disk_partitioning",
        vec![failing(
            "disk_partitioning",
            "Error: /dev/sdz: no such device",
        )],
    );
    let healers = ScriptedHealers(vec![(
        "/dev/sdz",
        action("fix-disk", 0.9, "disko-config.nix", None),
    )]);
    let out = run(guest, healers, POLICY);
    assert_eq!(out.ending, Ending::Passed);
    assert_eq!(
        out.phases_run(),
        [
            "disk_partitioning",
            "disk_partitioning",
            "generate_config",
            "install"
        ]
    );
    assert_eq!(out.applied(), ["fix-disk"]);
    assert_eq!(out.resolved(), [true]);
    // The change went into the run's copy and to the guest; the command ran once.
    let disko = &out
        .config
        .iter()
        .find(|(p, _)| p == "disko-config.nix")
        .unwrap()
        .1;
    assert_eq!(disko, "# changed by fix-disk\n");
    assert_eq!(
        out.guest.uploads["/etc/nixtest/config/disko-config.nix"],
        b"# changed by fix-disk\n"
    );
    assert!(out.guest.calls.contains(&"once echo fix-disk".to_string()));
    // The diff names the file; the phase's attempts are numbered.
    let diff = out.whats().into_iter().find_map(|w| match w {
        What::HealingApplied { config_diff, .. } => config_diff.clone(),
        _ => None,
    });
    assert!(diff.unwrap().contains("disko-config.nix"));
    assert!(out.whats().contains(&&What::PhaseStarted {
        phase: "disk_partitioning".into(),
        attempt: 2
    }));
}

#[test]
fn an_action_that_does_not_heal_is_not_tried_again() {
    let guest = ScriptedGuest::default().phase(
        "install",
        vec![
            failing("install", "error: builder failed: out of luck"),
            failing("install", "error: builder failed: out of luck"),
        ],
    );
    let healers = ScriptedHealers(vec![(
        "out of luck",
        action("try-again", 0.8, "configuration.nix", None),
    )]);
    let out = run(guest, healers, POLICY);
    assert_eq!(out.ending, Ending::Failed);
    assert_eq!(out.applied(), ["try-again"]);
    assert_eq!(out.resolved(), [false]);
    assert!(matches!(out.gave_up(), Some(GiveUp::NoAction { .. })));
}

#[test]
fn unsafe_weak_and_later_phase_actions_are_refused_and_nothing_is_applied() {
    let guest = ScriptedGuest::default().phase(
        "generate_config",
        vec![failing("generate_config", "fatal: broken")],
    );
    let healers = ScriptedHealers(vec![
        ("broken", action("escape", 0.9, "../../etc/passwd", None)),
        ("broken", action("weak", 0.1, "configuration.nix", None)),
        (
            "broken",
            action("later", 0.9, "configuration.nix", Some("install")),
        ),
    ]);
    let out = run(guest, healers, POLICY);
    assert_eq!(out.ending, Ending::Failed);
    let refused = out.refused();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0].contains("leaves the configuration copy"));
    assert!(refused[1].contains("below the minimum"));
    assert!(refused[2].contains("not the failed phase or an earlier one"));
    assert!(out.applied().is_empty());
    assert!(out.guest.uploads.is_empty());
    assert!(matches!(out.gave_up(), Some(GiveUp::NoAction { .. })));
}

#[test]
fn with_healing_off_the_finding_is_skipped() {
    let guest = ScriptedGuest::default().phase(
        "disk_partitioning",
        vec![failing("disk_partitioning", "Error: no disk")],
    );
    let healers = ScriptedHealers(vec![(
        "no disk",
        action("fix", 0.9, "disko-config.nix", None),
    )]);
    let out = run(
        guest,
        healers,
        Policy {
            heal: false,
            ..POLICY
        },
    );
    assert_eq!(out.ending, Ending::Failed);
    assert!(
        out.whats()
            .iter()
            .any(|w| matches!(w, What::HealingSkipped { .. }))
    );
    assert_eq!(out.gave_up(), Some(&GiveUp::HealingDisabled));
    assert!(out.applied().is_empty());
}

/// A phase that fails one way, then another; a healer with an action for each.
fn two_problems() -> (ScriptedGuest, ScriptedHealers) {
    let guest = ScriptedGuest::default().phase(
        "install",
        vec![
            failing("install", "error: first problem"),
            failing("install", "error: second problem"),
        ],
    );
    let healers = ScriptedHealers(vec![
        ("first problem", action("a", 0.9, "configuration.nix", None)),
        (
            "second problem",
            action("b", 0.9, "configuration.nix", None),
        ),
    ]);
    (guest, healers)
}

#[test]
fn the_attempt_limit_stops_healing() {
    let (guest, healers) = two_problems();
    let out = run(
        guest,
        healers,
        Policy {
            max_attempts: 1,
            ..POLICY
        },
    );
    assert_eq!(out.ending, Ending::Failed);
    assert_eq!(out.applied(), ["a"]);
    assert_eq!(out.gave_up(), Some(&GiveUp::AttemptsUsed { attempts: 1 }));
}

#[test]
fn a_retry_that_fails_differently_gets_the_next_action() {
    let (guest, healers) = two_problems();
    let out = run(guest, healers, POLICY);
    assert_eq!(out.ending, Ending::Passed);
    assert_eq!(out.applied(), ["a", "b"]);
    assert_eq!(out.resolved(), [false, true]);
}

#[test]
fn an_action_may_retry_an_earlier_phase() {
    let guest = ScriptedGuest::default().phase(
        "generate_config",
        vec![failing("generate_config", "error: no /mnt")],
    );
    let healers = ScriptedHealers(vec![(
        "no /mnt",
        action(
            "remount",
            0.9,
            "disko-config.nix",
            Some("disk_partitioning"),
        ),
    )]);
    let out = run(guest, healers, POLICY);
    assert_eq!(out.ending, Ending::Passed);
    assert_eq!(
        out.phases_run(),
        [
            "disk_partitioning",
            "generate_config",
            "disk_partitioning",
            "generate_config",
            "install"
        ]
    );
}

#[test]
fn a_failure_nothing_explains_ends_the_phases() {
    let quiet = Attempt {
        output: "::PHASE::disk_partitioning\nbye\n".into(),
        exit_code: 2,
    };
    let guest = ScriptedGuest::default().phase("disk_partitioning", vec![quiet]);
    let out = run(guest, ScriptedHealers::default(), POLICY);
    assert_eq!(out.ending, Ending::Failed);
    assert_eq!(out.gave_up(), Some(&GiveUp::Unexplained { exit_code: 2 }));
    assert_eq!(out.phases_run(), ["disk_partitioning"]);
}

#[test]
fn vetting_refuses_later_phases_weak_and_unsafe_actions() {
    let dir = tempfile::tempdir().unwrap();
    let copy = ConfigCopy::create(dir.path().to_path_buf(), &[]).unwrap();
    let profile = Profile::load("vm").unwrap();
    let failed = 1;
    let first = profile.phases[0].name.as_str();
    let this = profile.phases[failed].name.as_str();
    let later = profile.phases[failed + 1].name.as_str();
    let vet = |a: HealingAction| vet(&a, &copy, &profile, failed, 0.3);
    assert_eq!(vet(action("a", 0.9, "x.nix", Some(first))), None);
    assert_eq!(vet(action("a", 0.9, "x.nix", Some(this))), None);
    assert!(vet(action("a", 0.9, "x.nix", Some(later))).is_some());
    assert!(vet(action("a", 0.9, "x.nix", Some("nope"))).is_some());
    assert!(vet(action("a", 0.1, "x.nix", None)).is_some());
    assert!(vet(action("a", 0.9, "../x.nix", None)).is_some());
}

#[test]
fn a_hang_stops_the_phase_and_its_snapshot_goes_into_the_finding() {
    let snapshot = "/var/log/nixtest/hang-install-1.txt";
    let hang = Attempt::new(
        "install",
        &[
            "building...",
            &format!(
                "::HANG::install printed nothing for 9 s and none of its processes used CPU, disk or network for 5 s::{snapshot}"
            ),
            "printed after the stop: never seen",
        ],
        0,
    );
    let guest = ScriptedGuest::default()
        .phase("install", vec![hang])
        .command(
            &format!("head -c 65536 '{snapshot}'"),
            0,
            "== processes of the phase\n4242 4241 S pipe_read 0 cat /tmp/fifo\n",
        );
    // Even with early stops off, a hang is stopped: waiting is all it would do.
    let out = run(
        guest,
        ScriptedHealers(Vec::new()),
        Policy {
            stop_early: false,
            ..POLICY
        },
    );
    assert_eq!(out.ending, Ending::Failed);
    let stop = out
        .guest
        .calls
        .iter()
        .find(|c| c.starts_with("stop install: "))
        .expect("the phase was stopped");
    assert!(stop.contains("hang"), "{stop}");
    let lines: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| match &e.what {
            What::Line { line } => Some(line.message.as_str()),
            _ => None,
        })
        .collect();
    assert!(!lines.iter().any(|l| l.contains("never seen")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("nixtest stopped install"))
    );
    // The last word on the finding carries the snapshot; nothing else explains the failure.
    let finding = out
        .events
        .iter()
        .rev()
        .find_map(|e| match &e.what {
            What::Finding { finding, .. } if finding.category == Category::Hang => Some(finding),
            _ => None,
        })
        .expect("a hang finding");
    assert!(finding.permanent && finding.severity.is_failure());
    let snap = finding
        .details
        .iter()
        .find(|(k, _)| k == "snapshot")
        .unwrap();
    assert!(snap.1.contains("pipe_read"), "{snap:?}");
    assert!(
        !out.whats().iter().any(
            |w| matches!(w, What::Finding { finding, .. } if finding.category == Category::Other)
        ),
        "the hang explains the failure"
    );
    assert!(
        matches!(out.gave_up(), Some(GiveUp::NoAction { .. })),
        "{:?}",
        out.gave_up()
    );
}

#[test]
fn a_stopped_phase_has_its_facts_gathered_as_it_stops_and_not_again() {
    let hang = Attempt::new(
        "install",
        &[
            "building...",
            "::HANG::install printed nothing for 9 s and none of its processes did anything",
            "printed after the stop",
        ],
        0,
    );
    let gather = crate::facts::GATHER_COMMAND;
    let guest = ScriptedGuest::default()
        .phase("install", vec![hang])
        .command(gather, 0, "## nproc\n2\n## end\n");
    let out = run(guest, ScriptedHealers(Vec::new()), POLICY);
    let calls = &out.guest.calls;
    let stop = calls
        .iter()
        .position(|c| c.starts_with("stop install: "))
        .expect("the phase was stopped");
    assert_eq!(calls[stop + 1], format!("at-stop {gather}"), "{calls:?}");
    // The healers were asked (with those facts), and nothing gathered them again.
    assert!(
        matches!(out.gave_up(), Some(GiveUp::NoAction { .. })),
        "{:?}",
        out.gave_up()
    );
    assert!(
        !calls.contains(&format!("exec {gather}")),
        "the facts were gathered again: {calls:?}"
    );

    // Healing off: nothing is gathered at a stop (nothing would use it).
    let guest = ScriptedGuest::default().phase(
        "install",
        vec![Attempt::new(
            "install",
            &["::HANG::install printed nothing for 9 s", "after"],
            0,
        )],
    );
    let out = run(
        guest,
        ScriptedHealers(Vec::new()),
        Policy {
            heal: false,
            ..POLICY
        },
    );
    assert!(
        !out.guest.calls.iter().any(|c| c.starts_with("at-stop ")),
        "{:?}",
        out.guest.calls
    );
}

#[test]
fn a_kernel_line_from_the_console_is_one_event_where_it_first_came_and_numbers_stay_the_streams() {
    let oom = "::KERNEL::[    5.000000] Out of memory: Killed process 7 (cc1)";
    let late = "::KERNEL::[    6.000000] only the runner saw this first";
    let console = |l: &str| format!("{}{l}", crate::guest::fake::CONSOLE);
    let (c_oom, c_late) = (console(oom), console(late));
    let attempt = Attempt::new(
        "install",
        &["building", &c_oom, "more", oom, late, &c_late, "after"],
        0,
    );
    let guest = ScriptedGuest::default().phase("install", vec![attempt]);
    let out = run(guest, ScriptedHealers(Vec::new()), POLICY);
    let lines: Vec<(u32, &str)> = out
        .whats()
        .into_iter()
        .filter_map(|w| match w {
            What::Line { line } if &*line.phase == "install" => {
                Some((line.line, line.message.as_str()))
            }
            _ => None,
        })
        .collect();
    let messages: Vec<&str> = lines.iter().map(|(_, m)| *m).collect();
    assert_eq!(
        messages,
        [
            "install",
            "building",
            "[    5.000000] Out of memory: Killed process 7 (cc1)",
            "more",
            "[    6.000000] only the runner saw this first",
            "after",
            "install done",
        ],
        "{lines:?}"
    );
    // Numbered as they came, with no gap: the dropped copy took no number.
    let numbers: Vec<u32> = lines.iter().map(|(n, _)| *n - lines[0].0).collect();
    assert_eq!(numbers, (0..7).collect::<Vec<_>>());
}
