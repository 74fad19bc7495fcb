//! Installed plugins: the user's data dir holds one folder per plugin with its component and
//! a manifest. Installs are staged and renamed into place, so a plugin (or a whole heal pack)
//! is installed completely or not at all.
//!
//! Adding a name that is already installed follows semver: a higher version upgrades, the
//! same version with the same bytes is a no-op, anything else is refused.

use crate::monitor::FaultRecord;
use crate::plugin::{
    Origin, Plugin, PluginError, PluginFault, PluginHost, check_name, component_sha256,
    read_component,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

const COMPONENT: &str = "plugin.wasm";
const MANIFEST: &str = "manifest.toml";

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write to the plugin store {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{name} is the name of a built-in plugin; give your plugin another name")]
    BuiltinName { name: String },
    #[error(
        "{name} {installed} is already installed with different content; bump the plugin's \
         version or run `nixtest plugin remove {name}` first"
    )]
    SameVersionDifferent {
        name: String,
        installed: semver::Version,
    },
    #[error(
        "{name} {installed} is installed and {offered} is older; run `nixtest plugin remove \
         {name}` first to downgrade"
    )]
    Downgrade {
        name: String,
        installed: semver::Version,
        offered: semver::Version,
    },
    #[error("heal pack {path}: {reason}")]
    Pack { path: PathBuf, reason: String },
    #[error("two plugins are named {0}; remove or rename one")]
    Duplicate(String),
    #[error("no installed plugin is named {0} (see `nixtest plugin list`)")]
    NotInstalled(String),
    #[error("installed plugin {name} is damaged ({reason}); run `nixtest plugin remove {name}`")]
    Damaged { name: String, reason: String },
    #[error("{0}")]
    BadName(String),
    #[error("{path} is a link; {what} may not hold links (copy the file in instead)")]
    Link { path: PathBuf, what: &'static str },
}

/// Installed plugins that loaded, and those that did not (each a fault for the run: the
/// others still run).
pub struct Loaded {
    pub plugins: Vec<Plugin>,
    pub refused: Vec<(String, String, FaultRecord)>,
}

/// What the store records about an installed plugin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: String,
    pub sha256: String,
    pub description: String,
    pub categories: Vec<String>,
    pub capabilities: Vec<String>,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
}

/// `pack.toml` of a heal pack.
#[derive(Debug, Deserialize)]
struct PackFile {
    pack: PackInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PackInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Component files, relative to the pack folder; all `*.wasm` when absent.
    #[serde(default)]
    plugins: Option<Vec<String>>,
}

/// A checked plugin ready to be installed, and what happens when it is.
pub struct Candidate {
    pub plugin: Plugin,
    pub bytes: Vec<u8>,
    pub source: PathBuf,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    New,
    Upgrade(semver::Version),
    AlreadyInstalled,
}

