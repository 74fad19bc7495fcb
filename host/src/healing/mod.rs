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
use crate::fallback::{SNAPSHOT, SNAPSHOT_FILE};
use crate::findings::{Finding, FindingRef, root_cause_order};
use crate::guest::{Guest, GuestError};
use crate::monitor::{FaultRecord, PluginFaultDetail};
use crate::plugin::{HealRequest, ProbeRecord};
use crate::profile::Profile;
use crate::run_event::{GiveUp, Status, Timing, What};
use crate::stream::GuestClock;
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
    /// A phase is stopped at its first sure failure, not left to end on its own.
    pub stop_early: bool,
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
        .find_map(|c| config.check_path(&c.path).err().map(|e| e.to_string()))
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
    watch.stop_early = policy.stop_early && policy.heal;
    // A phase stopped (early, or hung) is stopped to be healed: the facts healers need are
    // gathered as it stops.
    guest.set_at_stop(policy.heal.then(|| facts::GATHER_COMMAND.to_string()));
    let mut run = PhaseLoop {
        substituters: config.substituters(),
        guest,
        watch,
        healers,
        config,
        profile,
        policy,
        tried: Vec::new(),
        used: 0,
    };
    run.run().await
}

/// One profile's phases and what healing has done so far.
struct PhaseLoop<'a, 'w, G: Guest> {
    guest: &'a mut G,
    watch: &'a mut Watch<'w>,
    healers: &'a mut dyn Propose,
    config: &'a mut ConfigCopy,
    profile: &'a Profile,
    policy: Policy,
    substituters: Vec<String>,
    /// Actions tried or refused (healer, name): never proposed twice.
    tried: Vec<(String, String)>,
    /// Actions applied.
    used: u32,
}

/// One attempt of a phase as it ended.
struct Attempt {
    phase: usize,
    exit_code: i32,
    /// The first line of the attempt is after this one.
    first_line: u32,
    clock: Option<GuestClock>,
    /// Failure findings with evidence in this attempt, the root cause first.
    failures: Vec<usize>,
}

impl<G: Guest> PhaseLoop<'_, '_, G> {
    async fn run(&mut self) -> Result<Ending, GuestError> {
        let mut attempts = vec![0u32; self.profile.phases.len()];
        let mut pending = false;
        let mut idx = 0;
        while idx < self.profile.phases.len() {
            attempts[idx] += 1;
            let attempt = self.attempt(idx, attempts[idx]).await?;
            let passed = attempt.exit_code == 0 && attempt.failures.is_empty();
            if std::mem::take(&mut pending) {
                self.emit(What::HealingResolved { healed: passed });
            }
            if passed {
                idx += 1;
                continue;
            }
            match self.heal(&attempt).await? {
                Ok(retry) => {
                    pending = true;
                    idx = retry;
                }
                Err(why) => {
                    self.emit(What::GaveUp {
                        phase: self.profile.phases[idx].name.clone(),
                        why,
                    });
                    return Ok(Ending::Failed);
                }
            }
        }
        Ok(Ending::Passed)
    }

    fn emit(&mut self, what: What) {
        self.watch.emitter.emit(what);
    }

