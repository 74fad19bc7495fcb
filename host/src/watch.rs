//! Watching a profile's install live: its output bytes go through the one ingest path into
//! events, to the monitor's detectors, and out as run events (lines, findings, plugin faults).
//! The raw bytes go to the caller's sink as they arrive.

use crate::fallback::HOST_DETECTOR;
use crate::findings::Category;
use crate::monitor::{Monitor, PluginFaultDetail, Update};
use crate::run_event::{Emitter, What};
use crate::stream::{PhaseOutput, StopRequest};
use nixtest_events::Ingest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A file written piece by piece that appears whole or not at all.
pub trait Staged: std::io::Write {
    fn commit(self: Box<Self>) -> std::io::Result<()>;
}

/// Where a sink puts what it does not keep.
impl Staged for std::io::Sink {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the raw stream and the guest's own log go (the run's log files; memory in tests).
/// Everything is written as it arrives: nothing here holds a whole log.
pub trait LogSink {
    /// A chunk of the stream as it arrived (a write error is the sink's to report).
    fn raw(&mut self, chunk: &[u8]);
    /// Where the guest's own copy of the log goes.
    fn guest_log(&mut self) -> std::io::Result<Box<dyn Staged>> {
        Ok(Box::new(std::io::sink()))
    }
    /// When the guest printed each line of the install (JSON: the guest clock paired with
    /// ours, then a time per line), to measure what the lines took to reach their readers.
    fn guest_times(&mut self) -> std::io::Result<Box<dyn Staged>> {
        Ok(Box::new(std::io::sink()))
    }
}

impl LogSink for Vec<u8> {
    fn raw(&mut self, chunk: &[u8]) {
        self.extend_from_slice(chunk);
    }
}

pub struct Watch<'a> {
    pub emitter: Emitter<'a>,
    ingest: Ingest,
    pub monitor: Monitor,
    raw: &'a mut dyn LogSink,
    /// When each finding was first made or confirmed in the current phase attempt (for the
    /// time from the failing line to the finding and to the action), and its last evidence
    /// line then: the line that decided it.
    pub seen_in_attempt: BTreeMap<usize, (Instant, u32)>,
    /// Stop a phase at its first sure failure instead of waiting for it to end (a hang is
    /// stopped in any case: waiting is what it would do for ever).
    pub stop_early: bool,
    /// The attempt's first line is after this one; a stop was asked for in it; the reason
    /// of a stop not yet handed to the guest.
    attempt_start: u32,
    stop_asked: bool,
    stop: StopRequest,
    /// Evidence lines of each finding as last emitted (an event only when it grew).
    emitted: Vec<usize>,
    /// Time spent parsing, monitoring and in detector plugins (the monitoring overhead).
    busy: Duration,
}

impl<'a> Watch<'a> {
    pub fn new(emitter: Emitter<'a>, monitor: Monitor, raw: &'a mut dyn LogSink) -> Self {
        let mut w = Watch {
            emitter,
            ingest: Ingest::default(),
            monitor,
            raw,
            seen_in_attempt: BTreeMap::new(),
            stop_early: false,
            attempt_start: 0,
            stop_asked: false,
            stop: None,
            emitted: Vec::new(),
            busy: Duration::ZERO,
        };
        // Detectors that did not start are faults from the outset.
        let updates = (0..w.monitor.faults().len()).map(Update::Fault).collect();
        w.show(updates);
        w
    }

    /// Lines seen so far (the number of the last).
    pub fn lines(&self) -> u32 {
        self.ingest.lines()
    }

    /// The runner's log line event `line` came from (see [`Ingest::stream_line`]).
    pub fn stream_line(&self, line: u32) -> u32 {
        self.ingest.stream_line(line)
    }

    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// A phase attempt starts: findings are counted from here.
    pub fn begin_attempt(&mut self) {
        self.attempt_start = self.lines();
        self.seen_in_attempt.clear();
        self.stop_asked = false;
        self.stop = None;
    }

    /// Whether the attempt was asked to stop early.
    pub fn stopped_early(&self) -> bool {
        self.stop_asked
    }

