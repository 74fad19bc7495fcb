//! An online log template miner: each line becomes a template, its variable parts (numbers,
//! hashes, addresses, paths, store paths, sizes, ids, dates, dotted names, empty values) masked
//! as `<*>`, and a template id, in one pass and without per-log settings.
//!
//! How it groups, and why:
//! 1. **Masking decides most of it.** A whitespace token whose core (without surrounding
//!    brackets, quotes and separators, and after a `key=` prefix) holds a digit, a `/`, a long
//!    hex string, a dotted name (`com.example.x`, `host.example.org`) or a month or weekday
//!    name is a value. Runs of values collapse into one `<*>` (a date, a list of numbers), so
//!    lines that differ only in how many values they carry still match. An empty `key=` or
//!    `()` stands where a value usually is, and is one too.
//! 2. **Lines with the same masked template are one group**, found with one hash lookup.
//! 3. **Words that vary a lot are values too.** Templates that are the same except for one
//!    word (not the first word, and with at least two other constant words around it) are
//!    siblings; once a position has shown [`Settings::siblings`] different words, the
//!    siblings merge into one group with `<*>` there (user names, host names without digits),
//!    while a word with few alternatives (`started`/`stopped`) still tells events apart.
//!
//! Group ids are stable for the life of a [`Miner`]: a merged group answers to the id of the
//! group it merged into ([`Miner::group`]).

use rustc_hash::FxHashMap as HashMap;

/// A group of lines with one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(u32);

impl GroupId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The miner's one knob, the same for every log.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Different words at one position that make it a value.
    pub siblings: usize,
    /// Constant words a template needs besides the varying one before words are merged.
    pub context_words: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            siblings: 5,
            context_words: 2,
        }
    }
}

pub const WILDCARD: &str = "<*>";

/// Grouping accuracy, the log-parsing literature's measure: the share of lines whose group
/// holds exactly the lines of their true event (`predicted[i]` and `truth[i]` are line i's
/// group and event).
pub fn grouping_accuracy<P: Eq + std::hash::Hash, T: Eq + std::hash::Hash>(
    predicted: &[P],
    truth: &[T],
) -> f64 {
    let mut by_pred: HashMap<&P, Vec<usize>> = HashMap::default();
    let mut by_true: HashMap<&T, Vec<usize>> = HashMap::default();
    for (i, (p, t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(p).or_default().push(i);
        by_true.entry(t).or_default().push(i);
    }
    let right = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| by_pred[p] == by_true[t])
        .count();
    right as f64 / truth.len().max(1) as f64
}

struct Group {
    /// The masked template of the line that made the group, and where each token is in it
    /// (never changed: sibling sets compare against it).
    text: String,
    spans: Vec<(u32, u32)>,
    /// Positions that became values by merging (for the group's template).
    wild: Vec<bool>,
    count: u64,
    parent: u32,
}

/// Words seen at one position of templates that are otherwise the same.
struct Siblings {
    /// A group with the shared pattern, and the varying position.
    rep: u32,
    pos: u32,
    /// The groups that brought each different word (the word is theirs at `pos`).
    words: Vec<u32>,
    merged: Option<u32>,
}

impl Group {
    fn tok(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.text[a as usize..b as usize]
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether two groups' templates are the same except at `p`.
    fn same_but(&self, other: &Group, p: usize) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| i == p || self.tok(i) == other.tok(i))
    }
}

pub struct Miner {
    settings: Settings,
    groups: Vec<Group>,
    /// Masked template (tokens joined by one space) → group.
    by_template: HashMap<String, u32>,
    /// Hash of a template with one position blanked → the sibling sets with that hash (the
    /// pattern is checked on a hit, so a collision never merges strangers).
    siblings: HashMap<u64, Vec<Siblings>>,
    /// Reused per line.
    buf: String,
}

impl Default for Miner {
    fn default() -> Self {
        Miner::new(Settings::default())
    }
}

