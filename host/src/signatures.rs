//! Failure signatures across runs. When a phase attempt fails, its signature is the set of
//! templates (`nixtest_miner::mask`: values masked, so other paths, hashes and numbers give the
//! same one) of its decisive lines: the evidence of the attempt's root-cause finding. When no
//! plugin recognised the failure, that finding is the host's own (`fallback`): the failure
//! marker and the lines before it that read most like a cause (error words weighed against calm
//! ones). A recurring unknown failure is therefore seen as one, on any machine, any day.
//!
//! The store is one SQLite file under the user's data dir. Writers from several processes
//! (`--parallel`, two `nixtest test` at once) take turns through SQLite's own locking (WAL,
//! a busy timeout, one short transaction per failure). A file that is not a readable database
//! is moved aside with a message and a new one started; nothing else is lost.

use crate::findings::FindingRef;
use crate::run_event::{Consumer, RunEvent, What};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use thiserror::Error;

/// Text kept per example line, and lines per example.
const EXAMPLE_LINE: usize = 300;
const EXAMPLE_LINES: usize = 8;
/// Examples kept per signature (the first ones and the latest).
const EXAMPLES_KEPT: i64 = 20;
/// Lines of the stream the recorder remembers to find evidence text.
const WINDOW: usize = 4096;
/// How long a writer waits for another to finish.
const BUSY: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum DbError {
    #[error("the failure database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot set the damaged failure database {} aside: {source}", path.display())]
    SetAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A failure's identity: its decisive lines' templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// The first 12 hex digits of the templates' SHA-256.
    pub id: String,
    /// Sorted, without repeats.
    pub templates: Vec<String>,
}

impl Signature {
    /// The signature of these lines; none when they hold nothing to go by.
    pub fn of_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Signature> {
        let templates: BTreeSet<String> = lines
            .into_iter()
            .map(nixtest_miner::mask)
            .filter(|t| !t.trim().is_empty())
            .collect();
        if templates.is_empty() {
            return None;
        }
        let templates: Vec<String> = templates.into_iter().collect();
        let digest = Sha256::digest(templates.join("\n").as_bytes());
        Some(Signature {
            id: hex::encode(digest)[..12].to_string(),
            templates,
        })
    }
}

/// One time a signature was seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occurrence {
    pub run_id: String,
    pub profile: String,
    pub phase: String,
    /// RFC 3339.
    pub time: String,
    /// The category of the finding, when a plugin recognised the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The decisive lines as printed (bounded).
    pub example: String,
}

/// How often a signature has been seen, after recording one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub times: u64,
    pub runs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub id: String,
    pub templates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub times: u64,
    pub runs: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub summary: Summary,
    /// The latest first.
    pub occurrences: Vec<Occurrence>,
}

pub struct FailureDb {
    conn: Connection,
    path: PathBuf,
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

impl FailureDb {
    /// `DATA/failures.db`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("failures.db")
    }