    /// A chunk of the phase's output as it arrived; answers whether to stop the phase now.
    pub fn take(&mut self, output: PhaseOutput<'_>) -> StopRequest {
        match output {
            PhaseOutput::Guest(chunk) => self.take_chunk(chunk),
            PhaseOutput::Console(line) => self.take_console(line),
        }
        self.stop.take()
    }

    fn take_chunk(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        self.raw.raw(chunk);
        let mut events = Vec::new();
        self.ingest.push(chunk, |e| events.push(e));
        self.observe(events, now);
    }

    /// A kernel line from the console: an event now, unless the stream brought it first (the
    /// stream's later copy is dropped). Not raw output: the raw log is the runner's stream,
    /// which has its own copy.
    fn take_console(&mut self, line: &[u8]) {
        let now = Instant::now();
        let mut events = Vec::new();
        self.ingest.push_console(line, |e| events.push(e));
        self.observe(events, now);
    }

    fn observe(&mut self, events: Vec<nixtest_events::Event>, now: Instant) {
        let mut updates = Vec::new();
        for e in events {
            self.emitter.emit(What::Line { line: e.clone() });
            updates.extend(self.monitor.observe_at(e, now));
        }
        updates.extend(self.monitor.flush());
        self.show(updates);
        self.busy += now.elapsed();
    }

    /// The stream ended: the last unterminated line, then what detectors see only at the end.
    pub fn finish(&mut self) {
        let now = Instant::now();
        let mut updates = Vec::new();
        if let Some(e) = self.ingest.finish() {
            self.emitter.emit(What::Line { line: e.clone() });
            updates.extend(self.monitor.observe_at(e, now));
        }
        updates.extend(self.monitor.finish());
        self.show(updates);
        self.busy += now.elapsed();
        let latencies_ms = self
            .monitor
            .latencies()
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        self.emitter.emit(What::DetectionDone {
            complete: self.monitor.complete(),
            latencies_ms,
        });
        for (plugin, text) in self.monitor.outputs() {
            self.emitter.emit(What::PluginOutput { plugin, text });
        }
    }

    /// A sure failure in this attempt stops it: healing need not wait for the phase to end
    /// (a build that lost a process to the OOM killer, a download Nix has given up on, a
    /// hang). Not the host's fallback finding: it is made at the phase's end marker.
    fn consider_stop(&mut self, i: usize) {
        if self.stop_asked {
            return;
        }
        let f = &self.monitor.findings()[i];
        let hang = f.category == Category::Hang;
        let sure = f.permanent
            && f.severity.is_failure()
            && f.lines.iter().any(|l| *l > self.attempt_start)
            && (f.detector != HOST_DETECTOR || hang);
        if sure && (self.stop_early || hang) {
            self.stop_asked = true;
            self.stop = Some(format!(
                "{} found it failing ({}: {})",
                f.detector,
                f.category,
                crate::term::clip(&f.summary, 160)
            ));
        }
    }

    fn show(&mut self, updates: Vec<Update>) {
        for u in updates {
            match u {
                Update::New(i) | Update::Evidence(i) => {
                    let f = &self.monitor.findings()[i];
                    let last = f.lines.iter().max().copied().unwrap_or(0);
                    self.seen_in_attempt
                        .entry(i)
                        .or_insert_with(|| (Instant::now(), last));
                    self.consider_stop(i);
                    if self.emitted.len() <= i {
                        self.emitted.resize(i + 1, 0);
                    }
                    let f = &self.monitor.findings()[i];
                    if matches!(u, Update::New(_)) || f.lines.len() > self.emitted[i] {
                        self.emitted[i] = f.lines.len();
                        let finding = f.clone();
                        self.emitter.emit(What::Finding { index: i, finding });
                    }
                }
                Update::Fault(i) => {
                    let fault = PluginFaultDetail::from(&self.monitor.faults()[i]);
                    self.emitter.emit(What::PluginFault {
                        fault,
                        detector: true,
                    });
                }
            }
        }
    }
}