fn token_hash(t: &str, i: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    t.hash(&mut h);
    i.hash(&mut h);
    // Spread the bits: the keys are sums of these.
    h.finish()
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

impl Miner {
    pub fn new(settings: Settings) -> Self {
        Miner {
            settings,
            groups: Vec::new(),
            by_template: HashMap::default(),
            siblings: HashMap::default(),
            buf: String::new(),
        }
    }

    /// Adds one line; returns its group as things stand now.
    pub fn add(&mut self, line: &str) -> GroupId {
        let count = mask_line_into(line, &mut self.buf);
        if let Some(&g) = self.by_template.get(self.buf.as_str()) {
            self.groups[g as usize].count += 1;
            return GroupId(self.find(g));
        }
        let id = self.groups.len() as u32;
        let mut spans = Vec::with_capacity(count);
        let mut at = 0u32;
        for t in self.buf.split(' ').filter(|t| !t.is_empty()) {
            spans.push((at, at + t.len() as u32));
            at += t.len() as u32 + 1;
        }
        self.by_template.insert(self.buf.clone(), id);
        self.groups.push(Group {
            text: std::mem::take(&mut self.buf),
            wild: vec![false; spans.len()],
            spans,
            count: 1,
            parent: id,
        });
        self.register_siblings(id);
        GroupId(self.find(id))
    }

    /// Records the new group's words as siblings and merges where a position has shown
    /// enough different words.
    fn register_siblings(&mut self, id: u32) {
        let is_word =
            |t: &str| t != WILDCARD && t.bytes().any(|b| b.is_ascii_alphabetic() || b >= 0x80);
        let g = &self.groups[id as usize];
        let words = (0..g.len()).filter(|&i| is_word(g.tok(i))).count();
        // A template needs context around the varying word.
        if words == 0 || words - 1 < self.settings.context_words {
            return;
        }
        let hashes: Vec<u64> = (0..g.len()).map(|i| token_hash(g.tok(i), i)).collect();
        let total = hashes
            .iter()
            .fold(hashes.len() as u64, |a, h| a.wrapping_add(*h));
        // The first word names the event: never a value by this rule.
        for (p, hash) in hashes.iter().enumerate().skip(1) {
            if !is_word(self.groups[id as usize].tok(p)) {
                continue;
            }
            let key = total.wrapping_sub(*hash) ^ (p as u64).rotate_left(7);
            let groups = &self.groups;
            let me = &groups[id as usize];
            let sets = self.siblings.entry(key).or_default();
            let at = match sets
                .iter()
                .position(|s| s.pos as usize == p && groups[s.rep as usize].same_but(me, p))
            {
                Some(at) => at,
                None => {
                    sets.push(Siblings {
                        rep: id,
                        pos: p as u32,
                        words: Vec::new(),
                        merged: None,
                    });
                    sets.len() - 1
                }
            };
            let sib = &mut sets[at];
            let word = me.tok(p);
            if !sib.words.iter().any(|&w| groups[w as usize].tok(p) == word) {
                sib.words.push(id);
            }
            if sib.words.len() < self.settings.siblings && sib.merged.is_none() {
                continue;
            }
            let merged_before = sib.merged;
            let members = sib.words.clone();
            let mut root = merged_before.map(|g| self.find(g));
            for g in members {
                let r = self.find(g);
                root = Some(match root {
                    None => r,
                    Some(root) => self.union(root, r),
                });
            }
            let mut root = root.expect("a sibling set has members");
            // Lines whose value there was already masked (`user1`) belong to it too.
            let wild = blanked(&self.groups[id as usize], p, WILDCARD);
            match self.by_template.get(&wild).copied() {
                Some(g) => root = self.union(root, g),
                None => {
                    self.by_template.insert(wild, root);
                }
            }
            self.groups[root as usize].wild[p] = true;
            if let Some(s) = self.siblings.get_mut(&key).and_then(|v| v.get_mut(at)) {
                s.merged = Some(root);
            }
        }
    }

    fn find(&mut self, mut g: u32) -> u32 {
        let mut root = g;
        while self.groups[root as usize].parent != root {
            root = self.groups[root as usize].parent;
        }
        while self.groups[g as usize].parent != root {
            let next = self.groups[g as usize].parent;
            self.groups[g as usize].parent = root;
            g = next;
        }
        root
    }

    /// Joins two groups; returns the root (the older). Positions where they differ become
    /// values.
    fn union(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return a;
        }
        let (root, child) = if a < b { (a, b) } else { (b, a) };
        self.groups[child as usize].parent = root;
        let (r, c) = (root as usize, child as usize);
        if self.groups[r].len() == self.groups[c].len() {
            for i in 0..self.groups[r].len() {
                let differs =
                    self.groups[r].tok(i) != self.groups[c].tok(i) || self.groups[c].wild[i];
                if differs {
                    self.groups[r].wild[i] = true;
                }
            }
        }
        root
    }

    /// The group a line's id belongs to now (after any merges since).
    pub fn group(&mut self, id: GroupId) -> GroupId {
        GroupId(self.find(id.0))
    }

    fn template_of(&self, root: u32) -> String {
        let g = &self.groups[root as usize];
        let mut s = String::new();
        for i in 0..g.len() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(if g.wild[i] { WILDCARD } else { g.tok(i) });
        }
        s
    }

    /// A group's template, tokens joined by one space.
    pub fn template(&mut self, id: GroupId) -> String {
        let root = self.find(id.0);
        self.template_of(root)
    }

    /// Every group with its template and how many lines it has, in order of first line.
    pub fn groups(&mut self) -> Vec<(GroupId, String, u64)> {
        let mut counts: HashMap<u32, u64> = HashMap::default();
        for g in 0..self.groups.len() as u32 {
            let r = self.find(g);
            *counts.entry(r).or_default() += self.groups[g as usize].count;
        }
        let mut roots: Vec<u32> = counts.keys().copied().collect();
        roots.sort_unstable();
        roots
            .into_iter()
            .map(|r| (GroupId(r), self.template_of(r), counts[&r]))
            .collect()
    }
}

