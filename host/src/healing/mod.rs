//! Healing: the phases of a profile run one after another; when one fails, the root cause of
//! the attempt is chosen, healers propose actions, each is vetted, the best one that can be
//! applied is applied, and the phase (or an earlier one) is retried, until the phases pass,
//! no action is left, or the attempts are used up. Everything that happens is an event; this
//! module knows no report fields and no wording.
//!
//! It runs against any [`Guest`], so every outcome is tested with a scripted one.

mod healers;

pub use healers::{Healers, Ranked, rank};

use crate::actions::HealingAction;
use crate::config_copy::{ConfigCopy, GUEST_CONFIG};
use crate::facts::{self, GuestFacts};
use crate::findings::{Finding, FindingRef, root_cause_order};
use crate::guest::{Guest, GuestError};
use crate::monitor::{FaultRecord, PluginFaultDetail};
use crate::plugin::{HealRequest, ProbeRecord};
use crate::profile::Profile;
use crate::report::Status;
use crate::run_event::{GiveUp, Timing, What};
use crate::watch::Watch;
use std::time::Instant;

/// How healing may go.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub heal: bool,
    /// Actions applied per profile at most.
    pub max_attempts: u32,
    /// Actions below it are refused.
    pub min_confidence: f32,
}

/// What healers answered for one finding.
#[derive(Debug, Default)]
pub struct Proposal {
    /// Best first.
    pub actions: Vec<HealingAction>,
    /// Probes made while answering, and healers disabled while answering.
    pub probes: Vec<ProbeRecord>,
    pub faults: Vec<FaultRecord>,
}

/// Whoever proposes actions for a finding: the run's healer plugins, or a test's script.
pub trait Propose {
    fn propose(&mut self, index: usize, finding: &Finding, request: &HealRequest<'_>) -> Proposal;
}

/// Why an action may not be applied, if it may not: a config change that cannot be written
/// inside the copy, a phase to retry that is not the failed one or an earlier one, or a
/// confidence below the minimum.
pub fn vet(
    a: &HealingAction,
    config: &ConfigCopy,
    profile: &Profile,
    failed_phase: usize,
    min_confidence: f32,
) -> Option<String> {
    if let Some(why) = a
        .config_changes
        .iter()
        .find_map(|c| config.check_path(&c.path).err())
    {
        return Some(why);
    }
    if let Some(p) = &a.retry_phase {
        match profile.phase_index(p) {
            Some(i) if i <= failed_phase => {}
            _ => {
                return Some(format!(
                    "retry phase {:?} is not the failed phase or an earlier one",
                    crate::term::clip(p, 60)
                ));
            }
        }
    }
    if a.confidence.get() < min_confidence {
        return Some(format!(
            "confidence {} is below the minimum {:.2}",
            a.confidence, min_confidence
        ));
    }
    None
}

/// How the phases ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every phase passed (some perhaps after healing).
    Passed,
    /// A phase failed and healing stopped (the reason is in the events).
    Failed,
}

