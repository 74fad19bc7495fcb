//! `nixtest report merge`: the reports of a partitioned run's shares as one report, every
//! profile once, in the run's order; each share's logs, events and configuration copies come
//! along so that the merged folder reads like one run's.

use super::{LoadError, Report};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("nothing to merge: name the run folders of the shares (each holds a report.json)")]
    Nothing,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{} holds no report.json and no run folders with one", .0.display())]
    NoReport(PathBuf),
    #[error(
        "profile {profile} is in more than one report ({first} and {second}): merge the shares of one run, each once"
    )]
    Twice {
        profile: String,
        first: String,
        second: String,
    },
    #[error("the shares are of different runs: their lists of profiles differ ({0:?} and {1:?})")]
    DifferentRuns(Vec<String>, Vec<String>),
    #[error("the run had {missing:?} too, which no report holds: is a share's report missing?")]
    Missing { missing: Vec<String> },
    #[error("{} already exists in the output; merge into a new folder", .0.display())]
    Exists(PathBuf),
    #[error("copying {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One report of the shares' reports: every profile once (an error names a profile in two
/// reports, or one the run had that no report holds), in the run's order when the shares say
/// it (else in the order given). The run id and start are the earliest share's, the duration
/// the longest share's (shares run at the same time on different machines).
pub fn merge(mut parts: Vec<Report>) -> Result<Report, MergeError> {
    if parts.is_empty() {
        return Err(MergeError::Nothing);
    }
    parts.sort_by(|a, b| a.started.cmp(&b.started).then(a.run_id.cmp(&b.run_id)));
    let order: Option<Vec<String>> = match parts.iter().find_map(|p| p.share.as_ref()) {
        Some(first) => {
            for p in &parts {
                if let Some(s) = &p.share
                    && s.of != first.of
                {
                    return Err(MergeError::DifferentRuns(first.of.clone(), s.of.clone()));
                }
            }
            Some(first.of.clone())
        }
        None => None,
    };
    let (run_id, started) = (parts[0].run_id.clone(), parts[0].started.clone());
    let duration = parts.iter().map(|p| p.duration_ms).max().unwrap_or(0);
    let mut by_name: BTreeMap<String, (String, super::ProfileReport)> = BTreeMap::new();
    let mut given: Vec<String> = Vec::new();
    for part in parts {
        for profile in part.profiles {
            if let Some((first, _)) = by_name.get(&profile.name) {
                return Err(MergeError::Twice {
                    profile: profile.name,
                    first: first.clone(),
                    second: part.run_id,
                });
            }
            given.push(profile.name.clone());
            by_name.insert(profile.name.clone(), (part.run_id.clone(), profile));
        }
    }
    let order = order.unwrap_or(given);
    let missing: Vec<String> = order
        .iter()
        .filter(|n| !by_name.contains_key(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { missing });
    }
    let mut profiles = Vec::with_capacity(order.len());
    for name in &order {
        if let Some((_, p)) = by_name.remove(name) {
            profiles.push(p);
        }
    }
    // A profile the shares' list did not name (a hand-made report) keeps its place at the end.
    profiles.extend(by_name.into_values().map(|(_, p)| p));
    Ok(Report::new(run_id, started, duration, profiles))
}

/// The run folders under `dir`: itself when it holds a report.json, else its subfolders that
/// do (a CI artefact folder holding one share's report folder).
fn run_dirs(dir: &Path) -> Result<Vec<PathBuf>, MergeError> {
    if dir.join("report.json").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| MergeError::Copy {
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(MergeError::NoReport(dir.to_path_buf()));
    }
    Ok(found)
}