/// The plugin store under the user's data dir.
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    pub fn new(data_dir: &Path) -> Self {
        Registry {
            root: data_dir.join("plugins"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Manifests of everything installed, sorted by name.
    pub fn list(&self) -> Result<Vec<Manifest>, RegistryError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Read {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            // Only folders with a plugin's name are plugins: anything else is passed over.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || check_name(&name).is_err() {
                tracing::warn!(path = %entry.path().display(), "not a plugin folder; passed over");
                continue;
            }
            out.push(self.manifest(&name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn manifest(&self, name: &str) -> Result<Manifest, RegistryError> {
        // Names become paths: only a valid plugin name is ever joined to the store.
        check_name(name).map_err(RegistryError::BadName)?;
        let path = self.root.join(name).join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && !self.root.join(name).exists() {
                RegistryError::NotInstalled(name.to_string())
            } else {
                RegistryError::Damaged {
                    name: name.to_string(),
                    reason: format!("{}: {e}", path.display()),
                }
            }
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| RegistryError::Damaged {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if manifest.name != name {
            return Err(RegistryError::Damaged {
                name: name.to_string(),
                reason: format!(
                    "its manifest names {:?}",
                    crate::term::clip(&manifest.name, 64)
                ),
            });
        }
        Ok(manifest)
    }

    /// Loads every installed plugin; the sha256 in the manifest must match the bytes. A plugin
    /// that does not load (damaged, or refused by this host's limits) is kept out of the run
    /// with a fault; the others load.
    pub fn load_all(&self, host: &PluginHost) -> Result<Loaded, RegistryError> {
        /// A component's bytes and their sha256.
        type Hashed = (Vec<u8>, String);
        let mut loaded = Loaded {
            plugins: Vec::new(),
            refused: Vec::new(),
        };
        let manifests = self.list()?;
        let path = |m: &Manifest| self.root.join(&m.name).join(COMPONENT);
        // Each component with its hash (hashed once: the cache check and the load share it).
        let read: Vec<std::io::Result<Hashed>> = manifests
            .iter()
            .map(|m| {
                read_component(&path(m)).map(|bytes| {
                    let sha256 = component_sha256(&bytes);
                    (bytes, sha256)
                })
            })
            .collect();
        let together = host.all_compiled(
            read.iter()
                .filter_map(|r| r.as_ref().ok().map(|(_, sha256)| sha256.as_str())),
        );
        // Loaded side by side when all are compiled already, then taken in the list's order;
        // none for a component that could not be read.
        let pairs: Vec<(&Manifest, &std::io::Result<Hashed>)> =
            manifests.iter().zip(&read).collect();
        let loads = crate::workers::map_in_order(&pairs, together, |(m, read)| {
            let (bytes, sha256) = read.as_ref().ok()?;
            Some(host.load_hashed(bytes, sha256.clone(), &m.name, Origin::Installed(path(m))))
        });
        let results = manifests
            .iter()
            .zip(read)
            .zip(loads)
            .map(|((m, bytes), load)| {
                let plugin = match (bytes, load) {
                    (Err(source), _) => Err(RegistryError::Read {
                        path: path(m),
                        source,
                    }),
                    (Ok(_), Some(load)) => load.map_err(RegistryError::from),
                    (Ok(_), None) => unreachable!("a component that was read is loaded"),
                }?;
                if plugin.sha256 == m.sha256 {
                    Ok(plugin)
                } else {
                    Err(RegistryError::Damaged {
                        name: m.name.clone(),
                        reason: "its component does not match the sha256 it was installed with"
                            .into(),
                    })
                }
            });
        for (m, result) in manifests.iter().zip(results) {
            match result {
                Ok(p) => loaded.plugins.push(p),
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(plugin = %m.name, "installed plugin disabled for this run: {why}");
                    let fault = PluginFault::Unloadable(why);
                    loaded.refused.push((
                        m.name.clone(),
                        m.world.clone(),
                        FaultRecord::new(&m.name, fault, 0, String::new()),
                    ));
                }
            }
        }
        Ok(loaded)
    }

    /// Reads and checks what `path` (a component or a heal pack folder) would install.
    pub fn prepare(
        &self,
        host: &PluginHost,
        path: &Path,
        builtin_names: &[String],
    ) -> Result<(Vec<Candidate>, Option<PackInfo>), RegistryError> {
        if !path.exists() {
            return Err(RegistryError::Missing(path.to_path_buf()));
        }
        let (files, pack) = if path.is_dir() {
            no_link(&path.join("pack.toml"), "a heal pack")?;
            let (files, info) = pack_files(path)?;
            (files, Some(info))
        } else {
            (vec![path.to_path_buf()], None)
        };
        let mut out: Vec<Candidate> = Vec::new();
        for file in files {
            if pack.is_some() {
                no_link(&file, "a heal pack")?;
            }
            let bytes = read_component(&file).map_err(|source| RegistryError::Read {
                path: file.clone(),
                source,
            })?;
            let what = file.display().to_string();
            let plugin = host.load(&bytes, &what, Origin::File(file.clone()))?;
            let name = plugin.meta.name.clone();
            if builtin_names.contains(&name) {
                return Err(RegistryError::BuiltinName { name });
            }
            if out.iter().any(|c| c.plugin.meta.name == name) {
                return Err(RegistryError::Pack {
                    path: path.to_path_buf(),
                    reason: format!("two components are named {name}"),
                });
            }
            let outcome = self.outcome(&plugin)?;
            out.push(Candidate {
                plugin,
                bytes,
                source: file,
                outcome,
            });
        }
        Ok((out, pack))
    }

    fn outcome(&self, plugin: &Plugin) -> Result<Outcome, RegistryError> {
        let name = &plugin.meta.name;
        let installed = match self.manifest(name) {
            Ok(m) => m,
            Err(RegistryError::NotInstalled(_)) => return Ok(Outcome::New),
            Err(e) => return Err(e),
        };
        let old =
            semver::Version::parse(&installed.version).map_err(|e| RegistryError::Damaged {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        let new = &plugin.meta.version;
        match new.cmp(&old) {
            std::cmp::Ordering::Greater => Ok(Outcome::Upgrade(old)),
            std::cmp::Ordering::Equal if installed.sha256 == plugin.sha256 => {
                Ok(Outcome::AlreadyInstalled)
            }
            std::cmp::Ordering::Equal => Err(RegistryError::SameVersionDifferent {
                name: name.clone(),
                installed: old,
            }),
            std::cmp::Ordering::Less => Err(RegistryError::Downgrade {
                name: name.clone(),
                installed: old,
                offered: new.clone(),
            }),
        }
    }

    /// Installs prepared candidates: all of them, or none.
    pub fn install(
        &self,
        candidates: &[Candidate],
        pack: Option<&str>,
    ) -> Result<(), RegistryError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Write { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(write_err(&self.root))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.root)
            .map_err(write_err(&self.root))?;
        let todo: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.outcome != Outcome::AlreadyInstalled)
            .collect();
        for c in &todo {
            let dir = staging.path().join(&c.plugin.meta.name);
            std::fs::create_dir(&dir).map_err(write_err(&dir))?;
            std::fs::write(dir.join(COMPONENT), &c.bytes).map_err(write_err(&dir))?;
            let manifest = Manifest {
                name: c.plugin.meta.name.clone(),
                version: c.plugin.meta.version.to_string(),
                world: c.plugin.world.as_str().to_string(),
                sha256: c.plugin.sha256.clone(),
                description: c.plugin.meta.description.clone(),
                categories: c.plugin.meta.categories.clone(),
                capabilities: c
                    .plugin
                    .meta
                    .capabilities
                    .iter()
                    .map(|c| format!("{c:?}").to_lowercase())
                    .collect(),
                source: c.source.display().to_string(),
                pack: pack.map(str::to_string),
            };
            let text = toml::to_string(&manifest).expect("manifest serialises");
            std::fs::write(dir.join(MANIFEST), text).map_err(write_err(&dir))?;
        }
        // Move the old versions aside, then the new ones in; undo everything on any failure.
        let retired = staging.path().join(".retired");
        std::fs::create_dir(&retired).map_err(write_err(&retired))?;
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| {
            for c in &todo {
                let name = &c.plugin.meta.name;
                let live = self.root.join(name);
                if live.exists() {
                    let aside = retired.join(name);
                    std::fs::rename(&live, &aside).map_err(write_err(&live))?;
                    moved.push((aside, live.clone()));
                }
                let staged = staging.path().join(name);
                std::fs::rename(&staged, &live).map_err(write_err(&live))?;
                moved.push((live, staged));
            }
            Ok(())
        })();
        if result.is_err() {
            for (from, to) in moved.into_iter().rev() {
                let _ = std::fs::rename(&from, &to);
            }
        }
        result
    }

    /// Removes an installed plugin (a valid name inside the store, nothing else).
    pub fn remove(&self, name: &str) -> Result<Manifest, RegistryError> {
        let manifest = self.manifest(name)?;
        let dir = self.root.join(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|source| RegistryError::Write { path: dir, source })?;
        Ok(manifest)
    }
}

/// Refuses a path that is a link (or goes through one below the pack folder).
pub fn no_link(path: &Path, what: &'static str) -> Result<(), RegistryError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(RegistryError::Link {
            path: path.to_path_buf(),
            what,
        }),
        _ => Ok(()),
    }
}

