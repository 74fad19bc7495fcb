//! The event model of nixtest.
//!
//! An install prints bytes; this crate turns them into [`Event`]s. [`LineSplitter`] cuts a byte
//! stream into lines the way a terminal shows them (a carriage-return redraw keeps only its last
//! state, over-long lines are cut with a note, invalid UTF-8 is replaced), and [`EventParser`]
//! reads each line's `::KIND::` marker and carries the current phase onto every event.
//! Nothing here panics on any input, and nothing here knows where the bytes come from.

mod category;
mod gate;
mod ingest;
mod parser;
mod sieve;
mod splitter;

pub use category::Category;
pub use gate::Gate;
pub use ingest::{
    Ingest, PatternLimits, Route, Router, Scan, SkipFilter, ends_inside_line, pattern_set,
};
pub use parser::{EventParser, MalformedMarker};
pub use splitter::{Line, LineSplitter};

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a line was: one of the markers, or raw tool output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Phase,
    Success,
    Error,
    Warning,
    Context,
    Progress,
    Metric,
    Raw,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Phase => "phase",
            EventKind::Success => "success",
            EventKind::Error => "error",
            EventKind::Warning => "warning",
            EventKind::Context => "context",
            EventKind::Progress => "progress",
            EventKind::Metric => "metric",
            EventKind::Raw => "raw",
        }
    }
}

/// One line of an install's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The phase in force when the line was printed; empty before the first `::PHASE::`.
    pub phase: Arc<str>,
    /// The text without marker and ANSI escapes.
    pub message: String,
    /// 1-based line number in the log.
    pub line: u32,
    /// Marker fields (`stage`/`details`, `name`/`value`) and notes such as `truncated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

impl Event {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole recorded log (as `nixtest replay` and the SDK's test helper do).
pub fn parse_log(bytes: &[u8]) -> Vec<Event> {
    Ingest::parse_all(bytes)
}
