//! The dashboard's pages, rendered on the server: the runs, one run, the failure signatures.

use super::Dashboard;
use super::live::LiveRun;
use super::view::{self, ProfileView, TAIL};
use crate::report::{Outcome, Report, esc};
use crate::run_event::RunEvent;
use crate::signatures::FailureDb;
use std::fmt::Write;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Past runs listed on the runs page (the newest).
const MAX_RUNS: usize = 200;
/// How much of the end of an events file a past run's log tail is read from.
const TAIL_BYTES: u64 = 4 << 20;

pub fn layout(title: &str, body: &str, live: Option<&str>) -> String {
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\"></head><body><nav><a href=\"/\">runs</a> <a href=\"/failures\">failures</a></nav>{body}",
        esc(title)
    );
    if let Some(url) = live {
        let _ = write!(
            h,
            "<script src=\"/assets/dashboard.js\" data-live=\"{}\" data-tail=\"{TAIL}\"></script>",
            esc(url)
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// One row of the runs page.
struct Row {
    id: String,
    status: String,
    profiles: Vec<String>,
    started: String,
    duration_ms: Option<u64>,
    healing: Option<(u32, u32)>,
    live: bool,
}

pub fn runs(d: &Dashboard) -> String {
    let live = d.live_runs();
    let mut rows: Vec<Row> = live
        .iter()
        .map(|r| Row {
            id: r.id.clone(),
            status: r.status_word().into(),
            profiles: r.profile_names(),
            started: r.started.clone(),
            duration_ms: None,
            healing: None,
            live: true,
        })
        .collect();
    let mut past: Vec<String> = std::fs::read_dir(&d.report_dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| view::safe_component(n) && !live.iter().any(|r| &r.id == n))
                .collect()
        })
        .unwrap_or_default();
    past.sort_unstable_by(|a, b| b.cmp(a));
    for id in past.into_iter().take(MAX_RUNS) {
        let Some(dir) = d.run_dir(&id) else { continue };
        rows.push(match Report::load(&dir) {
            Ok(r) => Row {
                profiles: r.profiles.iter().map(|p| p.name.clone()).collect(),
                status: run_status(&r).into(),
                started: r.started.clone(),
                duration_ms: Some(r.duration_ms),
                healing: Some(healing_counts(&r)),
                live: false,
                id,
            },
            Err(_) if dir.join("events").is_dir() => Row {
                profiles: profiles_in(&dir),
                status: "incomplete".into(),
                started: String::new(),
                duration_ms: None,
                healing: None,
                live: false,
                id,
            },
            Err(_) => continue,
        });
    }
    let mut h = String::from("<h1>nixtest runs</h1>");
    if rows.is_empty() {
        let _ = write!(
            h,
            "<p>no runs in {} yet: <code>nixtest test --serve</code> shows one as it goes</p>",
            esc(&d.report_dir.display().to_string())
        );
    } else {
        h.push_str("<table class=\"runs\"><tr><th>run</th><th>status</th><th>profiles</th><th>started</th><th>duration</th><th>healing</th></tr>");
        for r in &rows {
            let _ = write!(
                h,
                "<tr class=\"run{}\"><td><a href=\"/runs/{}\">{}</a>{}</td><td><span class=\"badge {s}\">{s}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if r.live { " live" } else { "" },
                esc(&r.id),
                esc(&r.id),
                if r.live { " <b>live</b>" } else { "" },
                esc(&r.profiles.join(", ")),
                esc(&r.started),
                r.duration_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                r.healing
                    .map(|(a, ok)| format!("{a} attempts, {ok} healed"))
                    .unwrap_or_default(),
                s = esc(&r.status),
            );
        }
        h.push_str("</table>");
    }
    layout("nixtest runs", &h, None)
}

fn run_status(r: &Report) -> &'static str {
    if r.summary.errors > 0 {
        "error"
    } else if r.summary.failed > 0 {
        "failed"
    } else {
        "passed"
    }
}

fn healing_counts(r: &Report) -> (u32, u32) {
    let healed = r
        .profiles
        .iter()
        .flat_map(|p| &p.healing)
        .filter(|h| h.outcome == Outcome::Healed)
        .count() as u32;
    (r.summary.healing_attempts, healed)
}

fn profiles_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("events"))
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".jsonl"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn live_run(run: &LiveRun) -> String {
    let status = run.status_word();
    let body = format!(
        "<h1>run {} <span id=\"run-status\" class=\"badge {status}\">{status}</span></h1><p class=\"muted\">started {} · live</p><div id=\"profiles\">{}</div>",
        esc(&run.id),
        esc(&run.started),
        run.sections()
    );
    layout(
        &format!("nixtest {}", run.id),
        &body,
        Some(&format!("/runs/{}/live", run.id)),
    )
}

