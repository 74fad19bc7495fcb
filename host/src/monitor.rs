//! The agent monitor: turns a stream of events into findings, live.
//!
//! Each detector plugin gets its own instance for the run (so it keeps state) and sees only
//! the lines its metadata asks for: one Aho-Corasick automaton over every plugin's literals and
//! one `RegexSet` over their patterns decide, in a single pass per line, which plugins a line
//! goes to (with the preceding lines a plugin wants as context). Marker lines other than
//! progress and metrics go to every detector. Lines are sent in batches; the same code serves
//! a live stream (flush after each chunk) and a replay (flush when a batch is full).
//!
//! Findings are de-duplicated (the same detector, category, summary and permanence merge their
//! evidence), and a plugin that faults is disabled for the run and recorded; the others go on.

use crate::findings::Finding;
use crate::plugin::{Plugin, PluginFault, PluginInstance};
use aho_corasick::{AhoCorasick, MatchKind};
use nixtest_events::{Event, EventKind};
use regex::RegexSet;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Events a plugin receives in one call at most.
pub const BATCH: usize = 256;

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("detector {plugin} cannot start: {fault}")]
    Start { plugin: String, fault: PluginFault },
    #[error("the prefilter of the detectors cannot be built: {0}")]
    Prefilter(String),
}

/// A plugin that was stopped during the run.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub plugin: String,
    pub fault: PluginFault,
    pub message: String,
    /// The last line the monitor had seen when it happened.
    pub line: u32,
}

/// What a flush changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A new finding, by index in [`Monitor::findings`].
    New(usize),
    /// More evidence for a known finding.
    Evidence(usize),
    /// A plugin was disabled (index in [`Monitor::faults`]).
    Fault(usize),
}

struct Slot {
    instance: PluginInstance,
    pending: Vec<Event>,
    context: usize,
    /// Line number of the last event queued for this slot, so context is never sent twice.
    last_sent: u32,
}

struct Prefilter {
    literals: Option<AhoCorasick>,
    literal_owner: Vec<usize>,
    patterns: Option<RegexSet>,
    pattern_owner: Vec<usize>,
    sees_all: Vec<usize>,
}

impl Prefilter {
    fn new(plugins: &[&Plugin]) -> Result<Self, MonitorError> {
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut sees_all = Vec::new();
        for (i, p) in plugins.iter().enumerate() {
            if p.meta.literals.is_empty() && p.meta.patterns.is_empty() {
                sees_all.push(i);
            }
            for l in &p.meta.literals {
                literals.push(l.clone());
                literal_owner.push(i);
            }
            for r in &p.meta.patterns {
                patterns.push(r.clone());
                pattern_owner.push(i);
            }
        }
        let literals = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&literals)
                    .map_err(|e| MonitorError::Prefilter(e.to_string()))?,
            )
        };
        let patterns = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(&patterns).map_err(|e| MonitorError::Prefilter(e.to_string()))?)
        };
        Ok(Prefilter {
            literals,
            literal_owner,
            patterns,
            pattern_owner,
            sees_all,
        })
    }

    /// Marks in `wanted` the slots that should see `text`.
    fn route(&self, text: &str, wanted: &mut [bool]) {
        for &i in &self.sees_all {
            wanted[i] = true;
        }
        if let Some(ac) = &self.literals {
            for m in ac.find_overlapping_iter(text) {
                wanted[self.literal_owner[m.pattern().as_usize()]] = true;
            }
        }
        if let Some(set) = &self.patterns {
            for i in set.matches(text).iter() {
                wanted[self.pattern_owner[i]] = true;
            }
        }
    }
}

/// The monitor of one run.
pub struct Monitor {
    slots: Vec<Option<Slot>>,
    names: Vec<String>,
    prefilter: Prefilter,
    wanted: Vec<bool>,
    recent: VecDeque<Event>,
    max_context: usize,
    findings: Vec<Finding>,
    faults: Vec<FaultRecord>,
    /// When each line sent to a detector arrived, and its text (evidence for healers).
    arrived: HashMap<u32, Instant>,
    texts: HashMap<u32, String>,
    latencies: Vec<Duration>,
    last_line: u32,
}

impl Monitor {
    /// Instantiates every detector among `plugins` for this run.
    pub fn new(plugins: &[Plugin]) -> Result<Self, MonitorError> {
        let detectors: Vec<&Plugin> = plugins.iter().filter(|p| p.world.detects()).collect();
        let prefilter = Prefilter::new(&detectors)?;
        let mut slots = Vec::new();
        for p in &detectors {
            let instance = p.instantiate().map_err(|fault| MonitorError::Start {
                plugin: p.meta.name.clone(),
                fault,
            })?;
            slots.push(Some(Slot {
                instance,
                pending: Vec::with_capacity(BATCH),
                context: p.meta.context_lines as usize,
                last_sent: 0,
            }));
        }
        let max_context = detectors
            .iter()
            .map(|p| p.meta.context_lines as usize)
            .max()
            .unwrap_or(0);
        Ok(Monitor {
            wanted: vec![false; slots.len()],
            names: detectors.iter().map(|p| p.meta.name.clone()).collect(),
            slots,
            prefilter,
            recent: VecDeque::with_capacity(max_context + 1),
            max_context,
            findings: Vec::new(),
            faults: Vec::new(),
            arrived: HashMap::new(),
            texts: HashMap::new(),
            latencies: Vec::new(),
            last_line: 0,
        })
    }

