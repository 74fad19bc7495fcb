//! The first pass of the skip filter over a buffer of whole lines: which lines may hold a
//! match at all. One small automaton over every literal (ASCII case folded), `::`, and the
//! bytes the parser changes or that are past ASCII; only the lines it flags are searched with
//! the filter's regex. The automaton walks several stretches of the buffer at once: a lazy
//! DFA's loop waits on one table load per byte, while independent walks overlap their loads
//! (0.5 ns a byte instead of 1.6 on compiler command lines, on this project's machine).

#[cfg(target_arch = "x86_64")]
mod fast;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{Anchored, MatchKind, StartKind, dfa};
use std::sync::{Arc, OnceLock};

/// Walks at once: more spill the lanes' state out of registers (measured: 4 best, 6 and 8
/// slower, 2 at 0.84 ns a byte).
const LANES: usize = 4;
/// Below this a buffer is walked as one lane (splitting costs more than it saves).
const SPLIT_FROM: usize = 4 << 10;

/// Flags the lines of a buffer that hold one of its literals (ASCII letters in any case), a
/// `::`, a control byte other than tab, or a byte past ASCII: a superset of the lines the
/// skip filter's regex can match, when every alternative of that regex is one of those.
#[derive(Debug, Clone)]
pub(crate) struct LineSieve {
    /// `None` inside: it could not be built. Where the vector path runs, it is built on a
    /// thread of its own (for the built-ins' literals it took 6–10 ms, the most of a replay's
    /// start) and the vector path searches meanwhile; elsewhere it is built at once.
    automaton: Arc<OnceLock<Option<Lanes>>>,
    /// The same lines found with vector instructions, where this machine has them.
    #[cfg(target_arch = "x86_64")]
    fast: Option<fast::Sieve>,
    /// What the automaton is built from, for [`Path::Deferred`].
    #[cfg(test)]
    patterns: Vec<Vec<u8>>,
}

/// What the vector path counts of a buffer of whole lines besides the lines it flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counted {
    /// For each flagged line, how many lines of the buffer come before it.
    pub(crate) before: Vec<u32>,
    /// The buffer's lines.
    pub(crate) lines: u32,
    /// At least the length of the buffer's longest line, newline not counted (exact for lines
    /// that cross a 64-byte block; those within one count as 63).
    pub(crate) longest: usize,
}

/// The automaton, walked in lanes.
#[derive(Debug)]
struct Lanes {
    dfa: dfa::DFA,
    start: StateID,
}

/// Which way a sieve searches.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// The vector path where the machine has it, unless the automaton searches the first
    /// long buffer quicker.
    Quicker,
    /// The vector path where the machine has it.
    #[cfg_attr(not(test), allow(dead_code))]
    Vector,
    /// The automaton.
    #[cfg_attr(not(test), allow(dead_code))]
    Automaton,
    /// The vector path, with an automaton that is only built when the caller says (the
    /// tests search before it exists).
    #[cfg_attr(not(test), allow(dead_code))]
    Deferred,
}

