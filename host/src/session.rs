//! One profile's run wired to its consumers: the report builder, the healing history, the
//! events file, the raw logs and (when given) the display. `nixtest test` and the install
//! bench both run profiles through here.

use crate::history::HistoryRecorder;
use crate::orchestrator::{self, Resources, RunContext, TestOptions};
use crate::profile::Profile;
use crate::report::{ProfileReport, ReportBuilder};
use crate::run_event::{Consumer, Fanout};
use crate::run_files::{EventLog, LogFiles};
use crate::signatures::{FailureDb, SignatureRecorder};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What a profile's run needs besides its consumers.
pub struct Inputs<'a> {
    pub res: Resources<'a>,
    /// Where failure signatures go (none: not recorded), and the run they belong to.
    pub failures: Option<&'a Arc<Mutex<FailureDb>>>,
    pub run_id: &'a str,
}
/// One profile's run, its events going to the report, the events file, the healing history
/// and the given watchers (the display, the dashboard).
pub async fn run_and_report(
    parts: Inputs<'_>,
    watchers: Vec<&mut dyn Consumer>,
    profile: &Profile,
    opts: &TestOptions,
    run_dir: &Path,
) -> ProfileReport {
    let mut builder = ReportBuilder::new(&profile.name);
    let mut recorder = HistoryRecorder::new(parts.res.history);
    let mut events = EventLog::create(run_dir, &profile.name);
    let mut logs = LogFiles::create(run_dir, &profile.name);
    let mut sink: Vec<u8> = Vec::new();
    let mut signatures = parts
        .failures
        .map(|db| SignatureRecorder::new(db.clone(), parts.run_id));
    let mut consumers: Vec<&mut dyn Consumer> = vec![&mut builder, &mut recorder];
    if let Some(s) = &mut signatures {
        consumers.push(s);
    }
    let mut watchers = Fanout(watchers);
    consumers.push(&mut watchers);
    if let Ok(e) = &mut events {
        consumers.push(e);
    }
    let mut fanout = Fanout(consumers);
    let mut rcx = RunContext {
        res: parts.res.clone(),
        events: &mut fanout,
        logs: match &mut logs {
            Ok(l) => l,
            Err(_) => &mut sink,
        },
    };
    orchestrator::run_profile(&mut rcx, profile, opts, run_dir).await;
    drop(fanout);
    let mut report = builder.finish();
    report.failures = signatures
        .map(SignatureRecorder::finish)
        .unwrap_or_default();
    let unwritten = [
        match events {
            Ok(e) => e.close().err().map(|e| format!("events file: {e}")),
            Err(e) => Some(format!("events file: {e}")),
        },
        match logs {
            Ok(l) => l.close().err().map(|e| format!("raw log: {e}")),
            Err(e) => Some(format!("raw log: {e}")),
        },
    ];
    for e in unwritten.into_iter().flatten() {
        tracing::error!("profile {}: cannot write its {e}", profile.name);
        if report.error.is_none() {
            report.error = Some(format!("cannot write its {e}"));
        }
    }
    report
}
