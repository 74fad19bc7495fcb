//! The literals a rule needs: strings one of which is in every text the rule matches, read
//! from the rule's syntax. One Aho-Corasick pass over a line then tells which rules may match
//! it, and only those run their regexes; most lines of a log hold none.
//!
//! The extraction may only ever widen: a literal set that some match lacks would hide a
//! failure. Where the syntax gives no certain literal, the rule has none and runs on every line.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// More alternatives than this are not worth an automaton's states (a class of many
/// characters, or a product of several small ones): the node counts as having no literal.
const MAX_ALTERNATIVES: usize = 64;
/// Classes up to this many characters are spelled out as alternatives.
const MAX_CLASS: usize = 8;

/// A literal, matched exactly or ignoring ASCII case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Lit {
    bytes: Vec<u8>,
    fold: bool,
}

impl Lit {
    fn join(&self, next: &Lit) -> Lit {
        let mut bytes = self.bytes.clone();
        bytes.extend_from_slice(&next.bytes);
        Lit {
            bytes,
            fold: self.fold || next.fold,
        }
    }
}

/// What a node needs: one of `lits` is in every match; `exact` when the node matches those
/// strings and nothing else (so it can be joined with its neighbours into longer literals).
#[derive(Debug, Clone)]
struct Need {
    lits: Vec<Lit>,
    exact: bool,
}

impl Need {
    fn exact(lits: Vec<Lit>) -> Option<Need> {
        Some(Need { lits, exact: true })
    }

    /// Shortest literal first, then fewest: a longer literal is found less often by chance.
    fn score(&self) -> (usize, std::cmp::Reverse<usize>) {
        let shortest = self.lits.iter().map(|l| l.bytes.len()).min().unwrap_or(0);
        (shortest, std::cmp::Reverse(self.lits.len()))
    }
}

