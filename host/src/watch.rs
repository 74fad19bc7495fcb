//! Watching a profile's install live: its output bytes go through the one ingest path into
//! events, to the monitor's detectors, and out as run events (lines, findings, plugin faults).
//! The raw bytes go to the caller's sink as they arrive.

use crate::monitor::{Monitor, PluginFaultDetail, Update};
use crate::run_event::{Emitter, What};
use nixtest_events::Ingest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Where the raw stream and the guest's own log go (the run's log files; memory in tests).
pub trait LogSink {
    /// A chunk of the stream as it arrived (a write error is the sink's to report).
    fn raw(&mut self, chunk: &[u8]);
    fn guest_log(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// When the guest printed each line of the install (JSON: the guest clock paired with
    /// ours, then a time per line), to measure what the lines took to reach their readers.
    fn guest_times(&mut self, _json: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink for Vec<u8> {
    fn raw(&mut self, chunk: &[u8]) {
        self.extend_from_slice(chunk);
    }
    fn guest_log(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Watch<'a> {
    pub emitter: Emitter<'a>,
    ingest: Ingest,
    pub monitor: Monitor,
    raw: &'a mut dyn LogSink,
    /// When each finding was first made or confirmed in the current phase attempt (for the
    /// time from the failing line to the finding and to the action).
    pub seen_in_attempt: BTreeMap<usize, Instant>,
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

    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// A chunk of the phase's output as it arrived.
    pub fn take(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        self.raw.raw(chunk);
        let mut events = Vec::new();
        self.ingest.push(chunk, |e| events.push(e));
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

    fn show(&mut self, updates: Vec<Update>) {
        for u in updates {
            match u {
                Update::New(i) | Update::Evidence(i) => {
                    self.seen_in_attempt.entry(i).or_insert_with(Instant::now);
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
