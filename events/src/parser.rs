//! Reads `::KIND::` markers and turns lines into events.

use crate::{Event, EventKind, Line};
use std::borrow::Cow;
use std::sync::Arc;

/// A marker line that did not have the shape its kind needs. The line is kept as a raw event
/// with a `malformed` field, so nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMarker {
    pub line: u32,
    pub reason: String,
}

/// Turns lines into events, numbering them and carrying the current phase.
#[derive(Debug, Default)]
pub struct EventParser {
    phase: Arc<str>,
    line: u32,
    /// Lines parsed (the others were counted only, see [`EventParser::skip`]).
    parsed: u64,
}

impl EventParser {
    pub fn phase(&self) -> &str {
        &self.phase
    }

    pub fn lines(&self) -> u32 {
        self.line
    }

    pub fn parsed(&self) -> u64 {
        self.parsed
    }

    /// Counts `n` lines that were not parsed (no detector could want them).
    pub fn skip(&mut self, n: u32) {
        self.line = self.line.saturating_add(n);
    }

    pub fn parse(&mut self, line: Line<'_>) -> Event {
        self.line = self.line.saturating_add(1);
        self.parsed += 1;
        let text = to_text(line.bytes);
        let mut event = self.classify(text);
        if line.truncated > 0 {
            event.message.push_str(" [… line cut]");
            event
                .fields
                .push(("truncated".into(), line.truncated.to_string()));
        }
        event
    }

    fn classify(&mut self, text: Cow<'_, str>) -> Event {
        let trimmed = text.trim_start();
        let Some(body) = trimmed.strip_prefix("::") else {
            return self.event(EventKind::Raw, text.into_owned(), Vec::new());
        };
        let Some((kind, rest)) = split_sep(body) else {
            return self.event(EventKind::Raw, text.into_owned(), Vec::new());
        };
        let kind = match kind {
            "PHASE" => EventKind::Phase,
            "SUCCESS" => EventKind::Success,
            "ERROR" => EventKind::Error,
            "WARNING" => EventKind::Warning,
            "CONTEXT" => EventKind::Context,
            "PROGRESS" => EventKind::Progress,
            "METRIC" => EventKind::Metric,
            // The kernel's own messages, which the guest runner follows while a phase runs:
            // raw lines as dmesg shows them, marked with where they came from.
            "KERNEL" => {
                return self.event(
                    EventKind::Raw,
                    rest.to_string(),
                    vec![("source".to_string(), "kernel".to_string())],
                );
            }
            // The guest runner's watchdog: the phase printed nothing and did nothing for a
            // while (`::HANG::why::snapshot file`), or ran past its deadline.
            "HANG" => {
                let (why, snapshot) = match rest.rsplit_once("::") {
                    Some((why, file)) if file.starts_with('/') => (why, file),
                    _ => (rest, ""),
                };
                let why = why.trim();
                if why.is_empty() {
                    return self.malformed(&text, "HANG marker without a reason");
                }
                let mut fields = vec![("hang".to_string(), why.to_string())];
                if !snapshot.is_empty() {
                    fields.push(("snapshot".to_string(), snapshot.trim().to_string()));
                }
                return self.event(EventKind::Error, why.to_string(), fields);
            }
            // `::foo::bar` that is no marker of ours (Nix attribute paths, C++ names): raw.
            _ => return self.event(EventKind::Raw, text.into_owned(), Vec::new()),
        };
        match kind {
            EventKind::Phase => {
                let name = rest.trim();
                if name.is_empty() {
                    return self.malformed(&text, "PHASE marker without a phase name");
                }
                // The same phase again (a runner that repeats its marker) keeps its name.
                if *self.phase != *name {
                    self.phase = Arc::from(name);
                }
                self.event(EventKind::Phase, name.to_string(), Vec::new())
            }
            EventKind::Progress => {
                let (stage, details) = split_sep(rest).unwrap_or((rest, ""));
                let stage = stage.trim();
                if stage.is_empty() {
                    return self.malformed(&text, "PROGRESS marker without a stage");
                }
                let message = if details.is_empty() {
                    stage.to_string()
                } else {
                    format!("{stage}: {details}")
                };
                let fields = vec![
                    ("stage".to_string(), stage.to_string()),
                    ("details".to_string(), details.to_string()),
                ];
                self.event(EventKind::Progress, message, fields)
            }
            EventKind::Metric => {
                let Some((name, value)) = split_sep(rest) else {
                    return self.malformed(&text, "METRIC marker needs ::METRIC::name::value");
                };
                let (name, value) = (name.trim(), value.trim());
                if name.is_empty() {
                    return self.malformed(&text, "METRIC marker without a name");
                }
                if value.parse::<f64>().is_err() {
                    return self.malformed(&text, "METRIC value is not a number");
                }
                let fields = vec![
                    ("name".to_string(), name.to_string()),
                    ("value".to_string(), value.to_string()),
                ];
                self.event(EventKind::Metric, format!("{name}={value}"), fields)
            }
            _ => self.event(kind, rest.to_string(), Vec::new()),
        }
    }

