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

use std::collections::HashMap;

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

struct Group {
    tokens: Vec<String>,
    count: u64,
    parent: u32,
}

/// Words seen at one position of otherwise equal templates.
#[derive(Default)]
struct Siblings {
    words: Vec<(String, u32)>,
    merged: Option<u32>,
}

pub struct Miner {
    settings: Settings,
    groups: Vec<Group>,
    /// Masked template (tokens joined by one space) → group.
    by_template: HashMap<String, u32>,
    /// A template with one position blanked → the words seen there.
    siblings: HashMap<String, Siblings>,
    /// Reused per line.
    buf: String,
    tokens: Vec<String>,
}

impl Default for Miner {
    fn default() -> Self {
        Miner::new(Settings::default())
    }
}

impl Miner {
    pub fn new(settings: Settings) -> Self {
        Miner {
            settings,
            groups: Vec::new(),
            by_template: HashMap::new(),
            siblings: HashMap::new(),
            buf: String::new(),
            tokens: Vec::new(),
        }
    }

    /// Adds one line; returns its group as things stand now.
    pub fn add(&mut self, line: &str) -> GroupId {
        self.buf.clear();
        let mut count = 0;
        let mut last_wild = false;
        for raw in line.split_whitespace() {
            let start = self.buf.len();
            if count > 0 {
                self.buf.push(' ');
            }
            let wild = mask_into(raw, &mut self.buf);
            // A run of values is one value.
            if wild && last_wild && self.buf[start..].trim_start() == WILDCARD {
                self.buf.truncate(start);
                continue;
            }
            last_wild = wild && self.buf[start..].trim_start() == WILDCARD;
            count += 1;
        }
        if let Some(&g) = self.by_template.get(self.buf.as_str()) {
            let root = self.find(g);
            self.groups[g as usize].count += 1;
            return GroupId(root);
        }
        let id = self.groups.len() as u32;
        self.tokens.clear();
        self.tokens.extend(
            self.buf
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
        self.groups.push(Group {
            tokens: self.tokens.clone(),
            count: 1,
            parent: id,
        });
        let template = std::mem::take(&mut self.buf);
        self.by_template.insert(template, id);
        self.register_siblings(id);
        GroupId(self.find(id))
    }

    /// Records the new group's words as siblings and merges where a position has shown
    /// enough different words.
    fn register_siblings(&mut self, id: u32) {
        let tokens = self.groups[id as usize].tokens.clone();
        let is_word = |t: &str| t != WILDCARD && t.chars().any(char::is_alphabetic);
        let words = tokens.iter().filter(|t| is_word(t)).count();
        for (p, t) in tokens.iter().enumerate() {
            // The first word names the event; a template needs context around the varying word.
            if p == 0 || !is_word(t) || words - 1 < self.settings.context_words {
                continue;
            }
            let key = blanked(&tokens, p, "\u{0}");
            let sib = self.siblings.entry(key).or_default();
            match sib.words.iter_mut().find(|(w, _)| w == t) {
                Some(_) => {}
                None => sib.words.push((t.clone(), id)),
            }
            let merged_before = sib.merged;
            if sib.words.len() < self.settings.siblings && merged_before.is_none() {
                continue;
            }
            let members: Vec<u32> = sib.words.iter().map(|(_, g)| *g).collect();
            let mut root = merged_before.map(|g| self.find(g));
            for g in members {
                let r = self.find(g);
                root = Some(match root {
                    None => r,
                    Some(root) => self.union(root, r),
                });
            }
            let root = root.expect("a sibling set has members");
            // Lines whose value there was already masked (`user1`) belong to it too.
            let wild = blanked(&tokens, p, WILDCARD);
            match self.by_template.get(&wild).copied() {
                Some(g) => {
                    let r = self.find(g);
                    self.union(root, r);
                }
                None => {
                    self.by_template.insert(wild, root);
                }
            }
            let root = self.find(root);
            self.groups[root as usize].tokens[p] = WILDCARD.to_string();
            if let Some(s) = self.siblings.get_mut(&blanked(&tokens, p, "\u{0}")) {
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

    /// Joins `b`'s group into `a`'s; returns the root. Positions where they differ become
    /// values.
    fn union(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return a;
        }
        let (root, child) = if a < b { (a, b) } else { (b, a) };
        self.groups[child as usize].parent = root;
        let other = std::mem::take(&mut self.groups[child as usize].tokens);
        let mine = &mut self.groups[root as usize].tokens;
        if mine.len() == other.len() {
            for (m, o) in mine.iter_mut().zip(&other) {
                if m != o {
                    *m = WILDCARD.to_string();
                }
            }
        }
        self.groups[child as usize].tokens = other;
        root
    }

    /// The group a line's id belongs to now (after any merges since).
    pub fn group(&mut self, id: GroupId) -> GroupId {
        GroupId(self.find(id.0))
    }

    /// A group's template, tokens joined by one space.
    pub fn template(&mut self, id: GroupId) -> String {
        let root = self.find(id.0);
        self.groups[root as usize].tokens.join(" ")
    }

    /// Every group with its template and how many lines it has, in order of first line.
    pub fn groups(&mut self) -> Vec<(GroupId, String, u64)> {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for g in 0..self.groups.len() as u32 {
            let r = self.find(g);
            *counts.entry(r).or_default() += self.groups[g as usize].count;
        }
        let mut roots: Vec<u32> = counts.keys().copied().collect();
        roots.sort_unstable();
        roots
            .into_iter()
            .map(|r| {
                (
                    GroupId(r),
                    self.groups[r as usize].tokens.join(" "),
                    counts[&r],
                )
            })
            .collect()
    }
}

fn blanked(tokens: &[String], p: usize, with: &str) -> String {
    let mut s = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(if i == p { with } else { t });
    }
    s
}

/// Characters that surround a value without being part of it.
fn is_edge(c: char) -> bool {
    matches!(
        c,
        '[' | ']' | '(' | ')' | '{' | '}' | '<' | '>' | '"' | '\'' | ',' | ';' | ':' | '.'
    )
}

fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '.' | '-'))
}

const TIME_WORDS: &[&str] = &[
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Whether a token's core is a value by its shape.
fn is_value(core: &str) -> bool {
    if core.bytes().any(|b| b.is_ascii_digit()) {
        return true;
    }
    if core.len() > 1 && core.contains('/') {
        return true;
    }
    if is_dotted_name(core) {
        return true;
    }
    let hex = core.strip_prefix("0x").unwrap_or(core);
    if hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    core.len() <= 9 && TIME_WORDS.iter().any(|w| core.eq_ignore_ascii_case(w))
}

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

/// Appends the masked form of one whitespace token; returns whether it is a value.
fn mask_into(token: &str, out: &mut String) -> bool {
    let core_start = token.find(|c: char| !is_edge(c)).unwrap_or(token.len());
    let core_end = token.rfind(|c: char| !is_edge(c)).map_or(core_start, |i| {
        i + token[i..].chars().next().map_or(1, char::len_utf8)
    });
    let mut core = &token[core_start..core_end.max(core_start)];
    // An empty value stands where a value usually is.
    if let Some(k) = core.strip_suffix('=')
        && is_key(k)
    {
        out.push_str(&token[..core_end.max(core_start)]);
        out.push_str(WILDCARD);
        return true;
    }
    let mut key = "";
    if let Some(k) = core.find('=')
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
        if let Some(sep) = token[core_end.max(core_start)..]
            .chars()
            .last()
            .filter(|c| matches!(c, ',' | ';' | ':'))
        {
            out.push(sep);
        }
        return key.is_empty();
    }
    out.push_str(token);
    false
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