/// A line's template by masking alone (before any words are merged): the same for every
/// occurrence of a message, whatever its values, in any run.
pub fn mask(line: &str) -> String {
    let mut out = String::new();
    mask_line_into(line, &mut out);
    out
}

/// Masks a line into `out` (cleared first), tokens joined by one space; returns how many.
fn mask_line_into(line: &str, out: &mut String) -> usize {
    out.clear();
    let mut count = 0;
    let mut last_wild = false;
    for raw in line.split_ascii_whitespace() {
        let start = out.len();
        if count > 0 {
            out.push(' ');
        }
        let wild = mask_into(raw, out);
        // A run of values is one value.
        if wild && last_wild {
            out.truncate(start);
            continue;
        }
        last_wild = wild;
        count += 1;
    }
    count
}

fn blanked(g: &Group, p: usize, with: &str) -> String {
    let mut s = String::with_capacity(g.text.len());
    for i in 0..g.len() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(if i == p { with } else { g.tok(i) });
    }
    s
}

/// Characters that surround a value without being part of it.
fn is_edge(b: u8) -> bool {
    CLASS[b as usize] & EDGE != 0
}

fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '.' | '-'))
}

/// Packs up to 16 ASCII letters, lowercased, into an integer: month and weekday names are
/// compared as numbers (no memcmp per token).
const fn pack(b: &[u8]) -> u128 {
    let mut a = 0u128;
    let mut i = 0;
    while i < b.len() {
        a = (a << 8) | (b[i].to_ascii_lowercase() as u128);
        i += 1;
    }
    a
}

