//! The finding for a failure no rule explains: a phase that failed (its `::ERROR::` marker)
//! while no detector reported an error or fatal finding in it still gets an `other` finding,
//! pointing at the lines most likely to be the cause, so nothing fails silently.
//!
//! The monitor keeps the phase's last lines in a small ring of reused buffers (no allocation
//! per line once warm) and only scores them when a phase fails.

use crate::findings::{Category, Finding, Severity};
use nixtest_events::{Event, EventKind};

/// The detector name the host's own findings carry.
pub const HOST_DETECTOR: &str = "nixtest";
/// Lines of a phase's tail kept for the fallback.
pub const TAIL_LINES: usize = 48;
/// Bytes of each kept line.
const LINE_BYTES: usize = 512;
/// Lines a fallback finding cites besides the failure marker.
const CITED: usize = 3;

/// Words that make a line look like the reason for a failure, and words that say it is not.
const STRONG: &[&str] = &[
    "error",
    "fatal",
    "panic",
    "traceback",
    "exception",
    "abort",
    "segmentation fault",
];
const WEAK: &[&str] = &[
    "failed",
    "failure",
    "cannot",
    "can't",
    "couldn't",
    "could not",
    "unable",
    "denied",
    "not found",
    "no such",
    "refused",
    "timed out",
    "timeout",
    "killed",
    "invalid",
    "missing",
    "unknown",
    "not permitted",
    "bad ",
    "illegal",
    "unexpected",
    "unavailable",
    "not available",
    "non-zero",
    "exit code",
    "exit status",
    "corrupt",
    "violation",
];
const CALM: &[&str] = &[
    "warning",
    "0 failed",
    "0 errors",
    "no error",
    "success",
    "succeeded",
    "completed",
    "ignoring",
    "ignored",
    "retrying",
];

/// How strongly a line reads as the cause of a failure (0: not at all).
pub fn cause_score(text: &str) -> u32 {
    let lower = text.to_ascii_lowercase();
    let count = |words: &[&str]| words.iter().filter(|w| lower.contains(**w)).count() as u32;
    let strong = count(STRONG);
    let weak = count(WEAK);
    if strong + weak == 0 {
        return 0;
    }
    let calm = count(CALM);
    (3 * strong + weak).saturating_sub(3 * calm)
}

/// The host's finding for the guest watchdog's `::HANG::` line: the phase printed nothing and
/// its processes did nothing (or it ran past its deadline). Permanent: waiting longer is what
/// the user does not want. The snapshot's path in the guest is a detail until it is fetched.
pub fn hang_finding(event: &Event) -> Option<Finding> {
    let why = event.field("hang")?;
    let mut details = Vec::new();
    // The path comes from the install's output: only the runner's own snapshot files are read
    // (any other path would put a guest file of the output's choosing into the report).
    if let Some(file) = event.field("snapshot").filter(|f| is_snapshot_path(f)) {
        details.push((SNAPSHOT_FILE.to_string(), file.to_string()));
    }
    Some(Finding {
        details,
        detector: HOST_DETECTOR.into(),
        category: Category::Hang,
        severity: Severity::Error,
        permanent: true,
        summary: format!("hang: {}", crate::term::clip(why, 200)),
        lines: vec![event.line],
    })
}