    /// Runs phase `idx` once, watched.
    async fn attempt(&mut self, idx: usize, attempt: u32) -> Result<Attempt, GuestError> {
        let phase = &self.profile.phases[idx];
        // Pairs the guest's clock with ours, to time lines from when the guest printed them
        // (before the phase's clock starts: it is measurement, not the phase).
        let clock = self.guest.clock().await;
        self.watch.emitter.emit(What::PhaseStarted {
            phase: phase.name.clone(),
            attempt,
        });
        let t0 = Instant::now();
        let first_line = self.watch.lines();
        self.watch.begin_attempt();
        let watch = &mut *self.watch;
        let exit_code = self
            .guest
            .run_phase(&phase.name, &phase.run, &mut |chunk| watch.take(chunk))
            .await?;
        self.keep_hang_snapshots(first_line).await?;
        let failures = attempt_failures(self.watch.monitor.findings(), first_line);
        let passed = exit_code == 0 && failures.is_empty();
        self.watch.emitter.emit(What::PhaseFinished {
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
        if !passed {
            let finding = failures
                .first()
                .map(|&i| FindingRef::from(&self.watch.monitor.findings()[i]));
            self.watch.emitter.emit(What::Failure {
                phase: phase.name.clone(),
                attempt,
                finding,
            });
        }
        Ok(Attempt {
            phase: idx,
            exit_code,
            first_line,
            clock,
            failures,
        })
    }

    /// A hang's snapshot (what the guest was doing) is a file in the guest: it goes into the
    /// finding, so the report keeps it.
    async fn keep_hang_snapshots(&mut self, first_line: u32) -> Result<(), GuestError> {
        let wanted: Vec<(usize, String)> = self
            .watch
            .monitor
            .findings()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.lines.iter().any(|l| *l > first_line))
            .filter_map(|(i, f)| {
                let file = f.details.iter().find(|(k, _)| k == SNAPSHOT_FILE)?;
                let kept = f.details.iter().any(|(k, _)| k == SNAPSHOT);
                (!kept).then(|| (i, file.1.clone()))
            })
            .collect();
        for (i, file) in wanted {
            // The path came from the guest's output: quoted, and only read, 64 KiB at most.
            let out = self
                .guest
                .exec(&format!("head -c 65536 {}", crate::ssh::shell_quote(&file)))
                .await?;
            let text = if out.status == 0 {
                out.stdout_text()
            } else {
                format!(
                    "(the snapshot could not be read: {})",
                    out.stderr_text().trim()
                )
            };
            self.watch.monitor.add_detail(i, SNAPSHOT, text);
            let finding = self.watch.monitor.findings()[i].clone();
            self.emit(What::Finding { index: i, finding });
        }
        Ok(())
    }

    /// Heals the root cause of a failed attempt: the phase to run next, or why not.
    async fn heal(&mut self, attempt: &Attempt) -> Result<Result<usize, GiveUp>, GuestError> {
        // The root cause of this attempt, not its echoes.
        let Some(&fi) = attempt.failures.first() else {
            return Ok(Err(GiveUp::Unexplained {
                exit_code: attempt.exit_code,
            }));
        };
        let finding = self.watch.monitor.findings()[fi].clone();
        if !self.policy.heal {
            self.emit(What::HealingSkipped {
                finding: FindingRef::from(&finding),
                detector: finding.detector.clone(),
                reason: "healing is disabled".into(),
            });
            return Ok(Err(GiveUp::HealingDisabled));
        }
        if self.used >= self.policy.max_attempts {
            return Ok(Err(GiveUp::AttemptsUsed {
                attempts: self.used,
            }));
        }
        let proposal = self.propose(fi, &finding, attempt.phase).await?;
        let watch = &mut *self.watch;
        let Some((action, config_diff)) = choose(
            proposal,
            &mut self.tried,
            self.config,
            self.profile,
            attempt.phase,
            self.policy.min_confidence,
            &mut |action, reason| {
                watch.emitter.emit(What::HealingRefused {
                    finding: FindingRef::from(&finding),
                    action,
                    reason,
                })
            },
        ) else {
            return Ok(Err(GiveUp::NoAction {
                summary: finding.summary.clone(),
            }));
        };
        self.used += 1;
        let failed_commands = self.apply(&action).await?;
        let timing = timing(
            self.guest,
            self.watch,
            &finding,
            fi,
            attempt.first_line,
            attempt.clock,
            Instant::now(),
        )
        .await;
        let retry = action
            .retry_phase
            .as_deref()
            .and_then(|p| self.profile.phase_index(p))
            .unwrap_or(attempt.phase);
        self.emit(What::HealingApplied {
            finding: FindingRef::from(&finding),
            action,
            config_diff,
            timing,
        });
        for e in failed_commands {
            self.emit(e);
        }
        Ok(Ok(retry))
    }

    /// Every healer's actions for the finding, with the guest's facts gathered now.
    async fn propose(
        &mut self,
        index: usize,
        finding: &Finding,
        phase: usize,
    ) -> Result<Vec<HealingAction>, GuestError> {
        // Gathered as the phase was stopped, when it was (that round trip is then off the
        // path from the failing line to the action applied).
        let gathered = match self.guest.take_at_stop_output() {
            Some(out) => out,
            None => self.guest.exec(facts::GATHER_COMMAND).await?,
        };
        let facts: GuestFacts = facts::parse_gathered(&gathered.stdout_text(), &self.substituters);
        let evidence: Vec<String> = finding
            .lines
            .iter()
            .filter_map(|l| self.watch.monitor.line_text(*l).map(str::to_string))
            .collect();
        let request = HealRequest {
            facts: &facts,
            phase: &self.profile.phases[phase].name,
            config: self.config.files(),
            evidence: &evidence,
            attempt: self.used,
        };
        let proposal = self.healers.propose(index, finding, &request);
        for probe in proposal.probes {
            self.emit(What::Probe { probe });
        }
        for f in &proposal.faults {
            self.emit(What::PluginFault {
                fault: PluginFaultDetail::from(f),
                detector: false,
            });
        }
        Ok(proposal.actions)
    }

    /// Puts the action's changes into the guest and runs its commands (each at most once);
    /// returns the events of commands that failed (the retry decides whether it healed).
    async fn apply(&mut self, action: &HealingAction) -> Result<Vec<What>, GuestError> {
        for c in &action.config_changes {
            let path = format!("{GUEST_CONFIG}/{}", c.path);
            self.guest
                .upload(&path, c.content.as_bytes(), 0o644)
                .await?;
        }
        let mut failed = Vec::new();
        for c in &action.commands {
            let out = self.guest.exec_once(c).await?;
            if out.status != 0 {
                failed.push(What::CommandFailed {
                    command: c.clone(),
                    status: out.status as i32,
                    stderr: out.stderr_text().trim().to_string(),
                });
            }
        }
        Ok(failed)
    }
}

/// The failure findings with evidence after `first_line` (a known problem seen again counts
/// too), the root cause of the attempt first.
fn attempt_failures(findings: &[Finding], first_line: u32) -> Vec<usize> {
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
    root_cause_order(&attempt_view)
        .into_iter()
        .map(|k| failures[k])
        .collect()
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
/// at the host, and (when the guest's clock could be paired) from its printing in the guest;
/// and from the line that decided the finding (a download failing for the third time), with
/// the time to the first finding (a temporary one) about the first line.
async fn timing<G: Guest>(
    guest: &mut G,
    watch: &Watch<'_>,
    finding: &Finding,
    index: usize,
    first_line: u32,
    clock: Option<GuestClock>,
    applied_at: Instant,
) -> Timing {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let mut t = Timing {
        stopped_early: watch.stopped_early(),
        ..Timing::default()
    };
    let first_failing = finding
        .lines
        .iter()
        .copied()
        .filter(|l| *l > first_line)
        .min();
    let seen = watch.seen_in_attempt.get(&index).copied();
    let found = seen.map(|(at, _)| at);
    let decisive = seen.map(|(_, line)| line).filter(|l| *l > first_line);
    t.decisive_line = decisive;
    // The first finding of any permanence that cites the first failing line.
    let first_found = first_failing.and_then(|l| {
        watch
            .seen_in_attempt
            .iter()
            .filter(|(i, _)| {
                watch
                    .monitor
                    .findings()
                    .get(**i)
                    .is_some_and(|f| f.lines.contains(&l))
            })
            .map(|(_, (at, _))| *at)
            .min()
    });
    if let Some(a) = first_failing.and_then(|l| watch.monitor.arrival(l)) {
        t.detected_ms = found.map(|f| ms(f.saturating_duration_since(a)));
        t.applied_ms = Some(ms(applied_at.saturating_duration_since(a)));
    }
    let (Some(clock), Some(first)) = (clock, first_failing) else {
        return t;
    };
    let lines = [first, decisive.unwrap_or(first)];
    // The runner stamps the lines of its log; a kernel line carries the kernel's own time
    // (the same uptime clock), which is when it happened, whichever way it came.
    let kernel_time = |l: u32| crate::kernel_console::kernel_seconds(watch.monitor.line_text(l)?);
    let stream_lines = lines.map(|l| watch.stream_line(l));
    let Ok(times) = guest.line_times_of(&stream_lines).await else {
        return t;
    };
    let printed = |k: usize| {
        kernel_time(lines[k])
            .or_else(|| times.get(k).copied().flatten())
            .and_then(|u| clock.to_host(u))
    };
    if let Some(p) = printed(0) {
        t.guest_line_to_finding_ms = found.map(|f| ms(f.saturating_duration_since(p)));
        t.guest_line_to_first_finding_ms = first_found.map(|f| ms(f.saturating_duration_since(p)));
        t.guest_line_to_applied_ms = Some(ms(applied_at.saturating_duration_since(p)));
        t.guest_clock_error_ms = Some(clock.error.as_secs_f64() * 1e3);
    }
    if let Some(p) = printed(1) {
        t.guest_decisive_to_finding_ms = found.map(|f| ms(f.saturating_duration_since(p)));
        t.guest_decisive_to_applied_ms = Some(ms(applied_at.saturating_duration_since(p)));
    }
    t
}

#[cfg(test)]
mod tests;
