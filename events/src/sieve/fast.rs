//! The sieve's fast path on x86-64 with AVX-512 (BW and VBMI) and BMI2: the same lines as
//! the automaton flags, found without walking every byte through a table. One pass over
//! 64-byte blocks finds all three kinds of candidates:
//!
//! - Literals of at least [`LONG`] bytes: each has a window of [`LONG`] bytes, and a literal
//!   in the text puts one of that window's 4-byte grams on every [`STRIDE`]-th byte. So only
//!   one position in [`STRIDE`] is looked up: the block's sixteen 4-byte words, each ASCII
//!   case folded and hashed into a bit table that fits the first-level cache, all sixteen
//!   bits fetched by one gather; a set bit is checked against the literals that hold that
//!   gram. The window is the one least likely to occur in build output (rare bytes, word
//!   boundaries), so few positions need checking.
//! - Shorter literals (`::` among them), at most [`MAX_SHORT`]: in the manner of Teddy, each
//!   of eight buckets has a set of bytes (both cases) for each of the first four places, and a
//!   64-byte block is looked up in four 128-byte tables at once (`vpermi2b`); a position whose
//!   four bytes are in one bucket's sets is checked against that bucket's literals.
//! - Control bytes other than tab and newline, and bytes past ASCII: compared in the same
//!   blocks.
//!
//! A line is flagged at its first match and the search goes on at the next line, as the
//! automaton's walk does.

use super::Counted;
use std::arch::x86_64::*;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The bytes of a gram: one 32-bit load.
const GRAM: usize = 4;
/// One position in this many is looked up for the long literals: a 64-byte block's 4-byte
/// words are the positions, so no bytes need moving into place (a stride of 5, looked up
/// one position at a time, was a third of the search).
const STRIDE: usize = GRAM;
/// Literals this long or longer are found by sampling.
pub(super) const LONG: usize = GRAM + STRIDE - 1;
/// Bits of the gram table's index: 2^18 bits, 32 KiB (a first-level data cache holds it).
const TABLE_BITS: u32 = 18;
/// Bits of the index of the lists of literals by gram.
const LIST_BITS: u32 = 12;
/// More short literals than this make the buckets' byte sets too wide to help: the
/// automaton is then used.
pub(super) const MAX_SHORT: usize = 64;
/// More long literals than this fill the gram table past a few percent (every lookup would be
/// checked): the automaton is then used.
const MAX_LONG: usize = 2048;
/// A check walks the whole list of grams that share its hash's top bits: a list longer than
/// this (literals crafted to share a gram) would make every hit cost that much, so the
/// automaton is used.
const MAX_LIST: usize = 32;
const BUCKETS: usize = 8;

/// Bit 5 of every byte: set, upper- and lower-case ASCII letters become one. Other bytes may
/// meet too; the check after the lookup is exact.
const FOLD: u32 = 0x2020_2020;
/// The multiplier of the gram hash (the block search computes the same hash in a vector).
const HASH_MULTIPLIER: u32 = 0x9E37_79B1;

fn fold(gram: u32) -> u32 {
    gram | FOLD
}

fn hash(folded: u32) -> u32 {
    folded.wrapping_mul(HASH_MULTIPLIER) >> (32 - TABLE_BITS)
}

fn gram_at(body: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(body[at..at + GRAM].try_into().expect("four bytes"))
}

/// How often a byte is met in build output, roughly (higher: more often): a window of rare
/// bytes is met less often, so fewer positions need checking.
fn commonness(b: u8) -> u32 {
    const LETTERS: &[u8] = b"etaoinsrhldcumfpgwybvkxjqz";
    match b.to_ascii_lowercase() {
        b' ' => 30,
        b'/' | b'-' | b'.' | b'_' | b'=' => 24,
        b'0'..=b'9' => 20,
        c @ b'a'..=b'z' => 26 - LETTERS.iter().position(|&l| l == c).expect("a letter") as u32,
        _ => 4,
    }
}

