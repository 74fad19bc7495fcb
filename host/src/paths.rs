//! Where nixtest keeps things: the user's data dir (installed plugins, healing history) and
//! cache dir (compiled plugins, the guest image), XDG by default.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Paths {
    pub data: PathBuf,
    pub cache: PathBuf,
}

impl Paths {
    /// `NIXTEST_DATA_DIR` and `NIXTEST_CACHE_DIR` override the XDG locations.
    pub fn from_env() -> Result<Self, String> {
        let dirs = directories::ProjectDirs::from("", "", "nixtest");
        let pick = |var: &str, fallback: Option<PathBuf>| -> Result<PathBuf, String> {
            match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => fallback.ok_or_else(|| {
                    format!("cannot find a home directory for nixtest's files; set {var}")
                }),
            }
        };
        Ok(Paths {
            data: pick(
                "NIXTEST_DATA_DIR",
                dirs.as_ref().map(|d| d.data_dir().to_path_buf()),
            )?,
            cache: pick(
                "NIXTEST_CACHE_DIR",
                dirs.as_ref().map(|d| d.cache_dir().to_path_buf()),
            )?,
        })
    }

    pub fn compiled_plugins(&self) -> PathBuf {
        self.cache.join("compiled")
    }
}
