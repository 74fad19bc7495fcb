//! How well each healing action has worked before, kept across runs in the user's data dir
//! and used to weight the ranking: an action that keeps failing sinks, one that keeps healing
//! rises. Unknown actions weigh 1.0.

use crate::run_event::{Consumer, RunEvent, What};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tally {
    pub applied: u32,
    pub healed: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    actions: BTreeMap<String, Tally>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

fn key(healer: &str, action: &str) -> String {
    format!("{healer}/{action}")
}

impl History {
    /// Loads `DATA/healing-history.json`; a missing or unreadable file starts afresh.
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("healing-history.json");
        let mut h: History = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        h.path = Some(path);
        h
    }

    /// Laplace-smoothed success rate, scaled so that an unknown action weighs 1.0.
    pub fn weight(&self, healer: &str, action: &str) -> f32 {
        let t = self
            .actions
            .get(&key(healer, action))
            .copied()
            .unwrap_or_default();
        2.0 * (t.healed as f32 + 1.0) / (t.applied as f32 + 2.0)
    }

    pub fn record(&mut self, healer: &str, action: &str, healed: bool) {
        let t = self.actions.entry(key(healer, action)).or_default();
        t.applied += 1;
        t.healed += u32::from(healed);
    }

    pub fn tally(&self, healer: &str, action: &str) -> Tally {
        self.actions
            .get(&key(healer, action))
            .copied()
            .unwrap_or_default()
    }

    pub fn save(&self) -> std::io::Result<()> {
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(self).expect("history serialises");
            crate::report::write_atomic(path, &bytes)?;
        }
        Ok(())
    }
}

/// Records, from a run's events, whether each applied action healed, and saves the history
/// when the profile ends.
pub struct HistoryRecorder<'a> {
    history: &'a Mutex<History>,
    /// The applied action waiting for its retry: (healer, action).
    pending: Option<(String, String)>,
}

impl<'a> HistoryRecorder<'a> {
    pub fn new(history: &'a Mutex<History>) -> Self {
        HistoryRecorder {
            history,
            pending: None,
        }
    }

    fn resolve(&mut self, healed: bool) {
        if let Some((healer, action)) = self.pending.take() {
            self.history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&healer, &action, healed);
        }
    }
}

impl Consumer for HistoryRecorder<'_> {
    fn consume(&mut self, e: &RunEvent) {
        match &e.what {
            What::HealingApplied { action, .. } => {
                self.pending = Some((action.healer.clone(), action.name.clone()))
            }
            What::HealingResolved { healed } => self.resolve(*healed),
            What::ProfileFinished { .. } => {
                // An action whose retry never ended did not heal.
                self.resolve(false);
                let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = h.save() {
                    tracing::warn!("cannot save the healing history: {e}");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_track_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(dir.path());
        assert_eq!(h.weight("p", "a"), 1.0);
        h.record("p", "a", true);
        h.record("p", "a", true);
        h.record("p", "b", false);
        h.record("p", "b", false);
        assert!(h.weight("p", "a") > 1.0 && h.weight("p", "b") < 1.0);
        h.save().unwrap();
        let again = History::load(dir.path());
        assert_eq!(
            again.tally("p", "a"),
            Tally {
                applied: 2,
                healed: 2
            }
        );
    }
}