/// How likely a window of a literal is to occur in text that does not hold the literal:
/// lower is rarer. Letters inside a word make up common words ("systemd", "build"), so a
/// window that crosses from a letter to something else gains.
fn window_cost(w: &[u8]) -> u32 {
    let bytes: u32 = w.iter().map(|&b| commonness(b).pow(2)).sum();
    let crossings = w
        .windows(2)
        .filter(|p| p[0].is_ascii_alphabetic() != p[1].is_ascii_alphabetic())
        .count() as u32;
    bytes.saturating_sub(crossings * 200)
}

/// What the text is like: how often each byte (its low seven bits: what the tables see) and
/// each gram of the long literals occur. Guessed from [`commonness`] until a buffer of the
/// log itself has been seen.
#[derive(Debug, Clone)]
struct Model {
    bytes: [f64; 128],
    /// Folded gram → how often the sample holds it; empty when guessed.
    grams: HashMap<u32, u32>,
}

impl Model {
    fn guessed() -> Self {
        let total: u32 = (0u8..128).map(commonness).sum();
        Self {
            bytes: std::array::from_fn(|c| f64::from(commonness(c as u8)) / f64::from(total)),
            grams: HashMap::new(),
        }
    }

    /// Counts in `sample` the bytes, and every gram of the `long` literals.
    fn of(sample: &[u8], long: &[Vec<u8>]) -> Self {
        let mut counts = [0u64; 128];
        for &b in sample {
            counts[(b & 0x7F) as usize] += 1;
        }
        // Every byte counted once more: a byte the sample lacks is rare, not impossible.
        let total = (sample.len() + 128) as f64;
        let bytes = std::array::from_fn(|c| (counts[c] + 1) as f64 / total);
        let mut grams: HashMap<u32, u32> = HashMap::new();
        let mut seen = vec![0u64; 1 << (TABLE_BITS - 6)];
        for lit in long {
            for at in 0..=lit.len() - GRAM {
                let folded = fold(gram_at(lit, at));
                grams.insert(folded, 0);
                let h = hash(folded);
                seen[(h >> 6) as usize] |= 1 << (h & 63);
            }
        }
        // The bit table first: most of the sample's grams are no literal's.
        for at in 0..sample.len().saturating_sub(GRAM - 1) {
            let folded = fold(gram_at(sample, at));
            let h = hash(folded);
            if (seen[(h >> 6) as usize] >> (h & 63)) & 1 == 1
                && let Some(n) = grams.get_mut(&folded)
            {
                *n += 1;
            }
        }
        Self { bytes, grams }
    }

    /// How often a window's grams were seen, then how likely its bytes look.
    fn window_key(&self, w: &[u8]) -> (u64, u32) {
        let seen = (0..=w.len() - GRAM)
            .map(|at| u64::from(self.grams.get(&fold(gram_at(w, at))).copied().unwrap_or(0)))
            .sum();
        (seen, window_cost(w))
    }
}

/// Puts each short literal in the bucket where it widens the sets least (by how often the
/// bucket would pass a position of text, its places' chances multiplied), and gives each
/// place's table: for each byte below 128, the buckets that may have it there.
fn buckets(mut short: Vec<Vec<u8>>, model: &Model) -> ([[u8; 128]; GRAM], [Vec<Vec<u8>>; BUCKETS]) {
    let chance =
        |set: &[bool; 128]| -> f64 { (0..128).filter(|&c| set[c]).map(|c| model.bytes[c]).sum() };
    // Each place's set of bytes, both cases; past a literal's end, every byte.
    let sets_of = |lit: &[u8]| -> [[bool; 128]; GRAM] {
        std::array::from_fn(|j| match lit.get(j) {
            Some(&c) => std::array::from_fn(|b| (b as u8).eq_ignore_ascii_case(&c)),
            None => [true; 128],
        })
    };
    let cost = |sets: &[[bool; 128]; GRAM]| -> f64 { sets.iter().map(&chance).product() };
    // The longest (the narrowest) first: the catch-alls of short ones join what is left.
    short.sort_by_key(|l| std::cmp::Reverse(l.len().min(GRAM)));
    let mut sets = [[[false; 128]; GRAM]; BUCKETS];
    let mut buckets: [Vec<Vec<u8>>; BUCKETS] = Default::default();
    for lit in short {
        let own = sets_of(&lit);
        let merged = |b: usize| -> [[bool; 128]; GRAM] {
            std::array::from_fn(|j| std::array::from_fn(|c| sets[b][j][c] || own[j][c]))
        };
        let b = (0..BUCKETS)
            .min_by(|&x, &y| {
                let grow = |b: usize| {
                    let before = if buckets[b].is_empty() {
                        0.0
                    } else {
                        cost(&sets[b])
                    };
                    cost(&merged(b)) - before
                };
                grow(x).total_cmp(&grow(y))
            })
            .expect("eight buckets");
        sets[b] = merged(b);
        buckets[b].push(lit);
    }
    let places = std::array::from_fn(|j| {
        std::array::from_fn(|c| {
            (0..BUCKETS)
                .filter(|&b| !buckets[b].is_empty() && sets[b][j][c])
                .fold(0u8, |m, b| m | 1 << b)
        })
    });
    (places, buckets)
}