fn need(hir: &Hir) -> Option<Need> {
    match hir.kind() {
        // Matches the empty string and only that: joins with its neighbours.
        HirKind::Empty | HirKind::Look(_) => Need::exact(vec![Lit {
            bytes: Vec::new(),
            fold: false,
        }]),
        HirKind::Literal(l) => Need::exact(vec![Lit {
            bytes: l.0.to_vec(),
            fold: false,
        }]),
        HirKind::Class(Class::Unicode(c)) => class(
            c.ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .take(MAX_CLASS + 1)
                .map(|c| (c.is_ascii().then_some(c as u8), c.to_string().into_bytes()))
                .collect(),
        ),
        // Bytes past ASCII stand for themselves here (`(?-u)`), not for characters.
        HirKind::Class(Class::Bytes(c)) => class(
            c.ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .take(MAX_CLASS + 1)
                .map(|b| (b.is_ascii().then_some(b), vec![b]))
                .collect(),
        ),
        HirKind::Repetition(r) => {
            if r.min == 0 {
                return None;
            }
            let sub = need(&r.sub)?;
            Some(Need {
                exact: sub.exact && r.min == 1 && r.max == Some(1),
                lits: sub.lits,
            })
        }
        HirKind::Capture(c) => need(&c.sub),
        HirKind::Alternation(branches) => {
            let mut lits = Vec::new();
            let mut exact = true;
            for b in branches {
                let n = need(b)?;
                exact &= n.exact;
                lits.extend(n.lits);
                if lits.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
            Some(Need {
                lits: tidy(lits),
                exact,
            })
        }
        HirKind::Concat(parts) => concat(parts),
    }
}

/// A class's members (as ASCII bytes where they are, and as the bytes they match): `(?i)a`
/// is `[Aa]`, one literal found ignoring case, and `(?i)k` is that and the Kelvin sign; small
/// classes are spelled out.
fn class(members: Vec<(Option<u8>, Vec<u8>)>) -> Option<Need> {
    if members.len() > MAX_CLASS {
        return None;
    }
    let ascii: Vec<u8> = members.iter().filter_map(|(a, _)| *a).collect();
    if let [a, b] = ascii[..]
        && a.is_ascii_uppercase()
        && b == a.to_ascii_lowercase()
    {
        let mut lits = vec![Lit {
            bytes: vec![b],
            fold: true,
        }];
        lits.extend(
            members
                .into_iter()
                .filter(|(a, _)| a.is_none())
                .map(|(_, bytes)| Lit { bytes, fold: false }),
        );
        return Need::exact(lits);
    }
    Need::exact(
        members
            .into_iter()
            .map(|(_, bytes)| Lit { bytes, fold: false })
            .collect(),
    )
}

/// Literals matched ignoring case in one spelling; each once.
fn tidy(mut lits: Vec<Lit>) -> Vec<Lit> {
    for l in &mut lits {
        if l.fold {
            l.bytes.make_ascii_lowercase();
        }
    }
    lits.sort();
    lits.dedup();
    lits
}

/// Runs of exact parts join into longer literals; the best of the runs and of the other
/// parts' own needs is the concatenation's.
fn concat(parts: &[Hir]) -> Option<Need> {
    let mut best: Option<Need> = None;
    let mut consider = |n: Need| {
        if n.lits.iter().all(|l| !l.bytes.is_empty())
            && best.as_ref().is_none_or(|b| n.score() > b.score())
        {
            best = Some(n);
        }
    };
    let mut run: Option<Vec<Lit>> = None;
    let mut whole = true;
    for part in parts {
        match need(part) {
            Some(n) if n.exact => {
                run = Some(match run.take() {
                    None => n.lits,
                    Some(prev) if prev.len() * n.lits.len() <= MAX_ALTERNATIVES => tidy(
                        prev.iter()
                            .flat_map(|a| n.lits.iter().map(move |b| a.join(b)))
                            .collect(),
                    ),
                    Some(prev) => {
                        whole = false;
                        consider(Need {
                            lits: prev,
                            exact: false,
                        });
                        n.lits
                    }
                });
            }
            other => {
                whole = false;
                if let Some(prev) = run.take() {
                    consider(Need {
                        lits: prev,
                        exact: false,
                    });
                }
                if let Some(n) = other {
                    consider(n);
                }
            }
        }
    }
    if let Some(lits) = run {
        if whole {
            return Need::exact(lits);
        }
        consider(Need { lits, exact: false });
    }
    best.map(|b| Need {
        lits: b.lits,
        exact: false,
    })
}

/// The literals one of which every match of `pattern` holds, each with whether it is matched
/// ignoring ASCII case; `None` when the syntax promises none (or does not parse).
pub(crate) fn required_literals(pattern: &str) -> Option<Vec<(Vec<u8>, bool)>> {
    let hir = regex_syntax::parse(pattern).ok()?;
    let n = need(&hir)?;
    if n.lits.is_empty() || n.lits.iter().any(|l| l.bytes.is_empty()) {
        return None;
    }
    Some(n.lits.into_iter().map(|l| (l.bytes, l.fold)).collect())
}

/// Which of several patterns may match a text: those whose literal it holds, and those
/// without one. Cheaper than a `RegexSet` over the same patterns where most texts hold none
/// of their literals, and nothing to build but one automaton.
///
/// ```
/// let gate = nixtest_events::Gate::new([r"disk (\d+) failed", r"(?i)oom-kill"]);
/// assert_eq!(gate.candidates("the OOM-killer woke"), [1]);
/// assert!(gate.candidates("all well").is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Case-sensitive literals, and the ones matched ignoring ASCII case.
    exact: Option<(AhoCorasick, Vec<usize>)>,
    folded: Option<(AhoCorasick, Vec<usize>)>,
    /// Tells at a glance most texts that hold no literal: the automata are not run on them.
    grams: Option<Grams>,
    /// Patterns with no literal: always candidates.
    always: Vec<usize>,
    count: usize,
}

/// Bits in the table of hashed four-byte grams (8 KiB: it stays in the first-level cache).
const GRAM_BITS: u32 = 16;

