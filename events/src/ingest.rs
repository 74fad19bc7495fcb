//! The one ingest path: bytes → lines → events → which detector sees which event.
//!
//! The host's live run, `nixtest replay` and the plugin SDK's test harness all use these two
//! types, so a plugin author's `cargo test` routes lines exactly as a real run does.

use crate::{Event, EventKind, EventParser, LineSplitter};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::{
    Capture, Class, ClassBytes, ClassBytesRange, Hir, HirKind, Look, Repetition,
};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Splits a byte stream into lines and parses each into an [`Event`].
#[derive(Debug, Default)]
pub struct Ingest {
    splitter: LineSplitter,
    parser: EventParser,
    /// Kernel lines come twice when the host also reads the guest's console: the copy that
    /// arrives first is the event, the other is dropped. `None` until a console line comes.
    kernel_seen: Option<VecDeque<Seen>>,
    /// Console lines whose stream copy has not come yet: the events are numbered that many
    /// ahead of the stream's lines.
    ahead: u32,
    /// From which event number on the events are how many ahead of the stream's lines.
    offsets: VecDeque<(u32, u32)>,
}

#[derive(Debug)]
struct Seen {
    line: Box<[u8]>,
    from_console: bool,
}

/// Kernel lines remembered to drop their second copy: far more than arrive between the two.
const KERNEL_SEEN: usize = 512;
/// Changes of numbering remembered (older events are long past asking about).
const OFFSETS_KEPT: usize = 4096;
const KERNEL_MARKER: &[u8] = b"::KERNEL::";

/// The first copy of `line` that was remembered, forgotten (each copy comes once more at
/// most); or, if there was none, `line` remembered.
fn second_copy(seen: &mut VecDeque<Seen>, line: &[u8], from_console: bool) -> Option<Seen> {
    if let Some(at) = seen.iter().position(|l| *l.line == *line) {
        return seen.remove(at);
    }
    if seen.len() == KERNEL_SEEN {
        seen.pop_front();
    }
    seen.push_back(Seen {
        line: line.into(),
        from_console,
    });
    None
}

fn note_offset(offsets: &mut VecDeque<(u32, u32)>, from: u32, ahead: u32) {
    if offsets.len() == OFFSETS_KEPT {
        offsets.pop_front();
    }
    offsets.push_back((from, ahead));
}

/// Runs of skipped lines (whole lines, the number of the line before each) not yet handed
/// over, of one chunk: only runs with a non-empty line, and no more of them than lines are
/// handed over (older ones cannot be among the last).
struct Late<'a> {
    runs: VecDeque<(u32, &'a [u8])>,
    hand_over: usize,
    /// Whether a phase marker drops the runs instead (see [`SkipFilter::tail_per_phase`]).
    drop_at_phase: bool,
}

impl Late<'_> {
    /// Hands over the last `hand_over` non-empty lines of the runs, in order, and forgets the
    /// runs.
    fn hand_over(&mut self, skipped: &mut impl FnMut(u32, &[u8])) {
        let mut wanted = self.hand_over;
        // From the last run back: where the lines to hand over begin.
        let mut first = self.runs.len();
        let mut begin = 0;
        while wanted > 0 && first > 0 {
            let run = self.runs[first - 1].1;
            let mut from = run.len();
            while wanted > 0 && from > 0 {
                // `from - 1` is the newline ending the line before `from`.
                let start = memchr::memrchr(b'\n', &run[..from - 1]).map_or(0, |i| i + 1);
                if from - 1 > start {
                    wanted -= 1;
                }
                from = start;
            }
            first -= 1;
            begin = from;
        }
        for (k, &(before, run)) in self.runs.iter().enumerate().skip(first) {
            let from = if k == first { begin } else { 0 };
            let mut line =
                before.saturating_add(memchr::memchr_iter(b'\n', &run[..from]).count() as u32);
            let mut start = from;
            for nl in memchr::memchr_iter(b'\n', &run[from..]) {
                let nl = from + nl;
                line = line.saturating_add(1);
                if nl > start {
                    skipped(line, &run[start..nl]);
                }
                start = nl + 1;
            }
        }
        self.runs.clear();
    }
}

