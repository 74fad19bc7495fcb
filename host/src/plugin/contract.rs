//! The contract version: which `nixtest:plugin` a component was built against, and whether
//! this host speaks it.

use super::{PluginError, World};
use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Component;

pub const CONTRACT_PACKAGE: &str = "nixtest:plugin";

/// The current contract's WIT: its package line is the one place its version is written.
const CURRENT_WIT: &str = include_str!("../../../wit/current/plugin.wit");

/// The contract this host implements (the package version in `wit/current`).
pub fn host_contract() -> semver::Version {
    static VERSION: std::sync::OnceLock<semver::Version> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let line = CURRENT_WIT
                .lines()
                .find_map(|l| l.trim().strip_prefix("package nixtest:plugin@"))
                .expect("wit/current names its package");
            semver::Version::parse(line.trim_end_matches(';')).expect("a semver package version")
        })
        .clone()
}

/// Earlier contracts the host still runs through bindings of their own.
fn earlier_contracts() -> [semver::Version; 1] {
    [semver::Version::new(0, 1, 0)]
}

/// Whether a component's contract is 0.1.x (run through the 0.1.0 bindings).
pub(super) fn is_v0_1(v: &semver::Version) -> bool {
    requirement(&earlier_contracts()[0]).matches(v)
}

#[derive(Debug, Error)]
pub enum ContractError {
    #[error(
        "{what} was built against contract {CONTRACT_PACKAGE}@{plugin}, but this nixtest speaks \
         {CONTRACT_PACKAGE}@{host} (and still runs 0.1.x); rebuild the plugin with a \
         nixtest-plugin-sdk for {host_req}"
    )]
    Incompatible {
        what: String,
        plugin: semver::Version,
        host: semver::Version,
        host_req: String,
    },
    #[error(
        "{what} is a component of another world: it exports none of \
         {CONTRACT_PACKAGE}/detector or {CONTRACT_PACKAGE}/healer (it exports: {exports})"
    )]
    OtherWorld { what: String, exports: String },
}

/// `^0.1.0` for 0.1.x: semver compatibility as cargo reads it.
fn requirement(host: &semver::Version) -> semver::VersionReq {
    semver::VersionReq::parse(&format!("^{host}")).expect("a version is a valid requirement")
}

/// Reads the exports: which roles, and which contract version.
pub(super) fn inspect(
    engine: &Engine,
    component: &Component,
    what: &str,
) -> Result<(World, semver::Version), PluginError> {
    let ty = component.component_type();
    let mut names = Vec::new();
    let (mut detects, mut heals) = (false, false);
    let mut version: Option<semver::Version> = None;
    for (name, _) in ty.exports(engine) {
        names.push(name.to_string());
        let Some(rest) = name.strip_prefix(&format!("{CONTRACT_PACKAGE}/")) else {
            continue;
        };
        let (iface, ver) = rest.split_once('@').unwrap_or((rest, ""));
        let Ok(ver) = semver::Version::parse(ver) else {
            continue;
        };
        match iface {
            "detector" => detects = true,
            "healer" => heals = true,
            _ => continue,
        }
        version = Some(version.map_or(ver.clone(), |v: semver::Version| v.max(ver)));
    }
    let world = match (detects, heals) {
        (true, true) => World::Full,
        (true, false) => World::Detector,
        (false, true) => World::Healer,
        (false, false) => {
            return Err(ContractError::OtherWorld {
                what: what.to_string(),
                exports: if names.is_empty() {
                    "nothing".into()
                } else {
                    names.join(", ")
                },
            }
            .into());
        }
    };
    let plugin = version.expect("a role export carries a version");
    let host = host_contract();
    let req = requirement(&host);
    let accepted = std::iter::once(&host)
        .chain(&earlier_contracts())
        .any(|v| requirement(v).matches(&plugin));
    if !accepted {
        return Err(ContractError::Incompatible {
            what: what.to_string(),
            plugin,
            host,
            host_req: req.to_string(),
        }
        .into());
    }
    Ok((world, plugin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_compatibility() {
        assert_eq!(host_contract(), semver::Version::new(0, 2, 0));
        let req = requirement(&host_contract());
        assert!(req.matches(&semver::Version::new(0, 2, 0)));
        assert!(req.matches(&semver::Version::new(0, 2, 7)));
        assert!(!req.matches(&semver::Version::new(0, 3, 0)));
        assert!(!req.matches(&semver::Version::new(1, 0, 0)));
        assert!(is_v0_1(&semver::Version::new(0, 1, 3)));
        assert!(!is_v0_1(&semver::Version::new(0, 2, 0)));
    }
}