/// The phases of `profile`, healed as they fail. Errors only when the guest cannot be reached.
pub async fn run_phases<G: Guest>(
    guest: &mut G,
    watch: &mut Watch<'_>,
    healers: &mut dyn Propose,
    config: &mut ConfigCopy,
    profile: &Profile,
    policy: Policy,
) -> Result<Ending, GuestError> {
    let substituters = config.substituters();
    let mut attempts = vec![0u32; profile.phases.len()];
    let mut tried: Vec<(String, String)> = Vec::new();
    let mut pending = false;
    let mut used = 0u32;
    let mut idx = 0;
    while idx < profile.phases.len() {
        let phase = &profile.phases[idx];
        // Pairs the guest's clock with ours, to time lines from when the guest printed them
        // (before the phase's clock starts: it is measurement, not the phase).
        let clock = guest.clock().await;
        attempts[idx] += 1;
        let attempt = attempts[idx];
        watch.emitter.emit(What::PhaseStarted {
            phase: phase.name.clone(),
            attempt,
        });
        let t0 = Instant::now();
        let first_line = watch.lines();
        watch.seen_in_attempt.clear();
        let exit_code = guest
            .run_phase(&phase.name, &phase.run, &mut |chunk| watch.take(chunk))
            .await?;
        // Failures with evidence from this attempt (a known problem seen again counts too),
        // the root cause first.
        let findings = watch.monitor.findings();
        let failures: Vec<usize> = (0..findings.len())
            .filter(|&i| {
                let f = &findings[i];
                f.permanent && f.severity.is_failure() && f.lines.iter().any(|l| *l > first_line)
            })
            .collect();
        let attempt_view: Vec<Finding> = failures
            .iter()
            .map(|&i| {
                let mut f = findings[i].clone();
                f.lines.retain(|l| *l > first_line);
                f
            })
            .collect();
        let failures: Vec<usize> = root_cause_order(&attempt_view)
            .into_iter()
            .map(|k| failures[k])
            .collect();
        let passed = exit_code == 0 && failures.is_empty();
        watch.emitter.emit(What::PhaseFinished {
            phase: phase.name.clone(),
            attempt,
            status: if passed {
                Status::Passed
            } else {
                Status::Failed
            },
            exit_code,
            duration_ms: t0.elapsed().as_millis() as u64,
        });
        if std::mem::take(&mut pending) {
            watch.emitter.emit(What::HealingResolved { healed: passed });
        }
        if passed {
            idx += 1;
            continue;
        }
        let give_up = |watch: &mut Watch<'_>, why: GiveUp| {
            watch.emitter.emit(What::GaveUp {
                phase: phase.name.clone(),
                why,
            });
            Ok(Ending::Failed)
        };
        // Heal the root cause of this attempt, not its echoes.
        let Some(&fi) = failures.first() else {
            return give_up(watch, GiveUp::Unexplained { exit_code });
        };
        let finding = watch.monitor.findings()[fi].clone();
        if !policy.heal {
            watch.emitter.emit(What::HealingSkipped {
                finding: FindingRef::from(&finding),
                detector: finding.detector.clone(),
                reason: "healing is disabled".into(),
            });
            return give_up(watch, GiveUp::HealingDisabled);
        }
        if used >= policy.max_attempts {
            return give_up(watch, GiveUp::AttemptsUsed { attempts: used });
        }
        let gathered = guest.exec(facts::GATHER_COMMAND).await?;
        let facts: GuestFacts = facts::parse_gathered(&gathered.stdout_text(), &substituters);
        let evidence: Vec<String> = finding
            .lines
            .iter()
            .filter_map(|l| watch.monitor.line_text(*l).map(str::to_string))
            .collect();
        let request = HealRequest {
            facts: &facts,
            phase: &phase.name,
            config: config.files(),
            evidence: &evidence,
            attempt: used,
        };
        let proposal = healers.propose(fi, &finding, &request);
        for probe in proposal.probes {
            watch.emitter.emit(What::Probe { probe });
        }
        for f in &proposal.faults {
            watch.emitter.emit(What::PluginFault {
                fault: PluginFaultDetail::from(f),
                detector: false,
            });
        }
        let Some((action, config_diff)) = choose(
            proposal.actions,
            &mut tried,
            config,
            profile,
            idx,
            policy.min_confidence,
            &mut |action, reason| {
                watch.emitter.emit(What::HealingRefused {
                    finding: FindingRef::from(&finding),
                    action,
                    reason,
                })
            },
        ) else {
            return give_up(
                watch,
                GiveUp::NoAction {
                    summary: finding.summary.clone(),
                },
            );
        };
        used += 1;
        for c in &action.config_changes {
            let path = format!("{GUEST_CONFIG}/{}", c.path);
            guest.upload(&path, c.content.as_bytes(), 0o644).await?;
        }
        let mut failed_commands = Vec::new();
        for c in &action.commands {
            let out = guest.exec_once(c).await?;
            if out.status != 0 {
                failed_commands.push(What::CommandFailed {
                    command: c.clone(),
                    status: out.status as i32,
                    stderr: out.stderr_text().trim().to_string(),
                });
            }
        }
        let applied_at = Instant::now();
        let timing = timing(guest, watch, &finding, fi, first_line, clock, applied_at).await;
        let retry = action
            .retry_phase
            .as_deref()
            .and_then(|p| profile.phase_index(p))
            .unwrap_or(idx);
        watch.emitter.emit(What::HealingApplied {
            finding: FindingRef::from(&finding),
            action,
            config_diff,
            timing,
        });
        for e in failed_commands {
            watch.emitter.emit(e);
        }
        pending = true;
        idx = retry;
    }
    Ok(Ending::Passed)
}

/// Vets every proposal: unsafe and weak ones are refused whatever their rank; the best
/// remaining untried one whose changes can be written is applied to the copy. Returns it with
/// its diff.
fn choose(
    actions: Vec<HealingAction>,
    tried: &mut Vec<(String, String)>,
    config: &mut ConfigCopy,
    profile: &Profile,
    failed_phase: usize,
    min_confidence: f32,
    refuse: &mut dyn FnMut(HealingAction, String),
) -> Option<(HealingAction, Option<String>)> {
    let mut vetted = Vec::new();
    for a in actions {
        let key = (a.healer.clone(), a.name.clone());
        if tried.contains(&key) {
            continue;
        }
        match vet(&a, config, profile, failed_phase, min_confidence) {
            Some(why) => {
                tried.push(key);
                refuse(a, why);
            }
            None => vetted.push(a),
        }
    }
    // Those after the chosen one stay untried: a later failure may still use them.
    for a in vetted {
        tried.push((a.healer.clone(), a.name.clone()));
        match config.apply(&a.config_changes) {
            Ok(diffs) => return Some((a, (!diffs.is_empty()).then(|| diffs.join("")))),
            Err(why) => refuse(a, why),
        }
    }
    None
}

/// Times the applied action from the first line of this attempt's evidence: from its arrival
/// at the host, and (when the guest's clock could be paired) from its printing in the guest.
async fn timing<G: Guest>(
    guest: &mut G,
    watch: &Watch<'_>,
    finding: &Finding,
    index: usize,
    first_line: u32,
    clock: Option<crate::stream::GuestClock>,
    applied_at: Instant,
) -> Timing {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let mut t = Timing::default();
    let first_failing = finding
        .lines
        .iter()
        .copied()
        .filter(|l| *l > first_line)
        .min();
    let found = watch.seen_in_attempt.get(&index).copied();
    if let Some(a) = first_failing.and_then(|l| watch.monitor.arrival(l)) {
        t.detected_ms = found.map(|f| ms(f.saturating_duration_since(a)));
        t.applied_ms = Some(ms(applied_at.saturating_duration_since(a)));
    }
    if let (Some(clock), Some(first)) = (clock, first_failing)
        && let Ok(times) = guest.line_times().await
        && let Some(printed) = times
            .get(first.saturating_sub(1) as usize)
            .and_then(|t| clock.to_host(*t))
    {
        t.guest_line_to_finding_ms = found.map(|f| ms(f.saturating_duration_since(printed)));
        t.guest_line_to_applied_ms = Some(ms(applied_at.saturating_duration_since(printed)));
        t.guest_clock_error_ms = Some(clock.error.as_secs_f64() * 1e3);
    }
    t
}

#[cfg(test)]
mod tests;