impl Ingest {
    /// Feeds a chunk; `emit` gets every line it completes, in order.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(Event)) {
        let parser = &mut self.parser;
        let Some(seen) = &mut self.kernel_seen else {
            return self.splitter.push(chunk, |l| emit(parser.parse(l)));
        };
        let (ahead, offsets) = (&mut self.ahead, &mut self.offsets);
        self.splitter.push(chunk, |l| {
            if l.bytes.starts_with(KERNEL_MARKER)
                && let Some(first) = second_copy(seen, l.bytes, false)
            {
                // Not numbered: the lines after it are as many ahead of the stream as before
                // its console copy came.
                if first.from_console {
                    *ahead = ahead.saturating_sub(1);
                    note_offset(offsets, parser.lines() + 1, *ahead);
                }
                return;
            }
            emit(parser.parse(l))
        });
    }

    /// A kernel line read from the guest's console (the host's own path, which does not
    /// wait for the guest's processes), as `::KERNEL::[   SECONDS] text`: an event now,
    /// numbered after the lines so far. The stream's own copy of it is then dropped; a line
    /// the stream brought first is dropped here.
    pub fn push_console(&mut self, line: &[u8], emit: impl FnOnce(Event)) {
        let seen = self.kernel_seen.get_or_insert_with(VecDeque::new);
        if second_copy(seen, line, true).is_some() {
            return;
        }
        emit(self.parser.parse(crate::Line {
            bytes: line,
            truncated: 0,
        }));
        self.ahead += 1;
        note_offset(&mut self.offsets, self.parser.lines() + 1, self.ahead);
    }

    /// The line of the stream (the runner's log) that event `line` came from: events are
    /// numbered ahead of it while a console line's stream copy has not come. A console line
    /// has none of its own (it gives the number of the stream line before it).
    pub fn stream_line(&self, line: u32) -> u32 {
        let at = self.offsets.partition_point(|(from, _)| *from <= line);
        let ahead = at.checked_sub(1).map_or(0, |i| self.offsets[i].1);
        line.saturating_sub(ahead)
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

    /// Lines parsed in full; the rest were only counted ([`Ingest::push_skipping`]).
    pub fn parsed(&self) -> u64 {
        self.parser.parsed()
    }

    /// As [`Ingest::push`] for a log read in bulk (`nixtest replay`): lines no detector can
    /// want (see [`SkipFilter`]) are not parsed but handed to `skipped` with their number (as
    /// they are: plain text, no marker), except the last ones before each line that may
    /// matter, which are parsed as usual (they are its context). The events that matter,
    /// their numbers and their context are the same as [`Ingest::push`] gives.
    pub fn push_skipping(
        &mut self,
        chunk: &[u8],
        filter: &SkipFilter,
        emit: impl FnMut(Event),
        skipped: &mut impl FnMut(u32, &[u8]),
    ) {
        let scan = filter.scan(chunk, self.splitter.has_partial());
        self.push_scanned(chunk, &scan, filter, emit, skipped);
    }

    /// As [`Ingest::push_skipping`], with the filter's search of `chunk` done beforehand
    /// (by [`SkipFilter::scan`], on another thread while the previous chunk is parsed). A scan
    /// made for another state of the stream than this one is made again here.
    ///
    /// Skipped lines are handed over late: only when a line that reads the tail comes (a
    /// phase or an error event, handed over before it) and at the chunk's end, and then only
    /// the last `hand_over` non-empty ones of all the lines skipped since. A caller that keeps
    /// the lines it is handed by their number (not by when they come) ends up with the same
    /// tail as if every skipped line had been handed over in its place.
    pub fn push_scanned(
        &mut self,
        chunk: &[u8],
        scan: &Scan,
        filter: &SkipFilter,
        mut emit: impl FnMut(Event),
        skipped: &mut impl FnMut(u32, &[u8]),
    ) {
        if scan.partial != self.splitter.has_partial() {
            let again = filter.scan(chunk, self.splitter.has_partial());
            return self.push_scanned(chunk, &again, filter, emit, skipped);
        }
        let Some((from, to)) = scan.body else {
            return self.push(chunk, emit);
        };
        // A line begun in an earlier chunk ends the usual way.
        self.push(&chunk[..from], &mut emit);
        let body = &chunk[from..to];
        let mut late = Late {
            runs: VecDeque::new(),
            hand_over: filter.hand_over,
            drop_at_phase: filter.tail_per_phase,
        };
        // Where the sieve counted the body's lines, a region's lines are known, and so is
        // whether any line is over the cap: the skipped lines need not be walked.
        let counted = scan.counted.as_ref();
        let over_cap = counted.is_none_or(|c| c.longest > self.splitter.max_line());
        let known = |lines: u32| Known {
            lines: counted.map(|_| lines),
            over_cap,
        };
        let (mut pos, mut pos_line) = (0, 0);
        for (k, &start) in scan.starts.iter().enumerate() {
            let before = counted.map_or(0, |c| c.before[k]);
            let region = known(before.wrapping_sub(pos_line));
            self.skip_lines(
                &body[pos..start],
                region,
                filter,
                &mut late,
                &mut emit,
                skipped,
            );
            let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i + 1);
            self.push_late(&body[start..end], &mut late, &mut emit, skipped);
            (pos, pos_line) = (end, before.wrapping_add(1));
        }
        let rest = known(counted.map_or(0, |c| c.lines).wrapping_sub(pos_line));
        self.skip_lines(&body[pos..], rest, filter, &mut late, &mut emit, skipped);
        late.hand_over(skipped);
        self.push(&chunk[to..], emit);
    }

    /// As [`Ingest::push`], handing over the skipped lines before an event that reads the
    /// tail.
    fn push_late(
        &mut self,
        bytes: &[u8],
        late: &mut Late<'_>,
        emit: &mut impl FnMut(Event),
        skipped: &mut impl FnMut(u32, &[u8]),
    ) {
        self.push(bytes, |e| {
            match e.kind {
                EventKind::Phase if late.drop_at_phase => late.runs.clear(),
                EventKind::Phase | EventKind::Error => late.hand_over(skipped),
                _ => {}
            }
            emit(e)
        });
    }

    /// Whole lines that no detector wants: counted and kept for a late hand-over, but for the
    /// last few, which are parsed (the context of the line after them).
    fn skip_lines<'b>(
        &mut self,
        region: &'b [u8],
        known: Known,
        filter: &SkipFilter,
        late: &mut Late<'b>,
        emit: &mut impl FnMut(Event),
        skipped: &mut impl FnMut(u32, &[u8]),
    ) {
        if region.is_empty() {
            return;
        }
        let (from, kept) = filter.kept_from(region);
        let max = self.splitter.max_line();
        // Runs of skipped lines end at a line over the cap (cut, and the cut noted on its
        // event: the usual way) or at the region's end.
        let mut run = 0;
        let mut start = 0;
        // A line over the cap needs more bytes than the cap: a shorter region has none, and
        // its line ends need not be looked at here.
        let ends = if from > max && known.over_cap {
            &region[..from]
        } else {
            &[][..]
        };
        // The walk counts the runs' lines too: they are not looked for again.
        let mut lines = 0;
        for nl in memchr::memchr_iter(b'\n', ends) {
            if nl - start > max {
                self.skip_run(&region[run..start], Some(lines), late);
                self.push_late(&region[start..=nl], late, emit, skipped);
                run = nl + 1;
                lines = 0;
            } else {
                lines += 1;
            }
            start = nl + 1;
        }
        let walked = (!ends.is_empty()).then_some(lines);
        // A count that cannot be right (fewer lines than kept, or more than the region has
        // bytes) is counted again rather than trusted.
        let counted = known
            .lines
            .filter(|&l| l as usize <= region.len())
            .and_then(|l| l.checked_sub(kept));
        self.skip_run(&region[run..from], walked.or(counted), late);
        self.push_late(&region[from..], late, emit, skipped);
    }

    /// Whole lines, none over the cap (`lines` of them, if counted already): counted, and
    /// kept for a late hand-over.
    fn skip_run<'b>(&mut self, run: &'b [u8], lines: Option<u32>, late: &mut Late<'b>) {
        if run.is_empty() {
            return;
        }
        let lines = lines.unwrap_or_else(|| memchr::memchr_iter(b'\n', run).count() as u32);
        debug_assert_eq!(lines as usize, memchr::memchr_iter(b'\n', run).count());
        // A run of empty lines only has nothing to hand over.
        if late.hand_over > 0 && run.len() > lines as usize {
            if late.runs.len() == late.hand_over {
                late.runs.pop_front();
            }
            late.runs.push_back((self.parser.lines(), run));
        }
        self.parser.skip(lines);
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

