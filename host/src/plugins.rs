//! The plugin set of a run: the built-in plugins, then the installed ones, then any given on
//! the command line.

use crate::builtin;
use crate::plugin::{Origin, Plugin, PluginError, PluginHost};
use crate::registry::{Registry, RegistryError};
use std::path::PathBuf;

/// Loads the built-in plugins (compiled once, then from the cache).
pub fn builtins(host: &PluginHost) -> Result<Vec<Plugin>, PluginError> {
    builtin::all()
        .iter()
        .map(|(name, bytes)| host.load(bytes, &format!("built-in plugin {name}"), Origin::Builtin))
        .collect()
}

/// Built-in, installed and extra plugins. A later plugin with a name already loaded is an
/// error, so nothing is shadowed silently.
pub fn load_set(
    host: &PluginHost,
    registry: Option<&Registry>,
    extra: &[PathBuf],
) -> Result<Vec<Plugin>, RegistryError> {
    let mut set = builtins(host)?;
    if let Some(r) = registry {
        set.extend(r.load_all(host)?);
    }
    for path in extra {
        let bytes = std::fs::read(path).map_err(|source| {
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
    Ok(set)
}