/// Merges the run folders (or folders of run folders) `dirs` into `out`: the report files,
/// and each share's `logs/`, `events/` and `config/`.
pub fn merge_dirs(dirs: &[PathBuf], out: &Path) -> Result<Report, MergeError> {
    let mut runs = Vec::new();
    for d in dirs {
        runs.extend(run_dirs(d)?);
    }
    let reports = runs
        .iter()
        .map(|d| Report::load(d))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge(reports)?;
    for run in &runs {
        for sub in ["logs", "events", "config"] {
            copy_tree(&run.join(sub), &out.join(sub))?;
        }
    }
    merged.write(out).map_err(|source| MergeError::Copy {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(merged)
}

/// Copies files (not symlinks) from `from` into `to`, never over an existing file.
fn copy_tree(from: &Path, to: &Path) -> Result<(), MergeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MergeError::Copy { path, source }
    };
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for e in entries.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            if dst.exists() {
                return Err(MergeError::Exists(dst));
            }
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{Partition, Share};

    /// One run of three profiles (the sample's vm profile under three names).
    fn whole() -> Report {
        let sample: Report =
            serde_json::from_str(include_str!("../../tests/fixtures/sample-report.json")).unwrap();
        let mut profiles = Vec::new();
        for (i, name) in ["vm", "workstation", "server"].iter().enumerate() {
            let mut p = sample.profiles[0].clone();
            p.name = name.to_string();
            p.duration_ms += i as u64;
            if i == 1 {
                p.status = crate::report::Status::Failed;
            }
            profiles.push(p);
        }
        Report::new(
            "run-1".into(),
            "2026-11-24T03:06:24Z".into(),
            5_000,
            profiles,
        )
    }

    /// The shares of `whole` as `--partition` would run them.
    fn shares(kind: &str, total: u32) -> Vec<Report> {
        let w = whole();
        let names: Vec<&str> = w.profiles.iter().map(|p| p.name.as_str()).collect();
        (1..=total)
            .map(|shard| {
                let p: Partition = format!("{kind}:{shard}/{total}").parse().unwrap();
                let profiles = p
                    .select(&names)
                    .into_iter()
                    .map(|i| w.profiles[i].clone())
                    .collect();
                let mut r = Report::new(
                    format!("run-{shard}"),
                    format!("2026-11-24T03:06:2{shard}Z"),
                    1_000 * u64::from(shard),
                    profiles,
                );
                r.share = Some(Share {
                    partition: p.to_string(),
                    of: names.iter().map(|n| n.to_string()).collect(),
                });
                r
            })
            .collect()
    }

    #[test]
    fn merged_shares_equal_one_run() {
        let w = whole();
        for (kind, total) in [("hash", 2), ("slice", 2), ("slice", 3), ("hash", 3)] {
            let mut parts = shares(kind, total);
            parts.reverse();
            let m = merge(parts).unwrap();
            assert_eq!(
                serde_json::to_value(&m.profiles).unwrap(),
                serde_json::to_value(&w.profiles).unwrap(),
                "{kind}:{total}"
            );
            assert_eq!(
                serde_json::to_value(&m.summary).unwrap(),
                serde_json::to_value(&w.summary).unwrap()
            );
            assert_eq!(m.run_id, "run-1");
            assert_eq!(m.duration_ms, 1_000 * u64::from(total));
        }
    }

    #[test]
    fn a_missing_or_doubled_share_is_refused() {
        let mut parts = shares("slice", 3);
        parts.remove(1);
        let e = merge(parts).unwrap_err();
        assert!(
            matches!(&e, MergeError::Missing { missing } if missing == &["workstation"]),
            "{e}"
        );
        let mut parts = shares("slice", 2);
        parts.push(parts[0].clone());
        assert!(matches!(merge(parts), Err(MergeError::Twice { .. })));
        assert!(matches!(merge(Vec::new()), Err(MergeError::Nothing)));
    }

    #[test]
    fn merged_folders_carry_every_share_s_files() {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (i, r) in shares("slice", 2).into_iter().enumerate() {
            // As CI artefacts: a folder per share holding its run folder.
            let d = root.path().join(format!("share-{i}")).join(&r.run_id);
            r.write(&d).unwrap();
            for p in &r.profiles {
                std::fs::create_dir_all(d.join("logs")).unwrap();
                std::fs::write(d.join("logs").join(format!("{}.log", p.name)), &p.name).unwrap();
            }
            dirs.push(root.path().join(format!("share-{i}")));
        }
        let out = root.path().join("merged");
        let m = merge_dirs(&dirs, &out).unwrap();
        assert_eq!(m.profiles.len(), 3);
        let back = Report::load(&out).unwrap();
        assert_eq!(back.summary.failed, 1);
        assert!(out.join("junit.xml").is_file() && out.join("report.html").is_file());
        for n in ["vm", "workstation", "server"] {
            assert_eq!(
                std::fs::read_to_string(out.join("logs").join(format!("{n}.log"))).unwrap(),
                n
            );
        }
        let again = merge_dirs(&dirs, &out).unwrap_err();
        assert!(matches!(again, MergeError::Exists(_)), "{again}");
    }
}