/// Finds, in a buffer of many lines, the lines that may matter to some detector: markers,
/// lines that hold a literal or match a pattern of any detector, and lines the parser would
/// change (control characters, carriage returns, escapes). One regex over the whole buffer,
/// the way grep searches, instead of one routing per line.
pub struct SkipFilter {
    /// Every alternative; pattern ids from `plain` on are the literals of gated patterns.
    re: regex_automata::meta::Regex,
    /// The alternatives before `plain` (markers, controls, bytes past ASCII, literals, the
    /// patterns without a literal): a line one of them matches is kept as it is.
    plain: usize,
    /// A line kept only for a gated pattern's literal is kept if one of the patterns whose
    /// literal it holds matches it, or `re_plain` does: a line that only shares a word with a
    /// rule is skipped here, in the searcher, instead of being parsed and routed.
    re_plain: Option<regex_automata::meta::Regex>,
    gate: crate::gate::Gate,
    regexes: Arc<[OnceLock<Option<Regex>>]>,
    sources: Vec<String>,
    limits: PatternLimits,
    /// Lines kept before a line that matters: the most context any detector wants.
    context: usize,
    /// The lines `re` can match, found first (when every alternative is a literal or one of
    /// the byte classes): `re` then only runs on those lines.
    sieve: Option<crate::sieve::LineSieve>,
    /// Of each run of skipped lines, how many of the last non-empty ones are handed over
    /// (the others are only counted); `usize::MAX` for all.
    hand_over: usize,
    /// Whether the caller's tail begins anew at each phase marker.
    tail_per_phase: bool,
}

/// `hir` as it reads ASCII text: classes cut to their ASCII part (as bytes), literals that hold
/// anything else never matching, Unicode word boundaries made ASCII ones. The skip filter keeps
/// every line with a byte above 0x7F by another alternative, so the others only ever decide on
/// ASCII lines, where this is the same regex; its automaton is far smaller than one for UTF-8.
fn ascii_only(hir: &Hir) -> Hir {
    // The ASCII part of a class's ranges, as a byte class (or nothing to match).
    let ascii = |ranges: &mut dyn Iterator<Item = (u32, u32)>| {
        let cut: Vec<_> = ranges
            .filter(|(lo, _)| *lo <= 0x7F)
            .map(|(lo, hi)| ClassBytesRange::new(lo as u8, hi.min(0x7F) as u8))
            .collect();
        if cut.is_empty() {
            Hir::fail()
        } else {
            Hir::class(Class::Bytes(ClassBytes::new(cut)))
        }
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => ascii(
            &mut c
                .ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32)),
        ),
        HirKind::Class(Class::Bytes(c)) => ascii(
            &mut c
                .ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32)),
        ),
        HirKind::Literal(l) if !l.0.is_ascii() => Hir::fail(),
        HirKind::Look(look) => Hir::look(match look {
            Look::WordUnicode => Look::WordAscii,
            Look::WordUnicodeNegate => Look::WordAsciiNegate,
            Look::WordStartUnicode => Look::WordStartAscii,
            Look::WordEndUnicode => Look::WordEndAscii,
            Look::WordStartHalfUnicode => Look::WordStartHalfAscii,
            Look::WordEndHalfUnicode => Look::WordEndHalfAscii,
            other => *other,
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(ascii_only(&c.sub)),
        }),
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(ascii_only(&r.sub)),
        }),
        HirKind::Concat(v) => Hir::concat(v.iter().map(ascii_only).collect()),
        HirKind::Alternation(v) => Hir::alternation(v.iter().map(ascii_only).collect()),
        _ => hir.clone(),
    }
}

/// Where, in one chunk of a log, the lines that may matter begin: the [`SkipFilter`]'s
/// search, which [`Ingest::push_scanned`] then follows.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Whether the chunk continues a line begun before it (the stream state it was made for).
    partial: bool,
    /// The chunk's whole lines (after the end of a line begun before), as a byte range; none
    /// when the chunk completes no line of its own.
    body: Option<(usize, usize)>,
    /// Where each line that may matter begins, from the start of `body`.
    starts: Vec<usize>,
    /// What the sieve counted of `body`, where its path counts: the parser then counts
    /// nothing.
    /// (`before` has an entry per entry of `starts`.)
    counted: Option<crate::sieve::Counted>,
}

/// What is known of a region of skipped lines before it is walked.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Its lines, if counted.
    lines: Option<u32>,
    /// Whether it may hold a line over the cap.
    over_cap: bool,
}

impl Scan {
    /// Whether the stream, after this chunk, is inside a line (the `partial` of the next
    /// chunk's scan).
    pub fn ends_partial(&self, chunk: &[u8]) -> bool {
        ends_inside_line(self.partial, chunk)
    }
}

