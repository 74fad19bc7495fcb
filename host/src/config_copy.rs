//! The run's copy of the profile's configuration: healers' changes go into it (never into the
//! profile), each change vetted to stay inside it and applied all or nothing.

use crate::actions::ConfigChange;
use std::path::{Component, Path, PathBuf};

/// A config change's path that may not be written, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} {why}")]
pub struct PathRefused {
    /// The path as given (clipped).
    pub path: String,
    pub why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("is empty or longer than {0} bytes")]
    Length(usize),
    #[error("contains a NUL byte")]
    Nul,
    #[error("names a folder, not a file")]
    NamesAFolder,
    #[error("is not a relative path inside the configuration copy")]
    Absolute,
    #[error("leaves the configuration copy")]
    Leaves,
    #[error("is too deep or has a name over {0} bytes")]
    TooDeep(usize),
    #[error("goes through a link")]
    Link,
    #[error("goes through a file")]
    ThroughAFile,
    #[error("is a folder")]
    IsAFolder,
}

/// Where the run's configuration copy lives in the guest.
pub const GUEST_CONFIG: &str = "/etc/nixtest/config";

/// The run's copy of the profile's configuration: changes stay inside it.
pub struct ConfigCopy {
    dir: PathBuf,
    files: Vec<(String, String)>,
    /// The user's folder the files come from (a flake's), named in the diffs.
    origin: Option<PathBuf>,
}

impl ConfigCopy {
    pub fn content(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_str())
    }

    /// The file that declares disko's devices: `disko-config.nix`, else the first `.nix`
    /// file (of a flake) that mentions `disko.devices`.
    pub fn disko_file(&self) -> Option<&str> {
        if self.content("disko-config.nix").is_some() {
            return Some("disko-config.nix");
        }
        self.files
            .iter()
            .find(|(p, c)| p.ends_with(".nix") && c.contains("disko.devices"))
            .map(|(p, _)| p.as_str())
    }

    pub fn set(&mut self, path: &str, content: String) -> std::io::Result<()> {
        crate::report::write_atomic(&self.dir.join(path), content.as_bytes())?;
        match self.files.iter_mut().find(|(p, _)| p == path) {
            Some(f) => f.1 = content,
            None => self.files.push((path.to_string(), content)),
        }
        Ok(())
    }

    /// A change may only name a file inside the copy that can be written: a relative path
    /// of plain names (no absolute path, no `..`, no NUL, not ending in `/`, not too long),
    /// not through a link, not under an existing file, and not an existing folder.
    pub fn check_path(&self, path: &str) -> Result<(), PathRefused> {
        const MAX_PATH: usize = 1024;
        const MAX_NAME: usize = 255;
        const MAX_DEPTH: usize = 16;
        let refuse = |why: Why| PathRefused {
            path: crate::term::clip(path, 120),
            why,
        };
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(refuse(Why::Length(MAX_PATH)));
        }
        if path.contains('\0') {
            return Err(refuse(Why::Nul));
        }
        if path.ends_with('/') {
            return Err(refuse(Why::NamesAFolder));
        }
        let p = Path::new(path);
        if p.is_absolute() {
            return Err(refuse(Why::Absolute));
        }
        let parts: Vec<_> = p.components().collect();
        if parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(refuse(Why::Leaves));
        }
        if parts.len() > MAX_DEPTH || parts.iter().any(|c| c.as_os_str().len() > MAX_NAME) {
            return Err(refuse(Why::TooDeep(MAX_NAME)));
        }
        let mut at = self.dir.clone();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let Ok(meta) = std::fs::symlink_metadata(&at) else {
                break;
            };
            if meta.file_type().is_symlink() {
                return Err(refuse(Why::Link));
            }
            let last = i + 1 == parts.len();
            if !last && !meta.is_dir() {
                return Err(refuse(Why::ThroughAFile));
            }
            if last && meta.is_dir() {
                return Err(refuse(Why::IsAFolder));
            }
        }
        Ok(())
    }

    /// Applies every change of an action, all or none: on a failure the files written so far
    /// get their old content back. Returns the diffs.
    pub fn apply(&mut self, changes: &[ConfigChange]) -> Result<Vec<String>, String> {
        let mut done: Vec<(String, Option<String>)> = Vec::new();
        let mut diffs = Vec::new();
        for c in changes {
            let old = self.content(&c.path).map(str::to_string);
            if let Err(e) = self.set(&c.path, c.content.clone()) {
                for (path, old) in done.into_iter().rev() {
                    match old {
                        Some(content) => {
                            let _ = self.set(&path, content);
                        }
                        None => {
                            let _ = std::fs::remove_file(self.dir.join(&path));
                            self.files.retain(|(p, _)| p != &path);
                        }
                    }
                }
                return Err(format!(
                    "cannot write {}: {e}",
                    crate::term::clip(&c.path, 120)
                ));
            }
            let mut diff =
                crate::report::config_diff(&c.path, old.as_deref().unwrap_or(""), &c.content);
            if let Some(origin) = &self.origin {
                // Whose file it is: the diff applies there with `patch -p1`.
                diff = format!(
                    "# {} (in {}: patch -p1)\n{diff}",
                    origin.join(&c.path).display(),
                    origin.display()
                );
            }
            diffs.push(diff);
            done.push((c.path.clone(), old));
        }
        Ok(diffs)
    }

    /// The binary caches the configuration names (for the facts healers get).
    pub fn substituters(&self) -> Vec<String> {
        let Some(c) = self.content("configuration.nix") else {
            return Vec::new();
        };
        let Some(start) = c.find("substituters") else {
            return Vec::new();
        };
        let rest = &c[start..];
        let end = rest.find(';').unwrap_or(rest.len());
        rest[..end]
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }
}