/// Month and weekday names (dates inside messages).
fn is_time_word(core: &str) -> bool {
    const APR: u128 = pack(b"apr");
    const APRIL: u128 = pack(b"april");
    const AUG: u128 = pack(b"aug");
    const AUGUST: u128 = pack(b"august");
    const DEC: u128 = pack(b"dec");
    const DECEMBER: u128 = pack(b"december");
    const FEB: u128 = pack(b"feb");
    const FEBRUARY: u128 = pack(b"february");
    const FRI: u128 = pack(b"fri");
    const FRIDAY: u128 = pack(b"friday");
    const JAN: u128 = pack(b"jan");
    const JANUARY: u128 = pack(b"january");
    const JUL: u128 = pack(b"jul");
    const JULY: u128 = pack(b"july");
    const JUN: u128 = pack(b"jun");
    const JUNE: u128 = pack(b"june");
    const MAR: u128 = pack(b"mar");
    const MARCH: u128 = pack(b"march");
    const MAY: u128 = pack(b"may");
    const MON: u128 = pack(b"mon");
    const MONDAY: u128 = pack(b"monday");
    const NOV: u128 = pack(b"nov");
    const NOVEMBER: u128 = pack(b"november");
    const OCT: u128 = pack(b"oct");
    const OCTOBER: u128 = pack(b"october");
    const SAT: u128 = pack(b"sat");
    const SATURDAY: u128 = pack(b"saturday");
    const SEP: u128 = pack(b"sep");
    const SEPT: u128 = pack(b"sept");
    const SEPTEMBER: u128 = pack(b"september");
    const SUN: u128 = pack(b"sun");
    const SUNDAY: u128 = pack(b"sunday");
    const THU: u128 = pack(b"thu");
    const THURSDAY: u128 = pack(b"thursday");
    const TUE: u128 = pack(b"tue");
    const TUESDAY: u128 = pack(b"tuesday");
    const WED: u128 = pack(b"wed");
    const WEDNESDAY: u128 = pack(b"wednesday");
    let b = core.as_bytes();
    if !(3..=9).contains(&b.len()) {
        return false;
    }
    matches!(
        pack(b),
        APR | APRIL
            | AUG
            | AUGUST
            | DEC
            | DECEMBER
            | FEB
            | FEBRUARY
            | FRI
            | FRIDAY
            | JAN
            | JANUARY
            | JUL
            | JULY
            | JUN
            | JUNE
            | MAR
            | MARCH
            | MAY
            | MON
            | MONDAY
            | NOV
            | NOVEMBER
            | OCT
            | OCTOBER
            | SAT
            | SATURDAY
            | SEP
            | SEPT
            | SEPTEMBER
            | SUN
            | SUNDAY
            | THU
            | THURSDAY
            | TUE
            | TUESDAY
            | WED
            | WEDNESDAY
    )
}

/// Whether a token's core is a value by its shape (one pass over its bytes first).
fn is_value(core: &str) -> bool {
    // One pass over the bytes with a class table: which kinds of byte the core has.
    let (mut any, mut all) = (0u8, u8::MAX);
    for &b in core.as_bytes() {
        let c = CLASS[b as usize];
        any |= c;
        all &= c;
    }
    if any & DIGIT != 0 || (any & SLASH != 0 && core.len() > 1) {
        return true;
    }
    if any & DOT != 0 && is_dotted_name(core) {
        return true;
    }
    if all & HEX != 0 && core.len() >= 8 {
        return true;
    }
    all & ALPHA != 0 && is_time_word(core)
}

const DIGIT: u8 = 1;
const SLASH: u8 = 2;
const DOT: u8 = 4;
const HEX: u8 = 8;
const ALPHA: u8 = 16;
const EDGE: u8 = 32;

/// What each byte is, for [`is_value`] and [`is_edge`].
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_digit() {
            k |= DIGIT | HEX;
        }
        if c.is_ascii_hexdigit() {
            k |= HEX;
        }
        if c.is_ascii_alphabetic() {
            k |= ALPHA;
        }
        if c == b'/' {
            k |= SLASH;
        }
        if c == b'.' {
            k |= DOT;
        }
        if matches!(
            c,
            b'[' | b']'
                | b'('
                | b')'
                | b'{'
                | b'}'
                | b'<'
                | b'>'
                | b'"'
                | b'\''
                | b','
                | b';'
                | b':'
                | b'.'
        ) {
            k |= EDGE;
        }
        t[b] = k;
        b += 1;
    }
    t
};