/// Whether a stream is inside a line after `chunk`, given whether it was before (`partial`):
/// what the next chunk's search needs to know, without searching this one.
pub fn ends_inside_line(partial: bool, chunk: &[u8]) -> bool {
    match memchr::memrchr(b'\n', chunk) {
        Some(i) => i + 1 < chunk.len(),
        None => partial || !chunk.is_empty(),
    }
}

impl SkipFilter {
    /// The search of `chunk` for [`Ingest::push_scanned`]; `partial`: whether the stream is
    /// inside a line when the chunk begins. Needs no state of the stream but that flag, so
    /// the next chunks can be searched while one is parsed.
    pub fn scan(&self, chunk: &[u8], partial: bool) -> Scan {
        let mut scan = Scan {
            partial,
            body: None,
            starts: Vec::new(),
            counted: None,
        };
        let from = if partial {
            match memchr::memchr(b'\n', chunk) {
                Some(nl) => nl + 1,
                None => return scan,
            }
        } else {
            0
        };
        let Some(last) = memchr::memrchr(b'\n', &chunk[from..]) else {
            return scan;
        };
        let body = &chunk[from..from + last + 1];
        scan.body = Some((from, from + last + 1));
        // Lines with a byte past ASCII (invalid UTF-8 among them) always match, either way
        // below: the parser reads them the usual way.
        if let Some(sieve) = &self.sieve {
            // The sieve flags a superset of the lines the regex can match; the regex, run
            // on each flagged line alone, decides.
            let mut lines = Vec::new();
            let mut counted = crate::sieve::Counted::default();
            let numbered = sieve.lines_counted(body, &mut lines, &mut counted);
            let mut before = Vec::new();
            for (k, start) in lines.into_iter().enumerate() {
                let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
                let input = regex_automata::Input::new(body)
                    .range(start..end)
                    .earliest(true);
                if let Some(m) = self.re.search_half(&input)
                    && (m.pattern().as_usize() < self.plain || self.verify(&body[start..end]))
                {
                    scan.starts.push(start);
                    if numbered {
                        before.push(counted.before[k]);
                    }
                }
            }
            if numbered {
                counted.before = before;
                scan.counted = Some(counted);
            }
            return scan;
        }
        let mut pos = 0;
        while pos < body.len() {
            // Where the first match to end ends is enough: no line before its last byte's
            // line holds a match of its own (that match would have ended first), and the
            // search need not look back for where it started.
            let input = regex_automata::Input::new(body).range(pos..).earliest(true);
            let Some(m) = self.re.search_half(&input) else {
                break;
            };
            let last = m.offset().saturating_sub(1).max(pos);
            let start = memchr::memrchr(b'\n', &body[..last])
                .map_or(0, |i| i + 1)
                .max(pos);
            let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
            if m.pattern().as_usize() < self.plain || self.verify(&body[start..end]) {
                scan.starts.push(start);
            }
            pos = (end + 1).min(body.len());
        }
        scan
    }

    /// Whether an ASCII line (no control bytes: those are plain alternatives) that holds a
    /// gated pattern's literal matters: one of those patterns matches it, or something plain
    /// does after all (a literal the earliest match hid).
    fn verify(&self, line: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(line) else {
            return true;
        };
        let hit = self.gate.first(text, |j| {
            GatedPatterns::matches(&self.regexes, &self.sources, self.limits, j, text).then_some(())
        });
        hit.is_some()
            || self
                .re_plain
                .as_ref()
                .is_some_and(|re| re.is_match(regex_automata::Input::new(line).earliest(true)))
    }

    /// Hands over only the last `n` non-empty skipped lines before each line that reads the
    /// tail and each chunk's end: a caller that keeps the `n` highest-numbered lines it is
    /// handed (a tail) ends up with the same ones, and the lines before are only counted,
    /// not copied.
    pub fn hand_over_last(mut self, n: usize) -> Self {
        self.hand_over = n;
        self
    }

    /// For a caller whose tail begins anew at each phase marker: the skipped lines not yet
    /// handed over when one comes are dropped, not handed over (they would be kept only to
    /// be forgotten; on a log that changes phase every few lines that was most of the
    /// parser's work on skipped lines). Only an error marker and a chunk's end hand over.
    pub fn tail_per_phase(mut self) -> Self {
        self.tail_per_phase = true;
        self
    }

    /// Where the lines to keep begin in `region` (whole lines).
    fn kept_from(&self, region: &[u8]) -> (usize, u32) {
        let mut end = region.len();
        let mut kept = 0;
        for _ in 0..self.context {
            if end == 0 {
                break;
            }
            // `end - 1` is the newline ending this line.
            end = memchr::memrchr(b'\n', &region[..end - 1]).map_or(0, |i| i + 1);
            kept += 1;
        }
        (end, kept)
    }
}

/// Literal bytes one detector's patterns may put into the routing's automaton.
const GATE_LITERAL_BYTES: usize = 16 << 10;

/// Patterns that each hold a literal: one automaton over the literals tells which may match
/// a line, and only those run (each built the first time a line holds its literal). A line
/// that only shares a word with a detector's pattern costs a regex search, not a call.
#[derive(Default)]
struct GatedPatterns {
    gate: crate::gate::Gate,
    owner: Vec<usize>,
    text: Vec<String>,
    /// Shared with the skip filter (its searchers try the same patterns): each is built once.
    regexes: Arc<[OnceLock<Option<Regex>>]>,
    limits: PatternLimits,
    /// Each pattern's literals (what the skip filter searches for it).
    needs: Vec<Vec<(Vec<u8>, bool)>>,
}