/// A path the guest runner's watchdog writes: `/var/log/nixtest/hang-NAME.txt`, NAME plain.
fn is_snapshot_path(path: &str) -> bool {
    path.strip_prefix("/var/log/nixtest/hang-")
        .and_then(|rest| rest.strip_suffix(".txt"))
        .is_some_and(|name| {
            !name.is_empty()
                && !name.contains("..")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
}

#[cfg(test)]
#[test]
fn only_the_runners_snapshot_files_are_read() {
    assert!(is_snapshot_path("/var/log/nixtest/hang-install-1.txt"));
    for bad in [
        "/etc/shadow",
        "/var/log/nixtest/hang-../../../etc/shadow.txt",
        "/var/log/nixtest/hang-a/b.txt",
        "/var/log/nixtest/hang-.txt",
        "/var/log/nixtest/hang-x.txt.bak",
    ] {
        assert!(!is_snapshot_path(bad), "{bad}");
    }
}

/// The detail of a hang finding naming the guest's snapshot file, and the one holding it.
pub const SNAPSHOT_FILE: &str = "snapshot_file";
pub const SNAPSHOT: &str = "snapshot";

/// A failed phase waiting for the detectors to catch up before it is judged unexplained.
#[derive(Debug, Clone)]
pub struct PendingFailure {
    phase_start: u32,
    marker: Event,
    cited: Vec<(u32, String)>,
    /// Whether any cited line reads like an error, or they are only the last lines.
    scored: bool,
}

impl PendingFailure {
    /// The fallback finding, unless one of `findings` already explains the failure (an error
    /// or fatal finding citing a line of the phase).
    pub fn judge(&self, findings: &[Finding]) -> Option<Finding> {
        let range = self.phase_start..=self.marker.line;
        let explained = findings.iter().any(|f| {
            f.severity.is_failure()
                && (f.detector != HOST_DETECTOR || f.category == Category::Hang)
                && f.lines.iter().any(|l| range.contains(l))
        });
        if explained {
            return None;
        }
        let mut summary = format!(
            "no rule explains this: {}",
            crate::term::clip(self.marker.message.trim(), 160)
        );
        if let Some((_, text)) = self.cited.first() {
            summary.push_str(if self.scored {
                "; most likely cause: "
            } else {
                "; last output: "
            });
            summary.push_str(&crate::term::clip(text.trim(), 160));
        }
        let mut lines: Vec<u32> = self.cited.iter().map(|(l, _)| *l).collect();
        lines.push(self.marker.line);
        lines.sort_unstable();
        lines.dedup();
        Some(Finding {
            details: Vec::new(),
            detector: HOST_DETECTOR.into(),
            category: "other".into(),
            severity: Severity::Error,
            permanent: true,
            summary,
            lines,
        })
    }

    /// The lines the fallback cites, with their text (for evidence).
    pub fn cited(&self) -> &[(u32, String)] {
        &self.cited
    }
}

/// The tail of the current phase.
#[derive(Debug, Default)]
pub struct PhaseTail {
    phase_start: u32,
    ring: Vec<(u32, String)>,
    /// When each kept line came (how many lines were kept before it).
    arrived: Vec<u64>,
    kept: u64,
}

impl PhaseTail {
    /// Takes one event; returns a pending failure when it is a phase's failure marker.
    pub fn observe(&mut self, event: &Event) -> Option<PendingFailure> {
        match event.kind {
            EventKind::Phase => {
                self.phase_start = event.line;
                self.ring.clear();
                self.arrived.clear();
                None
            }
            EventKind::Error => Some(self.failed(event)),
            EventKind::Raw | EventKind::Warning | EventKind::Context => {
                self.keep(event);
                None
            }
            _ => None,
        }
    }

    fn keep(&mut self, event: &Event) {
        self.keep_text(event.line, &event.message);
    }

    /// Keeps a raw line of the phase, given as bytes: only the part kept is read (a replay
    /// hands over most lines of a log of long lines); a line whose kept part is not UTF-8 is
    /// left out.
    pub fn keep_bytes(&mut self, line: u32, bytes: &[u8]) {
        let head = &bytes[..bytes.len().min(LINE_BYTES)];
        let text = match std::str::from_utf8(head) {
            Ok(text) => text,
            // Cut inside a character: keep what comes before it.
            Err(e) if e.error_len().is_none() && head.len() < bytes.len() => {
                std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
            }
            Err(_) => "",
        };
        self.keep_text(line, text);
    }

    /// Keeps a raw line of the phase.
    pub fn keep_text(&mut self, line: u32, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut cut = text.len().min(LINE_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.kept += 1;
        if self.ring.len() < TAIL_LINES {
            self.ring.push((line, text[..cut].to_string()));
            self.arrived.push(self.kept);
            return;
        }
        // The tail is the phase's highest-numbered lines: the lowest goes (the earliest among
        // equals). Lines come in order, so that is the oldest, but for the skipped lines a
        // replay hands over late (before the next line that reads the tail): one older than
        // every kept line would have gone before them.
        let slot = (0..self.ring.len())
            .min_by_key(|&i| (self.ring[i].0, self.arrived[i]))
            .expect("a full tail");
        if line < self.ring[slot].0 {
            return;
        }
        self.arrived[slot] = self.kept;
        let kept = &mut self.ring[slot];
        kept.0 = line;
        kept.1.clear();
        kept.1.push_str(&text[..cut]);
    }

    fn failed(&self, marker: &Event) -> PendingFailure {
        let mut scored: Vec<(u32, u32, &str)> = self
            .ring
            .iter()
            .map(|(l, t)| (cause_score(t), *l, t.as_str()))
            .collect();
        // Best score first; among equals the later line (closer to the failure).
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        let any = scored.first().is_some_and(|s| s.0 > 0);
        let mut cited: Vec<(u32, String)> = if any {
            scored
                .iter()
                .filter(|s| s.0 > 0)
                .take(CITED)
                .map(|s| (s.1, s.2.to_string()))
                .collect()
        } else {
            // Nothing reads like an error: the last lines before the failure.
            let mut last: Vec<&(u32, String)> = self.ring.iter().collect();
            last.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
            last.into_iter().take(CITED).cloned().collect()
        };
        // Best first stays the summary's line; evidence is sorted by the finding.
        cited.truncate(CITED);
        PendingFailure {
            phase_start: self.phase_start,
            marker: marker.clone(),
            cited,
            scored: any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(log: &str) -> Vec<Event> {
        nixtest_events::parse_log(log.as_bytes())
    }

    fn pending(log: &str) -> Option<PendingFailure> {
        let mut tail = PhaseTail::default();
        events(log).iter().filter_map(|e| tail.observe(e)).last()
    }

    #[test]
    fn the_line_that_reads_like_the_cause_is_cited_first() {
        let p = pending(
            "::PHASE::install\nstarting\nwarning: something minor\nfrobnicate: cannot open widget: permission denied\nmore output\n::ERROR::install failed with exit code 1\n",
        )
        .unwrap();
        let f = p.judge(&[]).unwrap();
        assert_eq!(f.category, "other");
        assert_eq!(f.severity, Severity::Error);
        assert!(f.summary.contains("frobnicate"), "{}", f.summary);
        assert!(
            f.lines.contains(&4) && f.lines.contains(&6),
            "{:?}",
            f.lines
        );
    }

    #[test]
    fn lines_handed_over_late_leave_the_tail_that_lines_in_order_do() {
        // Lines 1..=200, some kept as they come, the others late (a replay's skipped lines,
        // handed over before the next line that reads the tail), in runs.
        let mut in_order = PhaseTail::default();
        let mut late = PhaseTail::default();
        let mut held = Vec::new();
        for line in 1..=200u32 {
            let text = format!("line {line}");
            in_order.keep_text(line, &text);
            if line % 7 == 0 || line % 11 == 0 {
                late.keep_text(line, &text);
            } else {
                held.push((line, text));
            }
            if line % 50 == 0 {
                for (l, t) in held.drain(..) {
                    late.keep_text(l, &t);
                }
                let sorted = |t: &PhaseTail| {
                    let mut r = t.ring.clone();
                    r.sort();
                    r
                };
                assert_eq!(sorted(&late), sorted(&in_order), "at line {line}");
            }
        }
        assert_eq!(in_order.ring.len(), TAIL_LINES);
    }

    #[test]
    fn raw_lines_are_kept_by_their_first_bytes() {
        let mut tail = PhaseTail::default();
        let long = format!("{}é{}", "a".repeat(LINE_BYTES - 1), "b".repeat(100));
        tail.keep_bytes(1, long.as_bytes());
        // Invalid past what is kept: the kept part is text.
        let mut late = b"c".repeat(LINE_BYTES + 10);
        late.push(0xFF);
        tail.keep_bytes(2, &late);
        tail.keep_bytes(3, b"d\xFFd");
        tail.keep_bytes(4, b"plain");
        let kept: Vec<(u32, &str)> = tail.ring.iter().map(|(l, t)| (*l, t.as_str())).collect();
        assert_eq!(
            kept,
            [
                (1, "a".repeat(LINE_BYTES - 1).as_str()),
                (2, "c".repeat(LINE_BYTES).as_str()),
                (4, "plain"),
            ]
        );
    }

    #[test]
    fn an_explained_failure_gets_no_fallback() {
        let p = pending("::PHASE::a\nboom\n::ERROR::a failed with exit code 1\n").unwrap();
        let mut f = p.judge(&[]).unwrap();
        f.detector = "disk-fix".into();
        assert!(p.judge(&[f.clone()]).is_none());
        // A warning, or a finding from an earlier phase, explains nothing.
        f.severity = Severity::Warning;
        assert!(p.judge(&[f.clone()]).is_some());
        f.severity = Severity::Error;
        f.lines = vec![0];
        assert!(p.judge(&[f]).is_some());
    }

    #[test]
    fn quiet_failures_cite_the_last_lines() {
        let p = pending("::PHASE::a\none\ntwo\nthree\nfour\n::ERROR::a failed with exit code 3\n")
            .unwrap();
        let f = p.judge(&[]).unwrap();
        assert_eq!(f.lines, vec![3, 4, 5, 6]);
        assert!(f.summary.ends_with("last output: four"), "{}", f.summary);
    }

    #[test]
    fn scores_read_the_words() {
        assert_eq!(cause_score("copying path '/nix/store/x'"), 0);
        assert!(cause_score("error: something broke") > cause_score("cp: cannot stat 'x'"));
        assert_eq!(cause_score("tests: 12 passed, 0 failed"), 0);
        assert!(cause_score("Traceback (most recent call last):") > 0);
    }

    #[test]
    fn the_summary_is_bounded_and_safe_whatever_the_guest_prints() {
        let log = format!(
            "::PHASE::a\nerror: \x1b[2J{}\n::ERROR::a {}\n",
            "x".repeat(10_000),
            "y".repeat(10_000)
        );
        let f = pending(&log).unwrap().judge(&[]).unwrap();
        assert!(f.summary.chars().count() < 400, "{}", f.summary.len());
        assert!(!f.summary.contains('\x1b'));
    }

    #[test]
    fn the_tail_is_bounded() {
        let mut tail = PhaseTail::default();
        let long = format!("{}\n", "é".repeat(5_000)).repeat(1000);
        for e in events(&long) {
            tail.observe(&e);
        }
        assert_eq!(tail.ring.len(), TAIL_LINES);
        assert!(tail.ring.iter().all(|(_, t)| t.len() <= LINE_BYTES));
    }
}
