//! A profile's files as the run goes: `events/PROFILE.jsonl` (every run event, one JSON object
//! per line, written as it happens), `logs/PROFILE.log` (the raw stream, as it arrives) and
//! `logs/PROFILE.guest.log` (the guest's own copy). A write error is reported once and the run
//! goes on: the report still says what happened.

use crate::run_event::{Consumer, RunEvent, What};
use crate::watch::LogSink;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn create(path: &Path) -> std::io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(BufWriter::new(File::create(path)?))
}

/// Writes `out`, or on the first error says so and stops writing.
fn write_or_stop(out: &mut Option<BufWriter<File>>, path: &Path, bytes: &[u8]) {
    if let Some(w) = out
        && let Err(e) = w.write_all(bytes)
    {
        tracing::error!("cannot write {}: {e}; it stops here", path.display());
        *out = None;
    }
}

/// The events file of one profile.
pub struct EventLog {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl EventLog {
    pub fn create(run_dir: &Path, profile: &str) -> std::io::Result<Self> {
        let path = run_dir.join("events").join(format!("{profile}.jsonl"));
        Ok(EventLog {
            out: Some(create(&path)?),
            path,
        })
    }
}

impl Consumer for EventLog {
    fn consume(&mut self, event: &RunEvent) {
        let mut line = serde_json::to_vec(event).expect("run events serialise");
        line.push(b'\n');
        write_or_stop(&mut self.out, &self.path, &line);
        // Whole phases and the end reach the disk at once (a reader may follow the file).
        if !matches!(event.what, What::Line { .. })
            && let Some(w) = &mut self.out
            && let Err(e) = w.flush()
        {
            tracing::error!("cannot write {}: {e}; it stops here", self.path.display());
            self.out = None;
        }
    }
}

/// The raw stream and the guest's log of one profile.
pub struct LogFiles {
    dir: PathBuf,
    profile: String,
    raw: Option<BufWriter<File>>,
}

impl LogFiles {
    pub fn create(run_dir: &Path, profile: &str) -> std::io::Result<Self> {
        let dir = run_dir.join("logs");
        Ok(LogFiles {
            raw: Some(create(&dir.join(format!("{profile}.log")))?),
            dir,
            profile: profile.to_string(),
        })
    }

    /// Flushes the raw log (at the end of the profile's run).
    pub fn close(mut self) -> std::io::Result<()> {
        match self.raw.take() {
            Some(mut w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl LogSink for LogFiles {
    fn raw(&mut self, chunk: &[u8]) {
        let path = self.dir.join(format!("{}.log", self.profile));
        write_or_stop(&mut self.raw, &path, chunk);
    }

    fn guest_log(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(format!("{}.guest.log", self.profile));
        crate::report::write_atomic(&path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_logs_are_written_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::create(dir.path(), "vm").unwrap();
        let events = [
            What::VmStarting,
            What::PhaseStarted {
                phase: "disko".into(),
                attempt: 1,
            },
        ];
        for (i, what) in events.into_iter().enumerate() {
            log.consume(&RunEvent {
                at_ms: i as u64,
                profile: "vm".into(),
                what,
            });
        }
        // Flushed without closing: a reader following the file sees both.
        let text = std::fs::read_to_string(dir.path().join("events/vm.jsonl")).unwrap();
        let read: Vec<RunEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(read.len(), 2);
        assert!(matches!(
            read[1].what,
            What::PhaseStarted { attempt: 1, .. }
        ));

        let mut files = LogFiles::create(dir.path(), "vm").unwrap();
        files.raw(b"one\n");
        files.raw(b"two");
        files.guest_log(b"guest").unwrap();
        files.close().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("logs/vm.log")).unwrap(),
            b"one\ntwo"
        );
        assert_eq!(
            std::fs::read(dir.path().join("logs/vm.guest.log")).unwrap(),
            b"guest"
        );
    }
}