impl LineSieve {
    /// The sieve for `literals`; `None` if one is empty (every line would be flagged), or if
    /// the automaton is the only path and cannot be built.
    pub(crate) fn new<'a>(literals: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        Self::build(literals, Path::Quicker)
    }

    /// As [`LineSieve::new`], by the path given (the tests compare them).
    fn build<'a>(literals: impl IntoIterator<Item = &'a [u8]>, path: Path) -> Option<Self> {
        let mut patterns: Vec<Vec<u8>> = vec![b"::".to_vec()];
        for l in literals {
            if l.is_empty() {
                return None;
            }
            // Lines with a byte past ASCII are flagged by that byte; the rest of such a
            // literal would only grow the automaton.
            if l.is_ascii() {
                patterns.push(l.to_vec());
            }
        }
        patterns.sort();
        patterns.dedup();
        // A literal that holds another is found by the shorter one's match.
        let all = patterns.clone();
        patterns.retain(|p| {
            !all.iter()
                .any(|o| o.len() < p.len() && p.windows(o.len()).any(|w| w == &o[..]))
        });
        #[cfg(target_arch = "x86_64")]
        let fast = match path {
            Path::Quicker => fast::Sieve::new(&patterns, true),
            Path::Vector | Path::Deferred => fast::Sieve::new(&patterns, false),
            Path::Automaton => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = path;
        patterns.extend(
            (0u8..=0x08)
                .chain(0x0B..=0x1F)
                .chain(0x7F..=0xFF)
                .map(|b| vec![b]),
        );
        let automaton = Arc::new(OnceLock::new());
        #[cfg(target_arch = "x86_64")]
        let deferred = fast.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let deferred = false;
        if deferred && path != Path::Deferred {
            let slot = automaton.clone();
            let lits = patterns.clone();
            let spawned = std::thread::Builder::new()
                .name("nixtest-sieve".into())
                .spawn(move || {
                    slot.get_or_init(|| Lanes::build(&lits));
                });
            if spawned.is_err() {
                automaton.get_or_init(|| Lanes::build(&patterns));
            }
        } else if !deferred {
            automaton.get_or_init(|| Lanes::build(&patterns)).as_ref()?;
        }
        Some(Self {
            automaton,
            #[cfg(target_arch = "x86_64")]
            fast,
            #[cfg(test)]
            patterns,
        })
    }

    /// Appends to `out`, in order, where each flagged line of `body` begins. `body` is whole
    /// lines: it ends with a newline, or is empty.
    #[cfg(test)]
    pub(crate) fn lines(&self, body: &[u8], out: &mut Vec<usize>) {
        self.lines_counted(body, out, &mut Counted::default());
    }

    /// As [`LineSieve::lines`]; where the path taken counts lines as it goes (the vector
    /// path, which compares every byte with a newline anyway), fills `counted` for the lines
    /// appended and returns true, so the parser need not walk the skipped lines again.
    pub(crate) fn lines_counted(
        &self,
        body: &[u8],
        out: &mut Vec<usize>,
        counted: &mut Counted,
    ) -> bool {
        let built = self.automaton.get().and_then(Option::as_ref);
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = &self.fast {
            return fast.lines(
                body,
                out,
                counted,
                built.map(|a| |body: &[u8], out: &mut Vec<usize>| a.search(body, out)),
            );
        }
        let _ = counted;
        built
            .expect("without the vector path the automaton is built at once")
            .search(body, out);
        false
    }

    /// Waits for the automaton to be built (the tests compare the paths), or builds it
    /// ([`Path::Deferred`]).
    #[cfg(test)]
    fn built(&self) -> &Self {
        self.automaton.get_or_init(|| Lanes::build(&self.patterns));
        self
    }
}

impl Lanes {
    fn build(patterns: &[Vec<u8>]) -> Option<Self> {
        let dfa = dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            // Without a prefilter the start state is not special, so the walk only stops
            // on a match.
            .prefilter(false)
            .build(patterns)
            .ok()?;
        let start = dfa.start_state(Anchored::No).ok()?;
        Some(Self { dfa, start })
    }

    fn search(&self, body: &[u8], out: &mut Vec<usize>) {
        if body.len() < SPLIT_FROM {
            self.walk::<1>(body, out);
        } else {
            self.walk::<LANES>(body, out);
        }
    }