    fn malformed(&mut self, text: &str, reason: &str) -> Event {
        self.event(
            EventKind::Raw,
            text.to_string(),
            vec![("malformed".to_string(), reason.to_string())],
        )
    }

    fn event(&self, kind: EventKind, message: String, fields: Vec<(String, String)>) -> Event {
        Event {
            kind,
            phase: self.phase.clone(),
            message,
            line: self.line,
            fields,
        }
    }
}

impl Event {
    /// The malformed-marker note of this event, if any.
    pub fn malformed(&self) -> Option<MalformedMarker> {
        self.field("malformed").map(|reason| MalformedMarker {
            line: self.line,
            reason: reason.to_string(),
        })
    }
}

/// `s` around its first `::` (a marker's separator), found with memchr: `str::split_once`
/// sets up a substring searcher on every call, which showed on logs of many markers.
fn split_sep(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(i) = memchr::memchr(b':', &bytes[from..]) {
        let at = from + i;
        if bytes.get(at + 1) == Some(&b':') {
            return Some((&s[..at], &s[at + 2..]));
        }
        from = at + 1;
    }
    None
}

/// Bytes to text for matching: invalid UTF-8 replaced, ANSI escapes and stray control
/// characters removed. Borrowed when the line is already clean (the common case).
fn to_text(bytes: &[u8]) -> Cow<'_, str> {
    // Printable ASCII (most lines) in one pass over words; tabs, controls and anything past
    // ASCII take the checks below.
    if printable_ascii(bytes) {
        // SAFETY: every byte is ASCII, so `bytes` is UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    // Valid UTF-8 (nearly every line) is checked the fast way; the lossy path replaces.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    // C0 controls, DEL, and 0xC2 (the lead byte of the C1 controls U+0080..U+009F) send the
    // line down the slow path; plain lines are borrowed as they are.
    if !text
        .bytes()
        .any(|b| b < 0x20 && b != b'\t' || b == 0x7f || b == 0xc2)
    {
        return text;
    }
    let mut clean = Printed(String::with_capacity(text.len()));
    vte::Parser::new().advance(&mut clean, text.as_bytes());
    clean.0.retain(|c| !c.is_control() || c == '\t');
    Cow::Owned(clean.0)
}

/// Whether every byte is in 0x20..=0x7E, eight at a time: a word is turned away if a byte has
/// its top bit set, is below 0x20 or is 0x7F (the borrow of a subtraction only sets bits above
/// a byte that is really below the bound, so the test is exact).
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & TOPS;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let del = w ^ (ONES * 0x7f);
        if (w & TOPS) | below(w, 0x20) | below(del, 1) != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| (0x20..0x7f).contains(b))
}

/// What a terminal would print of a line: escape sequences (CSI, OSC, ...) dropped, tabs
/// kept. vte decides where a sequence ends; the characters go straight into the string
/// (strip-ansi-escapes formats each one through a writer, which made lines with colour
/// codes the parser's slowest).
struct Printed(String);

impl vte::Perform for Printed {
    fn print(&mut self, c: char) {
        self.0.push(c);
    }

    fn execute(&mut self, byte: u8) {
        if byte == b'\t' {
            self.0.push('\t');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_log;

    fn one(s: &str) -> Event {
        parse_log(s.as_bytes()).remove(0)
    }

    #[test]
    fn printable_ascii_is_decided_for_every_byte_anywhere() {
        let naive = |b: &[u8]| b.iter().all(|b| (0x20..0x7f).contains(b));
        for len in [1usize, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut line = vec![b'a'; len];
                    line[at] = byte;
                    assert_eq!(
                        printable_ascii(&line),
                        naive(&line),
                        "{byte:#x} at {at} of {len}"
                    );
                    // Beside a byte the test turns away, too (a borrow must not hide it).
                    if len > 1 {
                        line[(at + 1) % len] = 0x1f;
                        assert!(!printable_ascii(&line));
                    }
                }
            }
        }
        assert!(printable_ascii(b""));
    }

    #[test]
    fn every_marker_kind() {
        let log = "::PHASE::disk_partitioning\n::SUCCESS::done\n::ERROR::bad\n::WARNING::hmm\n\
                   ::CONTEXT::why\n::PROGRESS::copy::3 of 10\n::METRIC::memory_peak_mb::412\nraw\n";
        let ev = parse_log(log.as_bytes());
        let kinds: Vec<_> = ev.iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(
            kinds,
            vec![
                Phase, Success, Error, Warning, Context, Progress, Metric, Raw
            ]
        );
        assert!(ev.iter().all(|e| &*e.phase == "disk_partitioning"));
        assert_eq!(ev[2].message, "bad");
        assert_eq!(ev[5].field("stage"), Some("copy"));
        assert_eq!(ev[5].field("details"), Some("3 of 10"));
        assert_eq!(ev[6].field("name"), Some("memory_peak_mb"));
        assert_eq!(ev[6].field("value"), Some("412"));
        assert_eq!(ev[7].line, 8);
    }