/// `a.b`, `com.example.x`, `host.example.org`: a name of dotted parts.
fn is_dotted_name(s: &str) -> bool {
    let mut parts = s.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let word = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    let mut n = 1;
    for p in parts {
        if !word(p) {
            return false;
        }
        n += 1;
    }
    n >= 2
        && word(first)
        && first
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Appends the masked form of one whitespace token; returns whether what it appended is a
/// bare `<*>` (a value with nothing around it that tells it apart).
fn mask_into(token: &str, out: &mut String) -> bool {
    // Edge characters are ASCII, so byte positions are character boundaries.
    let bytes = token.as_bytes();
    let core_start = bytes
        .iter()
        .position(|&b| !is_edge(b))
        .unwrap_or(bytes.len());
    let core_end = bytes
        .iter()
        .rposition(|&b| !is_edge(b))
        .map_or(core_start, |i| i + 1);
    let mut core = &token[core_start..core_end];
    // An empty value stands where a value usually is.
    if let Some(k) = core.strip_suffix('=')
        && is_key(k)
    {
        out.push_str(&token[..core_end]);
        out.push_str(WILDCARD);
        return false;
    }
    let mut key = "";
    if let Some(k) = core.bytes().position(|b| b == b'=')
        && k > 0
        && k + 1 < core.len()
        && is_key(&core[..k])
    {
        key = &core[..=k];
        core = &core[k + 1..];
    }
    if core.is_empty() {
        // So does an empty pair of brackets.
        if matches!(token, "()" | "[]" | "{}" | "\"\"" | "''") {
            out.push_str(WILDCARD);
            return true;
        }
        out.push_str(token);
        return false;
    }
    if is_value(core) {
        // Brackets and quotes around a value say nothing; a separator after it does.
        out.push_str(key);
        out.push_str(WILDCARD);
        match bytes[core_end..].last() {
            Some(&sep @ (b',' | b';' | b':')) => {
                out.push(sep as char);
                false
            }
            _ => key.is_empty(),
        }
    } else {
        out.push_str(token);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(line: &str) -> String {
        let mut m = Miner::default();
        let id = m.add(line);
        m.template(id)
    }

    #[test]
    fn values_are_masked_by_shape() {
        assert_eq!(
            masked("Failed password for root from 5.36.59.76 port 42393 ssh2"),
            "Failed password for root from <*> port <*>"
        );
        assert_eq!(
            masked("building '/nix/store/abc123-hello-2.12.drv'..."),
            "building <*>"
        );
        assert_eq!(
            masked("logname= uid=0 euid=0 tty=ssh ruser= rhost=host.example.org"),
            "logname=<*> uid=<*> euid=<*> tty=ssh ruser=<*> rhost=<*>"
        );
        assert_eq!(
            masked("connection from 1.2.3.4 () at Fri Jun 17 20:55:06 2005"),
            "connection from <*> at <*>"
        );
        assert_eq!(masked("disk [sda] (3.94 KB) ok"), "disk [sda] <*> KB) ok");
    }

    #[test]
    fn lines_of_one_shape_are_one_group_and_others_are_not() {
        let mut m = Miner::default();
        let a = m.add("Receiving block blk_123 src: /10.0.0.1:5000");
        let b = m.add("Receiving block blk_456 src: /10.0.0.2:5001");
        let c = m.add("Received block blk_456 of size 67108864 from /10.0.0.2");
        assert_eq!(m.group(a), m.group(b));
        assert_ne!(m.group(a), m.group(c));
    }

    #[test]
    fn a_word_that_varies_a_lot_becomes_a_value_and_one_that_varies_little_does_not() {
        let mut m = Miner::default();
        let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
        let ids: Vec<GroupId> = users
            .iter()
            .map(|u| m.add(&format!("session opened for user {u} by sshd")))
            .collect();
        let first = m.group(ids[0]);
        assert!(ids.iter().all(|&i| m.group(i) == first));
        assert_eq!(m.template(first), "session opened for user <*> by sshd");
        // A masked value in that place joins the merged group.
        let masked = m.add("session opened for user user42 by sshd");
        assert_eq!(m.group(masked), first);

        let events: Vec<GroupId> = ["Paused", "Resumed", "Started"]
            .iter()
            .map(|e| m.add(&format!("[instance: 42] VM {e} (Lifecycle Event)")))
            .collect();
        assert_ne!(m.group(events[0]), m.group(events[1]));
        assert_ne!(m.group(events[1]), m.group(events[2]));
    }

    #[test]
    fn counts_and_order_of_groups() {
        let mut m = Miner::default();
        for i in 0..3 {
            m.add(&format!("took {i} ms"));
        }
        m.add("done");
        let groups = m.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].1, "took <*> ms");
        assert_eq!(groups[0].2, 3);
        assert_eq!(groups[1].2, 1);
    }

    #[test]
    fn odd_input_never_panics() {
        let mut m = Miner::default();
        for line in [
            "",
            "   ",
            "=",
            "a=",
            "==",
            "()",
            "é€ 𝄞",
            "[",
            "x=y=z",
            "...",
            "a.b.",
        ] {
            let id = m.add(line);
            m.template(id);
        }
    }
}
