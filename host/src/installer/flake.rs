//! The user's flake as the thing to install (`--flake PATH#HOST`): checked on the host with
//! real Nix before any VM starts, then its files are the run's configuration copy, uploaded
//! into the guest, where `disko --flake` and `nixos-install --flake` use it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use thiserror::Error;

/// Where the flake's copy lives in the guest: the run's configuration copy.
pub const GUEST_FLAKE: &str = crate::config_copy::GUEST_CONFIG;

/// Bounds on what is copied into the guest (and kept in the run folder).
const MAX_FILES: usize = 2000;
const MAX_BYTES: u64 = 32 << 20;

#[derive(Debug, Error)]
pub enum FlakeError {
    #[error("--flake {0:?}: expected PATH#HOST, e.g. ./my-config#myhost")]
    BadRef(String),
    #[error("--flake {spec:?}: {dir} has no flake.nix")]
    NoFlake { spec: String, dir: PathBuf },
    #[error(
        "--flake {spec:?}: the host name {host:?} may hold only letters, digits, `-`, `_` and `.` \
         (at most 64, not starting with `.` or `-`)"
    )]
    BadHost { spec: String, host: String },
    #[error(
        "checking the flake needs Nix on this machine (`apt-get install nix-bin` on Debian, \
         or the Nix installer): {0}"
    )]
    NixMissing(std::io::Error),
    #[error(
        "the flake at {dir} has inputs that cannot be fetched from here:\n{detail}\nnixtest \
         evaluates the flake on the host before any VM starts; make its inputs reachable (a \
         network that reaches them, or inputs that are local paths or already in the Nix \
         store, e.g. `nix flake archive` on a machine that can fetch them)"
    )]
    Inputs { dir: PathBuf, detail: String },
    #[error("the flake at {dir} does not evaluate:\n{detail}")]
    Eval { dir: PathBuf, detail: String },
    #[error(
        "the flake at {dir} has no nixosConfigurations.{host}; it has: {}",
        if hosts.is_empty() { "none".to_string() } else { hosts.join(", ") }
    )]
    MissingHost {
        dir: PathBuf,
        host: String,
        hosts: Vec<String>,
    },
    #[error("the flake at {dir}: {reason}")]
    Files { dir: PathBuf, reason: String },
}

/// `PATH#HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    /// The flake's folder, absolute.
    pub dir: PathBuf,
    pub host: String,
    /// As the user wrote it, for messages and the report.
    pub spec: String,
}

impl FromStr for FlakeRef {
    type Err = FlakeError;

    fn from_str(spec: &str) -> Result<Self, FlakeError> {
        let (path, host) = spec
            .rsplit_once('#')
            .filter(|(p, h)| !p.is_empty() && !h.is_empty())
            .ok_or_else(|| FlakeError::BadRef(spec.to_string()))?;
        // The host goes into the guest's commands: plain names only.
        // It also names the run's files (logs/HOST.log): never `..` or a hidden name.
        if host.len() > 64
            || host.starts_with(['.', '-'])
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(FlakeError::BadHost {
                spec: spec.to_string(),
                host: host.to_string(),
            });
        }
        let path = path.strip_prefix("path:").unwrap_or(path);
        let dir = std::path::absolute(Path::new(path)).map_err(|_| FlakeError::NoFlake {
            spec: spec.to_string(),
            dir: PathBuf::from(path),
        })?;
        if !dir.join("flake.nix").is_file() {
            return Err(FlakeError::NoFlake {
                spec: spec.to_string(),
                dir,
            });
        }
        Ok(FlakeRef {
            dir,
            host: host.to_string(),
            spec: spec.to_string(),
        })
    }
}

