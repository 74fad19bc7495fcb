//! Test profiles: what to install and how to check it. A profile is a folder with a
//! `profile.toml` (phases, VM overrides, verification checks) and the configuration files the
//! install uses (`configuration.nix`, `disko-config.nix`, ...). The built-in profiles (`vm`,
//! `workstation`, `server`) are carried in the binary; a path to a folder works the same.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("no profile named {0:?}: use vm, workstation, server, or a path to a profile folder")]
    Unknown(String),
    #[error("profile {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    /// A shell command run as root in the guest.
    pub run: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// Passes when it exits 0 on the installed system.
    pub run: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSettings {
    pub memory_mib: Option<u64>,
    pub disk: Option<String>,
    /// The installed system's root device, which the test guest's VM boots for the checks
    /// (an installer ISO's VM boots its target disk instead).
    #[serde(default)]
    pub root: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    vm: VmSettings,
    /// `PATH#HOST`: the user's flake is what is installed (PATH relative to the profile's
    /// folder); the phases are then disko's and nixos-install's unless given.
    flake: Option<String>,
    #[serde(default)]
    phases: Vec<Phase>,
    #[serde(default)]
    checks: Vec<Check>,
}

/// A loaded profile with its configuration files.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub vm: VmSettings,
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
    /// (relative path, content) of every configuration file.
    pub config: Vec<(String, String)>,
    /// The flake this profile installs (its files are `config`).
    pub flake: Option<crate::installer::FlakeRef>,
}

/// The phase that partitions with the flake's disko config: disko itself when the ISO has it,
/// else through `nix run` (the stock NixOS ISO has no disko); never left at disko's wipe
/// prompt: `--yes-wipe-all-disks` where disko knows it, else the older `--mode disko`, which
/// does not ask.
pub fn flake_disko_phase(installable: &str) -> String {
    format!(
        "if command -v disko >/dev/null; then set -- disko; else set -- nix \
         --extra-experimental-features 'nix-command flakes' run github:nix-community/disko/latest --; fi; \
         if \"$@\" --help 2>&1 | grep -q -- --yes-wipe-all-disks; then \
         \"$@\" --mode destroy,format,mount --yes-wipe-all-disks --flake '{installable}' < /dev/null; \
         else \"$@\" --mode disko --flake '{installable}' < /dev/null; fi"
    )
}

fn flake_phases(r: &crate::installer::FlakeRef) -> Vec<Phase> {
    let installable = r.guest_ref();
    vec![
        Phase {
            name: "disk_partitioning".into(),
            run: flake_disko_phase(&installable),
        },
        Phase {
            name: "install".into(),
            run: format!("nixos-install --flake '{installable}' --no-root-passwd"),
        },
    ]
}

fn flake_checks() -> Vec<Check> {
    vec![
        Check {
            name: "root-is-installed-disk".into(),
            // The installed root, not the installer's (a tmpfs or overlay) nor the CD.
            run: "findmnt -n -o SOURCE / | grep -q '^/dev/[vsh]d[a-z]'".into(),
        },
        Check {
            name: "sshd-active".into(),
            run: "pgrep -x sshd".into(),
        },
    ]
}

macro_rules! builtin {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../profiles/", $name, "/profile.toml")),
            &[
                (
                    "configuration.nix",
                    include_str!(concat!("../../profiles/", $name, "/configuration.nix")),
                ),
                (
                    "disko-config.nix",
                    include_str!(concat!("../../profiles/", $name, "/disko-config.nix")),
                ),
            ] as &[(&str, &str)],
        )
    };
}

/// (relative path, content) of a built-in profile's configuration files.
type ConfigFiles = &'static [(&'static str, &'static str)];

const BUILTIN: &[(&str, &str, ConfigFiles)] =
    &[builtin!("vm"), builtin!("workstation"), builtin!("server")];

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n).collect()
}

impl Profile {
    /// A built-in profile by name, or a profile folder by path.
    pub fn load(spec: &str) -> Result<Profile, ProfileError> {
        if let Some((_, toml_text, files)) = BUILTIN.iter().find(|(n, _, _)| *n == spec) {
            let config = files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect();
            return Self::parse(spec, toml_text, config);
        }
        if spec.contains('#') && !Path::new(spec).join("profile.toml").is_file() {
            let r: crate::installer::FlakeRef =
                spec.parse().map_err(|e| ProfileError::Invalid {
                    path: spec.to_string(),
                    reason: format!("{e}"),
                })?;
            return Self::from_flake(&r);
        }
        let dir = Path::new(spec);
        if !dir.join("profile.toml").is_file() {
            return Err(ProfileError::Unknown(spec.to_string()));
        }
        Self::load_dir(dir)
    }