/// A buffer at least this long is a sample worth choosing windows and buckets by.
const TUNE_FROM: usize = 256 << 10;

/// The vector path: built from guesses, and again from the first long buffer it searches
/// (which windows' grams a log holds often cannot be guessed: a package's name in every
/// store path, a word in every line), used from then on, unless the automaton searched a long
/// buffer quicker (on short lines the two are close; a machine may run 512-bit instructions
/// at half speed). The automaton may not be built yet when the search begins (it is built on
/// a thread of its own): the two are compared on the first long buffer once it is.
#[derive(Debug, Clone)]
pub(super) struct Sieve {
    patterns: Vec<Vec<u8>>,
    guessed: Fast,
    /// Built from the first long buffer.
    tuned: OnceLock<Fast>,
    /// Whether the automaton is used instead (it searched a long buffer quicker); unset
    /// until the two are compared.
    yielded: OnceLock<bool>,
    /// Whether the automaton may be chosen (the tests keep this path).
    may_yield: bool,
}

impl Sieve {
    /// `None` when this machine lacks the instructions, a literal is empty, or there are too
    /// many short literals.
    pub(super) fn new(patterns: &[Vec<u8>], may_yield: bool) -> Option<Self> {
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("bmi2"))
        {
            return None;
        }
        let patterns: Vec<Vec<u8>> = patterns.iter().filter(|p| p.is_ascii()).cloned().collect();
        let guessed = Fast::build(&patterns, &Model::guessed())?;
        Some(Self {
            patterns,
            guessed,
            tuned: OnceLock::new(),
            yielded: OnceLock::new(),
            may_yield,
        })
    }

    /// Appends where each flagged line of `body` (whole lines) begins, in order, by this path
    /// or by `automaton` (which must flag the same lines; `None` while it is being built) if
    /// that was quicker.
    /// Returns whether `counted` was filled (the vector path ran, not the automaton).
    pub(super) fn lines<A: Fn(&[u8], &mut Vec<usize>)>(
        &self,
        body: &[u8],
        out: &mut Vec<usize>,
        counted: &mut Counted,
        automaton: Option<A>,
    ) -> bool {
        if body.len() >= TUNE_FROM {
            let tuned = self.tuned.get_or_init(|| {
                let long: Vec<Vec<u8>> = self
                    .patterns
                    .iter()
                    .filter(|p| p.len() >= LONG)
                    .cloned()
                    .collect();
                Fast::build(&self.patterns, &Model::of(body, &long))
                    .unwrap_or_else(|| self.guessed.clone())
            });
            if let (None, Some(automaton)) = (self.yielded.get(), &automaton) {
                let mut result = None;
                let yielded = *self.yielded.get_or_init(|| {
                    let (mut theirs, mut mine) = (Vec::new(), Vec::new());
                    let mut mine_counted = Counted::default();
                    let started = std::time::Instant::now();
                    automaton(body, &mut theirs);
                    let middle = std::time::Instant::now();
                    tuned.lines(body, &mut mine, &mut mine_counted);
                    let quicker = middle.elapsed() <= middle - started;
                    debug_assert_eq!(mine, theirs, "both paths flag the same lines");
                    result = Some((mine, mine_counted));
                    !quicker && self.may_yield
                });
                return match result {
                    Some((lines, mine)) => {
                        out.extend(lines);
                        counted.before.extend(mine.before);
                        counted.lines = mine.lines;
                        counted.longest = mine.longest;
                        true
                    }
                    None if yielded => {
                        automaton(body, out);
                        false
                    }
                    None => {
                        tuned.lines(body, out, counted);
                        true
                    }
                };
            }
        }
        match (self.yielded.get(), automaton) {
            (Some(true), Some(automaton)) => {
                automaton(body, out);
                false
            }
            _ => {
                self.tuned
                    .get()
                    .unwrap_or(&self.guessed)
                    .lines(body, out, counted);
                true
            }
        }
    }

    #[cfg(test)]
    pub(super) fn is_tuned(&self) -> bool {
        self.tuned.get().is_some() && self.yielded.get() == Some(&false)
    }
}

