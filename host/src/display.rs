//! The live display of a run, a consumer of what the run produces: 📍 PHASE, ⏳ PROGRESS,
//! ✅ SUCCESS, ❌ ERROR, ⚠️ WARNING, ℹ️ CONTEXT, 🔍 findings and 🔧 AUTOMATED RESPONSE. Raw tool
//! output shows only with --verbose. On a terminal each phase has a spinner with its elapsed
//! time; without one (or with NO_COLOR) the lines are plain.

use crate::actions::HealingAction;
use crate::findings::Finding;
use nixtest_events::{Event, EventKind};
use std::io::IsTerminal;

pub trait Display {
    fn event(&mut self, profile: &str, event: &Event);
    fn finding(&mut self, profile: &str, finding: &Finding);
    fn healing(&mut self, profile: &str, action: &HealingAction, note: &str);
    fn note(&mut self, profile: &str, text: &str);
}

/// Prints nothing (JSON output, tests).
pub struct Quiet;

impl Display for Quiet {
    fn event(&mut self, _: &str, _: &Event) {}
    fn finding(&mut self, _: &str, _: &Finding) {}
    fn healing(&mut self, _: &str, _: &HealingAction, _: &str) {}
    fn note(&mut self, _: &str, _: &str) {}
}

pub struct Console {
    verbose: bool,
    spinner: Option<indicatif::ProgressBar>,
    fancy: bool,
}

impl Console {
    pub fn new(verbose: bool) -> Self {
        let fancy = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Console {
            verbose,
            spinner: None,
            fancy,
        }
    }

    fn line(&mut self, text: String) {
        match &self.spinner {
            Some(s) => s.println(text),
            None => println!("{text}"),
        }
    }

    fn start_phase(&mut self, name: &str) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
        if self.fancy {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_style(
                indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            );
            s.set_message(name.to_string());
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            self.spinner = Some(s);
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }
}

impl Display for Console {
    fn event(&mut self, profile: &str, e: &Event) {
        let text = match e.kind {
            EventKind::Phase => {
                let t = format!("[{profile}] 📍 PHASE {}", e.message);
                self.line(t);
                self.start_phase(&e.message);
                return;
            }
            EventKind::Progress => format!("[{profile}] ⏳ {}", e.message),
            EventKind::Success => format!("[{profile}] ✅ {}", e.message),
            EventKind::Error => format!("[{profile}] ❌ {}", e.message),
            EventKind::Warning => format!("[{profile}] ⚠️  {}", e.message),
            EventKind::Context => format!("[{profile}] ℹ️  {}", e.message),
            EventKind::Metric => format!("[{profile}] 📈 {}", e.message),
            EventKind::Raw if self.verbose => format!("[{profile}]    {}", e.message),
            EventKind::Raw => return,
        };
        self.line(text);
    }

    fn finding(&mut self, profile: &str, f: &Finding) {
        let kind = if f.permanent { "" } else { " (temporary)" };
        self.line(format!(
            "[{profile}] 🔍 {} {}{kind}: {} (line {}; {})",
            f.severity,
            f.category,
            f.summary,
            f.lines.first().copied().unwrap_or(0),
            f.detector
        ));
    }

    fn healing(&mut self, profile: &str, a: &HealingAction, note: &str) {
        let mut t = format!(
            "[{profile}] 🔧 AUTOMATED RESPONSE {} by {} (confidence {}): {}{note}",
            a.name, a.healer, a.confidence, a.description
        );
        for c in &a.commands {
            t.push_str(&format!("\n[{profile}]      $ {c}"));
        }
        for c in &a.config_changes {
            t.push_str(&format!("\n[{profile}]      ✎ {}", c.path));
        }
        self.line(t);
    }

    fn note(&mut self, profile: &str, text: &str) {
        self.line(format!("[{profile}] {text}"));
    }
}
