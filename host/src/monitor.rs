//! The agent monitor: turns a stream of events into findings, live.
//!
//! Each detector plugin gets its own instance for the run (so it keeps state) and sees only
//! the lines its metadata asks for: the run's [`Router`] (shared with `replay` and the SDK's
//! test harness: one Aho-Corasick automaton over every plugin's literals and one `RegexSet`
//! over their patterns) decides, in a single pass per line, which plugins a line goes to (with
//! the preceding lines a plugin wants as context). The verdict markers (error, warning,
//! success) go to every detector; phase, context, progress and metric markers, like raw output,
//! only where they match. Lines are sent in batches; the same code serves a live stream (flush
//! after each chunk) and a replay (flush when a batch is full).
//!
//! Findings are de-duplicated in a map (the same detector, category, summary and permanence
//! merge their evidence). Everything a plugin returns is bounded: evidence lines per finding,
//! distinct findings per plugin per run, the text kept as evidence. A plugin that faults, or
//! whose prefilter cannot be built within its limits, is disabled for the run and recorded;
//! the others go on, and the run is marked as having incomplete detection.

use crate::fallback::{PendingFailure, PhaseTail};
use crate::findings::Finding;
use crate::plugin::MAX_EVIDENCE_LINES;
use crate::plugin::prefilter;
use crate::plugin::{Plugin, PluginFault, PluginInstance};
use nixtest_events::{Event, Route, Router};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Events a plugin receives in one call at most.
pub const BATCH: usize = 256;
/// Lines whose arrival time and text are kept for findings that cite them later.
const WINDOW_LINES: usize = 4096;
const WINDOW_BYTES: usize = 8 << 20;
/// Text kept of one evidence line, and of all evidence in a run.
const EVIDENCE_LINE_BYTES: usize = 4096;
const EVIDENCE_TOTAL_BYTES: usize = 16 << 20;
/// Failure markers judged per run for the fallback finding: a guest printing markers without
/// end gets no more judgements (nor the extra flush of every detector each one costs).
const MAX_JUDGED: usize = 64;
/// Pending events, all detectors together, from which a flush feeds the detectors on
/// several threads: below it a thread costs more than it saves (a live stream flushes a
/// few lines at a time; a replay or a burst of output, whole batches).
const PARALLEL_FEED_EVENTS: usize = 2 * BATCH;
/// What a detector's first call weighs, in events, when a flush is shared out: plugins build
/// their rules (regex sets) on the first line they see, which costs the built-ins from 3 to
/// 47 ms each, far more than any batch. So the first flush feeds them side by side however
/// few its lines, and each first feed is a heavy task when they are grouped.
const FIRST_FEED_WEIGHT: usize = PARALLEL_FEED_EVENTS;

#[derive(Debug, Error)]
pub enum MonitorError {
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
    /// What the plugin printed (bounded), if anything.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl FaultRecord {
    pub fn new(plugin: &str, fault: PluginFault, line: u32, output: String) -> Self {
        FaultRecord {
            message: format!("plugin {plugin} {fault}"),
            plugin: plugin.to_string(),
            fault,
            line,
            output,
        }
    }
}

/// A plugin fault as reports and events keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFaultDetail {
    pub plugin: String,
    pub message: String,
    pub line: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl From<&FaultRecord> for PluginFaultDetail {
    fn from(f: &FaultRecord) -> Self {
        PluginFaultDetail {
            plugin: f.plugin.clone(),
            message: f.message.clone(),
            line: f.line,
            output: f.output.clone(),
        }
    }
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
    /// None while it is away on its feeder's thread (a pipelined monitor).
    instance: Option<PluginInstance>,
    pending: Vec<Event>,
    /// Distinct findings this plugin has made in the run.
    distinct: usize,
    /// Whether the plugin has been called in this run.
    fed: bool,
}

impl Slot {
    /// Sends the pending events.
    fn feed(&mut self) -> Result<Vec<Finding>, PluginFault> {
        let instance = self
            .instance
            .as_mut()
            .expect("a slot's instance is home between feeds");
        let r = instance.feed(&self.pending);
        self.pending.clear();
        self.fed = true;
        r
    }

