//! The report as text for a terminal (`nixtest report show`).

use super::{Report, Status};
use crate::term;

impl Report {
    /// The report for people, in the terminal.
    pub fn text(&self) -> String {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        let mut t = format!(
            "run {} started {} took {}: {} passed, {} failed, {} errors",
            term::line(&self.run_id),
            term::line(&self.started),
            secs(self.duration_ms),
            self.summary.passed,
            self.summary.failed,
            self.summary.errors
        );
        if self.summary.healing_attempts > 0 {
            t.push_str(&format!(
                "; healing {} of {} attempts ({:.0} %)",
                (self.summary.healing_success_rate * self.summary.healing_attempts as f64).round(),
                self.summary.healing_attempts,
                self.summary.healing_success_rate * 100.0
            ));
        }
        t.push('\n');
        for p in &self.profiles {
            t.push_str(&format!(
                "\n{} {}: {} in {}{}\n",
                status_icon(p.status),
                term::line(&p.name),
                p.status,
                secs(p.duration_ms),
                p.injected_fault
                    .as_ref()
                    .map(|f| format!(" (fault injected: {f})"))
                    .unwrap_or_default()
            ));
            if let Some(e) = &p.error {
                t.push_str(&format!("  error: {}\n", term::line(e)));
            }
            for ph in &p.phases {
                let tries = if ph.attempts > 1 {
                    format!(" ({} attempts)", ph.attempts)
                } else {
                    String::new()
                };
                t.push_str(&format!(
                    "  {} phase {:<22} {:>8}{tries}\n",
                    status_icon(ph.status),
                    term::line(&ph.name),
                    secs(ph.duration_ms)
                ));
            }
            if !p.errors.is_empty() {
                let errors: Vec<String> = p
                    .errors
                    .iter()
                    .map(|(c, n)| format!("{} {n}", term::line(c)))
                    .collect();
                t.push_str(&format!("  errors: {}\n", errors.join(", ")));
            }
            for h in &p.healing {
                t.push_str(&format!(
                    "  🔧 {} by {} (confidence {:.2}) for {} \"{}\": {}{}\n",
                    term::line(&h.action),
                    term::line(&h.plugin),
                    h.confidence,
                    term::line(h.finding.category.as_str()),
                    term::line(&h.finding.summary),
                    h.outcome,
                    h.reason
                        .as_ref()
                        .map(|r| format!(" ({})", term::line(r)))
                        .unwrap_or_default()
                ));
            }
            for f in &p.failures {
                t.push_str(&format!("  🧬 {}\n", term::line(&f.describe())));
            }
            for c in &p.verification {
                t.push_str(&format!(
                    "  {} check {}\n",
                    status_icon(c.status),
                    term::line(&c.check)
                ));
            }
            for (m, v) in &p.metrics {
                t.push_str(&format!("  📈 {} = {v}\n", term::line(m)));
            }
            for f in &p.plugin_faults {
                t.push_str(&format!("  ⛔ plugin fault: {}\n", term::line(f)));
            }
            if !p.detection_complete {
                t.push_str("  ⚠️  detection incomplete: a detector was disabled during the run\n");
            }
            for pr in &p.probes {
                t.push_str(&format!(
                    "  🔎 probe by {}: {} ({}, {} ms)\n",
                    term::line(&pr.plugin),
                    term::line(&pr.command),
                    match &pr.refused {
                        Some(why) => format!("refused: {}", term::line(why)),
                        None => format!("exit {}", pr.status.map_or("-".into(), |s| s.to_string())),
                    },
                    pr.duration_ms
                ));
            }
        }
        t
    }
}

fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Passed => "✅",
        Status::Failed => "❌",
        Status::Error => "⛔",
    }
}