impl FlakeRef {
    /// `nix … eval` with flakes enabled (Nix 2.4 to 2.19 need them as an experimental
    /// feature), never writing a lock file into the user's folder. `path:` reads the folder as
    /// it is, tracked by git or not, which is also what is copied into the guest.
    fn nix_eval(&self, attr: &str, apply: Option<&str>) -> Result<String, FlakeError> {
        let mut cmd = Command::new("nix");
        cmd.args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--no-write-lock-file",
        ])
        .arg(format!("path:{}#{attr}", self.dir.display()));
        if let Some(f) = apply {
            cmd.args(["--apply", f]);
        }
        // A machine without Nix's build users still evaluates: the warning is noise.
        cmd.env("NIX_CONFIG", "build-users-group =");
        let out = cmd.output().map_err(FlakeError::NixMissing)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let detail = error_lines(&stderr);
            return Err(if fetch_failed(&stderr) {
                FlakeError::Inputs {
                    dir: self.dir.clone(),
                    detail,
                }
            } else {
                FlakeError::Eval {
                    dir: self.dir.clone(),
                    detail,
                }
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The names under `nixosConfigurations`.
    pub fn hosts(&self) -> Result<Vec<String>, FlakeError> {
        let json = self.nix_eval("nixosConfigurations", Some("builtins.attrNames"))?;
        serde_json::from_str(&json).map_err(|e| FlakeError::Eval {
            dir: self.dir.clone(),
            detail: format!("nixosConfigurations' names are not a list of strings: {e}"),
        })
    }

    /// The flake evaluates and has the host.
    pub fn check(&self) -> Result<(), FlakeError> {
        let hosts = self.hosts()?;
        if !hosts.iter().any(|h| h == &self.host) {
            return Err(FlakeError::MissingHost {
                dir: self.dir.clone(),
                host: self.host.clone(),
                hosts,
            });
        }
        Ok(())
    }

    /// `networking.hostName` of the host, when it evaluates (for the check after the reboot).
    pub fn host_name(&self) -> Option<String> {
        let json = self
            .nix_eval(
                &format!(
                    "nixosConfigurations.{}.config.networking.hostName",
                    self.host
                ),
                None,
            )
            .ok()?;
        serde_json::from_str::<String>(&json)
            .ok()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    }

    /// The flake's text files, relative to its folder, for the run's copy: no links (they
    /// could pull any host file into the guest), nothing under `.git` or a `result` link, and
    /// bounded in count and size.
    pub fn files(&self) -> Result<Vec<(String, String)>, FlakeError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut stack = vec![PathBuf::new()];
        let err = |reason: String| FlakeError::Files {
            dir: self.dir.clone(),
            reason,
        };
        while let Some(rel) = stack.pop() {
            let dir = self.dir.join(&rel);
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| err(format!("reading {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| err(e.to_string()))?;
                let name = entry.file_name();
                let rel = rel.join(&name);
                let ty = entry.file_type().map_err(|e| err(e.to_string()))?;
                if name == ".git" || ty.is_symlink() {
                    // `result` links from `nix build` and other links are left out.
                    continue;
                }
                if ty.is_dir() {
                    stack.push(rel);
                    continue;
                }
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                total += len;
                if out.len() >= MAX_FILES || total > MAX_BYTES {
                    return Err(err(format!(
                        "more than {MAX_FILES} files or {} MiB; nixtest copies the flake's \
                         folder into the guest, so point --flake at the configuration's own \
                         folder",
                        MAX_BYTES >> 20
                    )));
                }
                let bytes = std::fs::read(entry.path()).map_err(|e| err(e.to_string()))?;
                let Ok(text) = String::from_utf8(bytes) else {
                    return Err(err(format!(
                        "{} is not text; only text files are copied into the guest",
                        rel.display()
                    )));
                };
                out.push((rel.to_string_lossy().into_owned(), text));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The installable in the guest: the copy's folder and the host.
    pub fn guest_ref(&self) -> String {
        format!("{GUEST_FLAKE}#{}", self.host)
    }
}

/// Nix's messages when an input cannot be had (every generation of them seen offline).
fn fetch_failed(stderr: &str) -> bool {
    const SIGNS: &[&str] = &[
        "unable to download",
        "Could not resolve host",
        "Couldn't resolve host",
        "cannot fetch",
        "unable to fetch",
        "failed to fetch",
        "Failed to open archive",
        "error: cannot connect",
        "Network is unreachable",
        "is not allowed to refer to a store path", // pure mode on an unlocked input
    ];
    SIGNS.iter().any(|s| stderr.contains(s))
}

/// Nix's error without its retry warnings and noise, bounded.
fn error_lines(stderr: &str) -> String {
    // Each line made safe for a terminal on its own, so the lines stay lines.
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .map(|l| crate::term::clip(l, 300))
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_path_and_plain_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: {}; }").unwrap();
        let spec = format!("{}#web-1", dir.path().display());
        let r: FlakeRef = spec.parse().unwrap();
        assert_eq!(r.host, "web-1");
        assert_eq!(r.dir, dir.path());
        assert_eq!(r.guest_ref(), "/etc/nixtest/config#web-1");
        for bad in ["nohash", "#h", "x#", ""] {
            assert!(
                matches!(bad.parse::<FlakeRef>(), Err(FlakeError::BadRef(_))),
                "{bad}"
            );
        }
        for bad in ["..", ".hidden", "-x"] {
            let spec = format!("{}#{bad}", dir.path().display());
            assert!(
                matches!(spec.parse::<FlakeRef>(), Err(FlakeError::BadHost { .. })),
                "{bad}"
            );
        }
        let quoting = format!("{}#a;rm -rf /", dir.path().display());
        assert!(matches!(
            quoting.parse::<FlakeRef>(),
            Err(FlakeError::BadHost { .. })
        ));
        assert!(matches!(
            "/nonexistent-nixtest#h".parse::<FlakeRef>(),
            Err(FlakeError::NoFlake { .. })
        ));
    }

    #[test]
    fn files_leave_out_links_and_git() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("flake.nix"), "{ }").unwrap();
        std::fs::create_dir_all(p.join("hosts/a")).unwrap();
        std::fs::write(p.join("hosts/a/disko.nix"), "{ }").unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join(".git/config"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", p.join("result")).unwrap();
        let r: FlakeRef = format!("{}#a", p.display()).parse().unwrap();
        let names: Vec<String> = r.files().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["flake.nix", "hosts/a/disko.nix"]);
    }

    #[test]
    fn fetch_failures_are_told_apart() {
        assert!(fetch_failed(
            "error: unable to download 'https://api.github.com/repos/NixOS/nixpkgs/commits/x': Couldn't resolve host name (6)"
        ));
        assert!(!fetch_failed(
            "error: syntax error, unexpected ';'\n at /nix/store/x-source/flake.nix:1:50:"
        ));
        assert_eq!(
            error_lines("warning: retrying\nerror: a\n\n  at b\n"),
            "error: a\n  at b"
        );
    }
}