/// The lines a search has walked past: how many, where the line it is in begins, and the
/// longest so far (a line within one 64-byte block is shorter than 64, so 63 at least).
#[derive(Debug)]
struct Walked {
    lines: usize,
    line_start: usize,
    longest: usize,
}

impl Default for Walked {
    fn default() -> Self {
        Self {
            lines: 0,
            line_start: 0,
            longest: 63,
        }
    }
}

impl Walked {
    /// The newlines among `bits` of the block at `p` (bit `j`: byte `p + j`).
    fn newlines(&mut self, p: usize, bits: u64) {
        if bits != 0 {
            let first = p + bits.trailing_zeros() as usize;
            self.longest = self.longest.max(first - self.line_start);
            self.line_start = p + 64 - bits.leading_zeros() as usize;
            self.lines += bits.count_ones() as usize;
        }
    }

    /// The newline at `at`, the first since the line start.
    fn newline(&mut self, at: usize) {
        self.longest = self.longest.max(at - self.line_start);
        self.line_start = at + 1;
        self.lines += 1;
    }
}

#[derive(Debug, Clone)]
struct Fast {
    /// Bit `hash(gram)` set for every gram of every long literal's window.
    table: Vec<u64>,
    /// By the top bits of a gram's hash: (folded gram, literal, the gram's offset in it).
    /// `grams[heads[i]..heads[i + 1]]`: one flat array, so a check loads no pointer.
    heads: Vec<u32>,
    grams: Vec<(u32, u32, u32)>,
    long: Vec<Vec<u8>>,
    /// `nibbles[j]`: for each byte value below 128, the buckets whose literals may have it
    /// at place `j` (every bucket past a literal's end).
    places: [[u8; 128]; GRAM],
    buckets: [Vec<Vec<u8>>; BUCKETS],
}

