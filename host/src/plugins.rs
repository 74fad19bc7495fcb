//! The plugin set of a run: the built-in plugins, then the installed ones, then any given on
//! the command line.

use crate::builtin;
use crate::monitor::FaultRecord;
use crate::plugin::{Origin, Plugin, PluginError, PluginHost, read_component};
use crate::registry::{Registry, RegistryError};
use std::path::PathBuf;

/// Loads the built-in plugins (compiled once, then from the cache).
pub fn builtins(host: &PluginHost) -> Result<Vec<Plugin>, PluginError> {
    let all = builtin::all();
    crate::workers::map_in_order(
        all,
        host.all_compiled(all.iter().map(|(_, _, sha256)| *sha256)),
        |(name, bytes, sha256)| {
            let what = format!("built-in plugin {name}");
            host.load_hashed(bytes, sha256.to_string(), &what, Origin::Builtin)
        },
    )
    .into_iter()
    .collect()
}

/// The plugins of a run, and the installed ones that could not be loaded: a fault each, so
/// the run says its detection is incomplete instead of failing or passing silently.
pub struct PluginSet {
    pub plugins: Vec<Plugin>,
    pub detector_faults: Vec<FaultRecord>,
    pub healer_faults: Vec<FaultRecord>,
}

impl PluginSet {
    /// A set of plugins that all loaded.
    pub fn from_plugins(plugins: Vec<Plugin>) -> Self {
        PluginSet {
            plugins,
            detector_faults: Vec::new(),
            healer_faults: Vec::new(),
        }
    }
}

/// Built-in, installed and extra plugins. A later plugin with a name already loaded is an
/// error, so nothing is shadowed silently. An installed plugin that does not load is left out
/// with a fault; a built-in or extra one that does not load is an error.
pub fn load_set(
    host: &PluginHost,
    registry: Option<&Registry>,
    extra: &[PathBuf],
) -> Result<PluginSet, RegistryError> {
    let mut set = builtins(host)?;
    let (mut detector_faults, mut healer_faults) = (Vec::new(), Vec::new());
    if let Some(r) = registry {
        let loaded = r.load_all(host)?;
        set.extend(loaded.plugins);
        for (_, world, fault) in loaded.refused {
            if world.contains("detector") {
                detector_faults.push(fault);
            } else {
                healer_faults.push(fault);
            }
        }
    }
    for path in extra {
        let bytes = read_component(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RegistryError::Missing(path.clone())
            } else {
                RegistryError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let p = host.load(
            &bytes,
            &path.display().to_string(),
            Origin::File(path.clone()),
        )?;
        set.push(p);
    }
    let mut seen = std::collections::HashSet::new();
    for p in &set {
        if !seen.insert(p.meta.name.clone()) {
            return Err(RegistryError::Duplicate(p.meta.name.clone()));
        }
    }
    Ok(PluginSet {
        plugins: set,
        detector_faults,
        healer_faults,
    })
}