    #[test]
    fn kernel_lines_are_raw_and_marked_and_hangs_are_errors() {
        let k = one("::KERNEL::[   12.5] Out of memory: Killed process 42 (nix)");
        assert_eq!(k.kind, EventKind::Raw);
        assert_eq!(
            k.message,
            "[   12.5] Out of memory: Killed process 42 (nix)"
        );
        assert_eq!(k.field("source"), Some("kernel"));
        let h =
            one("::HANG::install printed nothing for 60 s::/var/log/nixtest/hang-install-1.txt");
        assert_eq!(h.kind, EventKind::Error);
        assert_eq!(h.message, "install printed nothing for 60 s");
        assert_eq!(h.field("hang"), Some("install printed nothing for 60 s"));
        assert_eq!(
            h.field("snapshot"),
            Some("/var/log/nixtest/hang-install-1.txt")
        );
        let bare = one("::HANG::install ran past its deadline of 9 s");
        assert_eq!(bare.field("snapshot"), None);
        assert_eq!(
            bare.field("hang"),
            Some("install ran past its deadline of 9 s")
        );
        assert!(one("::HANG::").malformed().is_some());
    }

    #[test]
    fn phase_before_first_marker_is_empty() {
        assert_eq!(&*one("hello").phase, "");
    }

    #[test]
    fn marker_messages_keep_inner_colons() {
        assert_eq!(one("::ERROR::a::b").message, "a::b");
    }

    #[test]
    fn malformed_markers_stay_raw_with_a_note() {
        for (line, reason) in [
            ("::METRIC::x", "METRIC marker needs"),
            ("::METRIC::x::fast", "not a number"),
            ("::METRIC::::1", "without a name"),
            ("::PHASE::  ", "without a phase name"),
            ("::PROGRESS::::x", "without a stage"),
        ] {
            let e = one(line);
            assert_eq!(e.kind, EventKind::Raw, "{line}");
            assert_eq!(e.message, line);
            assert!(e.malformed().unwrap().reason.contains(reason), "{line}");
        }
    }

    #[test]
    fn unknown_marker_and_cpp_names_are_raw() {
        assert_eq!(one("::FOO::bar").kind, EventKind::Raw);
        assert_eq!(one("::std::bad_alloc").kind, EventKind::Raw);
        assert!(one("::std::bad_alloc").malformed().is_none());
    }

    #[test]
    fn ansi_is_stripped_for_matching() {
        let e = one("\x1b[31;1merror:\x1b[0m builder failed");
        assert_eq!(e.message, "error: builder failed");
        let e = one("\x1b[1m::ERROR::\x1b[0mdisk");
        assert_eq!(e.kind, EventKind::Error);
        assert_eq!(e.message, "disk");
        // OSC (a terminal title), a tab kept, a bell and a backspace dropped.
        let e = one("\x1b]0;title\x07cc1:\tfatal\x08 error\x07");
        assert_eq!(e.message, "cc1:\tfatal error");
        // An escape cut off at the end of the line does not eat the text before it.
        assert_eq!(one("done \x1b[3").message, "done ");
    }

    #[test]
    fn the_separator_is_found_as_split_once_finds_it() {
        for s in [
            "a::b", "a:b::c", ":::", "::", "a:", ":a:b", "", "x::y::z", "é::ü", "a: :b",
        ] {
            assert_eq!(split_sep(s), s.split_once("::"), "{s:?}");
        }
    }

    #[test]
    fn c1_controls_are_removed() {
        assert_eq!(one("a\u{9c}b\u{85}c").message, "abc");
        assert_eq!(one("caf\u{e9} \u{a0}ok").message, "caf\u{e9} \u{a0}ok");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let ev = parse_log(b"bad \xff\xfe bytes\nnext\n");
        assert_eq!(ev[0].message, "bad \u{fffd}\u{fffd} bytes");
        assert_eq!(ev[1].line, 2);
    }

    #[test]
    fn truncated_line_has_a_note() {
        let mut s = crate::LineSplitter::new(8);
        let mut p = EventParser::default();
        let mut out = Vec::new();
        s.push(b"0123456789abcdef\n", |l| out.push(p.parse(l)));
        assert!(out[0].message.starts_with("01234567"));
        assert_eq!(out[0].field("truncated"), Some("8"));
    }
}