    pub fn detectors(&self) -> &[String] {
        &self.names
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn faults(&self) -> &[FaultRecord] {
        &self.faults
    }

    /// Time from each finding's first evidence line arriving to the finding, in order.
    pub fn latencies(&self) -> &[Duration] {
        &self.latencies
    }

    /// When a line that was sent to a detector reached the host.
    pub fn arrival(&self, line: u32) -> Option<Instant> {
        self.arrived.get(&line).copied()
    }

    /// The text of a line that was sent to a detector.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        self.texts.get(&line).map(String::as_str)
    }

    /// Routes one event; may call detectors when a batch fills up.
    pub fn observe(&mut self, event: Event) -> Vec<Update> {
        self.observe_at(event, Instant::now())
    }

    /// As [`Monitor::observe`], with the time the line arrived.
    pub fn observe_at(&mut self, event: Event, arrived: Instant) -> Vec<Update> {
        self.last_line = event.line;
        self.wanted.iter_mut().for_each(|w| *w = false);
        match event.kind {
            EventKind::Raw | EventKind::Progress | EventKind::Metric => {
                self.prefilter.route(&event.message, &mut self.wanted)
            }
            _ => self.wanted.iter_mut().for_each(|w| *w = true),
        }
        let mut full = false;
        let mut routed = false;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if !self.wanted[i] {
                continue;
            }
            routed = true;
            if slot.context > 0 {
                let skip = self.recent.len().saturating_sub(slot.context);
                for prev in self.recent.iter().skip(skip) {
                    if prev.line > slot.last_sent {
                        slot.pending.push(prev.clone());
                    }
                }
            }
            slot.last_sent = event.line;
            slot.pending.push(event.clone());
            full |= slot.pending.len() >= BATCH;
        }
        if routed {
            self.arrived.insert(event.line, arrived);
            self.texts.insert(event.line, event.message.clone());
        }
        if self.max_context > 0 {
            if self.recent.len() == self.max_context {
                self.recent.pop_front();
            }
            self.recent.push_back(event);
        }
        if full { self.flush() } else { Vec::new() }
    }

    /// Sends every pending batch now (the live stream calls this after each chunk).
    pub fn flush(&mut self) -> Vec<Update> {
        let mut updates = Vec::new();
        for i in 0..self.slots.len() {
            let result = match &mut self.slots[i] {
                Some(slot) if !slot.pending.is_empty() => {
                    let batch = std::mem::take(&mut slot.pending);
                    let r = slot.instance.feed(&batch);
                    slot.pending = batch;
                    slot.pending.clear();
                    r
                }
                _ => continue,
            };
            self.absorb(i, result, &mut updates);
        }
        updates
    }

    /// The stream ended: flush, then let every detector report what only the end shows.
    pub fn finish(&mut self) -> Vec<Update> {
        let mut updates = self.flush();
        for i in 0..self.slots.len() {
            let result = match &mut self.slots[i] {
                Some(slot) => slot.instance.finish(),
                None => continue,
            };
            self.absorb(i, result, &mut updates);
        }
        updates
    }

    fn absorb(
        &mut self,
        slot: usize,
        result: Result<Vec<Finding>, PluginFault>,
        updates: &mut Vec<Update>,
    ) {
        match result {
            Ok(found) => {
                for f in found {
                    updates.push(self.record(f));
                }
            }
            Err(fault) => {
                let plugin = self.names[slot].clone();
                tracing::warn!(%plugin, "detector disabled for this run: {fault}");
                self.faults.push(FaultRecord {
                    message: format!("plugin {plugin} {fault}"),
                    plugin,
                    fault,
                    line: self.last_line,
                });
                self.slots[slot] = None;
                updates.push(Update::Fault(self.faults.len() - 1));
            }
        }
    }

    fn record(&mut self, f: Finding) -> Update {
        if let Some(i) = self
            .findings
            .iter()
            .position(|g| g.same_problem(&f) && g.permanent == f.permanent)
        {
            let g = &mut self.findings[i];
            for l in f.lines {
                if !g.lines.contains(&l) {
                    g.lines.push(l);
                }
            }
            g.lines.sort_unstable();
            g.severity = g.severity.max(f.severity);
            return Update::Evidence(i);
        }
        let first = f.lines.iter().min().and_then(|l| self.arrived.get(l));
        if let Some(t) = first {
            self.latencies.push(t.elapsed());
        }
        self.findings.push(f);
        Update::New(self.findings.len() - 1)
    }
}