/// A finished run from its report.json, with each profile's log tail from its events file;
/// a run without report.json (interrupted, or running in another process) from its events.
pub fn past_run(id: &str, dir: &Path) -> String {
    let report = Report::load(dir);
    let mut body = String::new();
    let mut incomplete = false;
    match &report {
        Ok(r) => {
            let s = run_status(r);
            let (attempts, healed) = healing_counts(r);
            let _ = write!(
                body,
                "<h1>run {} <span id=\"run-status\" class=\"badge {s}\">{s}</span></h1><p class=\"muted\">started {} · {:.1} s · {} passed, {} failed, {} errors · {attempts} healing attempts, {healed} healed · <a href=\"/runs/{id}/files/report.json\">report.json</a> · <a href=\"/runs/{id}/files/junit.xml\">junit.xml</a> · <a href=\"/runs/{id}/files/report.html\">report.html</a></p><div id=\"profiles\">",
                esc(id),
                esc(&r.started),
                r.duration_ms as f64 / 1000.0,
                r.summary.passed,
                r.summary.failed,
                r.summary.errors,
            );
            for (i, p) in r.profiles.iter().enumerate() {
                let mut v = ProfileView::from_report(p);
                if view::safe_component(&p.name)
                    && let Some(t) =
                        events_tail(&dir.join("events").join(format!("{}.jsonl", p.name)))
                {
                    v.take_tail(t);
                }
                body.push_str(&view::profile_section(id, i, &v));
            }
        }
        Err(e) => {
            incomplete = true;
            let _ = write!(
                body,
                "<h1>run {} <span id=\"run-status\" class=\"badge incomplete\">incomplete</span></h1><p class=\"muted\">no report yet ({}): the run is going on in another process, or it was interrupted. This page reloads every 5 s.</p><div id=\"profiles\">",
                esc(id),
                esc(&e.to_string())
            );
            for (i, name) in profiles_in(dir).iter().enumerate() {
                if let Some(v) =
                    events_whole(&dir.join("events").join(format!("{name}.jsonl")), name)
                {
                    body.push_str(&view::profile_section(id, i, &v));
                }
            }
        }
    }
    body.push_str("</div>");
    let mut page = layout(&format!("nixtest {id}"), &body, None);
    if incomplete {
        page = page.replacen(
            "<meta charset=\"utf-8\">",
            "<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">",
            1,
        );
    }
    page
}

/// The log tail of a profile from the end of its events file (and its start time from the
/// first event): bounded reading whatever the file's size.
fn events_tail(path: &Path) -> Option<ProfileView> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut v = ProfileView::new("");
    let mut first = String::new();
    BufReader::new((&mut f).take(64 << 10))
        .read_line(&mut first)
        .ok()?;
    if let Ok(e) = serde_json::from_str::<RunEvent>(&first) {
        v.apply(&e);
    }
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut reader = BufReader::new(f);
    if from > 0 {
        // The first line read is a part of one.
        let mut skip = Vec::new();
        reader.read_until(b'\n', &mut skip).ok()?;
    }
    for l in reader.lines().map_while(Result::ok) {
        if let Ok(e) = serde_json::from_str::<RunEvent>(&l)
            && matches!(e.what, crate::run_event::What::Line { .. })
        {
            v.apply(&e);
        }
    }
    Some(v)
}

/// A profile from its whole events file (a run without a report).
fn events_whole(path: &Path, name: &str) -> Option<ProfileView> {
    let f = std::fs::File::open(path).ok()?;
    let mut v = ProfileView::new(name);
    for l in BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(e) = serde_json::from_str::<RunEvent>(&l) {
            v.apply(&e);
        }
    }
    Some(v)
}

pub fn failures(d: &Dashboard) -> String {
    let mut h = String::from("<h1>Failure signatures</h1>");
    let path = d.data_dir.as_deref().map(FailureDb::path_in);
    let list = match &path {
        Some(p) if p.is_file() => FailureDb::open(p)
            .and_then(|(db, _)| db.list())
            .map_err(|e| e.to_string()),
        _ => Ok(Vec::new()),
    };
    match list {
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"error\">cannot read the failure database: {}</p>",
                esc(&e)
            );
        }
        Ok(list) if list.is_empty() => h.push_str(
            "<p>no failures recorded yet (<code>nixtest test</code> and <code>nixtest replay --learn</code> record them)</p>",
        ),
        Ok(list) => {
            h.push_str("<table class=\"failures\"><tr><th>signature</th><th>category</th><th>times</th><th>runs</th><th>last seen</th><th>templates</th></tr>");
            for s in list.iter().take(MAX_RUNS) {
                let _ = write!(
                    h,
                    "<tr class=\"failure\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                    esc(&s.id),
                    esc(s.category.as_deref().unwrap_or("-")),
                    s.times,
                    s.runs,
                    esc(&s.last_seen),
                    esc(&s.templates.iter().take(3).cloned().collect::<Vec<_>>().join("\n"))
                );
            }
            h.push_str("</table>");
        }
    }
    layout("nixtest failures", &h, None)
}
