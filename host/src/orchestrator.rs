//! `nixtest test`: one profile in one pristine VM, phase by phase, watched line by line,
//! healed while it runs, verified after a reboot into the installed system, reported.

use crate::actions::HealingAction;
use crate::display::Display;
use crate::facts::{self, GuestFacts};
use crate::findings::{Finding, root_cause_order};
use crate::healing::Healers;
use crate::history::History;
use crate::monitor::{Monitor, Update};
use crate::plugin::HealRequest;
use crate::plugins::PluginSet;
use crate::profile::Profile;
use crate::report::{
    self, CheckReport, FindingRef, HealingRecord, Outcome, PhaseReport, ProfileReport, Status,
};
use crate::ssh::SshTarget;
use crate::stream::StreamRunner;
use crate::vm::manager::RunOverrides;
use crate::vm::{GuestImage, VmManager};
use nixtest_events::{Event, EventKind, EventParser, LineSplitter};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the run's configuration copy lives in the guest.
pub const GUEST_CONFIG: &str = "/etc/nixtest/config";
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// A fault `--inject` makes real for a run (shared/DESIGN.md, "The test guest").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disko config names a disk the VM does not have.
    Disk,
    /// The VM's memory is too small for the build step.
    Memory,
    /// The target disk is too small for the closure.
    Space,
    /// The binary cache's name does not resolve.
    Network,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Fault::Disk),
            "memory" => Ok(Fault::Memory),
            "space" => Ok(Fault::Space),
            "network" => Ok(Fault::Network),
            _ => Err(format!(
                "unknown fault {s:?}: use disk, memory, space or network"
            )),
        }
    }
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Disk => "disk",
            Fault::Memory => "memory",
            Fault::Space => "space",
            Fault::Network => "network",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestOptions {
    pub inject: Option<Fault>,
    pub heal: bool,
    pub max_heal_attempts: u32,
    /// Actions below it are reported, not applied.
    pub min_confidence: f32,
}

/// What a profile run needs from the outside.
pub struct RunContext<'a> {
    pub vm: &'a VmManager,
    pub image: &'a GuestImage,
    pub key: Arc<russh::keys::PrivateKey>,
    pub plugins: &'a PluginSet,
    /// Shared by the profiles of a run that go at the same time.
    pub history: &'a Mutex<History>,
    pub display: &'a mut dyn Display,
}

/// The run's copy of the profile's configuration: changes stay inside it.
struct ConfigCopy {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

impl ConfigCopy {
    fn content(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_str())
    }

    fn set(&mut self, path: &str, content: String) -> std::io::Result<()> {
        report::write_atomic(&self.dir.join(path), content.as_bytes())?;
        match self.files.iter_mut().find(|(p, _)| p == path) {
            Some(f) => f.1 = content,
            None => self.files.push((path.to_string(), content)),
        }
        Ok(())
    }

    /// A change may only name a file inside the copy that can be written: a relative path
    /// of plain names (no absolute path, no `..`, no NUL, not ending in `/`, not too long),
    /// not through a link, not under an existing file, and not an existing folder.
    fn check_path(&self, path: &str) -> Result<(), String> {
        const MAX_PATH: usize = 1024;
        const MAX_NAME: usize = 255;
        const MAX_DEPTH: usize = 16;
        let shown = crate::term::clip(path, 120);
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(format!(
                "{shown:?} is empty or longer than {MAX_PATH} bytes"
            ));
        }
        if path.contains('\0') {
            return Err(format!("{shown:?} contains a NUL byte"));
        }
        if path.ends_with('/') {
            return Err(format!("{shown:?} names a folder, not a file"));
        }
        let p = Path::new(path);
        if p.is_absolute() {
            return Err(format!(
                "{shown:?} is not a relative path inside the configuration copy"
            ));
        }
        let parts: Vec<_> = p.components().collect();
        if parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{shown:?} leaves the configuration copy"));
        }
        if parts.len() > MAX_DEPTH || parts.iter().any(|c| c.as_os_str().len() > MAX_NAME) {
            return Err(format!(
                "{shown:?} is too deep or has a name over {MAX_NAME} bytes"
            ));
        }
        let mut at = self.dir.clone();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let Ok(meta) = std::fs::symlink_metadata(&at) else {
                break;
            };
            if meta.file_type().is_symlink() {
                return Err(format!("{shown:?} goes through a link"));
            }
            let last = i + 1 == parts.len();
            if !last && !meta.is_dir() {
                return Err(format!("{shown:?} goes through a file"));
            }
            if last && meta.is_dir() {
                return Err(format!("{shown:?} is a folder"));
            }
        }
        Ok(())
    }

    /// Applies every change of an action, all or none: on a failure the files written so far
    /// get their old content back. Returns the diffs.
    fn apply(&mut self, changes: &[crate::actions::ConfigChange]) -> Result<Vec<String>, String> {
        let mut done: Vec<(String, Option<String>)> = Vec::new();
        let mut diffs = Vec::new();
        for c in changes {
            let old = self.content(&c.path).map(str::to_string);
            if let Err(e) = self.set(&c.path, c.content.clone()) {
                for (path, old) in done.into_iter().rev() {
                    match old {
                        Some(content) => {
                            let _ = self.set(&path, content);
                        }
                        None => {
                            let _ = std::fs::remove_file(self.dir.join(&path));
                            self.files.retain(|(p, _)| p != &path);
                        }
                    }
                }
                return Err(format!(
                    "cannot write {}: {e}",
                    crate::term::clip(&c.path, 120)
                ));
            }
            diffs.push(report::config_diff(
                &c.path,
                old.as_deref().unwrap_or(""),
                &c.content,
            ));
            done.push((c.path.clone(), old));
        }
        Ok(diffs)
    }
}

