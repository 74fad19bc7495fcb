//! The faults `nixtest test --inject` makes real, and how each is made (shared/DESIGN.md,
//! "The test guest").

use crate::config_copy::ConfigCopy;
use crate::vm::manager::RunOverrides;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A fault `--inject` makes real for a run (shared/DESIGN.md, "The test guest").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The disko config names a disk the VM does not have.
    Disk,
    /// The VM's memory is too small for the build step.
    Memory,
    /// The target disk is too small for the closure.
    Space,
    /// The binary cache's name does not resolve.
    Network,
    /// An installer's live Nix store (a tmpfs of half the RAM) is smaller than the closure:
    /// the VM has the little memory that makes it so on a real machine (`--iso` only).
    Store,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Fault::Disk),
            "memory" => Ok(Fault::Memory),
            "space" => Ok(Fault::Space),
            "network" => Ok(Fault::Network),
            "store" => Ok(Fault::Store),
            _ => Err(format!(
                "unknown fault {s:?}: use disk, memory, space, network or store"
            )),
        }
    }
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Disk => "disk",
            Fault::Memory => "memory",
            Fault::Space => "space",
            Fault::Network => "network",
            Fault::Store => "store",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Applies the fault to the run's VM and configuration.
pub fn inject(
    fault: Option<Fault>,
    overrides: &mut RunOverrides,
    config: &mut ConfigCopy,
) -> std::io::Result<()> {
    match fault {
        None | Some(Fault::Network) => {}
        Some(Fault::Disk) => {
            // The profile's disko-config.nix, or the flake's file that declares disko's
            // devices: its first disk becomes one the VM does not have.
            let device = regex::Regex::new(r#"(\bdevice\s*=\s*")[^"]+(")"#).unwrap();
            let file = config.disko_file().map(str::to_string);
            if let Some(path) = file
                && let Some(c) = config.content(&path)
            {
                let bad = device.replacen(c, 1, "${1}/dev/sdz${2}").into_owned();
                config.set(&path, bad)?;
            }
        }
        Some(Fault::Memory) => {
            overrides.memory_mib = Some(192);
            if let Some(c) = config.content("configuration.nix") {
                let hungry = c.replacen("{\n", "{\n  nixtest.buildMemoryMB = 400;\n", 2);
                config.set("configuration.nix", hungry)?;
            }
        }
        // Big enough for the system only without the profile's generous ESP.
        Some(Fault::Space) => overrides.disk_bytes = Some(280 << 20),
        // Half of 384 MiB is less than the stand-in's closure (about 235 MiB), as half of a
        // small machine's RAM is less than a desktop's closure.
        Some(Fault::Store) => overrides.memory_mib = Some(384),
    }
    Ok(())
}

/// The `nix.conf` the run installs in the guest: no binary cache is reachable here, so the
/// build is local, except that the network fault names one that does not resolve.
pub fn nix_conf(fault: Option<Fault>) -> &'static str {
    match fault {
        Some(Fault::Network) => "substituters = http://cache.nixtest.internal:8080\n",
        _ => "substituters =\n",
    }
}
