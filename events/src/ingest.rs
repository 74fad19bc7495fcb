//! The one ingest path: bytes → lines → events → which detector sees which event.
//!
//! The host's live run, `nixtest replay` and the plugin SDK's test harness all use these two
//! types, so a plugin author's `cargo test` routes lines exactly as a real run does.

use crate::{Event, EventKind, EventParser, LineSplitter};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{RegexSet, RegexSetBuilder};
use std::collections::VecDeque;
use std::time::Instant;

/// Splits a byte stream into lines and parses each into an [`Event`].
#[derive(Debug, Default)]
pub struct Ingest {
    splitter: LineSplitter,
    parser: EventParser,
}

impl Ingest {
    /// Feeds a chunk; `emit` gets every line it completes, in order.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(Event)) {
        let parser = &mut self.parser;
        self.splitter.push(chunk, |l| emit(parser.parse(l)));
    }

    /// The stream ended: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Event> {
        let line = self.splitter.finish()?;
        Some(self.parser.parse(line))
    }

    /// Lines parsed so far (the number of the last one).
    pub fn lines(&self) -> u32 {
        self.parser.lines()
    }

    /// Every event of a whole log.
    pub fn parse_all(bytes: &[u8]) -> Vec<Event> {
        let mut ingest = Ingest::default();
        let mut events = Vec::new();
        ingest.push(bytes, |e| events.push(e));
        events.extend(ingest.finish());
        events
    }
}

/// What one detector asks to see: lines holding one of its literals or matching one of its
/// patterns, with `context` lines before each.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub literals: &'a [String],
    pub patterns: &'a [String],
    pub context: usize,
}

/// Compile limits for the patterns (they come from untrusted plugins).
#[derive(Debug, Clone, Copy)]
pub struct PatternLimits {
    /// Compiled size per detector (regex's NFA size limit).
    pub size: usize,
    /// Lazy-DFA cache per detector.
    pub dfa_size: usize,
    pub nest: u32,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits {
            size: 2 << 20,
            dfa_size: 2 << 20,
            nest: 64,
        }
    }
}

/// A `RegexSet` for `patterns` within `limits` (`slots` detectors' worth of them).
pub fn pattern_set(
    patterns: &[String],
    limits: PatternLimits,
    slots: usize,
) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(limits.size * slots)
        .dfa_size_limit(limits.dfa_size * slots)
        .nest_limit(limits.nest)
        .build()
}

/// Decides in one pass per line which detectors see it (one Aho-Corasick automaton over every
/// literal, one `RegexSet` over every pattern), and hands each detector the context lines it
/// asked for before a line it wants, each line at most once.
pub struct Router {
    literals: Option<AhoCorasick>,
    literal_owner: Vec<usize>,
    /// One set over all detectors' patterns, or (should that fail) one set per detector.
    sets: Vec<(RegexSet, Vec<usize>)>,
    sees_all: Vec<usize>,
    /// Per slot: context lines wanted, last line sent; `None` for a slot that sees nothing.
    slots: Vec<Option<(usize, u32)>>,
    wanted: Vec<bool>,
    recent: VecDeque<(Event, Instant)>,
    max_context: usize,
}

