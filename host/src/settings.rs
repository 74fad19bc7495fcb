//! Settings that are not flags: the environment first, then `nixtest.toml`, then defaults
//! (flags, where there are some, come before all three). The file is `$NIXTEST_CONFIG`, else
//! `./nixtest.toml`, else `$XDG_CONFIG_HOME/nixtest/nixtest.toml`.
//!
//! ```toml
//! [vm]
//! memory = 1024          # MiB (VM_MEMORY)
//! disk_size = "4G"       # the install target (VM_DISK_SIZE)
//! network = "user"       # VM_NETWORK: `user` (restricted) or `open` (reaches the binary cache)
//! iso = "nixos-minimal.iso"  # NIXTEST_ISO: boot this installer ISO instead of the test guest
//! vcpus = 1              # VM_VCPUS
//! libvirt_uri = "qemu:///system"   # NIXTEST_LIBVIRT_URI
//!
//! [test]
//! profiles = ["vm", "server"]      # NIXTEST_PROFILES
//! parallel = 2                     # PARALLEL_TESTS
//! report_dir = "nixtest-reports"   # NIXTEST_REPORT_DIR
//!
//! [healing]
//! enabled = true         # HEALING_ENABLED
//! max_attempts = 3       # MAX_HEALING_ATTEMPTS
//! min_confidence = 0.3   # NIXTEST_MIN_CONFIDENCE
//! stop_early = true      # NIXTEST_STOP_EARLY: stop a phase at its first sure failure
//!
//! [deadlines]            # every wait's deadline (see `deadlines.rs`)
//! boot = "120s"          # NIXTEST_BOOT_TIMEOUT: VM start to SSH
//! reconnect = "90s"      # NIXTEST_RECONNECT_TIMEOUT: a lost connection back
//! hang_after = "120s"    # NIXTEST_HANG_AFTER: quiet this long, a phase is checked for a hang
//! phase = "4h"           # NIXTEST_PHASE_TIMEOUT: the longest phase (0: none)
//! command = "300s"       # NIXTEST_COMMAND_TIMEOUT: a healer's command
//! reboot = "120s"        # NIXTEST_REBOOT_TIMEOUT: reboot to SSH
//! unresponsive = "300s"  # NIXTEST_UNRESPONSIVE_TIMEOUT: an open connection unanswered
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid nixtest settings: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{origin}: {value:?} {expected}")]
    Value {
        origin: String,
        value: String,
        expected: String,
    },
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    pub memory: Option<u64>,
    pub disk_size: Option<String>,
    pub network: Option<String>,
    pub vcpus: Option<u32>,
    pub libvirt_uri: Option<String>,
    /// An installer ISO to boot instead of the test guest (NIXTEST_ISO, `--iso`).
    pub iso: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub profiles: Option<Vec<String>>,
    pub parallel: Option<usize>,
    pub report_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealingFile {
    pub enabled: Option<bool>,
    pub max_attempts: Option<u32>,
    pub min_confidence: Option<f32>,
    pub stop_early: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    #[serde(default)]
    pub vm: VmFile,
    #[serde(default)]
    pub test: TestFile,
    #[serde(default)]
    pub healing: HealingFile,
    #[serde(default)]
    pub deadlines: crate::deadlines::DeadlinesFile,
}

/// One value and where it came from, so a bad one can be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: String,
}

impl Setting {
    /// Parses the value, or says which setting is wrong and what it should be.
    pub fn parse<T: std::str::FromStr>(&self, expected: &str) -> Result<T, SettingsError> {
        self.value
            .trim()
            .parse()
            .map_err(|_| self.invalid(expected))
    }

    pub fn invalid(&self, expected: &str) -> SettingsError {
        SettingsError::Value {
            origin: self.origin.clone(),
            value: self.value.clone(),
            expected: expected.to_string(),
        }
    }
}

/// The loaded file (if any) and the lookup rule.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub file: FileSettings,
    pub path: Option<PathBuf>,
}

impl Settings {
    /// Finds and reads the settings file; no file is no settings, a broken one is an error.
    pub fn load() -> Result<Self, SettingsError> {
        match Self::locate() {
            Some(path) => Self::read(&path),
            None => Ok(Settings::default()),
        }
    }

    fn locate() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("NIXTEST_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let here = PathBuf::from("nixtest.toml");
        if here.is_file() {
            return Some(here);
        }
        directories::ProjectDirs::from("", "", "nixtest")
            .map(|d| d.config_dir().join("nixtest.toml"))
            .filter(|p| p.is_file())
    }

    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let file = toml::from_str(text).map_err(|e| SettingsError::Invalid {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        Ok(Settings {
            file,
            path: Some(path.to_path_buf()),
        })
    }

    /// The environment variable `env` if set and not blank, else the file's `key` (given as
    /// `section.name` with its value), else nothing.
    pub fn get(&self, env: &str, key: &str, file_value: Option<String>) -> Option<Setting> {
        if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
            return Some(Setting {
                value: v,
                origin: env.to_string(),
            });
        }
        file_value.map(|value| Setting {
            value,
            origin: format!(
                "{key} in {}",
                self.path
                    .as_deref()
                    .unwrap_or(Path::new("nixtest.toml"))
                    .display()
            ),
        })
    }

    /// A yes/no setting: true/false, yes/no, on/off, 1/0.
    pub fn get_bool(
        &self,
        env: &str,
        key: &str,
        file_value: Option<bool>,
    ) -> Result<Option<bool>, SettingsError> {
        let Some(s) = self.get(env, key, file_value.map(|b| b.to_string())) else {
            return Ok(None);
        };
        match s.value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(s.invalid("is not true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let s = Settings::parse(
            "[vm]\nmemory = 2048\ndisk_size = \"8G\"\n[test]\nprofiles = [\"vm\", \"server\"]\nparallel = 2\n[healing]\nenabled = false\nmax_attempts = 5\nmin_confidence = 0.5\n",
            Path::new("/x/nixtest.toml"),
        )
        .unwrap();
        assert_eq!(s.file.vm.memory, Some(2048));
        assert_eq!(s.file.test.parallel, Some(2));
        assert_eq!(s.file.healing.enabled, Some(false));
        let m = s
            .get(
                "NIXTEST_TEST_UNSET_VAR",
                "vm.memory",
                s.file.vm.memory.map(|m| m.to_string()),
            )
            .unwrap();
        assert_eq!(m.value, "2048");
        assert_eq!(m.origin, "vm.memory in /x/nixtest.toml");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let e = Settings::parse("[vm]\nmemroy = 2\n", Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
        let e = Settings::parse("[test]\nparallel = \"two\"\n", Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("n.toml"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_origin() {
        let s =
            Settings::parse("[test]\nreport_dir = \"r\"\n", Path::new("/c/nixtest.toml")).unwrap();
        let v = s
            .get("NIXTEST_TEST_UNSET_VAR", "vm.memory", Some("lots".into()))
            .unwrap();
        let e = v.parse::<u64>("is not a number of MiB").unwrap_err();
        assert_eq!(
            e.to_string(),
            "vm.memory in /c/nixtest.toml: \"lots\" is not a number of MiB"
        );
    }
}