    pub fn load_dir(dir: &Path) -> Result<Profile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            path: dir.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(dir.join("profile.toml"))
            .map_err(|e| invalid(format!("profile.toml: {e}")))?;
        let mut config = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| invalid(e.to_string()))? {
            let entry = entry.map_err(|e| invalid(e.to_string()))?;
            let path: PathBuf = entry.path();
            // A link could pull any host file into the guest and the report: refused.
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                return Err(invalid(format!(
                    "{} is a link; a profile folder may not hold links (copy the file in)",
                    path.display()
                )));
            }
            if path.is_file() && path.extension().is_some_and(|e| e == "nix") {
                let content = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                config.push((entry.file_name().to_string_lossy().into_owned(), content));
            }
        }
        config.sort();
        Self::parse(&dir.display().to_string(), &text, config)
    }

    fn parse(
        where_: &str,
        text: &str,
        config: Vec<(String, String)>,
    ) -> Result<Profile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            path: where_.to_string(),
            reason,
        };
        let mut f: ProfileFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut config = config;
        let flake = match &f.flake {
            Some(spec) => {
                // Relative to the profile's folder.
                let spec = match spec.split_once('#') {
                    Some((p, h)) if !Path::new(p).is_absolute() => {
                        format!("{}#{h}", Path::new(where_).join(p).display())
                    }
                    _ => spec.clone(),
                };
                let r: crate::installer::FlakeRef =
                    spec.parse().map_err(|e| invalid(format!("{e}")))?;
                config = r.files().map_err(|e| invalid(format!("{e}")))?;
                if f.phases.is_empty() {
                    f.phases = flake_phases(&r);
                }
                if f.checks.is_empty() {
                    f.checks = flake_checks();
                }
                Some(r)
            }
            None => None,
        };
        if f.phases.is_empty() {
            return Err(invalid("a profile needs at least one [[phases]]".into()));
        }
        // The name becomes host paths (config/NAME, logs/NAME.log): a plain word only.
        if f.name.is_empty()
            || f.name.len() > 64
            || f.name.starts_with(['.', '-'])
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(invalid(format!(
                "profile name {:?}: use 1 to 64 letters, digits, _, - and ., not starting \
                 with . or -",
                crate::term::clip(&f.name, 80)
            )));
        }
        for p in &f.phases {
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(format!(
                    "phase name {:?}: use letters, digits, _ and -",
                    p.name
                )));
            }
        }
        if flake.is_some() && f.vm.root.is_empty() {
            // The stand-in layout of the test guest; an ISO's VM boots its disk instead.
            f.vm.root = "/dev/vdb2".into();
        }
        if !f.vm.root.starts_with("/dev/") {
            return Err(invalid(format!(
                "vm.root {:?} is not a device path like /dev/vdb2",
                crate::term::clip(&f.vm.root, 80)
            )));
        }
        if let Some(d) = &f.vm.disk
            && crate::vm::parse_size(d).is_none()
        {
            return Err(invalid(format!("vm.disk {d:?} is not a size like 4G")));
        }
        Ok(Profile {
            name: f.name,
            description: f.description,
            vm: f.vm,
            phases: f.phases,
            checks: f.checks,
            config,
            flake,
        })
    }

    /// The profile of `--flake PATH#HOST`: the flake's files, disko's and nixos-install's
    /// phases, and checks that hold for any NixOS system nixtest can reach.
    pub fn from_flake(r: &crate::installer::FlakeRef) -> Result<Profile, ProfileError> {
        let config = r.files().map_err(|e| ProfileError::Invalid {
            path: r.spec.clone(),
            reason: e.to_string(),
        })?;
        Ok(Profile {
            name: r.host.clone(),
            description: format!("the flake {}", r.spec),
            vm: VmSettings {
                memory_mib: None,
                disk: None,
                root: "/dev/vdb2".into(),
            },
            phases: flake_phases(r),
            checks: flake_checks(),
            config,
            flake: Some(r.clone()),
        })
    }

    pub fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load() {
        for name in builtin_names() {
            let p = Profile::load(name).unwrap();
            assert_eq!(p.name, name);
            assert_eq!(p.phases[0].name, "disk_partitioning");
            assert!(p.config.iter().any(|(f, _)| f == "disko-config.nix"));
            assert!(!p.checks.is_empty());
        }
    }

    #[test]
    fn unknown_and_invalid_profiles_say_why() {
        assert!(matches!(
            Profile::load("nope"),
            Err(ProfileError::Unknown(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("profile.toml"),
            "name = \"x\"\nphases = []\n[vm]\nroot = \"/dev/vdb2\"\n",
        )
        .unwrap();
        let err = Profile::load(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
    }
}
