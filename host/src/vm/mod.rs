//! The VM manager: the test guest image, a base VM with a `pristine` snapshot, and one VM per
//! run on qcow2 overlays, all through libvirt (the `virt` crate). Every domain and disk a run
//! creates is removed when the run ends, on error, and on SIGINT/SIGTERM; domains left by a
//! process that died are swept on the next start.

pub mod cleanup;
pub mod domain;
pub mod image;
pub mod kvm;
pub mod manager;

pub use domain::{Boot, DiskSpec, DomainSpec};
pub use image::GuestImage;
pub use kvm::{Accel, AccelChoice};
pub use manager::{BaseStatus, RunVm, VmManager};

use crate::settings::{Setting, Settings};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error(
        "cannot connect to libvirt at {uri}: {reason}. Start it: `virtlogd -d && libvirtd -d` \
         (no systemd) or `systemctl start libvirtd`; or set NIXTEST_LIBVIRT_URI"
    )]
    Unreachable { uri: String, reason: String },
    #[error("libvirt: {action}: {reason}")]
    Libvirt { action: String, reason: String },
    #[error("the guest image at {dir} is missing; run `nixtest setup`")]
    ImageMissing { dir: PathBuf },
    #[error("the guest image at {dir} is broken ({reason}); run `nixtest setup --rebuild`")]
    ImageBroken { dir: PathBuf, reason: String },
    #[error("building the guest image failed: {0}")]
    ImageBuild(String),
    #[error("the base VM is not set up; run `nixtest setup`")]
    NoBase,
    #[error(
        "the base VM's disk is in use by running run VMs ({}); wait for those runs to end, or \
         remove them with `nixtest vm destroy`",
        runs.join(", ")
    )]
    BaseInUse { runs: Vec<String> },
    #[error("{setting}: {reason}")]
    Setting { setting: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
}

impl VmError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
        let what = what.into();
        move |source| VmError::Io { what, source }
    }

    /// Whether the user can fix it by changing their input (exit 2) rather than the machine
    /// failing (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(self, VmError::Setting { .. })
    }
}

/// VM settings: flags, then the environment, then defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSettings {
    pub uri: String,
    pub memory_mib: u64,
    /// Size of the install target disk (`vdb`).
    pub disk_bytes: u64,
    pub vcpus: u32,
    /// Where images, base disks and run disks live.
    pub dir: PathBuf,
    /// Names of domains start with it (`NIXTEST_VM_PREFIX`, default `nixtest`), so separate
    /// installations (or test suites) never touch each other's VMs.
    pub prefix: String,
    /// `VM_NETWORK=open`: QEMU user networking without `restrict=on`, for real installs that
    /// need the binary cache. Off by default; the tests never use it.
    pub open_network: bool,
}

impl VmSettings {
    /// From the environment, then the settings file, then defaults.
    pub fn resolve(cache_dir: &std::path::Path, settings: &Settings) -> Result<Self, VmError> {
        let f = &settings.file.vm;
        let bad = |s: &Setting, expected: &str| VmError::Setting {
            setting: s.origin.clone(),
            reason: format!("{:?} {expected}", s.value),
        };
        let uri = settings
            .get(
                "NIXTEST_LIBVIRT_URI",
                "vm.libvirt_uri",
                f.libvirt_uri.clone(),
            )
            .map_or_else(|| "qemu:///system".into(), |s| s.value);
        let memory_mib =
            match settings.get("VM_MEMORY", "vm.memory", f.memory.map(|m| m.to_string())) {
                Some(s) => s
                    .value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| bad(&s, "is not a number of MiB"))?,
                None => 1024,
            };
        let disk_bytes = match settings.get("VM_DISK_SIZE", "vm.disk_size", f.disk_size.clone()) {
            Some(s) => {
                parse_size(&s.value).ok_or_else(|| bad(&s, "is not a size like 4G or 800M"))?
            }
            None => 4 << 30,
        };
        let open_network = match settings.get("VM_NETWORK", "vm.network", f.network.clone()) {
            None => false,
            Some(s) => match s.value.trim() {
                "user" | "restricted" => false,
                "open" => true,
                _ => {
                    return Err(bad(
                        &s,
                        "is not supported: `user` (QEMU user networking, restricted: the \
                         guest reaches nothing; the default) or `open` (QEMU user networking \
                         without the restriction, for real installs that need the binary \
                         cache); nixtest never starts a libvirt network",
                    ));
                }
            },
        };
        let vcpus = match settings.get("VM_VCPUS", "vm.vcpus", f.vcpus.map(|v| v.to_string())) {
            Some(s) => s
                .value
                .trim()
                .parse()
                .map_err(|_| bad(&s, "is not a number"))?,
            None => 1,
        };
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let dir = match var("NIXTEST_VM_DIR") {
            Some(d) => PathBuf::from(d),
            // qemu:///system runs QEMU as another user, which cannot enter /root.
            None if uri.ends_with("/system") => PathBuf::from("/var/lib/nixtest"),
            None => cache_dir.join("vms"),
        };
        if memory_mib < 128 {
            return Err(VmError::Setting {
                setting: "VM_MEMORY".into(),
                reason: format!("{memory_mib} MiB is too little to boot the guest (128 at least)"),
            });
        }
        let prefix = var("NIXTEST_VM_PREFIX").unwrap_or_else(|| "nixtest".into());
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(VmError::Setting {
                setting: "NIXTEST_VM_PREFIX".into(),
                reason: format!("{prefix:?}: use letters, digits and -"),
            });
        }
        Ok(VmSettings {
            uri,
            memory_mib,
            disk_bytes,
            vcpus,
            dir,
            prefix,
            open_network,
        })
    }
}

/// `4G`, `800M`, `1024K`, `123` (bytes) to bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'G' | 'g') => (&s[..i], 1u64 << 30),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'K' | 'k') => (&s[..i], 1 << 10),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("800M"), Some(800 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }
}
