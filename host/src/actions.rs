//! What healers propose: healing actions with a confidence, guest commands, config changes
//! and a phase to retry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A confidence in 0..=1; anything else a plugin sends is clamped.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Confidence(f32);

impl Confidence {
    pub fn new(value: f32) -> Self {
        if value.is_nan() {
            Confidence(0.0)
        } else {
            Confidence(value.clamp(0.0, 1.0))
        }
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// Relative to the run's configuration copy.
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealingAction {
    /// The plugin that proposed it.
    pub healer: String,
    /// Index of the finding it answers, in the run's finding list.
    pub finding: usize,
    pub name: String,
    pub description: String,
    pub confidence: Confidence,
    pub commands: Vec<String>,
    pub config_changes: Vec<ConfigChange>,
    pub retry_phase: Option<String>,
}