    fn walk<const K: usize>(&self, body: &[u8], out: &mut Vec<usize>) {
        let n = body.len();
        // Lane k walks [pos[k], end[k]): stretches that begin at a line's start, so no line
        // is split between lanes and each lane's flagged lines come in order.
        let mut pos = [0usize; K];
        let mut end = [0usize; K];
        let mut from = 0;
        for k in 0..K {
            pos[k] = from;
            let cut = (n * (k + 1) / K).max(from);
            end[k] = if k + 1 == K || cut >= n {
                n
            } else {
                memchr::memchr(b'\n', &body[cut..]).map_or(n, |i| cut + i + 1)
            };
            from = end[k];
        }
        let mut found: [Vec<usize>; K] = std::array::from_fn(|_| Vec::new());
        let mut state = [self.start; K];
        while let Some(steps) = (0..K).map(|k| end[k] - pos[k]).filter(|&r| r > 0).min() {
            let active: [bool; K] = std::array::from_fn(|k| end[k] > pos[k]);
            // The first lane to reach a match, after how many steps of the round.
            let mut hit = None;
            'round: for i in 0..steps {
                for k in 0..K {
                    if !active[k] {
                        continue;
                    }
                    // SAFETY: `pos[k] + i < end[k] <= body.len()`: `i < steps`, and `steps`
                    // is at most what is left of every active lane. The checked index made a
                    // replay of long lines a fifth slower (measured).
                    let byte = unsafe { *body.get_unchecked(pos[k] + i) };
                    state[k] = self.dfa.next_state(Anchored::No, state[k], byte);
                    if self.dfa.is_special(state[k]) {
                        hit = Some((k, i));
                        break 'round;
                    }
                }
            }
            let Some((hk, i)) = hit else {
                for k in 0..K {
                    if active[k] {
                        pos[k] += steps;
                    }
                }
                continue;
            };
            // Lanes up to the one that hit took step i; those after it did not.
            for k in 0..K {
                if active[k] {
                    pos[k] += if k <= hk { i + 1 } else { i };
                }
            }
            let at = pos[hk] - 1;
            if self.dfa.is_match(state[hk]) {
                let line = memchr::memrchr(b'\n', &body[..at]).map_or(0, |j| j + 1);
                found[hk].push(line);
                // The rest of the line is flagged already.
                pos[hk] = memchr::memchr(b'\n', &body[at..end[hk]]).map_or(end[hk], |j| at + j + 1);
            }
            state[hk] = self.start;
        }
        for f in found {
            out.extend(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a plain line-by-line check flags.
    fn expected(lits: &[&str], body: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut start = 0;
        for line in body.split_inclusive(|&b| b == b'\n') {
            let text = line
                .strip_suffix(b"\n")
                .unwrap_or(line)
                .to_ascii_lowercase();
            let special = text.iter().any(|&b| (b < 0x20 && b != b'\t') || b >= 0x7F);
            let holds = lits.iter().chain(&["::"]).any(|l| {
                let l = l.to_ascii_lowercase();
                text.windows(l.len()).any(|w| w == l.as_bytes())
            });
            if special || holds {
                out.push(start);
            }
            start += line.len();
        }
        out
    }

    #[test]
    fn flags_exactly_the_lines_a_line_by_line_check_does() {
        let lits = ["No space left", "oom-kill", "error: ", "x"];
        // Lines of every kind, in a pseudo-random order, long enough to be split in lanes;
        // matches at a line's first and last byte, across what would be a lane's cut.
        let kinds: [&[u8]; 10] = [
            b"gcc -O2 -I/nix/store/abc-foo/include -c a.c -o a.o",
            b"ERROR: build failed",
            b"no SPACE left on device",
            b"x",
            b"plain words only",
            b"  ::PHASE::install",
            b"tab\tis fine",
            b"caf\xc3\xa9",
            b"bell\x07",
            b"",
        ];
        let mut body = Vec::new();
        let mut seed = 7u64;
        for _ in 0..3000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            body.extend_from_slice(kinds[(seed >> 33) as usize % kinds.len()]);
            if seed.is_multiple_of(5) {
                body.extend_from_slice(&b"-Wall ".repeat((seed >> 40) as usize % 300));
            }
            body.push(b'\n');
        }
        for cut in [0, 1, 100, 4095, 4096, 20_000, body.len()] {
            let end = body[..cut]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let part = &body[..end];
            for path in [Path::Quicker, Path::Vector, Path::Automaton] {
                let sieve = LineSieve::build(lits.iter().map(|l| l.as_bytes()), path).unwrap();
                let mut got = Vec::new();
                sieve.lines(part, &mut got);
                assert_eq!(got, expected(&lits, part), "first {end} bytes, {path:?}");
            }
        }
    }

    /// Many literals, long and short, put in random case at random places of lines of random
    /// lengths (at a line's first and last byte, at a buffer's end, near one another), among
    /// pieces of them that must not match: both paths flag exactly the expected lines.
    #[test]
    fn both_paths_flag_exactly_the_expected_lines_among_many_literals() {
        let mut seed = 11u64;
        let mut next = move |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        let words = [
            "build",
            "failed",
            "device",
            "space",
            "no ",
            "error",
            "kill",
            "grub",
            "/nix/store/",
            "-I",
            " ",
            "'",
            ": ",
            "include",
            "partition",
            "EFI",
            "ab",
            "x",
            "-",
            "0123",
        ];
        let mut lits: Vec<String> = Vec::new();
        for _ in 0..120 {
            let mut l = String::new();
            while l.len() < 2 + next(30) {
                l.push_str(words[next(words.len())]);
            }
            lits.push(l);
        }
        lits.extend(["full", "ok:", "zz", "q"].map(String::from));
        let lits: Vec<&str> = lits.iter().map(String::as_str).collect();
        let mut body = Vec::new();
        for _ in 0..4000 {
            let len = [0, 1, 10, 80, 300, 2000][next(6)];
            let mut line = Vec::new();
            while line.len() < len {
                match next(40) {
                    0 => {
                        let l = lits[next(lits.len())];
                        line.extend(l.bytes().map(|b| {
                            if next(2) == 0 {
                                b.to_ascii_uppercase()
                            } else {
                                b
                            }
                        }));
                    }
                    1 => {
                        // A literal less its last byte: a near miss.
                        let l = lits[next(lits.len())];
                        line.extend_from_slice(&l.as_bytes()[..l.len() - 1]);
                        line.push(b'#');
                    }
                    2 if next(20) == 0 => line.push([0x07, 0xC3, 0x7F][next(3)]),
                    _ => line.extend_from_slice(words[next(words.len())].as_bytes()),
                }
            }
            body.extend_from_slice(&line);
            body.push(b'\n');
        }
        let build = |path| LineSieve::build(lits.iter().map(|l| l.as_bytes()), path).unwrap();
        // The automaton built before the first search, so the first long buffer compares the
        // paths; and one searching before its automaton exists.
        let quick = build(Path::Vector);
        quick.built();
        let lanes = build(Path::Automaton);
        let quicker = build(Path::Quicker);
        quicker.built();
        let deferred = build(Path::Deferred);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512vbmi") {
            assert!(
                quick.fast.is_some(),
                "the vector path is tested where it runs"
            );
        }
        // Buffers of whole lines, of random sizes below `most`, one after the other.
        let mut counts_checked = 0;
        let mut parts = |most: usize| {
            let mut start = 0;
            while start < body.len() {
                let from = (start + next(most)).min(body.len() - 1);
                let end = from + memchr::memchr(b'\n', &body[from..]).expect("lines end") + 1;
                let part = &body[start..end];
                let want = expected(&lits, part);
                for sieve in [&quick, &lanes, &quicker, &deferred] {
                    let mut got = Vec::new();
                    let mut counted = Counted::default();
                    if sieve.lines_counted(part, &mut got, &mut counted) {
                        check_counted(part, &got, &counted);
                        counts_checked += 1;
                    }
                    assert_eq!(got, want, "bytes {start}..{end}");
                }
                start = end;
            }
        };
        // Small buffers: the vector path as guessed; then one long enough to tune it by, and
        // the tuned path.
        parts(100_000);
        parts(body.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = &quick.fast {
            assert!(fast.is_tuned());
            let waiting = deferred.fast.as_ref().expect("the same machine");
            assert!(!waiting.is_tuned(), "nothing to compare with yet");
        }
        parts(300_000);
        // Once the automaton is there, the next long buffer compares the paths.
        deferred.built();
        parts(body.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = &deferred.fast {
            assert!(fast.is_tuned());
        }
        #[cfg(target_arch = "x86_64")]
        if quick.fast.is_some() {
            assert!(counts_checked > 0, "the vector path counted lines");
        }
        let _ = counts_checked;
    }

    /// What the vector path counted is what walking the buffer counts: each flagged line's
    /// number, the lines, and no line longer than `longest`.
    fn check_counted(body: &[u8], starts: &[usize], counted: &Counted) {
        // Line starts in order: each flagged line's number is its place among them.
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', body).map(|i| i + 1))
            .collect();
        let numbers: Vec<u32> = starts
            .iter()
            .map(|s| line_starts.binary_search(s).expect("a line's start") as u32)
            .collect();
        assert_eq!(counted.before, numbers, "the flagged lines' numbers");
        assert_eq!(counted.lines as usize, line_starts.len() - 1, "the lines");
        let longest = body
            .split(|&b| b == b'\n')
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        assert!(
            counted.longest >= longest,
            "longest line {longest}, counted {}",
            counted.longest
        );
    }

    /// Literals a plugin crafted to share one gram (or too many of them) would make every
    /// check of the vector path walk them all: the automaton is used, and flags the same lines.
    #[test]
    fn literals_that_crowd_the_vector_path_leave_it_to_the_automaton() {
        let crowded: Vec<String> = (0..100).map(|i| format!("aaaaaaaa{i:04}")).collect();
        // Distinct grams, but so many that the table would be mostly set.
        let many: Vec<String> = (0..3000u64)
            .map(|i| format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        for lits in [crowded, many] {
            let sieve = LineSieve::build(lits.iter().map(|l| l.as_bytes()), Path::Vector).unwrap();
            #[cfg(target_arch = "x86_64")]
            assert!(sieve.fast.is_none());
            let body = format!("{}\nxx{}yy\nplain\n", "a".repeat(5000), lits[7]);
            let mut got = Vec::new();
            sieve.lines(body.as_bytes(), &mut got);
            let lits: Vec<&str> = lits.iter().map(String::as_str).collect();
            assert_eq!(got, expected(&lits, body.as_bytes()));
        }
    }

    #[test]
    fn an_empty_literal_means_no_sieve() {
        assert!(LineSieve::new([b"".as_slice()]).is_none());
    }
}