    /// Opens (or creates) the database. A damaged file is moved aside and a new one
    /// started; the second value says where the old one went.
    pub fn open(path: &Path) -> Result<(FailureDb, Option<PathBuf>), DbError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match Self::open_as_is(path) {
            Ok(db) => Ok((db, None)),
            Err(DbError::Sqlite { source, .. }) if is_damage(&source) => {
                let aside = path.with_extension(format!(
                    "db.damaged-{}",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string()
                        .replace(':', "")
                ));
                std::fs::rename(path, &aside).map_err(|source| DbError::SetAside {
                    path: path.to_path_buf(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(side));
                }
                tracing::warn!(
                    "the failure database {} was damaged; it is kept as {} and a new one started",
                    path.display(),
                    aside.display()
                );
                Ok((Self::open_as_is(path)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    fn open_as_is(path: &Path) -> Result<FailureDb, DbError> {
        let err = |source| DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY).map_err(err)?;
        // Reading the schema is the first thing that notices a file that is no database.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS signatures (
                 id TEXT PRIMARY KEY,
                 templates TEXT NOT NULL,
                 category TEXT,
                 first_seen TEXT NOT NULL,
                 last_seen TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS occurrences (
                 signature TEXT NOT NULL REFERENCES signatures(id),
                 run_id TEXT NOT NULL,
                 profile TEXT NOT NULL,
                 phase TEXT NOT NULL,
                 time TEXT NOT NULL,
                 category TEXT,
                 example TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS occurrences_by_signature ON occurrences(signature);",
        )
        .map_err(err)?;
        Ok(FailureDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records one occurrence; returns how often the signature has been seen now.
    pub fn record(&mut self, sig: &Signature, occ: &Occurrence) -> Result<Seen, DbError> {
        let path = self.path.clone();
        let err = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let templates = serde_json::to_string(&sig.templates).expect("strings serialise");
        tx.execute(
            "INSERT INTO signatures (id, templates, category, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(id) DO UPDATE SET last_seen = ?4,
                 category = COALESCE(signatures.category, ?3)",
            params![sig.id, templates, occ.category, occ.time],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO occurrences (signature, run_id, profile, phase, time, category, example)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                sig.id,
                occ.run_id,
                occ.profile,
                occ.phase,
                occ.time,
                occ.category,
                occ.example
            ],
        )
        .map_err(err)?;
        // Examples stay bounded: the first ones and the latest, counted apart.
        tx.execute(
            "UPDATE occurrences SET example = '' WHERE signature = ?1 AND rowid NOT IN (
                 SELECT rowid FROM occurrences WHERE signature = ?1
                 ORDER BY rowid DESC LIMIT ?2)
               AND rowid NOT IN (
                 SELECT rowid FROM occurrences WHERE signature = ?1
                 ORDER BY rowid ASC LIMIT ?2)",
            params![sig.id, EXAMPLES_KEPT / 2],
        )
        .map_err(err)?;
        let seen = tx
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM occurrences WHERE signature = ?1",
                params![sig.id],
                |r| {
                    Ok(Seen {
                        times: r.get::<_, i64>(0)? as u64,
                        runs: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(seen)
    }

    fn summaries(&self, only: Option<&str>) -> Result<Vec<Summary>, DbError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.id, s.templates, s.category, s.first_seen, s.last_seen,
                        COUNT(o.rowid), COUNT(DISTINCT o.run_id)
                 FROM signatures s LEFT JOIN occurrences o ON o.signature = s.id
                 WHERE ?1 IS NULL OR s.id = ?1
                 GROUP BY s.id
                 ORDER BY COUNT(o.rowid) DESC, s.last_seen DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![only], |r| {
                let templates: String = r.get(1)?;
                Ok(Summary {
                    id: r.get(0)?,
                    templates: serde_json::from_str(&templates).unwrap_or_default(),
                    category: r.get(2)?,
                    first_seen: r.get(3)?,
                    last_seen: r.get(4)?,
                    times: r.get::<_, i64>(5)? as u64,
                    runs: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every signature, the most frequent first (then the most recent).
    pub fn list(&self) -> Result<Vec<Summary>, DbError> {
        self.summaries(None)
    }

    /// One signature with its occurrences, the latest first.
    pub fn show(&self, id: &str) -> Result<Option<Detail>, DbError> {
        let Some(summary) = self.summaries(Some(id))?.into_iter().next() else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, profile, phase, time, category, example FROM occurrences
                 WHERE signature = ?1 ORDER BY rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let occurrences = stmt
            .query_map(params![id], |r| {
                Ok(Occurrence {
                    run_id: r.get(0)?,
                    profile: r.get(1)?,
                    phase: r.get(2)?,
                    time: r.get(3)?,
                    category: r.get(4)?,
                    example: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(Some(Detail {
            summary,
            occurrences,
        }))
    }

    /// Whether a signature is known (for `plugin new --from-failure`).
    pub fn exists(&self, id: &str) -> Result<bool, DbError> {
        self.conn
            .query_row(
                "SELECT 1 FROM signatures WHERE id = ?1",
                params![id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }
}

/// A failure as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FailureSeen {
    pub phase: String,
    pub attempt: u32,
    pub signature: String,
    /// The finding's category, when a plugin recognised it (`other` is nixtest's own).
    pub category: String,
    pub times: u64,
    pub runs: u64,
}

impl FailureSeen {
    /// "phase install (attempt 1): not recognised by any plugin; signature S, seen N times in
    /// M runs".
    pub fn describe(&self) -> String {
        let what = if self.category == "other" {
            "not recognised by any plugin".to_string()
        } else {
            self.category.clone()
        };
        format!(
            "phase {} (attempt {}): {what}; signature {}, seen {} time{} in {} run{}",
            self.phase,
            self.attempt,
            self.signature,
            self.times,
            if self.times == 1 { "" } else { "s" },
            self.runs,
            if self.runs == 1 { "" } else { "s" },
        )
    }
}

/// The bounded text of the decisive lines.
pub fn example(lines: &[&str]) -> String {
    lines
        .iter()
        .take(EXAMPLE_LINES)
        .map(|l| crate::term::clip(l, EXAMPLE_LINE))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records each failed phase attempt's signature as the run goes (a consumer of its events).
pub struct SignatureRecorder {
    db: Arc<Mutex<FailureDb>>,
    run_id: String,
    /// The last lines seen, for the text of evidence lines.
    window: VecDeque<(u32, String)>,
    seen: Vec<FailureSeen>,
    /// A database error is reported once; the run goes on.
    broken: bool,
}

impl SignatureRecorder {
    pub fn new(db: Arc<Mutex<FailureDb>>, run_id: &str) -> Self {
        SignatureRecorder {
            db,
            run_id: run_id.to_string(),
            window: VecDeque::with_capacity(WINDOW),
            seen: Vec::new(),
            broken: false,
        }
    }

    /// What was recorded, in order.
    pub fn finish(self) -> Vec<FailureSeen> {
        self.seen
    }

    fn text(&self, line: u32) -> Option<&str> {
        self.window
            .iter()
            .rev()
            .find(|(l, _)| *l == line)
            .map(|(_, t)| t.as_str())
    }

    fn failed(&mut self, e: &RunEvent, phase: &str, attempt: u32, finding: &FindingRef) {
        let lines: Vec<&str> = finding.lines.iter().filter_map(|l| self.text(*l)).collect();
        let Some(sig) = Signature::of_lines(lines.iter().copied()) else {
            return;
        };
        let occ = Occurrence {
            run_id: self.run_id.clone(),
            profile: e.profile.clone(),
            phase: phase.to_string(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            category: Some(finding.category.to_string()),
            example: example(&lines),
        };
        let result = self
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&sig, &occ);
        match result {
            Ok(seen) => self.seen.push(FailureSeen {
                phase: phase.to_string(),
                attempt,
                signature: sig.id,
                category: finding.category.to_string(),
                times: seen.times,
                runs: seen.runs,
            }),
            Err(err) if !self.broken => {
                self.broken = true;
                tracing::error!("failure signatures are not recorded for this run: {err}");
            }
            Err(_) => {}
        }
    }
}

impl Consumer for SignatureRecorder {
    fn consume(&mut self, e: &RunEvent) {
        match &e.what {
            What::Line { line } => {
                if self.window.len() == WINDOW {
                    self.window.pop_front();
                }
                self.window
                    .push_back((line.line, crate::term::clip(&line.message, 1024)));
            }
            What::Failure {
                phase,
                attempt,
                finding: Some(finding),
            } => self.failed(e, phase, *attempt, finding),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(run: &str) -> Occurrence {
        Occurrence {
            run_id: run.into(),
            profile: "vm".into(),
            phase: "install".into(),
            time: "2026-11-24T12:00:00Z".into(),
            category: None,
            example: "x".into(),
        }
    }

    #[test]
    fn the_same_failure_with_other_values_has_one_signature() {
        let a = Signature::of_lines([
            "error: cannot open '/nix/store/abc123-foo/lib/x.so': No such file (errno 2)",
            "install failed with exit code 1",
        ])
        .unwrap();
        let b = Signature::of_lines([
            "error: cannot open '/nix/store/zz9-bar/lib/y.so': No such file (errno 2)",
            "install failed with exit code 7",
        ])
        .unwrap();
        let c = Signature::of_lines(["error: disk /dev/sdz not found"]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.id, c.id);
        assert!(Signature::of_lines(["", "   "]).is_none());
    }

    #[test]
    fn recording_counts_times_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, aside) = FailureDb::open(&dir.path().join("f.db")).unwrap();
        assert!(aside.is_none());
        let sig = Signature::of_lines(["boom 1"]).unwrap();
        assert_eq!(
            db.record(&sig, &occ("r1")).unwrap(),
            Seen { times: 1, runs: 1 }
        );
        assert_eq!(
            db.record(&sig, &occ("r1")).unwrap(),
            Seen { times: 2, runs: 1 }
        );
        assert_eq!(
            db.record(&sig, &occ("r2")).unwrap(),
            Seen { times: 3, runs: 2 }
        );
        let list = db.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].templates, ["boom <*>"]);
        let detail = db.show(&sig.id).unwrap().unwrap();
        assert_eq!(detail.occurrences.len(), 3);
        assert_eq!(detail.occurrences[0].run_id, "r2");
        assert!(db.show("nope").unwrap().is_none());
    }

    #[test]
    fn a_damaged_database_is_set_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        std::fs::write(
            &path,
            b"this is not a database, just some bytes .................",
        )
        .unwrap();
        let (mut db, aside) = FailureDb::open(&path).unwrap();
        let aside = aside.expect("set aside");
        assert!(aside.exists());
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b"this is not a database, just some bytes ................."
        );
        let sig = Signature::of_lines(["x"]).unwrap();
        assert_eq!(db.record(&sig, &occ("r")).unwrap().times, 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        FailureDb::open(&path).unwrap();
        let sig = Signature::of_lines(["shared failure 42"]).unwrap();
        std::thread::scope(|s| {
            for w in 0..4 {
                let (path, sig) = (&path, &sig);
                s.spawn(move || {
                    // Each writer has its own connection, as two processes would.
                    let (mut db, _) = FailureDb::open(path).unwrap();
                    for i in 0..25 {
                        db.record(sig, &occ(&format!("w{w}-{i}"))).unwrap();
                    }
                });
            }
        });
        let (db, _) = FailureDb::open(&path).unwrap();
        let list = db.list().unwrap();
        assert_eq!((list[0].times, list[0].runs), (100, 100));
    }
}
