//! The live display of a run, a consumer of its events: 📍 PHASE, ⏳ PROGRESS, ✅ SUCCESS,
//! ❌ ERROR, ⚠️ WARNING, ℹ️ CONTEXT, 🔍 findings and 🔧 AUTOMATED RESPONSE. Raw tool output shows
//! only with --verbose. On a terminal each running profile has a spinner with its phase and
//! elapsed time; without one (or with NO_COLOR, or writing elsewhere) the lines are plain.
//! Every string from the guest or a plugin is made safe for the terminal first (`term`).

use crate::actions::HealingAction;
use crate::findings::Finding;
use crate::run_event::{Consumer, GiveUp, RunEvent, Status, What};
use crate::term;
use nixtest_events::{Event, EventKind};
use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// One display for profiles that run at the same time: each run holds a clone, and lines
/// never interleave within one another.
#[derive(Clone)]
pub struct SharedDisplay(Arc<Mutex<Console>>);

impl SharedDisplay {
    pub fn new(console: Console) -> Self {
        SharedDisplay(Arc::new(Mutex::new(console)))
    }
}

impl Consumer for SharedDisplay {
    fn consume(&mut self, event: &RunEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .consume(event)
    }
}

/// People's display: a spinner per running profile with its phase and elapsed time.
pub struct Console {
    verbose: bool,
    fancy: bool,
    out: Box<dyn Write + Send>,
    bars: indicatif::MultiProgress,
    spinners: HashMap<String, indicatif::ProgressBar>,
    /// Findings already shown, by profile and index (later evidence is not shown again).
    shown: HashSet<(String, usize)>,
}

impl Console {
    /// On standard output, with spinners when it is a terminal.
    pub fn new(verbose: bool) -> Self {
        let fancy = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self::with(verbose, fancy, Box::new(std::io::stdout()))
    }

    /// Plain lines into `out` (tests, files).
    pub fn plain(verbose: bool, out: Box<dyn Write + Send>) -> Self {
        Self::with(verbose, false, out)
    }

    fn with(verbose: bool, fancy: bool, out: Box<dyn Write + Send>) -> Self {
        Console {
            verbose,
            fancy,
            out,
            bars: indicatif::MultiProgress::new(),
            spinners: HashMap::new(),
            shown: HashSet::new(),
        }
    }

    fn line(&mut self, text: String) {
        if self.spinners.is_empty() || self.bars.println(&text).is_err() {
            // A closed output (a pipe) must not stop the run.
            let _ = writeln!(self.out, "{text}");
        }
    }

    fn start_phase(&mut self, profile: &str, name: &str) {
        self.stop_spinner(profile);
        if self.fancy {
            let s = self.bars.add(indicatif::ProgressBar::new_spinner());
            s.set_style(
                indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            );
            s.set_message(format!("{profile}: {}", term::line(name)));
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            self.spinners.insert(profile.to_string(), s);
        }
    }

    fn stop_spinner(&mut self, profile: &str) {
        if let Some(s) = self.spinners.remove(profile) {
            s.finish_and_clear();
            self.bars.remove(&s);
        }
    }

    fn event(&mut self, profile: &str, e: &Event) {
        let message = term::line(&e.message);
        let text = match e.kind {
            EventKind::Phase => {
                let t = format!("[{profile}] 📍 PHASE {message}");
                self.line(t);
                self.start_phase(profile, &e.message);
                return;
            }
            EventKind::Progress => format!("[{profile}] ⏳ {message}"),
            EventKind::Success => format!("[{profile}] ✅ {message}"),
            EventKind::Error => format!("[{profile}] ❌ {message}"),
            EventKind::Warning => format!("[{profile}] ⚠️  {message}"),
            EventKind::Context => format!("[{profile}] ℹ️  {message}"),
            EventKind::Metric => format!("[{profile}] 📈 {message}"),
            EventKind::Raw if self.verbose => format!("[{profile}]    {message}"),
            EventKind::Raw => return,
        };
        self.line(text);
    }

    fn finding(&mut self, profile: &str, f: &Finding) {
        let kind = if f.permanent { "" } else { " (temporary)" };
        self.line(format!(
            "[{profile}] 🔍 {} {}{kind}: {} (line {}; {})",
            f.severity,
            term::line(f.category.as_str()),
            term::line(&f.summary),
            f.lines.first().copied().unwrap_or(0),
            term::line(&f.detector)
        ));
    }

    fn healing(&mut self, profile: &str, a: &HealingAction, note: &str) {
        let mut t = format!(
            "[{profile}] 🔧 AUTOMATED RESPONSE {} by {} (confidence {}): {}{}",
            term::line(&a.name),
            term::line(&a.healer),
            a.confidence,
            term::line(&a.description),
            term::line(note)
        );
        for c in &a.commands {
            t.push_str(&format!("\n[{profile}]      $ {}", term::line(c)));
        }
        for c in &a.config_changes {
            t.push_str(&format!("\n[{profile}]      ✎ {}", term::line(&c.path)));
        }
        self.line(t);
    }

    fn note(&mut self, profile: &str, text: &str) {
        self.line(format!("[{profile}] {}", term::line(text)));
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        for (_, s) in self.spinners.drain() {
            s.finish_and_clear();
        }
        let _ = self.out.flush();
    }
}

impl Consumer for Console {
    fn consume(&mut self, e: &RunEvent) {
        let p = e.profile.as_str();
        match &e.what {
            What::VmStarting => self.note(p, "🖥  starting a pristine VM"),
            What::Line { line } => self.event(p, line),
            What::Finding { index, finding } if self.shown.insert((p.to_string(), *index)) => {
                self.finding(p, finding)
            }
            What::HealingApplied { action, .. } => self.healing(p, action, ""),
            What::HealingRefused { action, reason, .. } => {
                self.healing(p, action, &format!(" — refused: {reason}"))
            }
            What::CommandFailed {
                command,
                status,
                stderr,
            } => self.note(
                p,
                &format!("⚠️  `{command}` exited with {status}: {stderr}"),
            ),
            What::GaveUp { phase, why } => match why {
                GiveUp::Unexplained { exit_code } => self.note(
                    p,
                    &format!(
                        "❌ phase {phase} failed with exit code {exit_code}; no detector \
                         recognised why"
                    ),
                ),
                GiveUp::AttemptsUsed { attempts } => self.note(
                    p,
                    &format!("❌ {attempts} healing attempt(s) used; giving up"),
                ),
                GiveUp::NoAction { summary } => self.note(
                    p,
                    &format!("❌ no applicable healing action for: {summary}"),
                ),
                GiveUp::HealingDisabled => {}
            },
            What::PluginFault { fault, .. } => self.note(p, &format!("⛔ {}", fault.message)),
            What::PluginOutput { plugin, text } if self.verbose => {
                let mut t = format!("[{p}] 📝 plugin {} printed:", term::line(plugin));
                for l in text.lines() {
                    t.push_str(&format!("\n[{p}]    | {}", term::line(l)));
                }
                self.line(t);
            }
            What::DetectionDone {
                complete: false, ..
            } => self.note(
                p,
                "⚠️  detection incomplete: a detector was disabled during the run (see plugin \
                 faults)",
            ),
            What::Reboot => self.note(p, "🔁 rebooting into the installed system"),
            What::CheckDone { check, status, .. } => {
                let icon = if *status == Status::Passed {
                    "✅"
                } else {
                    "❌"
                };
                self.note(p, &format!("{icon} verify {check}"));
            }
            What::ProfileFinished { .. } => self.stop_spinner(p),
            _ => {}
        }
    }
}