/// The heads of a gate's literals, ASCII lower-cased: every text that holds a literal holds
/// its head, so a text with none holds no literal, and the automata need not run on it. A
/// call into an automaton costs about 60 ns before its first byte, more than this whole test
/// on most routed lines (markers' messages are a dozen bytes). A head is as likely as any
/// other part of a literal to come by chance: on the bench's logs, a literal's rarest four
/// bytes by English letter frequency let more lines through than its first four, and its
/// first and last four together hardly fewer.
#[derive(Debug, Clone)]
struct Grams {
    /// The first four bytes of each literal of four bytes or more, hashed.
    quads: Box<[u64]>,
    /// The first two bytes of each literal of two or three bytes, by value.
    pairs: Option<Box<[u64]>>,
    /// Literals of one byte.
    singles: Option<[u64; 4]>,
}

fn lower(b: u8) -> u8 {
    b.to_ascii_lowercase()
}

fn quad_bit(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)) as usize
}

fn has(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl Grams {
    /// None when a literal is empty (every text would pass).
    fn new<'a>(lits: impl IntoIterator<Item = &'a [u8]>) -> Option<Grams> {
        let mut quads = vec![0u64; 1 << (GRAM_BITS - 6)].into_boxed_slice();
        let (mut pairs, mut singles) = (None, None);
        for lit in lits {
            let lit: Vec<u8> = lit.iter().map(|&b| lower(b)).collect();
            match lit.len() {
                0 => return None,
                1 => set(singles.get_or_insert([0u64; 4]), lit[0] as usize),
                2 | 3 => {
                    let pairs = pairs.get_or_insert_with(|| vec![0u64; 1024].into_boxed_slice());
                    let pair = &lit[..2];
                    set(pairs, (pair[0] as usize) << 8 | pair[1] as usize);
                }
                _ => {
                    let q = &lit[..4];
                    set(
                        &mut quads,
                        quad_bit(u32::from_be_bytes([q[0], q[1], q[2], q[3]])),
                    );
                }
            }
        }
        Some(Grams {
            quads,
            pairs,
            singles,
        })
    }

    /// False only when `text` holds no literal's head.
    fn may_hold(&self, text: &[u8]) -> bool {
        // The last four bytes read, the latest lowest.
        let mut w: u32 = 0;
        match (&self.pairs, &self.singles) {
            (None, None) => {
                for (i, &b) in text.iter().enumerate() {
                    w = w << 8 | lower(b) as u32;
                    if i >= 3 && has(&self.quads, quad_bit(w)) {
                        return true;
                    }
                }
            }
            (pairs, singles) => {
                for (i, &b) in text.iter().enumerate() {
                    let l = lower(b);
                    w = w << 8 | l as u32;
                    if singles.as_ref().is_some_and(|s| has(s, l as usize))
                        || i >= 1
                            && pairs
                                .as_ref()
                                .is_some_and(|p| has(p, (w & 0xffff) as usize))
                        || i >= 3 && has(&self.quads, quad_bit(w))
                    {
                        return true;
                    }
                }
            }
        }
        false
    }
}