impl Router {
    /// `routes[i]` is slot `i`; `None` for a slot that sees nothing (a refused detector).
    pub fn new(routes: &[Option<Route<'_>>], limits: PatternLimits) -> Result<Self, String> {
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut sees_all = Vec::new();
        let mut with_patterns = 0;
        for (i, r) in routes.iter().enumerate() {
            let Some(r) = r else { continue };
            if r.literals.is_empty() && r.patterns.is_empty() {
                sees_all.push(i);
            }
            for l in r.literals {
                literals.push(l.clone());
                literal_owner.push(i);
            }
            if !r.patterns.is_empty() {
                with_patterns += 1;
            }
            for p in r.patterns {
                patterns.push(p.clone());
                pattern_owner.push(i);
            }
        }
        let literals = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    // Past 100 literals the automatic choice is an NFA, several times slower
                    // per byte; literals are bounded per plugin, so a DFA stays small enough
                    // for every line of a run to go through it.
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .map_err(|e| e.to_string())?,
            )
        };
        let sets = if patterns.is_empty() {
            Vec::new()
        } else {
            match pattern_set(&patterns, limits, with_patterns) {
                Ok(set) => vec![(set, pattern_owner)],
                Err(_) => {
                    // Too big together: one set per detector, each within its own limits.
                    let mut own = Vec::new();
                    for (i, r) in routes.iter().enumerate() {
                        let Some(r) = r.filter(|r| !r.patterns.is_empty()) else {
                            continue;
                        };
                        let set = pattern_set(r.patterns, limits, 1)
                            .map_err(|e| format!("detector {i}'s patterns: {e}"))?;
                        own.push((set, vec![i; r.patterns.len()]));
                    }
                    own
                }
            }
        };
        let max_context = routes
            .iter()
            .flatten()
            .map(|r| r.context)
            .max()
            .unwrap_or(0);
        Ok(Router {
            literals,
            literal_owner,
            sets,
            sees_all,
            slots: routes.iter().map(|r| r.map(|r| (r.context, 0))).collect(),
            wanted: vec![false; routes.len()],
            recent: VecDeque::with_capacity(max_context + 1),
            max_context,
        })
    }

    /// Marks in `wanted` the slots whose literals or patterns `text` holds.
    fn mark(&mut self, text: &str) {
        for &i in &self.sees_all {
            self.wanted[i] = true;
        }
        if let Some(ac) = &self.literals {
            for m in ac.find_overlapping_iter(text) {
                self.wanted[self.literal_owner[m.pattern().as_usize()]] = true;
            }
        }
        for (set, owner) in &self.sets {
            for i in set.matches(text).iter() {
                self.wanted[owner[i]] = true;
            }
        }
    }

    /// Routes one event: `send(slot, event)` for each slot that wants it, its context lines
    /// first. Marker lines other than progress and metrics go to every slot; raw output only
    /// where a literal or pattern asks for it. Returns the most context lines any receiving
    /// slot asked for, or `None` when no slot wanted the line. Call [`Router::remember`] next.
    pub fn route(&mut self, event: &Event, mut send: impl FnMut(usize, &Event)) -> Option<usize> {
        self.wanted.iter_mut().for_each(|w| *w = false);
        match event.kind {
            EventKind::Raw | EventKind::Progress | EventKind::Metric => self.mark(&event.message),
            _ => self.wanted.iter_mut().for_each(|w| *w = true),
        }
        let mut routed = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some((context, last_sent)) = slot else {
                continue;
            };
            if !self.wanted[i] {
                continue;
            }
            routed = Some(routed.unwrap_or(0).max(*context));
            let skip = self.recent.len().saturating_sub(*context);
            for (prev, _) in self.recent.iter().skip(skip) {
                if prev.line > *last_sent {
                    send(i, prev);
                }
            }
            *last_sent = event.line;
            send(i, event);
        }
        routed
    }

    /// The lines kept as context (at most the largest context any slot asked for), oldest
    /// first, with when each arrived.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &(Event, Instant)> + ExactSizeIterator {
        self.recent.iter()
    }

    /// Keeps `event` as context for the lines after it.
    pub fn remember(&mut self, event: Event, arrived: Instant) {
        if self.max_context == 0 {
            return;
        }
        if self.recent.len() == self.max_context {
            self.recent.pop_front();
        }
        self.recent.push_back((event, arrived));
    }

    /// Stops sending to a slot (its detector was disabled).
    pub fn close(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn literals_patterns_and_markers_route() {
        let (la, pa) = (s(&[]), s(&[r"disk \d+"]));
        let (lb, pb) = (s(&["oom"]), s(&[]));
        let (lc, pc) = (s(&[]), s(&[]));
        let mut r = Router::new(
            &[
                Some(Route {
                    literals: &la,
                    patterns: &pa,
                    context: 0,
                }),
                Some(Route {
                    literals: &lb,
                    patterns: &pb,
                    context: 0,
                }),
                None,
                Some(Route {
                    literals: &lc,
                    patterns: &pc,
                    context: 0,
                }),
            ],
            PatternLimits::default(),
        )
        .unwrap();
        let events = Ingest::parse_all(b"disk 3 oom\nnothing\n::ERROR::x\n");
        let mut got = Vec::new();
        for e in &events {
            r.route(e, |i, e| got.push((i, e.line)));
            r.remember(e.clone(), Instant::now());
        }
        assert_eq!(
            got,
            [(0, 1), (1, 1), (3, 1), (3, 2), (0, 3), (1, 3), (3, 3)]
        );
    }

    #[test]
    fn context_lines_come_first_and_once() {
        let (l, p) = (s(&["boom"]), s(&[]));
        let mut r = Router::new(
            &[Some(Route {
                literals: &l,
                patterns: &p,
                context: 2,
            })],
            PatternLimits::default(),
        )
        .unwrap();
        let events = Ingest::parse_all(b"a\nb\nc\nboom\nboom\nd\n");
        let mut got = Vec::new();
        for e in &events {
            r.route(e, |_, e| got.push(e.line));
            r.remember(e.clone(), Instant::now());
        }
        assert_eq!(got, [2, 3, 4, 5]);
    }

    #[test]
    fn ingest_numbers_lines_across_chunks() {
        let mut i = Ingest::default();
        let mut got = Vec::new();
        i.push(b"::PHASE::one\nhal", |e| got.push(e));
        i.push(b"f\nlast", |e| got.push(e));
        got.extend(i.finish());
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].message, "half");
        assert_eq!(&*got[2].phase, "one");
        assert_eq!(i.lines(), 3);
    }
}