impl GatedPatterns {
    /// Whether gated pattern `j` matches `text`. One that cannot be built within the limits
    /// (never, after the plugin's check) counts as matching: routing may only send too much.
    fn matches(
        regexes: &[OnceLock<Option<Regex>>],
        sources: &[String],
        limits: PatternLimits,
        j: usize,
        text: &str,
    ) -> bool {
        let re = regexes[j].get_or_init(|| {
            RegexBuilder::new(&sources[j])
                .size_limit(limits.size)
                .dfa_size_limit(limits.dfa_size)
                .nest_limit(limits.nest)
                .build()
                .ok()
        });
        re.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// Decides in one pass per line which detectors see it (one Aho-Corasick automaton over every
/// literal and one over the patterns' literals, then the patterns whose literal the line
/// holds, and one `RegexSet` over the patterns without any), and hands each detector the
/// context lines it asked for before a line it wants, each line at most once.
pub struct Router {
    literals: Option<AhoCorasick>,
    literal_owner: Vec<usize>,
    /// The patterns that hold a literal: each runs only on lines that hold it.
    gated: GatedPatterns,
    /// The patterns without one: one set over all detectors' (or, should that be over the
    /// limits, one set per detector), run on every line that reaches routing.
    sets: Vec<(RegexSet, Vec<usize>)>,
    sees_all: Vec<usize>,
    /// Per slot: context lines wanted, last line sent; `None` for a slot that sees nothing.
    slots: Vec<Option<(usize, u32)>>,
    wanted: Vec<bool>,
    recent: VecDeque<(Event, Instant)>,
    max_context: usize,
    /// What the routing was built from (for [`Router::skip_filter`]).
    literal_text: Vec<String>,
    unguarded_text: Vec<String>,
    limits: PatternLimits,
}

impl Router {
    /// `routes[i]` is slot `i`; `None` for a slot that sees nothing (a refused detector).
    pub fn new(routes: &[Option<Route<'_>>], limits: PatternLimits) -> Result<Self, String> {
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut gated = GatedPatterns::default();
        let mut needs = Vec::new();
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
            // The literals of one detector's patterns are bounded: an automaton over more
            // would cost every line (its patterns then run in the set, as any without one).
            let mut budget = GATE_LITERAL_BYTES;
            let mut unguarded = false;
            for p in r.patterns {
                let need = crate::gate::required_literals(p).filter(|lits| {
                    let bytes: usize = lits.iter().map(|(l, _)| l.len()).sum();
                    budget
                        .checked_sub(bytes)
                        .map(|left| budget = left)
                        .is_some()
                });
                match need {
                    Some(lits) => {
                        gated.needs.push(lits.clone());
                        needs.push(Some(lits));
                        gated.owner.push(i);
                        gated.text.push(p.clone());
                    }
                    None => {
                        unguarded = true;
                        patterns.push(p.clone());
                        pattern_owner.push(i);
                    }
                }
            }
            if unguarded {
                with_patterns += 1;
            }
        }
        gated.gate = crate::gate::Gate::from_literals(needs);
        gated.regexes = gated.text.iter().map(|_| OnceLock::new()).collect();
        gated.limits = limits;
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
                    for (i, _) in routes.iter().enumerate() {
                        let mine: Vec<String> = patterns
                            .iter()
                            .zip(&pattern_owner)
                            .filter(|(_, o)| **o == i)
                            .map(|(p, _)| p.clone())
                            .collect();
                        if mine.is_empty() {
                            continue;
                        }
                        let set = pattern_set(&mine, limits, 1)
                            .map_err(|e| format!("detector {i}'s patterns: {e}"))?;
                        own.push((set, vec![i; mine.len()]));
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
            gated,
            sets,
            sees_all,
            slots: routes.iter().map(|r| r.map(|r| (r.context, 0))).collect(),
            wanted: vec![false; routes.len()],
            recent: VecDeque::with_capacity(max_context + 1),
            max_context,
            unguarded_text: patterns.clone(),
            literal_text: routes
                .iter()
                .flatten()
                .flat_map(|r| r.literals.iter().cloned())
                .collect(),
            limits,
        })
    }

    /// A filter for [`Ingest::push_skipping`]. None when every line
    /// may matter (a detector that sees all), or when a pattern could match a line alone but
    /// not inside a buffer (`\A`, `\z`, multi-line mode turned off), or when the patterns
    /// together are over the limits: then every line goes the usual way.
    pub fn skip_filter(&self) -> Option<SkipFilter> {
        if !self.sees_all.is_empty() {
            return None;
        }
        // Read as the buffer search reads them (`^`, `$` at every line): a pattern that still
        // anchors at the text's start or end (`\A`, `\z`, `(?-m)`) means something else there.
        let mut parser = regex_syntax::ParserBuilder::new();
        parser.multi_line(true).nest_limit(self.limits.nest);
        let mut alternatives = vec![
            // Marker lines (the verdicts go to every detector; the parser changes the others).
            r"^\s*::".to_string(),
            // What the parser changes: C0 controls but tab (CR, ESC among them), DEL.
            r"[\x00-\x08\x0B-\x1F\x7F]".to_string(),
        ];
        alternatives.extend(self.literal_text.iter().map(|l| regex::escape(l)));
        alternatives.extend(self.unguarded_text.iter().cloned());
        let plain = alternatives.len() + 1;
        // A gated pattern's literals stand for it in the search (a union of the patterns
        // themselves makes a lazy DFA that spends a replay building states); the line is then
        // tried against the pattern. Literals past ASCII are left to the class above.
        for lits in &self.gated.needs {
            for (bytes, fold) in lits {
                let Some(text) = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii()) else {
                    continue;
                };
                let flag = if *fold { "(?i)" } else { "" };
                alternatives.push(format!("{flag}{}", regex::escape(text)));
            }
        }
        // Any byte past ASCII (C1 controls, all other text, invalid UTF-8): such lines are
        // parsed and routed one by one, so the alternatives above only judge ASCII lines.
        let mut hirs = vec![Hir::class(Class::Bytes(ClassBytes::new([
            ClassBytesRange::new(0x80, 0xFF),
        ])))];
        for a in &alternatives {
            let hir = parser.build().parse(a).ok()?;
            let looks = hir.properties().look_set();
            if looks.contains(Look::Start) || looks.contains(Look::End) {
                return None;
            }
            hirs.push(ascii_only(&hir));
        }
        let slots = self.slots.iter().flatten().count().max(1) + 1;
        // Each pattern keeps its own capture groups: one search, many patterns.
        let build = |hirs: &[Hir]| {
            regex_automata::meta::Regex::builder()
                .configure(
                    regex_automata::meta::Config::new()
                        .nfa_size_limit(Some(self.limits.size * slots))
                        .hybrid_cache_capacity(self.limits.dfa_size * slots),
                )
                .build_many_from_hir(hirs)
                .ok()
        };
        let re = build(&hirs)?;
        let re_plain = if hirs.len() > plain {
            Some(build(&hirs[..plain])?)
        } else {
            None
        };
        // A log read in bulk reaches most patterns within its first lines: build them now on
        // a thread of their own (17 ms for the built-ins' 116) instead of one by one in the
        // way of the search and the routing. Whichever asks first builds each one.
        if !self.gated.text.is_empty() {
            let (regexes, sources, limits) = (
                self.gated.regexes.clone(),
                self.gated.text.clone(),
                self.limits,
            );
            let _ = std::thread::Builder::new()
                .name("nixtest-patterns".into())
                .spawn(move || {
                    for j in 0..sources.len() {
                        GatedPatterns::matches(&regexes, &sources, limits, j, "");
                    }
                });
        }
        // Every alternative but the patterns without a literal is a literal, `^\s*::` or a
        // class of bytes the sieve flags: then it may pick the lines to search.
        let sieve = if self.unguarded_text.is_empty() {
            let gated = self.gated.needs.iter().flatten().map(|(b, _)| b.as_slice());
            crate::sieve::LineSieve::new(
                self.literal_text.iter().map(|l| l.as_bytes()).chain(gated),
            )
        } else {
            None
        };
        Some(SkipFilter {
            re,
            sieve,
            plain,
            re_plain,
            gate: self.gated.gate.clone(),
            regexes: self.gated.regexes.clone(),
            sources: self.gated.text.clone(),
            limits: self.limits,
            context: self.max_context,
            hand_over: usize::MAX,
            tail_per_phase: false,
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
        let GatedPatterns {
            gate,
            owner,
            text: source,
            regexes,
            limits,
            ..
        } = &self.gated;
        let wanted = &mut self.wanted;
        gate.first(text, |j| {
            if !wanted[owner[j]] && GatedPatterns::matches(regexes, source, *limits, j, text) {
                wanted[owner[j]] = true;
            }
            None::<()>
        });
        for (set, owner) in &self.sets {
            for i in set.matches(text).iter() {
                self.wanted[owner[i]] = true;
            }
        }
    }

    /// Routes one event: `send(slot, event)` for each slot that wants it, its context lines
    /// first. The verdict markers (error, warning, success) go to every slot; everything else,
    /// raw output and the markers that only describe (phase, context, progress, metric), only
    /// where a literal or pattern asks for it: every event carries its phase, so a phase
    /// marker tells a detector nothing it would not learn from the next line it is sent. Returns the most context lines any receiving
    /// slot asked for, or `None` when no slot wanted the line. Call [`Router::remember`] next.
    pub fn route(&mut self, event: &Event, mut send: impl FnMut(usize, &Event)) -> Option<usize> {
        self.wanted.iter_mut().for_each(|w| *w = false);
        match event.kind {
            EventKind::Error | EventKind::Warning | EventKind::Success => {
                self.wanted.iter_mut().for_each(|w| *w = true)
            }
            EventKind::Raw
            | EventKind::Phase
            | EventKind::Context
            | EventKind::Progress
            | EventKind::Metric => self.mark(&event.message),
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
    use crate::splitter::DEFAULT_MAX_LINE;

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

    #[derive(Clone, Copy, PartialEq)]
    enum Read {
        EveryLine,
        Skipping,
        /// Skipping, each chunk searched before the one before it is parsed (as replay does);
        /// `true`: every other scan made for the wrong stream state, to be made again.
        ScannedAhead(bool),
    }

    /// What every detector was sent, in order, reading `log` in `chunks`-sized pieces; and
    /// the number of lines.
    fn routed(log: &[u8], chunk: usize, how: Read) -> (Vec<(usize, u32, String, String)>, u32) {
        let (la, pa) = (
            s(&["error:", "Killed"]),
            s(&[r"disk \d+ (?:full|gone)$", r"(?i)^oom", r"\Aoops\z"]),
        );
        // The last matches a line over the cap only as the parser cuts it.
        let (lb, pb) = (
            s(&["timeout"]),
            s(&[r"\bfail(?:ed|ure)\b", r"3 gone \[\S+ line cut\]$"]),
        );
        let routes = [
            Some(Route {
                literals: &la,
                patterns: &pa,
                context: 2,
            }),
            Some(Route {
                literals: &lb,
                patterns: &pb,
                context: 0,
            }),
        ];
        let mut r = Router::new(&routes, PatternLimits::default()).unwrap();
        let filter = r.skip_filter().expect("a filter");
        let mut ingest = Ingest::default();
        let mut sent = Vec::new();
        let now = Instant::now();
        let mut take = |e: Event| {
            r.route(&e, |i, ev| {
                sent.push((i, ev.line, ev.message.clone(), ev.phase.to_string()))
            });
            r.remember(e, now);
        };
        let scans: Vec<Scan> = log
            .chunks(chunk)
            .scan(false, |partial, c| {
                let scan = filter.scan(c, *partial);
                *partial = scan.ends_partial(c);
                Some(scan)
            })
            .collect();
        for (n, (c, scan)) in log.chunks(chunk).zip(&scans).enumerate() {
            match how {
                Read::EveryLine => ingest.push(c, &mut take),
                Read::Skipping => ingest.push_skipping(c, &filter, &mut take, &mut |_, _| {}),
                Read::ScannedAhead(wrong) => {
                    let stale = filter.scan(c, !scan.partial);
                    let scan = if wrong && n % 2 == 1 { &stale } else { scan };
                    ingest.push_scanned(c, scan, &filter, &mut take, &mut |_, _| {})
                }
            }
        }
        if let Some(e) = ingest.finish() {
            take(e);
        }
        (sent, ingest.lines())
    }

    #[test]
    fn skipping_routes_exactly_what_line_by_line_routing_does() {
        let mut log = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let pieces: [&[u8]; 23] = [
            b"plain build noise",
            b"",
            b"error: builder failed",
            b"::PHASE::install",
            b" ::PHASE::build",
            b"  ::ERROR::install failed",
            b"disk 3 full",
            b"disk 3 full and more",
            b"OOM here",
            b"\x1b[31merror\x1b[0m: coloured",
            b"progress 10%\rprogress 100%",
            b"bad \xff utf8 timeout",
            b"\xc3\xa9failed here",
            b"it failed",
            b"caf\xc3\xa9 \xc2\x85 next-line control",
            b"crlf line\r",
            b"Killed",
            // Lines that hold a pattern's literal and do not match it, or only on their own.
            b"disk 3 gone soon",
            b"a disk 4 full\r",
            b"oops",
            b"no oops",
            b"no oom but timeout",
            b"disk 9 full caf\xc3\xa9",
        ];
        for i in 0..3000 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let pick = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize;
            // Mostly noise, as a real log.
            let piece = if pick.is_multiple_of(4) {
                pieces[pick % pieces.len()]
            } else {
                pieces[0]
            };
            log.extend_from_slice(piece);
            if i % 500 == 7 {
                log.extend(std::iter::repeat_n(b'x', DEFAULT_MAX_LINE + 10));
                log.extend_from_slice(b" error: in a long line");
            }
            // A line over the cap that a pattern matches only as the parser cuts it: the
            // sieve flags it (`disk `), no pattern matches the whole line, so it is skipped,
            // and only a walk for lines over the cap finds it.
            if i % 500 == 250 {
                let tail = b" disk 3 gone";
                log.push(b'\n');
                log.extend(std::iter::repeat_n(b'y', DEFAULT_MAX_LINE - tail.len()));
                log.extend_from_slice(tail);
                log.extend_from_slice(b" soon");
            }
            log.push(b'\n');
        }
        log.extend_from_slice(b"last line without newline: failed");
        let want = routed(&log, log.len(), Read::EveryLine);
        assert!(want.0.len() > 100, "{}", want.0.len());
        let cut = want
            .0
            .iter()
            .filter(|(i, _, m, _)| *i == 1 && m.ends_with("3 gone [… line cut]"));
        assert_eq!(cut.count(), 6, "the lines routed only as cut");
        // 100 kB: chunks that hold whole lines over the cap, searched by the sieve's vector
        // path where the machine has it (a buffer of 256 KiB or more may be left to the
        // automaton), which counts lines for the parser.
        for chunk in [log.len(), 100_000, 4096, 777, 64] {
            for how in [
                Read::Skipping,
                Read::ScannedAhead(false),
                Read::ScannedAhead(true),
            ] {
                let got = routed(&log, chunk, how);
                assert_eq!(got.1, want.1, "line count, chunks of {chunk}");
                assert_eq!(got.0, want.0, "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_line_that_only_holds_a_patterns_literal_is_not_parsed() {
        let (l, p) = (s(&[]), s(&[r"disk \d+ full$", r"(?i)\bout of memory\b"]));
        let r = Router::new(
            &[Some(Route {
                literals: &l,
                patterns: &p,
                context: 0,
            })],
            PatternLimits::default(),
        )
        .unwrap();
        let filter = r.skip_filter().expect("a filter");
        let mut log = Vec::new();
        for _ in 0..100 {
            log.extend_from_slice(
                b"disk 3 full of data\nthe disk 7 is fine\nnot out of memoryless\n",
            );
        }
        log.extend_from_slice(b"disk 3 full\nOut of Memory: killed\n");
        let mut ingest = Ingest::default();
        let mut got = Vec::new();
        ingest.push_skipping(
            &log,
            &filter,
            |e: Event| got.push(e.message),
            &mut |_, _| {},
        );
        assert_eq!(got, ["disk 3 full", "Out of Memory: killed"]);
        assert_eq!((ingest.parsed(), ingest.lines()), (2, 302));
    }

    #[test]
    fn a_console_kernel_line_is_numbered_where_it_came_and_maps_back_to_the_stream() {
        let k = b"::KERNEL::[    5.000000] Out of memory: Killed process 7 (cc1)";
        let mut i = Ingest::default();
        let mut got = Vec::new();
        i.push(b"a\n", |e| got.push((e.line, e.message)));
        i.push_console(k, |e| got.push((e.line, e.message)));
        let mut stream = b"b\n".to_vec();
        stream.extend_from_slice(k);
        stream.extend_from_slice(b"\nc\n::KERNEL::[    6.000000] z\n");
        i.push(&stream, |e| got.push((e.line, e.message)));
        // The stream brought this one first: the console's copy is dropped.
        i.push_console(b"::KERNEL::[    6.000000] z", |e| {
            got.push((e.line, e.message))
        });
        let messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "a",
                "[    5.000000] Out of memory: Killed process 7 (cc1)",
                "b",
                "c",
                "[    6.000000] z"
            ]
        );
        assert_eq!(
            got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        // Stream lines: a 1, b 2, the copy 3, c 4, z 5.
        assert_eq!((i.stream_line(1), i.stream_line(3)), (1, 2));
        assert_eq!((i.stream_line(4), i.stream_line(5)), (4, 5));
        assert_eq!(i.lines(), 5);
    }

    /// The text of line `n` (from 1) of `log`.
    fn log_line(log: &[u8], n: u32) -> String {
        let line = log
            .split(|&b| b == b'\n')
            .nth(n as usize - 1)
            .unwrap_or(&[]);
        String::from_utf8_lossy(line).into_owned()
    }

    #[test]
    fn skipped_lines_handed_over_late_leave_the_tail_that_parsing_every_line_does() {
        let (l, p) = (s(&["boom"]), s(&[]));
        let routes = [Some(Route {
            literals: &l,
            patterns: &p,
            context: 1,
        })];
        let r = Router::new(&routes, PatternLimits::default()).unwrap();
        let mut log = Vec::new();
        for i in 0..3000u32 {
            match i % 97 {
                5 | 60 => log.extend_from_slice(b"boom"),
                9..=11 => {}
                40 => log.extend(std::iter::repeat_n(b'y', DEFAULT_MAX_LINE + 3)),
                // The lines that read the tail: an error right after skipped lines, one after
                // a parsed line, and a phase (which empties it).
                70 => log.extend_from_slice(format!("::ERROR::e{i}").as_bytes()),
                61 => log.extend_from_slice(b"  ::ERROR::after boom"),
                // Runs of one non-empty line between lines the tail does not keep (a progress
                // marker, an empty context line), then an error: its tail is all late lines.
                71..=85 => match i % 3 {
                    0 => log.extend_from_slice(b"::PROGRESS::step"),
                    1 => log.extend_from_slice(format!("alone {i}").as_bytes()),
                    _ => {}
                },
                86 => log.extend_from_slice(format!("::ERROR::e{i}").as_bytes()),
                _ if i % 389 == 0 => log.extend_from_slice(format!("::PHASE::p{i}").as_bytes()),
                _ => log.extend_from_slice(format!("noise {i}").as_bytes()),
            }
            log.push(b'\n');
        }
        // A tail of the `n` highest-numbered non-empty lines (what the host's fallback keeps),
        // fed by skipped lines and events; what it holds when an error or a phase reads it,
        // and at each chunk's end.
        let tails = |filter: Option<SkipFilter>, n: usize, chunk: usize| {
            let mut ingest = Ingest::default();
            let tail = std::cell::RefCell::new(Vec::<(u32, String)>::new());
            let read = std::cell::RefCell::new(Vec::new());
            let keep = |line: u32, text: String| {
                let mut t = tail.borrow_mut();
                if !text.is_empty() {
                    t.push((line, text));
                }
                t.sort();
                let len = t.len();
                t.drain(..len.saturating_sub(n));
            };
            let event = |e: Event| match e.kind {
                EventKind::Error | EventKind::Phase => {
                    read.borrow_mut().push((e.line, tail.borrow().clone()));
                    if e.kind == EventKind::Phase {
                        tail.borrow_mut().clear();
                    }
                }
                EventKind::Raw | EventKind::Warning | EventKind::Context => keep(e.line, e.message),
                _ => {}
            };
            let mut handed = 0usize;
            let mut ends = Vec::new();
            for c in log.chunks(chunk) {
                match &filter {
                    Some(f) => ingest.push_skipping(c, f, event, &mut |line, text: &[u8]| {
                        handed += 1;
                        keep(line, String::from_utf8(text.to_vec()).unwrap())
                    }),
                    None => ingest.push(c, event),
                }
                ends.push((ingest.lines(), tail.borrow().clone()));
            }
            (read.take(), ends, handed, ingest.parsed())
        };
        for chunk in [log.len(), 5000, 333] {
            let every = tails(None, 4, chunk);
            let all = tails(Some(r.skip_filter().unwrap()), 4, chunk);
            let last = tails(Some(r.skip_filter().unwrap().hand_over_last(4)), 4, chunk);
            assert!(every.0.len() > 50, "{} reads", every.0.len());
            assert!(every.0.iter().skip(1).all(|(_, t)| !t.is_empty()));
            assert!(all.3 * 3 < every.3, "{} of {} parsed", all.3, every.3);
            assert_eq!(all.0, every.0, "chunks of {chunk}");
            assert_eq!(all.1, every.1, "chunks of {chunk}");
            assert_eq!(last.0, every.0, "chunks of {chunk}");
            assert_eq!(last.1, every.1, "chunks of {chunk}");
            assert!(last.2 * 2 < all.2, "{} of {} handed over", last.2, all.2);
            // A tail that a phase empties: the same tail wherever an error reads it and at
            // every chunk's end, with the lines before each phase marker never handed over.
            let per_phase = r.skip_filter().unwrap().hand_over_last(4).tail_per_phase();
            let phased = tails(Some(per_phase), 4, chunk);
            let errors = |reads: &[(u32, Vec<(u32, String)>)]| -> Vec<(u32, Vec<(u32, String)>)> {
                reads
                    .iter()
                    .filter(|(line, _)| log_line(&log, *line).contains("::ERROR::"))
                    .cloned()
                    .collect()
            };
            assert_eq!(errors(&phased.0), errors(&every.0), "chunks of {chunk}");
            assert!(errors(&every.0).len() > 20);
            assert_eq!(phased.1, every.1, "chunks of {chunk}");
            assert!(phased.2 < last.2, "{} of {} handed over", phased.2, last.2);
        }
    }

    #[test]
    fn no_skipping_when_a_detector_sees_everything_or_a_pattern_needs_the_line_alone() {
        let none = s(&[]);
        let all = Router::new(
            &[Some(Route {
                literals: &none,
                patterns: &none,
                context: 0,
            })],
            PatternLimits::default(),
        )
        .unwrap();
        assert!(all.skip_filter().is_none());
        // Anchored patterns without a literal: they would be searched in the buffer. (One
        // with a literal is tried on its line alone, as routing does: see the test above.)
        for p in [
            r"\A\d",
            r"\d\z",
            r"(?-m)^\s*$",
            r"(?i-m)[a-z]$",
            r"[a-z]|\A\d",
        ] {
            let pats = s(&[p]);
            let r = Router::new(
                &[Some(Route {
                    literals: &none,
                    patterns: &pats,
                    context: 0,
                })],
                PatternLimits::default(),
            )
            .unwrap();
            assert!(r.skip_filter().is_none(), "{p}");
        }
    }
}