fn pack_files(dir: &Path) -> Result<(Vec<PathBuf>, PackInfo), RegistryError> {
    let toml_path = dir.join("pack.toml");
    let text = std::fs::read_to_string(&toml_path).map_err(|_| RegistryError::Pack {
        path: dir.to_path_buf(),
        reason: "a folder must be a heal pack with a pack.toml".into(),
    })?;
    let pack: PackFile = toml::from_str(&text).map_err(|e| RegistryError::Pack {
        path: toml_path.clone(),
        reason: e.to_string(),
    })?;
    let files: Vec<PathBuf> = match pack.pack.plugins.clone() {
        Some(list) => list
            .iter()
            .map(|rel| {
                let rel = Path::new(rel);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    Err(RegistryError::Pack {
                        path: toml_path.clone(),
                        reason: format!("{} points outside the pack", rel.display()),
                    })
                } else {
                    Ok(dir.join(rel))
                }
            })
            .collect::<Result<_, _>>()?,
        None => {
            let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|source| RegistryError::Read {
                    path: dir.to_path_buf(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            f.sort();
            f
        }
    };
    if files.is_empty() {
        return Err(RegistryError::Pack {
            path: dir.to_path_buf(),
            reason: "the pack holds no components".into(),
        });
    }
    for f in &files {
        if !f.exists() {
            return Err(RegistryError::Pack {
                path: dir.to_path_buf(),
                reason: format!("{} is listed but missing", f.display()),
            });
        }
    }
    Ok((files, pack.pack))
}
