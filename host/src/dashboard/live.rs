//! A run in progress, as pages see it: every profile's view, kept current by the run's events
//! (a [`Consumer`]), and a broadcast of what changed, rendered once for every open page.
//!
//! The run never waits for a page: an event takes a short lock, renders the part it changed
//! and hands it to a bounded broadcast channel, which drops the oldest messages of a page
//! that does not keep up; that page's stream then ends and its browser reconnects, catching
//! up from a fresh snapshot (the snapshot and the subscription are taken under one lock, so
//! nothing is missed or doubled).

use super::view::{self, Change, ProfileView};
use crate::report::{Status, esc};
use crate::run_event::{Consumer, RunEvent};
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::broadcast;

/// Messages a page may fall behind by before it is dropped.
const BACKLOG: usize = 2_048;
/// A running profile's summary (its growing timeline) is sent again at most this often
/// while only lines arrive.
const SUMMARY_EVERY_MS: u64 = 1_000;

pub struct LiveRun {
    pub id: String,
    pub started: String,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<str>>,
}

struct Inner {
    profiles: Vec<(ProfileView, u64)>,
    /// Set when the whole run has ended.
    ended: Option<Status>,
}

/// What a page gets when it subscribes: everything so far, then every change.
pub struct Subscription {
    /// A `snapshot` message: the whole run as it is now.
    pub snapshot: String,
    pub rx: broadcast::Receiver<Arc<str>>,
    /// The run had already ended: nothing more will come.
    pub ended: bool,
}

impl LiveRun {
    pub fn new(id: &str, started: &str) -> Arc<Self> {
        Arc::new(LiveRun {
            id: id.to_string(),
            started: started.to_string(),
            inner: Mutex::new(Inner {
                profiles: Vec::new(),
                ended: None,
            }),
            tx: broadcast::channel(BACKLOG).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A consumer of one profile's events (each profile's thread holds its own).
    pub fn feed(self: &Arc<Self>) -> Feed {
        Feed(self.clone())
    }

    /// Renders and sends a message, only when a page is listening (rendering is the cost).
    fn send(&self, msg: impl FnOnce() -> serde_json::Value) {
        if self.tx.receiver_count() > 0 {
            // A page that went away in between is fine.
            let _ = self.tx.send(Arc::from(msg().to_string()));
        }
    }

    fn apply(&self, e: &RunEvent) {
        let mut inner = self.lock();
        let i = match inner.profiles.iter().position(|(p, _)| p.name == e.profile) {
            Some(i) => i,
            None => {
                inner.profiles.push((ProfileView::new(&e.profile), 0));
                let i = inner.profiles.len() - 1;
                let v = &inner.profiles[i].0;
                self.send(|| json!({"t": "add", "html": view::profile_section(&self.id, i, v)}));
                i
            }
        };
        let (v, summary_at) = &mut inner.profiles[i];
        let change = v.apply(e);
        let summary = match &change {
            Change::None => false,
            Change::Line => {
                let l = v.tail.back().expect("a line was just added");
                self.send(|| {
                    json!({
                        "t": "line",
                        "p": i,
                        "n": l.n,
                        "h": v.epoch_ms.map(|s| s + l.at_ms),
                        "total": v.lines,
                        "html": view::line(l, v.epoch_ms, v.marked.contains(&l.n)),
                    })
                });
                v.status.is_none() && v.now_ms >= *summary_at + SUMMARY_EVERY_MS
            }
            Change::Summary => true,
            Change::Marked(lines) => {
                if !lines.is_empty() {
                    self.send(|| json!({"t": "mark", "p": i, "lines": lines}));
                }
                true
            }
        };
        if summary {
            *summary_at = v.now_ms;
            self.send(|| json!({"t": "sum", "p": i, "html": view::summary(i, v)}));
        }
    }

    /// The whole run has ended: pages show its status and stop listening.
    pub fn finish(&self, status: Status) {
        let mut inner = self.lock();
        inner.ended = Some(status);
        self.send(|| json!({"t": "end", "status": status.as_str()}));
    }

    pub fn status_word(&self) -> &'static str {
        self.lock().ended.map_or("running", Status::as_str)
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.lock()
            .profiles
            .iter()
            .map(|(p, _)| p.name.clone())
            .collect()
    }

    /// Every profile's section as it is now.
    pub fn sections(&self) -> String {
        let inner = self.lock();
        sections(&self.id, &inner)
    }

    pub fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        let status = inner.ended.map_or("running", Status::as_str);
        Subscription {
            snapshot:
                json!({"t": "snapshot", "status": status, "html": sections(&self.id, &inner)})
                    .to_string(),
            rx: self.tx.subscribe(),
            ended: inner.ended.is_some(),
        }
    }
}

fn sections(run: &str, inner: &Inner) -> String {
    let mut h = String::new();
    for (i, (p, _)) in inner.profiles.iter().enumerate() {
        h.push_str(&view::profile_section(run, i, p));
    }
    if h.is_empty() {
        h = format!(
            "<p class=\"muted\" id=\"waiting\">run {} is starting…</p>",
            esc(run)
        );
    }
    h
}

/// One profile's events into a live run.
#[derive(Clone)]
pub struct Feed(Arc<LiveRun>);

impl Consumer for Feed {
    fn consume(&mut self, event: &RunEvent) {
        self.0.apply(event);
    }
}

/// Whether a message ends the stream of a page. (Inside a JSON string every quote is
/// escaped, so only the message's own `t` field can match.)
pub fn is_end(msg: &str) -> bool {
    msg.contains(r#""t":"end""#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_event::What;
    use nixtest_events::{Event, EventKind};

    fn line(n: u32) -> RunEvent {
        RunEvent {
            at_ms: u64::from(n),
            profile: "vm".into(),
            what: What::Line {
                line: Event {
                    kind: EventKind::Raw,
                    phase: "p".into(),
                    message: format!("line {n}"),
                    line: n,
                    fields: Vec::new(),
                },
            },
        }
    }

    #[test]
    fn a_subscriber_gets_the_snapshot_then_every_change_once() {
        let run = LiveRun::new("r1", "now");
        let mut feed = run.feed();
        feed.consume(&line(1));
        let mut sub = run.subscribe();
        assert!(sub.snapshot.contains("line 1"));
        assert!(!sub.ended);
        feed.consume(&line(2));
        run.finish(Status::Passed);
        let m = sub.rx.try_recv().unwrap();
        assert!(m.contains("line 2") && !m.contains("line 1"), "{m}");
        let m = sub.rx.try_recv().unwrap();
        assert!(is_end(&m), "{m}");
        assert!(run.subscribe().ended);
    }

    #[test]
    fn a_page_that_falls_behind_is_dropped_and_the_run_goes_on() {
        let run = LiveRun::new("r1", "now");
        let mut feed = run.feed();
        let mut slow = run.subscribe();
        // The run does not wait: many more messages than the backlog go out at once.
        for n in 1..=(BACKLOG as u32 * 3) {
            feed.consume(&line(n));
        }
        assert!(matches!(
            slow.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        // A new subscription catches up from the snapshot (bounded by the tail).
        let again = run.subscribe();
        assert!(again.snapshot.contains(&format!("line {}", BACKLOG * 3)));
        assert!(again.snapshot.len() < 100_000);
    }
}
