//! report.html: one self-contained page (no scripts, no external resources).

use super::{Outcome, ProfileReport, Report, Status};

impl Report {
    /// One page, no scripts or external resources: a timeline of phases and healings per
    /// profile, the healing attempts, and errors by category.
    pub fn html(&self) -> String {
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str(&format!("<title>nixtest {}</title>", esc(&self.run_id)));
        h.push_str("<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.passed{color:#17702f}.failed{color:#b3261e}.error{color:#8a5a00}.healed{color:#17702f}.refused,.skipped{color:#666}svg{background:#fafafa;border:1px solid #ddd}pre{background:#f4f4f4;padding:.5em;overflow:auto;max-height:20em}</style></head><body>");
        h.push_str(&format!(
            "<h1>nixtest run {}</h1><p>started {} · {:.1} s · {} passed, {} failed, {} errors · {} healing attempts, success rate {:.0}%</p>",
            esc(&self.run_id),
            esc(&self.started),
            self.duration_ms as f64 / 1000.0,
            self.summary.passed,
            self.summary.failed,
            self.summary.errors,
            self.summary.healing_attempts,
            self.summary.healing_success_rate * 100.0
        ));
        for p in &self.profiles {
            let status = p.status.as_str().to_string();
            h.push_str(&format!(
                "<h2>{} <span class=\"{status}\">{status}</span></h2>",
                esc(&p.name)
            ));
            if let Some(f) = &p.injected_fault {
                h.push_str(&format!("<p>injected fault: <b>{}</b></p>", esc(f.name())));
            }
            if let Some(e) = &p.error {
                h.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
            }
            h.push_str(&timeline(p));
            h.push_str("<table><tr><th>phase</th><th>status</th><th>start</th><th>duration</th><th>attempts</th></tr>");
            for ph in &p.phases {
                let s = ph.status.as_str().to_string();
                h.push_str(&format!(
                    "<tr><td>{}</td><td class=\"{s}\">{s}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td></tr>",
                    esc(&ph.name),
                    ph.started_ms as f64 / 1000.0,
                    ph.duration_ms as f64 / 1000.0,
                    ph.attempts
                ));
            }
            h.push_str("</table>");
            if !p.failures.is_empty() {
                h.push_str("<h3>Failure signatures</h3><ul>");
                for f in &p.failures {
                    h.push_str(&format!("<li>{}</li>", esc(&f.describe())));
                }
                h.push_str("</ul>");
            }
            if !p.healing.is_empty() {
                h.push_str("<h3>Healing</h3><table><tr><th>finding</th><th>action</th><th>plugin</th><th>confidence</th><th>outcome</th><th>time</th></tr>");
                for r in &p.healing {
                    let o = r.outcome.as_str().to_string();
                    h.push_str(&format!(
                        "<tr><td>{}: {} (lines {:?})</td><td>{}</td><td>{}</td><td>{:.2}</td><td class=\"{o}\">{o}{}</td><td>{:.1} s</td></tr>",
                        esc(r.finding.category.as_str()),
                        esc(&r.finding.summary),
                        r.finding.lines,
                        esc(&r.action),
                        esc(&r.plugin),
                        r.confidence,
                        r.reason.as_ref().map(|x| format!(": {}", esc(x))).unwrap_or_default(),
                        r.duration_ms as f64 / 1000.0
                    ));
                }
                h.push_str("</table>");
                for r in p.healing.iter().filter(|r| r.config_diff.is_some()) {
                    h.push_str(&format!(
                        "<p>config change of {}:</p><pre>{}</pre>",
                        esc(&r.action),
                        esc(r.config_diff.as_deref().unwrap_or(""))
                    ));
                }
            }
            h.push_str("<h3>Errors by category</h3>");
            if p.errors.is_empty() {
                h.push_str("<p>none</p>");
            } else {
                h.push_str("<table><tr><th>category</th><th>count</th></tr>");
                for (c, n) in &p.errors {
                    h.push_str(&format!("<tr><td>{}</td><td>{n}</td></tr>", esc(c)));
                }
                h.push_str("</table>");
            }
            if !p.verification.is_empty() {
                h.push_str("<h3>Verification after the reboot</h3><table><tr><th>check</th><th>status</th></tr>");
                for c in &p.verification {
                    let s = c.status.as_str().to_string();
                    h.push_str(&format!(
                        "<tr><td>{}</td><td class=\"{s}\">{s}</td></tr>",
                        esc(&c.check)
                    ));
                }
                h.push_str("</table>");
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

fn timeline(p: &ProfileReport) -> String {
    let end = p
        .phases
        .iter()
        .map(|ph| ph.started_ms + ph.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let width = 900.0;
    let row = 26.0;
    let height = row * (p.phases.len() as f64 + 1.0) + 20.0;
    let mut s = format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of {}\">",
        esc(&p.name)
    );
    for (i, ph) in p.phases.iter().enumerate() {
        let x = 160.0 + ph.started_ms as f64 / end * (width - 180.0);
        let w = (ph.duration_ms as f64 / end * (width - 180.0)).max(2.0);
        let y = 10.0 + i as f64 * row;
        let color = match ph.status {
            Status::Passed => "#4caf50",
            Status::Failed => "#e53935",
            Status::Error => "#fb8c00",
        };
        s.push_str(&format!(
            "<text x=\"4\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"{color}\"><title>{} {:.1} s, {} attempt(s)</title></rect>",
            y + 13.0,
            esc(&ph.name),
            esc(&ph.name),
            ph.duration_ms as f64 / 1000.0,
            ph.attempts
        ));
    }
    let y = 10.0 + p.phases.len() as f64 * row;
    s.push_str(&format!(
        "<text x=\"4\" y=\"{}\" font-size=\"12\">healing</text>",
        y + 13.0
    ));
    for (i, r) in p.healing.iter().enumerate() {
        // At its time; reports from before healing times were kept get evenly spaced marks.
        let at = match r.started_ms {
            Some(t) => (t as f64 / end).min(1.0),
            None => (i + 1) as f64 / (p.healing.len() as f64 + 1.0),
        };
        let x = 160.0 + at * (width - 180.0);
        let color = if r.outcome == Outcome::Healed {
            "#1e88e5"
        } else {
            "#9e9e9e"
        };
        s.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{}\" r=\"7\" fill=\"{color}\"><title>{} ({}, {:.2}): {}</title></circle>",
            y + 9.0,
            esc(&r.action),
            esc(&r.plugin),
            r.confidence,
            r.outcome
        ));
    }
    s.push_str("</svg>");
    s
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
