//! A profile's files as the run goes: `events/PROFILE.jsonl` (every run event, one JSON object
//! per line, written as it happens), `logs/PROFILE.log` (the raw stream, as it arrives) and
//! `logs/PROFILE.guest.log` (the guest's own copy). A write error is reported once and the run
//! goes on: the report still says what happened.

use crate::run_event::{Consumer, RunEvent, What};
use crate::watch::{LogSink, Staged};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn create(path: &Path) -> std::io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(BufWriter::new(File::create(path)?))
}

/// Writes `out`; on the first error says so, stops writing, and keeps the error for the end.
fn write_or_stop(
    out: &mut Option<BufWriter<File>>,
    failed: &mut Option<std::io::Error>,
    path: &Path,
    bytes: &[u8],
) {
    if let Some(w) = out
        && let Err(e) = w.write_all(bytes)
    {
        tracing::error!("cannot write {}: {e}; it stops here", path.display());
        *out = None;
        *failed = Some(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ));
    }
}

/// Flushes what is left; the first error of the whole run, if any.
fn close(out: Option<BufWriter<File>>, failed: Option<std::io::Error>) -> std::io::Result<()> {
    if let Some(e) = failed {
        return Err(e);
    }
    match out {
        Some(mut w) => w.flush(),
        None => Ok(()),
    }
}

/// The events file of one profile.
pub struct EventLog {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    failed: Option<std::io::Error>,
}

impl EventLog {
    pub fn create(run_dir: &Path, profile: &str) -> std::io::Result<Self> {
        let path = run_dir.join("events").join(format!("{profile}.jsonl"));
        Ok(EventLog {
            out: Some(create(&path)?),
            path,
            failed: None,
        })
    }

    /// The end of the profile: an error if any event could not be written.
    pub fn close(self) -> std::io::Result<()> {
        close(self.out, self.failed)
    }
}

impl Consumer for EventLog {
    fn consume(&mut self, event: &RunEvent) {
        let mut line = serde_json::to_vec(event).expect("run events serialise");
        line.push(b'\n');
        write_or_stop(&mut self.out, &mut self.failed, &self.path, &line);
        // Whole phases and the end reach the disk at once (a reader may follow the file).
        if !matches!(event.what, What::Line { .. })
            && let Some(w) = &mut self.out
            && let Err(e) = w.flush()
        {
            tracing::error!("cannot write {}: {e}; it stops here", self.path.display());
            self.out = None;
            self.failed = Some(e);
        }
    }
}

/// The raw stream and the guest's log of one profile.
pub struct LogFiles {
    raw_path: PathBuf,
    guest_path: PathBuf,
    times_path: PathBuf,
    raw: Option<BufWriter<File>>,
    failed: Option<std::io::Error>,
}

impl LogFiles {
    pub fn create(run_dir: &Path, profile: &str) -> std::io::Result<Self> {
        let dir = run_dir.join("logs");
        let raw_path = dir.join(format!("{profile}.log"));
        Ok(LogFiles {
            raw: Some(create(&raw_path)?),
            raw_path,
            guest_path: dir.join(format!("{profile}.guest.log")),
            times_path: dir.join(format!("{profile}.times.json")),
            failed: None,
        })
    }

    /// Flushes the raw log (at the end of the profile's run); an error if any of it could
    /// not be written.
    pub fn close(self) -> std::io::Result<()> {
        close(self.raw, self.failed)
    }
}

impl LogSink for LogFiles {
    fn raw(&mut self, chunk: &[u8]) {
        write_or_stop(&mut self.raw, &mut self.failed, &self.raw_path, chunk);
    }

    fn guest_log(&mut self) -> std::io::Result<Box<dyn Staged>> {
        Ok(Box::new(StagedFile::create(&self.guest_path)?))
    }

    fn guest_times(&mut self) -> std::io::Result<Box<dyn Staged>> {
        Ok(Box::new(StagedFile::create(&self.times_path)?))
    }
}

/// A file written beside its place and renamed into it when whole.
struct StagedFile {
    out: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl StagedFile {
    fn create(path: &Path) -> std::io::Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        Ok(StagedFile {
            out: BufWriter::new(tempfile::NamedTempFile::new_in(dir)?),
            path: path.to_path_buf(),
        })
    }
}

impl std::io::Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Staged for StagedFile {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
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
        let mut guest = files.guest_log().unwrap();
        guest.write_all(b"gue").unwrap();
        assert!(!dir.path().join("logs/vm.guest.log").exists());
        guest.write_all(b"st").unwrap();
        guest.commit().unwrap();
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