impl ConfigCopy {
    /// A copy in `dir` of `files` (relative path, content), written out.
    pub fn create(dir: PathBuf, files: &[(String, String)]) -> std::io::Result<Self> {
        let mut copy = ConfigCopy {
            dir,
            files: Vec::new(),
            origin: None,
        };
        for (p, c) in files {
            copy.set(p, c.clone())?;
        }
        Ok(copy)
    }

    /// Names the user's folder the files were copied from in every diff.
    pub fn with_origin(mut self, origin: Option<PathBuf>) -> Self {
        self.origin = origin;
        self
    }

    /// The files, relative path and content.
    pub fn files(&self) -> &[(String, String)] {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_stay_inside_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let copy = ConfigCopy {
            dir: dir.path().to_path_buf(),
            files: Vec::new(),
            origin: None,
        };
        assert!(copy.check_path("disko-config.nix").is_ok());
        assert!(copy.check_path("modules/net.nix").is_ok());
        for bad in ["/etc/passwd", "../x.nix", "a/../../x", "", "./x"] {
            assert!(copy.check_path(bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert!(copy.check_path("link/passwd").is_err());
        // Paths that cannot be written are refused before anything is written.
        std::fs::write(dir.path().join("file.nix"), "x").unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        let long = "a".repeat(300);
        let deep = vec!["d"; 40].join("/");
        for bad in [
            "x/",
            "a\0b",
            "file.nix/inner.nix",
            "folder",
            long.as_str(),
            deep.as_str(),
        ] {
            assert!(copy.check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_change_that_fails_half_way_is_undone_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut copy = ConfigCopy {
            dir: dir.path().to_path_buf(),
            files: Vec::new(),
            origin: None,
        };
        copy.set("a.nix", "old".into()).unwrap();
        std::fs::write(dir.path().join("blocker"), "a file").unwrap();
        let changes = [
            ConfigChange {
                path: "a.nix".into(),
                content: "new".into(),
            },
            ConfigChange {
                path: "blocker/b.nix".into(),
                content: "x".into(),
            },
        ];
        assert!(copy.apply(&changes).is_err());
        assert_eq!(copy.content("a.nix"), Some("old"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.nix")).unwrap(),
            "old"
        );
    }

    #[test]
    fn substituters_from_the_configuration() {
        let copy = ConfigCopy {
            dir: PathBuf::new(),
            files: vec![(
                "configuration.nix".into(),
                "{ nix.settings.substituters = [ \"http://a:1\" \"http://b:2\" ]; }".into(),
            )],
            origin: None,
        };
        assert_eq!(copy.substituters(), vec!["http://a:1", "http://b:2"]);
    }

    #[test]
    fn a_flake_s_diff_names_the_user_s_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut copy = ConfigCopy::create(
            dir.path().join("copy"),
            &[(
                "hosts/a/disko.nix".into(),
                "disko.devices.disk.m.device = \"/dev/sdz\";\n".into(),
            )],
        )
        .unwrap()
        .with_origin(Some("/home/u/flake".into()));
        let diffs = copy
            .apply(&[ConfigChange {
                path: "hosts/a/disko.nix".into(),
                content: "disko.devices.disk.m.device = \"/dev/vda\";\n".into(),
            }])
            .unwrap();
        assert!(
            diffs[0].starts_with("# /home/u/flake/hosts/a/disko.nix (in /home/u/flake: patch -p1)\n--- a/hosts/a/disko.nix"),
            "{}",
            diffs[0]
        );
        assert_eq!(copy.disko_file(), Some("hosts/a/disko.nix"));
    }
}
