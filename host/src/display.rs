//! The live display of a run, a consumer of what the run produces: 📍 PHASE, ⏳ PROGRESS,
//! ✅ SUCCESS, ❌ ERROR, ⚠️ WARNING, ℹ️ CONTEXT, 🔍 findings and 🔧 AUTOMATED RESPONSE. Raw tool
//! output shows only with --verbose. On a terminal each running profile has a spinner with its
//! phase and elapsed time; without one (or with NO_COLOR) the lines are plain. Every string
//! from the guest or a plugin is made safe for the terminal first (`term`).

use crate::actions::HealingAction;
use crate::findings::Finding;
use crate::term;
use nixtest_events::{Event, EventKind};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

pub trait Display: Send {
    fn event(&mut self, profile: &str, event: &Event);
    fn finding(&mut self, profile: &str, finding: &Finding);
    fn healing(&mut self, profile: &str, action: &HealingAction, note: &str);
    fn note(&mut self, profile: &str, text: &str);
    /// What a plugin printed during the run (shown with --verbose).
    fn plugin_output(&mut self, _profile: &str, _plugin: &str, _text: &str) {}
    /// The profile's run has ended.
    fn finished(&mut self, _profile: &str) {}
}

/// Prints nothing (JSON output, tests).
pub struct Quiet;

impl Display for Quiet {
    fn event(&mut self, _: &str, _: &Event) {}
    fn finding(&mut self, _: &str, _: &Finding) {}
    fn healing(&mut self, _: &str, _: &HealingAction, _: &str) {}
    fn note(&mut self, _: &str, _: &str) {}
}

/// One display for profiles that run at the same time: each run holds a clone, and lines
/// never interleave within one another.
#[derive(Clone)]
pub struct SharedDisplay(Arc<Mutex<Box<dyn Display>>>);

impl SharedDisplay {
    pub fn new(display: Box<dyn Display>) -> Self {
        SharedDisplay(Arc::new(Mutex::new(display)))
    }

    fn with(&self, f: impl FnOnce(&mut dyn Display)) {
        let mut d = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(d.as_mut())
    }
}

impl Display for SharedDisplay {
    fn event(&mut self, profile: &str, event: &Event) {
        self.with(|d| d.event(profile, event))
    }
    fn finding(&mut self, profile: &str, finding: &Finding) {
        self.with(|d| d.finding(profile, finding))
    }
    fn healing(&mut self, profile: &str, action: &HealingAction, note: &str) {
        self.with(|d| d.healing(profile, action, note))
    }
    fn note(&mut self, profile: &str, text: &str) {
        self.with(|d| d.note(profile, text))
    }
    fn plugin_output(&mut self, profile: &str, plugin: &str, text: &str) {
        self.with(|d| d.plugin_output(profile, plugin, text))
    }
    fn finished(&mut self, profile: &str) {
        self.with(|d| d.finished(profile))
    }
}

/// People's display: a spinner per running profile with its phase and elapsed time.
pub struct Console {
    verbose: bool,
    fancy: bool,
    bars: indicatif::MultiProgress,
    spinners: HashMap<String, indicatif::ProgressBar>,
}

impl Console {
    pub fn new(verbose: bool) -> Self {
        let fancy = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Console {
            verbose,
            fancy,
            bars: indicatif::MultiProgress::new(),
            spinners: HashMap::new(),
        }
    }

    fn line(&mut self, text: String) {
        if self.spinners.is_empty() || self.bars.println(&text).is_err() {
            println!("{text}");
        }
    }

    fn start_phase(&mut self, profile: &str, name: &str) {
        if let Some(s) = self.spinners.remove(profile) {
            s.finish_and_clear();
            self.bars.remove(&s);
        }
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
}

impl Drop for Console {
    fn drop(&mut self) {
        for (_, s) in self.spinners.drain() {
            s.finish_and_clear();
        }
    }
}

impl Display for Console {
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
            term::line(&f.category),
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

    fn plugin_output(&mut self, profile: &str, plugin: &str, text: &str) {
        if !self.verbose {
            return;
        }
        let mut t = format!("[{profile}] 📝 plugin {} printed:", term::line(plugin));
        for l in text.lines() {
            t.push_str(&format!("\n[{profile}]    | {}", term::line(l)));
        }
        self.line(t);
    }

    fn finished(&mut self, profile: &str) {
        if let Some(s) = self.spinners.remove(profile) {
            s.finish_and_clear();
            self.bars.remove(&s);
        }
    }
}