impl Gate {
    /// A gate for `patterns` (index `i` is the `i`th); a pattern that does not parse has no
    /// literal and is always a candidate.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Gate {
        Gate::from_literals(patterns.into_iter().map(required_literals))
    }

    /// A gate from each pattern's literals as [`required_literals`] gives them (`None`: the
    /// pattern is a candidate for every text).
    pub(crate) fn from_literals(
        needs: impl IntoIterator<Item = Option<Vec<(Vec<u8>, bool)>>>,
    ) -> Gate {
        let (mut exact, mut folded) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        let mut always = Vec::new();
        let mut count = 0;
        for (i, need) in needs.into_iter().enumerate() {
            count += 1;
            match need {
                Some(lits) => {
                    for (bytes, fold) in lits {
                        let (lits, owners) = if fold { &mut folded } else { &mut exact };
                        lits.push(bytes);
                        owners.push(i);
                    }
                }
                None => always.push(i),
            }
        }
        let grams = Grams::new(exact.0.iter().chain(&folded.0).map(Vec::as_slice));
        let mut build = |(lits, owners): (Vec<Vec<u8>>, Vec<usize>), fold: bool| {
            if lits.is_empty() {
                return None;
            }
            // Every routed line goes through this automaton, and overlapping searches get no
            // prefilter: a DFA takes one table lookup per byte, where the NFA that the automatic
            // choice takes past 100 literals follows failure links (several times slower).
            let builder = |kind| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(fold)
                    .kind(kind)
                    .build(&lits)
            };
            let built = builder(Some(AhoCorasickKind::DFA)).or_else(|_| builder(None));
            match built {
                Ok(ac) => Some((ac, owners)),
                // Never within these sizes; but an automaton that cannot be built must not
                // hide its patterns: they become candidates for every text.
                Err(_) => {
                    always.extend(owners);
                    None
                }
            }
        };
        let exact = build(exact, false);
        let folded = build(folded, true);
        let mut gate = Gate {
            exact,
            folded,
            grams,
            always,
            count,
        };
        gate.always.sort_unstable();
        gate.always.dedup();
        gate
    }

    /// How many patterns have no literal (they run on every text).
    #[cfg(test)]
    pub(crate) fn unguarded(&self) -> &[usize] {
        &self.always
    }

    /// The patterns that may match `text`, in ascending order (empty, without allocating,
    /// when none may).
    pub fn candidates(&self, text: &str) -> Vec<usize> {
        let mut all = Vec::new();
        self.first(text, |i| {
            all.push(i);
            None::<()>
        });
        all
    }

    /// Calls `f` with each pattern that may match `text`, in ascending order, until it
    /// returns `Some`.
    pub fn first<T>(&self, text: &str, mut f: impl FnMut(usize) -> Option<T>) -> Option<T> {
        // A bit per pattern; on the stack for the usual sizes.
        let mut small = [0u64; 4];
        let mut large = Vec::new();
        let words: &mut [u64] = if self.count <= small.len() * 64 {
            &mut small
        } else {
            large.resize(self.count.div_ceil(64), 0);
            &mut large
        };
        let mut any = false;
        let held = self
            .grams
            .as_ref()
            .is_none_or(|g| g.may_hold(text.as_bytes()));
        for (ac, owners) in [&self.exact, &self.folded]
            .into_iter()
            .flatten()
            .filter(|_| held)
        {
            for m in ac.find_overlapping_iter(text) {
                let i = owners[m.pattern().as_usize()];
                words[i / 64] |= 1 << (i % 64);
                any = true;
            }
        }
        for &i in &self.always {
            words[i / 64] |= 1 << (i % 64);
            any = true;
        }
        if !any {
            return None;
        }
        for (w, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(t) = f(i) {
                    return Some(t);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|v| {
            v.into_iter()
                .map(|(b, fold)| {
                    let s = String::from_utf8(b).unwrap();
                    if fold { format!("(?i){s}") } else { s }
                })
                .collect()
        })
    }

    #[test]
    fn the_quick_test_lets_through_every_text_that_holds_a_literal() {
        // Literals of one to six bytes, exact and folded, from a small alphabet (so that
        // texts hold them often), against texts of the same alphabet: the gate with its
        // quick test gives the same candidates as the automata alone.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"abAB:. x";
        for round in 0..200 {
            let patterns: Vec<String> = (0..1 + next(12))
                .map(|_| {
                    let len = 1 + next(6) as usize;
                    let lit: String = (0..len)
                        .map(|_| alphabet[next(alphabet.len() as u64) as usize] as char)
                        .collect();
                    let lit = regex_syntax::escape(&lit);
                    if next(2) == 0 {
                        format!("(?i){lit}")
                    } else {
                        lit
                    }
                })
                .collect();
            let gate = Gate::new(patterns.iter().map(String::as_str));
            let mut plain = gate.clone();
            plain.grams = None;
            assert!(gate.grams.is_some(), "{patterns:?}");
            for _ in 0..200 {
                let text: String = (0..next(30))
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize] as char)
                    .collect();
                assert_eq!(
                    gate.candidates(&text),
                    plain.candidates(&text),
                    "round {round}: {patterns:?} on {text:?}"
                );
            }
        }
        // And it does turn texts away: most lines hold none of a few long literals.
        let gate = Gate::new(["disk (\\d+) failed", "(?i)out of memory"]);
        let grams = gate.grams.as_ref().unwrap();
        assert!(!grams.may_hold(b"compiling foo.c with -O2"));
        assert!(grams.may_hold(b"OUT of Memory at last"));
    }

    #[test]
    fn literals_come_from_the_longest_certain_part() {
        assert_eq!(
            lits(r"builder for '(\S+)' failed").unwrap(),
            ["builder for '"]
        );
        assert_eq!(
            lits(r"hash mismatch in fixed-output derivation ['‘`]").unwrap(),
            [
                "hash mismatch in fixed-output derivation '",
                "hash mismatch in fixed-output derivation `",
                "hash mismatch in fixed-output derivation ‘"
            ]
        );
        assert_eq!(
            lits(r"^\s*error: attribute '[^']+' missing").unwrap(),
            ["error: attribute '"]
        );
        assert_eq!(lits(r"\bKilled\b").unwrap(), ["Killed"]);
        assert_eq!(lits(r"foo|bar(?:baz)?").unwrap(), ["bar", "foo"]);
        assert_eq!(lits(r"(?i)oom").unwrap(), ["(?i)oom"]);
        assert_eq!(lits(r"(?i-u)oom").unwrap(), ["(?i)oom"]);
        assert_eq!(
            lits(r"(?:a|b)(?:c|d)x").unwrap(),
            ["acx", "adx", "bcx", "bdx"]
        );
        assert_eq!(lits(r"\d+ ms").unwrap(), [" ms"]);
        assert_eq!(lits(r"(?:[ab][cd][ef]){1,3}").unwrap().len(), 8);
    }

    #[test]
    fn no_literal_where_a_match_may_lack_one() {
        for p in [
            r"x?",           // optional
            r"(?:foo)*bar|", // an empty branch
            r"[a-z]+",       // a class too large to spell out
            r"foo|[0-9]+",   // a branch without a literal
            r"^$",           // only anchors
            r"(",            // does not parse
        ] {
            assert_eq!(lits(p), None, "{p}");
        }
    }

    #[test]
    fn unicode_case_folds_are_not_lost() {
        // `(?i)k` also matches U+212A (Kelvin sign), `(?i)s` U+017F (long s): folding ASCII
        // case alone would miss them, so those classes are spelled out.
        let re = regex::Regex::new(r"(?i)oks").unwrap();
        let gate = Gate::new([r"(?i)oks"]);
        for text in [
            "x OKS y",
            "x o\u{212A}s y",
            "x Okſ y",
            "x O\u{212A}\u{17F} y",
        ] {
            assert!(re.is_match(text), "{text}");
            assert_eq!(gate.first(text, Some), Some(0), "{text}");
        }
        assert_eq!(gate.first("x ok y", Some), None);
    }

    #[test]
    fn the_gate_lets_through_every_pattern_whose_literal_is_there() {
        let gate = Gate::new([r"alpha \d+", r"[0-9]+", r"(?i)gamma", r"beta|alpha"]);
        assert_eq!(gate.unguarded(), [1]);
        let mut seen = Vec::new();
        gate.first("an ALPHA and GAMMA", |i| {
            seen.push(i);
            None::<()>
        });
        assert_eq!(seen, [1, 2]);
        seen.clear();
        gate.first("alpha 3", |i| {
            seen.push(i);
            None::<()>
        });
        assert_eq!(seen, [0, 1, 3]);
        assert_eq!(gate.first("alpha 3", |i| (i > 0).then_some(i)), Some(1));
    }
}