impl Fast {
    /// `None` when this machine lacks the instructions, a literal is empty, or there are too
    /// many short literals.
    fn build(patterns: &[Vec<u8>], model: &Model) -> Option<Self> {
        let (long, short): (Vec<Vec<u8>>, Vec<Vec<u8>>) = patterns
            .iter()
            .filter(|p| p.is_ascii())
            .cloned()
            .partition(|p| p.len() >= LONG);
        if short.len() > MAX_SHORT || long.len() > MAX_LONG || short.iter().any(|p| p.is_empty()) {
            return None;
        }
        let mut table = vec![0u64; 1 << (TABLE_BITS - 6)];
        let mut lists: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); 1 << LIST_BITS];
        for (i, lit) in long.iter().enumerate() {
            let best = (0..=lit.len() - LONG)
                .min_by_key(|&o| model.window_key(&lit[o..o + LONG]))
                .expect("a long literal has a window");
            for off in best..best + STRIDE {
                let folded = fold(gram_at(lit, off));
                let h = hash(folded);
                table[(h >> 6) as usize] |= 1 << (h & 63);
                lists[(h >> (TABLE_BITS - LIST_BITS)) as usize]
                    .push((folded, i as u32, off as u32));
            }
        }
        if lists.iter().any(|l| l.len() > MAX_LIST) {
            return None;
        }
        let (places, buckets) = buckets(short, model);
        let mut heads = Vec::with_capacity(lists.len() + 1);
        heads.push(0);
        for l in &lists {
            heads.push(heads.last().copied().unwrap_or(0) + l.len() as u32);
        }
        let grams = lists.into_iter().flatten().collect();
        Some(Self {
            table,
            heads,
            grams,
            long,
            places,
            buckets,
        })
    }

    fn lines(&self, body: &[u8], out: &mut Vec<usize>, counted: &mut Counted) {
        // SAFETY: `Sieve::new` checked that this machine has the instructions.
        unsafe { self.blocks(body, out, counted) }
    }

    /// Whether a long literal holds, at the place that puts its gram at `at`.
    fn long_at(&self, body: &[u8], at: usize) -> bool {
        let folded = fold(gram_at(body, at));
        let i = (hash(folded) >> (TABLE_BITS - LIST_BITS)) as usize;
        let list = &self.grams[self.heads[i] as usize..self.heads[i + 1] as usize];
        list.iter().any(|&(g, lit, off)| {
            let (lit, off) = (&self.long[lit as usize], off as usize);
            g == folded
                && at >= off
                && at - off + lit.len() <= body.len()
                && body[at - off..at - off + lit.len()].eq_ignore_ascii_case(lit)
        })
    }

    /// Special bytes, short literals and long literals' grams, 64 positions at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,bmi2")]
    unsafe fn blocks(&self, body: &[u8], out: &mut Vec<usize>, counted: &mut Counted) {
        let n = body.len();
        let mut walked = Walked::default();
        let table = |j: usize| {
            // SAFETY: each half is 64 bytes of the 128-byte table.
            unsafe {
                (
                    _mm512_loadu_si512(self.places[j].as_ptr().cast()),
                    _mm512_loadu_si512(self.places[j][64..].as_ptr().cast()),
                )
            }
        };
        let (t0, t1, t2, t3) = (table(0), table(1), table(2), table(3));
        let space = _mm512_set1_epi8(0x20);
        let del = _mm512_set1_epi8(0x7F);
        let tab = _mm512_set1_epi8(b'\t' as i8);
        let newline = _mm512_set1_epi8(b'\n' as i8);
        // `fold` and `hash` of sixteen grams at once.
        let folding = _mm512_set1_epi32(FOLD as i32);
        let multiplier = _mm512_set1_epi32(HASH_MULTIPLIER as i32);
        let low_five = _mm512_set1_epi32(31);
        let one = _mm512_set1_epi32(1);
        // The bit table as 32-bit words: on x86-64 (little-endian) bit `h` of the 64-bit
        // words is bit `h & 31` of 32-bit word `h >> 5`.
        let words = self.table.as_ptr().cast::<i32>();
        // Each of the 16 gram bits stands at the first byte of its 4-byte word.
        const GRAM_STARTS: u64 = 0x1111_1111_1111_1111;
        // The last block's bytes, and the three after them, padded with newlines: no literal
        // begins there and no byte there is special.
        let mut pad = [b'\n'; 64 + GRAM];
        let mut p = 0;
        while p < n {
            let left = n - p;
            let src = if left >= 64 + GRAM - 1 {
                body[p..].as_ptr()
            } else {
                pad.fill(b'\n');
                pad[..left].copy_from_slice(&body[p..]);
                pad.as_ptr()
            };
            // SAFETY: `src` has at least 64 + 3 readable bytes: the body has them past `p`,
            // or the pad does.
            let (v0, v1, v2, v3) = unsafe {
                (
                    _mm512_loadu_si512(src.cast()),
                    _mm512_loadu_si512(src.add(1).cast()),
                    _mm512_loadu_si512(src.add(2).cast()),
                    _mm512_loadu_si512(src.add(3).cast()),
                )
            };
            let newlines = _mm512_cmpeq_epi8_mask(v0, newline);
            let special =
                (_mm512_cmplt_epu8_mask(v0, space) & !_mm512_cmpeq_epi8_mask(v0, tab) & !newlines)
                    | _mm512_cmpge_epu8_mask(v0, del);
            let hit = _mm512_and_si512(
                _mm512_and_si512(
                    _mm512_permutex2var_epi8(t0.0, v0, t0.1),
                    _mm512_permutex2var_epi8(t1.0, v1, t1.1),
                ),
                _mm512_and_si512(
                    _mm512_permutex2var_epi8(t2.0, v2, t2.1),
                    _mm512_permutex2var_epi8(t3.0, v3, t3.1),
                ),
            );
            let hashes = _mm512_srli_epi32::<{ 32 - TABLE_BITS }>(_mm512_mullo_epi32(
                _mm512_or_si512(v0, folding),
                multiplier,
            ));
            // SAFETY: a hash has TABLE_BITS bits, so `hash >> 5` indexes the table's
            // 2^(TABLE_BITS - 5) 32-bit words.
            let fetched =
                unsafe { _mm512_i32gather_epi32::<4>(_mm512_srli_epi32::<5>(hashes), words) };
            let set = _mm512_test_epi32_mask(
                _mm512_srlv_epi32(fetched, _mm512_and_si512(hashes, low_five)),
                one,
            );
            // Grams are read whole from the body only: those past `n - GRAM` are not looked
            // up (a literal holds no newline, and the body ends with one).
            let (within, grams_within) = if left >= 64 + GRAM - 1 {
                (u64::MAX, u64::MAX)
            } else {
                let within = if left >= 64 {
                    u64::MAX
                } else {
                    (1u64 << left) - 1
                };
                let grams = left.saturating_sub(GRAM - 1);
                (
                    within,
                    if grams >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << grams) - 1
                    },
                )
            };
            let long = _pdep_u64(u64::from(set), GRAM_STARTS) & grams_within;
            let short = _mm512_test_epi8_mask(hit, hit);
            let newlines = newlines & within;
            let mut mask = (special | short | long) & within;
            let mut flagged = None;
            if mask != 0 {
                let mut buckets = [0u8; 64];
                // SAFETY: 64 bytes to a 64-byte array.
                unsafe { _mm512_storeu_si512(buckets.as_mut_ptr().cast(), hit) };
                while mask != 0 {
                    let j = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let at = p + j;
                    if special >> j & 1 == 1
                        || (long >> j & 1 == 1 && self.long_at(body, at))
                        || (short >> j & 1 == 1 && self.short_at(body, at, buckets[j]))
                    {
                        flagged = Some(j);
                        break;
                    }
                }
            }
            let Some(j) = flagged else {
                walked.newlines(p, newlines);
                p += 64;
                continue;
            };
            // The newlines before the match: after them, the matching line begins.
            walked.newlines(p, newlines & ((1u64 << j) - 1));
            let at = p + j;
            debug_assert_eq!(
                walked.line_start,
                memchr::memrchr(b'\n', &body[..at]).map_or(0, |i| i + 1)
            );
            out.push(walked.line_start);
            counted.before.push(walked.lines as u32);
            p = match memchr::memchr(b'\n', &body[at..]) {
                Some(i) => {
                    walked.newline(at + i);
                    at + i + 1
                }
                None => n,
            };
        }
        counted.lines = walked.lines as u32;
        counted.longest = walked.longest;
    }

    /// Whether a short literal of one of `buckets` begins at `at`.
    fn short_at(&self, body: &[u8], at: usize, buckets: u8) -> bool {
        (0..BUCKETS).filter(|b| buckets >> b & 1 == 1).any(|b| {
            self.buckets[b].iter().any(|lit| {
                at + lit.len() <= body.len() && body[at..at + lit.len()].eq_ignore_ascii_case(lit)
            })
        })
    }
}