    fn instance_mut(&mut self) -> &mut PluginInstance {
        self.instance
            .as_mut()
            .expect("a slot's instance is home between feeds")
    }

    /// How much work the pending feed is, in events (see [`FIRST_FEED_WEIGHT`]).
    fn weight(&self) -> usize {
        self.pending.len() + if self.fed { 0 } else { FIRST_FEED_WEIGHT }
    }
}

/// Feeds the slots in `work` side by side on the [`crate::workers`] pool. Each instance is
/// fed on one thread at a time, so a plugin's calls stay in order, and its CPU limits are
/// measured on the thread that runs it.
fn feed_parallel(
    work: &mut [(usize, &mut Slot)],
) -> Vec<(usize, Result<Vec<Finding>, PluginFault>)> {
    use rayon::prelude::*;
    let Some(pool) = crate::workers::pool() else {
        return work.iter_mut().map(|(i, s)| (*i, s.feed())).collect();
    };
    // One group per thread, shared out by weight, heaviest first: the flush lasts as
    // long as its slowest group, and one busy detector may be a group of its own.
    work.sort_by_key(|(_, s)| std::cmp::Reverse(s.weight()));
    let mut groups: Vec<(usize, Vec<&mut (usize, &mut Slot)>)> =
        (0..pool.current_num_threads().min(work.len()))
            .map(|_| (0, Vec::new()))
            .collect();
    for w in work.iter_mut() {
        let least = groups
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one group");
        least.0 += w.1.weight();
        least.1.push(w);
    }
    pool.install(|| {
        groups
            .into_par_iter()
            .flat_map_iter(|(_, group)| {
                group
                    .into_iter()
                    .map(|(i, s)| (*i, s.feed()))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// A batch and the instance it goes with, to a feeder's thread, and back with the result.
type Job = (PluginInstance, Vec<Event>);
type Fed = (PluginInstance, Result<Vec<Finding>, PluginFault>);

/// A detector's own thread in a pipelined monitor (see [`Monitor::pipelined`]).
struct Feeder {
    to: mpsc::Sender<Job>,
    back: mpsc::Receiver<Fed>,
}

impl Feeder {
    fn spawn(index: usize) -> std::io::Result<Feeder> {
        let (to, jobs) = mpsc::channel::<Job>();
        let (done, back) = mpsc::channel::<Fed>();
        std::thread::Builder::new()
            .name(format!("nixtest-detector-{index}"))
            .spawn(move || {
                // Ends when the monitor is dropped.
                for (mut instance, batch) in jobs {
                    let result = instance.feed(&batch);
                    if done.send((instance, result)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Feeder { to, back })
    }
}

/// A batch sent to a feeder and not yet absorbed.
struct InFlight {
    slot: usize,
    /// The last line seen when it was sent (what a fault it ends in is dated with).
    line: u32,
    /// How many lines had left the window when it was sent: those that left since are
    /// parked until it is absorbed, so that it finds the evidence it would have found then.
    evicted: u64,
    /// Its result, when it was fed here (its feeder's thread is gone).
    ready: Option<Fed>,
}

/// A line a detector was sent: when it arrived and its text (clipped).
struct Seen {
    line: u32,
    at: Instant,
    text: String,
}

type FindingKey = (String, crate::findings::Category, String, bool);

/// Appends a line to the window; returns the bytes it holds.
fn push_seen(window: &mut VecDeque<Seen>, event: &Event, at: Instant) -> usize {
    let text = clipped(&event.message, EVIDENCE_LINE_BYTES);
    let bytes = text.len();
    window.push_back(Seen {
        line: event.line,
        at,
        text,
    });
    bytes
}

fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].to_string()
}

/// The monitor of one run.
pub struct Monitor {
    slots: Vec<Option<Slot>>,
    names: Vec<String>,
    router: Router,
    findings: Vec<Finding>,
    index: HashMap<FindingKey, usize>,
    faults: Vec<FaultRecord>,
    /// The last lines sent to detectors (bounded in count and bytes).
    window: VecDeque<Seen>,
    window_bytes: usize,
    /// Text of the lines findings cite (bounded in total).
    evidence: HashMap<u32, String>,
    evidence_bytes: usize,
    /// When each cited line arrived.
    first_seen: HashMap<u32, Instant>,
    latencies: Vec<Duration>,
    last_line: u32,
    findings_per_run: usize,
    /// The current phase's last lines, for a failure no detector explains.
    tail: PhaseTail,
    /// Failure markers judged so far (each costs a flush of every detector).
    judged: usize,
    /// Whether a large flush feeds the detectors side by side (see [`feed_parallel`]).
    side_by_side: bool,
    /// Flushes fed side by side so far.
    side_by_side_flushes: usize,
    /// Each detector's thread, in a pipelined monitor (empty otherwise).
    feeders: Vec<Option<Feeder>>,
    /// Batches sent and not yet absorbed, in the order a flush absorbs them; a slot at most
    /// once (its next batch waits for its instance).
    in_flight: VecDeque<InFlight>,
    /// Lines that left the window while a batch was in flight, numbered in leaving order.
    parked: VecDeque<(u64, Seen)>,
    /// Lines that have left the window so far.
    evicted: u64,
    /// While a batch in flight is absorbed: the last line then, and `evicted` then.
    absorbing: Option<(u32, u64)>,
}

impl Monitor {
    /// Instantiates every detector among `plugins` for this run. A detector that cannot start
    /// or whose prefilter is refused is recorded as a fault; the others run.
    pub fn new(plugins: &[Plugin]) -> Result<Self, MonitorError> {
        let detectors: Vec<&Plugin> = plugins.iter().filter(|p| p.world.detects()).collect();
        let mut slots = Vec::new();
        let mut filters = Vec::new();
        let mut faults = Vec::new();
        let mut findings_per_run = crate::plugin::Limits::default().findings_per_run;
        for p in &detectors {
            // Its prefilter passed its check when it was loaded (`Plugin` has no other maker):
            // checking again would cost every run its compile and sample scan.
            let started = p.instantiate();
            match started {
                Ok(instance) => {
                    findings_per_run = instance.limits().findings_per_run;
                    filters.push(Some(&p.meta));
                    slots.push(Some(Slot {
                        instance: Some(instance),
                        pending: Vec::with_capacity(BATCH),
                        distinct: 0,
                        fed: false,
                    }));
                }
                Err(fault) => {
                    tracing::warn!(plugin = %p.meta.name, "detector disabled for this run: {fault}");
                    faults.push(FaultRecord::new(&p.meta.name, fault, 0, String::new()));
                    filters.push(None);
                    slots.push(None);
                }
            }
        }
        let routes: Vec<Option<Route<'_>>> = filters
            .iter()
            .map(|f| {
                f.map(|meta| Route {
                    literals: &meta.literals,
                    patterns: &meta.patterns,
                    context: meta.context_lines as usize,
                })
            })
            .collect();
        let router = Router::new(&routes, prefilter::LIMITS).map_err(MonitorError::Prefilter)?;
        Ok(Monitor {
            names: detectors.iter().map(|p| p.meta.name.clone()).collect(),
            slots,
            router,
            findings: Vec::new(),
            index: HashMap::new(),
            faults,
            window: VecDeque::new(),
            window_bytes: 0,
            evidence: HashMap::new(),
            evidence_bytes: 0,
            first_seen: HashMap::new(),
            latencies: Vec::new(),
            last_line: 0,
            findings_per_run,
            tail: PhaseTail::default(),
            judged: 0,
            side_by_side: true,
            side_by_side_flushes: 0,
            feeders: Vec::new(),
            in_flight: VecDeque::new(),
            parked: VecDeque::new(),
            evicted: 0,
            absorbing: None,
        })
    }

    /// Feeds each detector on a thread of its own, without waiting: a flush sends the
    /// batches and goes on routing, and their findings are taken in at later calls, in the
    /// order a flush would have taken them (a slot's next batch, a failure marker, a hang
    /// and [`Monitor::finish`] wait for what is in flight). For a log read in bulk
    /// (`replay`), where a detector's first calls (it builds its rules) would stop the
    /// routing and, behind it, the search for tens of ms; the findings, their order and
    /// their evidence are those of a monitor that waits. A live run waits instead: a
    /// finding is reported by the flush that found it. Where a thread cannot be started,
    /// the monitor waits.
    pub fn pipelined(mut self) -> Self {
        let mut feeders = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.as_ref().map(|_| Feeder::spawn(i)) {
                Some(Ok(f)) => feeders.push(Some(f)),
                Some(Err(e)) => {
                    tracing::debug!("detectors fed in turn: no thread for one ({e})");
                    return self;
                }
                None => feeders.push(None),
            }
        }
        if feeders.iter().any(Option::is_some) {
            self.feeders = feeders;
        }
        self
    }

    /// Feeds the detectors one after another on the caller's thread, whatever the flush's
    /// size (the reference the side-by-side feeding is tested against).
    pub fn feed_one_by_one(mut self) -> Self {
        self.side_by_side = false;
        self
    }

    /// How many flushes fed the detectors side by side.
    pub fn side_by_side_flushes(&self) -> usize {
        self.side_by_side_flushes
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

    /// What each running detector printed (bounded), for those that printed anything.
    pub fn outputs(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| s.instance.as_ref())
            .map(|i| (i.name().to_string(), i.output()))
            .filter(|(_, o)| !o.is_empty())
            .collect()
    }

    /// Records a fault from before the run (an installed detector that did not load).
    pub fn seed_fault(&mut self, fault: FaultRecord) {
        self.faults.push(fault);
    }

    /// Whether every detector ran to the end: a detector disabled by a fault leaves
    /// detection incomplete.
    pub fn complete(&self) -> bool {
        self.faults.is_empty()
    }

    /// When a line a finding cites reached the host.
    pub fn arrival(&self, line: u32) -> Option<Instant> {
        self.first_seen.get(&line).copied().or_else(|| {
            self.window
                .iter()
                .rev()
                .find(|s| s.line == line)
                .map(|s| s.at)
        })
    }

    /// The text of a line a finding cites (clipped; none once the run's evidence budget is
    /// spent).
    pub fn line_text(&self, line: u32) -> Option<&str> {
        self.evidence.get(&line).map(String::as_str)
    }

    /// Routes one event; may call detectors when a batch fills up.
    pub fn observe(&mut self, event: Event) -> Vec<Update> {
        self.observe_at(event, Instant::now())
    }

    /// As [`Monitor::observe`], with the time the line arrived.
    pub fn observe_at(&mut self, event: Event, arrived: Instant) -> Vec<Update> {
        self.last_line = event.line;
        let hang = crate::fallback::hang_finding(&event);
        let failed = self.tail.observe(&event);
        let mut full = false;
        let slots = &mut self.slots;
        let routed = self.router.route(&event, |i, e| {
            if let Some(slot) = &mut slots[i] {
                slot.pending.push(e.clone());
                full |= slot.pending.len() >= BATCH;
            }
        });
        if let Some(context) = routed {
            // What a detector was sent, context included, may become evidence.
            let last = self.window.back().map_or(0, |s| s.line);
            let skip = self.router.recent().len().saturating_sub(context);
            for (prev, at) in self.router.recent().skip(skip) {
                if prev.line > last {
                    self.window_bytes += push_seen(&mut self.window, prev, *at);
                }
            }
            self.window_bytes += push_seen(&mut self.window, &event, arrived);
            while self.window.len() > WINDOW_LINES || self.window_bytes > WINDOW_BYTES {
                match self.window.pop_front() {
                    Some(old) => {
                        self.window_bytes -= old.text.len();
                        self.evicted += 1;
                        if !self.in_flight.is_empty() {
                            self.parked.push_back((self.evicted, old));
                        }
                    }
                    None => break,
                }
            }
        }
        // The line's text is only kept for the host's own finding (most lines are not one).
        let hung = hang.map(|f| (f, event.line, clipped(&event.message, EVIDENCE_LINE_BYTES)));
        self.router.remember(event, arrived);
        let mut updates = Vec::new();
        if hung.is_some() {
            // After every detector's findings so far, as a monitor that waits has them.
            self.settle(None, true, &mut updates);
        }
        if let Some((f, line, text)) = hung {
            // The host's own finding: the guest's watchdog saw the phase hang.
            if self.evidence_bytes < EVIDENCE_TOTAL_BYTES && !self.evidence.contains_key(&line) {
                self.evidence_bytes += text.len();
                self.evidence.insert(line, text);
                self.first_seen.insert(line, arrived);
            }
            updates.push(self.record(f).0);
        }
        if let Some(p) = failed.filter(|_| self.judged < MAX_JUDGED) {
            self.judged += 1;
            // Judged once the detectors have seen the lines before the marker.
            updates.extend(self.flush_slots());
            self.settle(None, true, &mut updates);
            self.judge(&p, &mut updates);
            return updates;
        }
        if full {
            updates.extend(self.flush());
        } else if !self.in_flight.is_empty() {
            self.settle(None, false, &mut updates);
        }
        updates
    }

    /// Takes in the results of batches in flight, in order: all of them (`block` and no
    /// `until`), up to and including slot `until`'s, or (`!block`) those that are back.
    fn settle(&mut self, until: Option<usize>, block: bool, updates: &mut Vec<Update>) {
        while let Some(front) = self.in_flight.front_mut() {
            let fed = match front.ready.take() {
                Some(fed) => fed,
                None => {
                    let back = &self.feeders[front.slot]
                        .as_ref()
                        .expect("a batch in flight has its feeder")
                        .back;
                    let got = if block {
                        back.recv().map_err(|_| true)
                    } else {
                        back.try_recv()
                            .map_err(|e| e == mpsc::TryRecvError::Disconnected)
                    };
                    match got {
                        Ok(fed) => fed,
                        Err(false) => return,
                        // The thread died with the instance (a panic in the host's code):
                        // the plugin goes, as a fault of the host's.
                        Err(true) => {
                            let f = self.in_flight.pop_front().expect("the front");
                            let fault = PluginFault::HostPanic(
                                "the thread feeding this detector ended".to_string(),
                            );
                            let plugin = self.names[f.slot].clone();
                            self.faults.push(FaultRecord::new(
                                &plugin,
                                fault,
                                f.line,
                                String::new(),
                            ));
                            self.slots[f.slot] = None;
                            self.router.close(f.slot);
                            updates.push(Update::Fault(self.faults.len() - 1));
                            if until == Some(f.slot) {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let f = self.in_flight.pop_front().expect("the front");
            let (instance, result) = fed;
            if let Some(slot) = self.slots[f.slot].as_mut() {
                slot.instance = Some(instance);
            }
            let now = self.last_line;
            self.last_line = f.line;
            self.absorbing = Some((f.line, f.evicted));
            self.absorb(f.slot, result, updates);
            self.absorbing = None;
            self.last_line = now;
            if until == Some(f.slot) {
                break;
            }
        }
        // Parked lines no batch in flight can cite any more.
        let oldest = self.in_flight.front().map_or(u64::MAX, |f| f.evicted);
        while self.parked.front().is_some_and(|(n, _)| *n <= oldest) {
            self.parked.pop_front();
        }
    }

    /// Adds the fallback finding for a failed phase no detector explained.
    fn judge(&mut self, p: &PendingFailure, updates: &mut Vec<Update>) {
        if let Some(f) = p.judge(&self.findings) {
            for (line, text) in p.cited() {
                if self.evidence_bytes < EVIDENCE_TOTAL_BYTES && !self.evidence.contains_key(line) {
                    self.evidence_bytes += text.len();
                    self.evidence.insert(*line, text.clone());
                }
            }
            let (update, _) = self.record(f);
            updates.push(update);
        }
    }

    /// Sends every pending batch now (the live stream calls this after each chunk).
    pub fn flush(&mut self) -> Vec<Update> {
        self.flush_slots()
    }

    fn flush_slots(&mut self) -> Vec<Update> {
        if !self.feeders.is_empty() {
            return self.send_slots();
        }
        let mut work: Vec<(usize, &mut Slot)> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().filter(|s| !s.pending.is_empty()).map(|s| (i, s)))
            .collect();
        let total: usize = work.iter().map(|(_, s)| s.weight()).sum();
        let mut results: Vec<(usize, Result<Vec<Finding>, PluginFault>)> =
            if self.side_by_side && work.len() > 1 && total >= PARALLEL_FEED_EVENTS {
                self.side_by_side_flushes += 1;
                feed_parallel(&mut work)
            } else {
                work.iter_mut().map(|(i, s)| (*i, s.feed())).collect()
            };
        // Findings are recorded in slot order whichever thread fed the slot: a run's findings
        // and their numbers do not depend on the timing.
        results.sort_by_key(|(i, _)| *i);
        let mut updates = Vec::new();
        for (i, result) in results {
            self.absorb(i, result, &mut updates);
        }
        updates
    }

    /// A pipelined flush: each pending batch goes to its detector's thread (once the
    /// detector's previous batch is back), and what is back already is taken in.
    fn send_slots(&mut self) -> Vec<Update> {
        let mut updates = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_none_or(|s| s.pending.is_empty()) {
                continue;
            }
            if self.in_flight.iter().any(|f| f.slot == i) {
                self.settle(Some(i), true, &mut updates);
            }
            // A fault just taken in may have closed it.
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            let batch = std::mem::replace(&mut slot.pending, Vec::with_capacity(BATCH));
            let instance = slot.instance.take().expect("a slot's instance is home");
            slot.fed = true;
            let ready = match &self.feeders[i] {
                Some(feeder) => match feeder.to.send((instance, batch)) {
                    Ok(()) => None,
                    // Its thread is gone: fed here, in its turn all the same.
                    Err(mpsc::SendError((mut instance, batch))) => {
                        let result = instance.feed(&batch);
                        Some((instance, result))
                    }
                },
                None => unreachable!("a live slot of a pipelined monitor has a feeder"),
            };
            self.in_flight.push_back(InFlight {
                slot: i,
                line: self.last_line,
                evicted: self.evicted,
                ready,
            });
        }
        self.settle(None, false, &mut updates);
        updates
    }

    /// The stream ended: flush, then let every detector report what only the end shows.
    pub fn finish(&mut self) -> Vec<Update> {
        let mut updates = self.flush();
        self.settle(None, true, &mut updates);
        for i in 0..self.slots.len() {
            let result = match &mut self.slots[i] {
                Some(slot) => slot.instance_mut().finish(),
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
        let fault = match result {
            Ok(found) => {
                let mut overspent = None;
                for f in found {
                    let (update, new) = self.record(f);
                    updates.push(update);
                    if new {
                        let s = self.slots[slot].as_mut().expect("a live slot reports");
                        s.distinct += 1;
                        if s.distinct > self.findings_per_run {
                            overspent = Some(PluginFault::OversizedOutput {
                                got: s.distinct,
                                limit: self.findings_per_run,
                                unit: "distinct findings in this run",
                            });
                            break;
                        }
                    }
                }
                match overspent {
                    Some(f) => f,
                    None => return,
                }
            }
            Err(fault) => fault,
        };
        let plugin = self.names[slot].clone();
        tracing::warn!(%plugin, "detector disabled for this run: {fault}");
        let output = self.slots[slot]
            .as_mut()
            .map(|s| {
                let instance = s.instance_mut();
                instance.fail(fault.clone());
                instance.output()
            })
            .unwrap_or_default();
        self.faults
            .push(FaultRecord::new(&plugin, fault, self.last_line, output));
        self.slots[slot] = None;
        self.router.close(slot);
        updates.push(Update::Fault(self.faults.len() - 1));
    }

    /// Keeps the text of lines a finding cites, within the run's evidence budget.
    fn keep_evidence(&mut self, lines: &[u32]) {
        for &l in lines {
            if self.evidence.contains_key(&l) || self.evidence_bytes >= EVIDENCE_TOTAL_BYTES {
                continue;
            }
            // A batch taken in late finds what it would have found when it was sent: no line
            // after its last, and the lines that have left the window since.
            let seen = match self.absorbing {
                None => self.window.iter().rev().find(|s| s.line == l),
                Some((last, _)) if l > last => None,
                Some((_, evicted)) => {
                    self.window.iter().rev().find(|s| s.line == l).or_else(|| {
                        self.parked
                            .iter()
                            .rev()
                            .take_while(|(n, _)| *n > evicted)
                            .map(|(_, s)| s)
                            .find(|s| s.line == l)
                    })
                }
            };
            if let Some(seen) = seen {
                self.evidence_bytes += seen.text.len();
                self.first_seen.insert(l, seen.at);
                self.evidence.insert(l, seen.text.clone());
            }
        }
    }

    /// A filter for reading a whole log in bulk: the lines it passes over could go to no
    /// detector (they go to [`Monitor::skipped`] instead of [`Monitor::observe`]).
    pub fn skip_filter(&self) -> Option<nixtest_events::SkipFilter> {
        // Only the phase's tail keeps skipped lines, and a phase marker empties it.
        self.router.skip_filter().map(|f| {
            f.hand_over_last(crate::fallback::TAIL_LINES)
                .tail_per_phase()
        })
    }

    /// A plain line no detector wants, not parsed: the phase's tail keeps it (the fallback
    /// finding cites the tail).
    pub fn skipped(&mut self, line: u32, text: &[u8]) {
        self.last_line = line;
        self.tail.keep_bytes(line, text);
    }

    /// Adds a fact to a finding after the fact (a hang's snapshot, fetched from the guest).
    pub fn add_detail(&mut self, index: usize, key: &str, value: String) {
        if let Some(f) = self.findings.get_mut(index) {
            f.details.retain(|(k, _)| k != key);
            f.details.push((key.to_string(), value));
        }
    }

    /// Records a finding; returns what changed and whether it is a new one.
    fn record(&mut self, f: Finding) -> (Update, bool) {
        self.keep_evidence(&f.lines);
        let key = (
            f.detector.clone(),
            f.category.clone(),
            f.summary.clone(),
            f.permanent,
        );
        if let Some(&i) = self.index.get(&key) {
            let g = &mut self.findings[i];
            // The lists are sorted: each new line goes in its place, up to the cap.
            for l in f.lines {
                if let Err(at) = g.lines.binary_search(&l) {
                    if g.lines.len() >= MAX_EVIDENCE_LINES {
                        break;
                    }
                    g.lines.insert(at, l);
                }
            }
            g.severity = g.severity.max(f.severity);
            return (Update::Evidence(i), false);
        }
        let first = f.lines.iter().min().and_then(|l| self.arrival(*l));
        if let Some(t) = first {
            self.latencies.push(t.elapsed());
        }
        self.findings.push(f);
        self.index.insert(key, self.findings.len() - 1);
        (Update::New(self.findings.len() - 1), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::HOST_DETECTOR;

    fn run(log: &str) -> Monitor {
        let mut m = Monitor::new(&[]).unwrap();
        for e in nixtest_events::parse_log(log.as_bytes()) {
            m.observe(e);
        }
        m.finish();
        m
    }

    #[test]
    fn an_unexplained_failed_phase_gets_an_other_finding_with_its_evidence() {
        let m = run("::PHASE::a\nfrob: widget unavailable\n::ERROR::a failed with exit code 2\n");
        let f = &m.findings()[0];
        assert_eq!(
            (f.detector.as_str(), f.category.as_str()),
            (HOST_DETECTOR, "other")
        );
        assert_eq!(f.lines, vec![2, 3]);
        assert_eq!(m.line_text(2), Some("frob: widget unavailable"));
    }

    #[test]
    fn endless_failure_markers_are_judged_a_bounded_number_of_times() {
        let log: String = (0..1000)
            .map(|i| format!("::PHASE::p{i}\nbroken {i}\n::ERROR::p{i} failed with exit code 1\n"))
            .collect();
        let m = run(&log);
        assert_eq!(m.findings().len(), MAX_JUDGED);
    }
}