/// Why an action may not be applied, if it may not: a config change that cannot be written
/// inside the copy, a phase to retry that is not the failed one or an earlier one, or a
/// confidence below the minimum.
fn vet(
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

struct Live<'a> {
    profile: String,
    splitter: LineSplitter,
    parser: EventParser,
    monitor: Monitor,
    raw: Vec<u8>,
    events: Vec<Event>,
    metrics: BTreeMap<String, f64>,
    display: &'a mut dyn Display,
    /// When each finding was first made or confirmed in the current phase attempt (for the
    /// time from the failing line to the finding and to the action).
    seen_in_attempt: BTreeMap<usize, Instant>,
    /// Time spent parsing, monitoring and in detector plugins (the monitoring overhead).
    busy: Duration,
}

impl Live<'_> {
    fn take(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        self.take_timed(chunk, now);
        self.busy += now.elapsed();
    }

    fn take_timed(&mut self, chunk: &[u8], now: Instant) {
        self.raw.extend_from_slice(chunk);
        let mut lines = Vec::new();
        self.splitter
            .push(chunk, |l| lines.push(self.parser.parse(l)));
        let mut updates = Vec::new();
        for e in lines {
            self.display.event(&self.profile, &e);
            if e.kind == EventKind::Metric
                && let (Some(n), Some(v)) = (e.field("name"), e.field("value"))
                && let Ok(v) = v.parse()
            {
                self.metrics.insert(n.to_string(), v);
            }
            self.events.push(e.clone());
            updates.extend(self.monitor.observe_at(e, now));
        }
        updates.extend(self.monitor.flush());
        self.show(updates);
    }

    fn finish(&mut self) {
        if let Some(l) = self.splitter.finish() {
            let e = self.parser.parse(l);
            self.events.push(e.clone());
            self.monitor.observe(e);
        }
        let updates = self.monitor.finish();
        self.show(updates);
    }

    fn show(&mut self, updates: Vec<Update>) {
        for u in updates {
            match u {
                Update::New(i) => {
                    self.seen_in_attempt.entry(i).or_insert_with(Instant::now);
                    let f = self.monitor.findings()[i].clone();
                    self.display.finding(&self.profile, &f);
                }
                Update::Fault(i) => {
                    let m = self.monitor.faults()[i].message.clone();
                    self.display.note(&self.profile, &format!("⛔ {m}"));
                }
                Update::Evidence(i) => {
                    self.seen_in_attempt.entry(i).or_insert_with(Instant::now);
                }
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Applies the fault to the run's VM and configuration.
fn inject(
    fault: Option<Fault>,
    overrides: &mut RunOverrides,
    config: &mut ConfigCopy,
) -> std::io::Result<()> {
    match fault {
        None | Some(Fault::Network) => {}
        Some(Fault::Disk) => {
            if let Some(c) = config.content("disko-config.nix") {
                let bad = c.replace("\"/dev/vdb\"", "\"/dev/sdz\"");
                config.set("disko-config.nix", bad)?;
            }
        }
        Some(Fault::Memory) => {
            overrides.memory_mib = Some(192);
            if let Some(c) = config.content("configuration.nix") {
                let hungry = c.replacen("{\n", "{\n  nixtest.buildMemoryMB = 400;\n", 2);
                config.set("configuration.nix", hungry)?;
            }
        }
        // Big enough for the system only without the profile's generous ESP.
        Some(Fault::Space) => overrides.disk_bytes = Some(280 << 20),
    }
    Ok(())
}

/// Runs one profile; never panics on a failing VM: infrastructure trouble is `Status::Error`.
pub async fn run_profile(
    cx: &mut RunContext<'_>,
    profile: &Profile,
    opts: &TestOptions,
    run_dir: &Path,
) -> ProfileReport {
    let started = Instant::now();
    let mut report = ProfileReport {
        name: profile.name.clone(),
        status: Status::Error,
        injected_fault: opts.inject.map(|f| f.name().to_string()),
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
        findings: Vec::new(),
    };
    let result = run_inner(cx, profile, opts, run_dir, &mut report).await;
    if let Err(e) = result {
        report.status = Status::Error;
        report.error = Some(e);
    }
    report.duration_ms = ms(started.elapsed());
    let mut history = cx.history.lock().unwrap_or_else(PoisonError::into_inner);
    for (healer, action, healed) in report.healing.iter().filter_map(|h| match h.outcome {
        Outcome::Healed => Some((&h.plugin, &h.action, true)),
        Outcome::Failed => Some((&h.plugin, &h.action, false)),
        _ => None,
    }) {
        history.record(healer, action, healed);
    }
    if let Err(e) = history.save() {
        tracing::warn!("cannot save the healing history: {e}");
    }
    drop(history);
    cx.display.finished(&profile.name);
    report
}

async fn run_inner(
    cx: &mut RunContext<'_>,
    profile: &Profile,
    opts: &TestOptions,
    run_dir: &Path,
    report: &mut ProfileReport,
) -> Result<(), String> {
    let run_start = Instant::now();
    let name = profile.name.clone();
    let mut config = ConfigCopy {
        dir: run_dir.join("config").join(&name),
        files: Vec::new(),
    };
    for (p, c) in &profile.config {
        config
            .set(p, c.clone())
            .map_err(|e| format!("writing the configuration copy: {e}"))?;
    }
    let mut overrides = RunOverrides {
        memory_mib: profile.vm.memory_mib,
        disk_bytes: profile.vm.disk.as_deref().and_then(crate::vm::parse_size),
    };
    inject(opts.inject, &mut overrides, &mut config)
        .map_err(|e| format!("injecting the fault: {e}"))?;

    cx.display.note(&name, "🖥  starting a pristine VM");
    let vm = cx
        .vm
        .create_run_vm(cx.image, &name, &overrides, Vec::new())
        .map_err(|e| e.to_string())?;
    cx.vm.start(&vm.name).map_err(|e| e.to_string())?;
    let target = SshTarget {
        addr: vm.ssh_addr(),
        user: "root".into(),
        key: cx.key.clone(),
    };
    let mut runner = StreamRunner::connect(target.clone(), BOOT_DEADLINE)
        .await
        .map_err(|e| format!("{e}; console log: {}", vm.console_log().display()))?;
    let boot_ms = ms(run_start.elapsed());
    report
        .metrics
        .insert("boot_to_ssh_ms".into(), boot_ms as f64);

    let nix_conf = match opts.inject {
        Some(Fault::Network) => "substituters = http://cache.nixtest.internal:8080\n",
        // No binary cache is reachable here: build locally.
        _ => "substituters =\n",
    };
    runner
        .upload("/etc/nix/nix.conf", nix_conf.as_bytes(), 0o644)
        .await
        .map_err(|e| e.to_string())?;
    for (p, c) in &config.files {
        runner
            .upload(&format!("{GUEST_CONFIG}/{p}"), c.as_bytes(), 0o644)
            .await
            .map_err(|e| e.to_string())?;
    }

    let mut monitor = Monitor::new(&cx.plugins.plugins).map_err(|e| e.to_string())?;
    for f in &cx.plugins.detector_faults {
        monitor.seed_fault(f.clone());
    }
    let mut healers = Healers::new(&cx.plugins.plugins);
    for f in &cx.plugins.healer_faults {
        healers.seed_fault(f.clone());
    }
    if cx
        .plugins
        .plugins
        .iter()
        .any(|p| p.world.heals() && p.may_probe())
    {
        let probe = crate::probe::SshProbe::start(target)
            .map_err(|e| format!("cannot start the guest probe: {e}"))?;
        healers.attach_probe(Arc::new(probe));
    }
    let mut live = Live {
        profile: name.clone(),
        splitter: LineSplitter::default(),
        parser: EventParser::default(),
        monitor,
        raw: Vec::new(),
        events: Vec::new(),
        metrics: BTreeMap::new(),
        display: &mut *cx.display,
        seen_in_attempt: BTreeMap::new(),
        busy: Duration::ZERO,
    };

    let mut phase_reports: Vec<Option<PhaseReport>> = vec![None; profile.phases.len()];
    let mut tried: Vec<(String, String)> = Vec::new();
    let mut pending: Option<usize> = None;
    let mut attempts_used = 0u32;
    let mut idx = 0;
    let mut failed = false;
    let substituters: Vec<String> = profile_substituters(&config);
    while idx < profile.phases.len() {
        let phase = &profile.phases[idx];
        // Pairs the guest's clock with ours, to time lines from when the guest printed them
        // (before the phase's clock starts: it is measurement, not the phase).
        let clock = runner.guest_clock().await.ok();
        let t0 = run_start.elapsed();
        let first_line = live.parser.lines();
        live.seen_in_attempt.clear();
        let status = runner
            .run_phase(&phase.name, &phase.run, |chunk| live.take(chunk))
            .await
            .map_err(|e| e.to_string())?;
        // Failures with evidence from this attempt (a known problem seen again counts too).
        let failures: Vec<usize> = (0..live.monitor.findings().len())
            .filter(|&i| {
                let f = &live.monitor.findings()[i];
                f.permanent && f.severity.is_failure() && f.lines.iter().any(|l| *l > first_line)
            })
            .collect();
        // The root cause first (severity, what causes what, earliest line of this attempt).
        let attempt_view: Vec<Finding> = failures
            .iter()
            .map(|&i| {
                let mut f = live.monitor.findings()[i].clone();
                f.lines.retain(|l| *l > first_line);
                f
            })
            .collect();
        let failures: Vec<usize> = root_cause_order(&attempt_view)
            .into_iter()
            .map(|k| failures[k])
            .collect();
        let passed = status == 0 && failures.is_empty();
        let entry = phase_reports[idx].get_or_insert(PhaseReport {
            name: phase.name.clone(),
            status: Status::Failed,
            started_ms: ms(t0),
            duration_ms: 0,
            attempts: 0,
        });
        entry.attempts += 1;
        // The phase's own time: its attempts, not the healing between them.
        entry.duration_ms += ms(run_start.elapsed() - t0);
        entry.status = if passed {
            Status::Passed
        } else {
            Status::Failed
        };
        if let Some(r) = pending.take() {
            report.healing[r].outcome = if passed {
                Outcome::Healed
            } else {
                Outcome::Failed
            };
            report.healing[r].duration_ms = ms(run_start.elapsed()) - report.healing[r].duration_ms;
        }
        if passed {
            idx += 1;
            continue;
        }
        // Heal the root cause of this attempt, not its echoes.
        let Some(&fi) = failures.first() else {
            live.display.note(
                &name,
                &format!(
                    "❌ phase {} failed with exit code {status}; no detector recognised why",
                    phase.name
                ),
            );
            failed = true;
            break;
        };
        let finding = live.monitor.findings()[fi].clone();
        if !opts.heal {
            report.healing.push(record(
                &finding,
                None,
                Outcome::Skipped,
                Some("healing is disabled".into()),
                ms(run_start.elapsed()),
            ));
            failed = true;
            break;
        }
        if attempts_used >= opts.max_heal_attempts {
            live.display.note(
                &name,
                &format!("❌ {} healing attempt(s) used; giving up", attempts_used),
            );
            failed = true;
            break;
        }
        let gathered = runner
            .exec(facts::GATHER_COMMAND)
            .await
            .map_err(|e| e.to_string())?;
        let facts: GuestFacts = facts::parse_gathered(&gathered.stdout_text(), &substituters);
        let evidence: Vec<String> = finding
            .lines
            .iter()
            .filter_map(|l| live.monitor.line_text(*l).map(str::to_string))
            .collect();
        let history = cx.history;
        let request = HealRequest {
            facts: &facts,
            phase: &phase.name,
            config: &config.files,
            evidence: &evidence,
            attempt: attempts_used,
        };
        let actions = healers.propose(fi, &finding, &request, |a| {
            history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .weight(&a.healer, &a.name)
        });
        // Every proposal is vetted: unsafe ones and weak ones are recorded as refused whatever
        // their rank; the best remaining untried one whose changes can be written is applied.
        let mut vetted = Vec::new();
        for a in actions {
            let key = (a.healer.clone(), a.name.clone());
            if tried.contains(&key) {
                continue;
            }
            match vet(&a, &config, profile, idx, opts.min_confidence) {
                Some(why) => {
                    refuse(
                        &mut *live.display,
                        report,
                        &finding,
                        &a,
                        why,
                        ms(run_start.elapsed()),
                    );
                    tried.push(key);
                }
                None => vetted.push(a),
            }
        }
        let mut chosen: Option<(HealingAction, Vec<String>)> = None;
        for a in vetted {
            tried.push((a.healer.clone(), a.name.clone()));
            match config.apply(&a.config_changes) {
                Ok(diffs) => {
                    chosen = Some((a, diffs));
                    break;
                }
                Err(why) => {
                    refuse(
                        &mut *live.display,
                        report,
                        &finding,
                        &a,
                        why,
                        ms(run_start.elapsed()),
                    );
                }
            }
        }
        let Some((action, diffs)) = chosen else {
            live.display.note(
                &name,
                &format!("❌ no applicable healing action for: {}", finding.summary),
            );
            failed = true;
            break;
        };
        attempts_used += 1;
        live.display.healing(&name, &action, "");
        for c in &action.config_changes {
            runner
                .upload(
                    &format!("{GUEST_CONFIG}/{}", c.path),
                    c.content.as_bytes(),
                    0o644,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        for c in &action.commands {
            let out = runner.exec_once(c).await.map_err(|e| e.to_string())?;
            if out.status != 0 {
                live.display.note(
                    &name,
                    &format!(
                        "⚠️  `{c}` exited with {}: {}",
                        out.status,
                        out.stderr_text().trim()
                    ),
                );
            }
        }
        let mut rec = record(
            &finding,
            Some(&action),
            Outcome::Failed,
            None,
            ms(run_start.elapsed()),
        );
        rec.config_diff = (!diffs.is_empty()).then(|| diffs.join(""));
        rec.commands = action.commands.clone();
        rec.duration_ms = ms(run_start.elapsed());
        let applied_at = Instant::now();
        // Timed from the first line of this attempt's evidence.
        let first_failing = finding
            .lines
            .iter()
            .copied()
            .filter(|l| *l > first_line)
            .min();
        let found = live.seen_in_attempt.get(&fi).copied();
        if let Some(a) = first_failing.and_then(|l| live.monitor.arrival(l)) {
            rec.detected_ms = found.map(|f| ms(f.saturating_duration_since(a)));
            rec.applied_ms = Some(ms(applied_at.saturating_duration_since(a)));
        }
        if let (Some(clock), Some(first)) = (clock, first_failing)
            && let Ok(times) = runner.line_times().await
            && let Some(printed) = times
                .get(first.saturating_sub(1) as usize)
                .and_then(|t| clock.to_host(*t))
        {
            rec.guest_line_to_finding_ms = found.map(|f| ms(f.saturating_duration_since(printed)));
            rec.guest_line_to_applied_ms = Some(ms(applied_at.saturating_duration_since(printed)));
            rec.guest_clock_error_ms = Some(clock.error.as_secs_f64() * 1e3);
        }
        report.healing.push(rec);
        pending = Some(report.healing.len() - 1);
        idx = action
            .retry_phase
            .as_deref()
            .and_then(|p| profile.phase_index(p))
            .unwrap_or(idx);
    }
    live.finish();

    let guest_log = runner.guest_log().await.map_err(|e| e.to_string())?;
    report::write_atomic(
        &run_dir.join("logs").join(format!("{name}.guest.log")),
        &guest_log,
    )
    .map_err(|e| e.to_string())?;

    if !failed {
        cx_note(
            &mut *live.display,
            &name,
            "🔁 rebooting into the installed system",
        );
        let t = Instant::now();
        // The guest's page cache must reach the disk before the power cycle.
        runner
            .exec("sync; umount -R /mnt 2>/dev/null; sync")
            .await
            .map_err(|e| e.to_string())?;
        cx.vm
            .reboot_into(&vm.name, "/dev/vdb2")
            .map_err(|e| e.to_string())?;
        runner.reset_after_reboot();
        for c in &profile.checks {
            let out = runner
                .exec(&c.run)
                .await
                .map_err(|e| format!("verification: {e}"))?;
            let status = if out.status == 0 {
                Status::Passed
            } else {
                Status::Failed
            };
            let icon = if status == Status::Passed {
                "✅"
            } else {
                "❌"
            };
            live.display
                .note(&name, &format!("{icon} verify {}", c.name));
            report.verification.push(CheckReport {
                check: c.name.clone(),
                status,
                output: format!("{}{}", out.stdout_text(), out.stderr_text())
                    .trim()
                    .to_string(),
            });
        }
        report
            .metrics
            .insert("reboot_to_ssh_ms".into(), ms(t.elapsed()) as f64);
    }
    runner.close().await;

    report.phases = phase_reports.into_iter().flatten().collect();
    for f in live
        .monitor
        .findings()
        .iter()
        .filter(|f| f.severity.is_failure())
    {
        *report.errors.entry(f.category.clone()).or_default() += 1;
    }
    report.findings = root_cause_order(live.monitor.findings())
        .into_iter()
        .map(|i| live.monitor.findings()[i].clone())
        .collect();
    report.detection_latency_ms = live.monitor.latencies().iter().map(|d| ms(*d)).collect();
    report.metrics.extend(live.metrics.clone());
    report
        .metrics
        .insert("monitor_ms".into(), live.busy.as_secs_f64() * 1e3);
    report
        .metrics
        .insert("log_lines".into(), live.parser.lines() as f64);
    report.plugin_faults = live
        .monitor
        .faults()
        .iter()
        .chain(healers.faults())
        .map(|f| f.message.clone())
        .collect();
    report.plugin_fault_details = live
        .monitor
        .faults()
        .iter()
        .chain(healers.faults())
        .map(Into::into)
        .collect();
    report.detection_complete = live.monitor.complete();
    report.probes = healers.probes().to_vec();
    report.plugin_output = live
        .monitor
        .outputs()
        .into_iter()
        .chain(healers.outputs())
        .collect();
    for (plugin, text) in &report.plugin_output {
        live.display.plugin_output(&name, plugin, text);
    }
    if !report.detection_complete {
        live.display.note(
            &name,
            "⚠️  detection incomplete: a detector was disabled during the run (see plugin faults)",
        );
    }
    let verified = report
        .verification
        .iter()
        .all(|c| c.status == Status::Passed);
    report.status = if !failed && verified {
        Status::Passed
    } else {
        Status::Failed
    };

    report::write_atomic(&run_dir.join("logs").join(format!("{name}.log")), &live.raw)
        .map_err(|e| e.to_string())?;
    let mut jsonl = Vec::new();
    for e in &live.events {
        serde_json::to_writer(&mut jsonl, e).expect("events serialise");
        jsonl.push(b'\n');
    }
    report::write_atomic(
        &run_dir.join("events").join(format!("{name}.jsonl")),
        &jsonl,
    )
    .map_err(|e| e.to_string())?;
    vm.remove();
    Ok(())
}

fn cx_note(display: &mut dyn Display, profile: &str, text: &str) {
    display.note(profile, text);
}

fn profile_substituters(config: &ConfigCopy) -> Vec<String> {
    let Some(c) = config.content("configuration.nix") else {
        return Vec::new();
    };
    let Some(start) = c.find("substituters") else {
        return Vec::new();
    };
    let rest = &c[start..];
    let end = rest.find(';').unwrap_or(rest.len());
    rest[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Shows and records an action that may not be applied.
fn refuse(
    display: &mut dyn Display,
    report: &mut ProfileReport,
    finding: &Finding,
    action: &HealingAction,
    why: String,
    at: u64,
) {
    display.healing(&report.name, action, &format!(" — refused: {why}"));
    report.healing.push(record(
        finding,
        Some(action),
        Outcome::Refused,
        Some(why),
        at,
    ));
}

/// `at`: when it was decided, in ms since the profile's run started.
fn record(
    f: &Finding,
    a: Option<&HealingAction>,
    outcome: Outcome,
    reason: Option<String>,
    at: u64,
) -> HealingRecord {
    HealingRecord {
        started_ms: Some(at),
        finding: FindingRef {
            category: f.category.clone(),
            summary: f.summary.clone(),
            lines: f.lines.clone(),
        },
        action: a.map_or_else(String::new, |a| a.name.clone()),
        plugin: a.map_or_else(|| f.detector.clone(), |a| a.healer.clone()),
        confidence: a.map_or(0.0, |a| a.confidence.get()),
        outcome,
        duration_ms: 0,
        config_diff: None,
        commands: Vec::new(),
        reason,
        detected_ms: None,
        applied_ms: None,
        guest_line_to_finding_ms: None,
        guest_line_to_applied_ms: None,
        guest_clock_error_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_stay_inside_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let copy = ConfigCopy {
            dir: dir.path().to_path_buf(),
            files: Vec::new(),
        };
        assert!(copy.check_path("disko-config.nix").is_ok());
        assert!(copy.check_path("modules/net.nix").is_ok());
        for bad in ["/etc/passwd", "../x.nix", "a/../../x", "", "./x"] {
            assert!(copy.check_path(bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert!(copy.check_path("link/passwd").is_err());
        // Paths that cannot be written are refused before anything is written.
        std::fs::write(dir.path().join("file.nix"), "x").unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        let long = "a".repeat(300);
        let deep = vec!["d"; 40].join("/");
        for bad in [
            "x/",
            "a\0b",
            "file.nix/inner.nix",
            "folder",
            long.as_str(),
            deep.as_str(),
        ] {
            assert!(copy.check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_change_that_fails_half_way_is_undone_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut copy = ConfigCopy {
            dir: dir.path().to_path_buf(),
            files: Vec::new(),
        };
        copy.set("a.nix", "old".into()).unwrap();
        std::fs::write(dir.path().join("blocker"), "a file").unwrap();
        let changes = [
            crate::actions::ConfigChange {
                path: "a.nix".into(),
                content: "new".into(),
            },
            crate::actions::ConfigChange {
                path: "blocker/b.nix".into(),
                content: "x".into(),
            },
        ];
        assert!(copy.apply(&changes).is_err());
        assert_eq!(copy.content("a.nix"), Some("old"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.nix")).unwrap(),
            "old"
        );
    }

    #[test]
    fn vetting_refuses_later_phases_weak_and_unsafe_actions() {
        let dir = tempfile::tempdir().unwrap();
        let copy = ConfigCopy {
            dir: dir.path().to_path_buf(),
            files: Vec::new(),
        };
        let profile = Profile::load("vm").unwrap();
        let failed = 1;
        let action = |retry: Option<&str>, confidence: f32, path: &str| HealingAction {
            healer: "h".into(),
            finding: 0,
            name: "a".into(),
            description: String::new(),
            confidence: crate::actions::Confidence::new(confidence),
            commands: Vec::new(),
            config_changes: vec![crate::actions::ConfigChange {
                path: path.into(),
                content: String::new(),
            }],
            retry_phase: retry.map(str::to_string),
        };
        let first = profile.phases[0].name.as_str();
        let this = profile.phases[failed].name.as_str();
        let later = profile.phases[failed + 1].name.as_str();
        assert_eq!(
            vet(
                &action(Some(first), 0.9, "x.nix"),
                &copy,
                &profile,
                failed,
                0.3
            ),
            None
        );
        assert_eq!(
            vet(
                &action(Some(this), 0.9, "x.nix"),
                &copy,
                &profile,
                failed,
                0.3
            ),
            None
        );
        assert!(
            vet(
                &action(Some(later), 0.9, "x.nix"),
                &copy,
                &profile,
                failed,
                0.3
            )
            .is_some()
        );
        assert!(
            vet(
                &action(Some("nope"), 0.9, "x.nix"),
                &copy,
                &profile,
                failed,
                0.3
            )
            .is_some()
        );
        assert!(vet(&action(None, 0.1, "x.nix"), &copy, &profile, failed, 0.3).is_some());
        assert!(vet(&action(None, 0.9, "../x.nix"), &copy, &profile, failed, 0.3).is_some());
    }

    #[test]
    fn substituters_from_the_configuration() {
        let copy = ConfigCopy {
            dir: PathBuf::new(),
            files: vec![(
                "configuration.nix".into(),
                "{ nix.settings.substituters = [ \"http://a:1\" \"http://b:2\" ]; }".into(),
            )],
        };
        assert_eq!(
            profile_substituters(&copy),
            vec!["http://a:1", "http://b:2"]
        );
    }
}
