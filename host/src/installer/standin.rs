//! nixtest's stand-in installer ISO, for machines where no NixOS ISO can be had (this one):
//! built from Debian's packages by `guest/iso/build-iso.sh` (carried in the binary with the
//! files it uses) and cached under `VM_DIR/isos/standin-KEY/`, KEY hashing every input, like
//! the test guest. `nixtest setup --standin-iso` builds it and prints its path.

use crate::vm::VmError;
use crate::vm::image::{BuildFiles, files_key, run_build_script};
use sha2::Digest;
use std::path::{Path, PathBuf};

const ISO_FILES: &BuildFiles = &[
    (
        "iso/build-iso.sh",
        include_str!("../../../guest/iso/build-iso.sh"),
        0o755,
    ),
    (
        "kernel-lib.sh",
        include_str!("../../../guest/kernel-lib.sh"),
        0o644,
    ),
    (
        "iso/initrd-init",
        include_str!("../../../guest/iso/initrd-init"),
        0o755,
    ),
    (
        "iso/rootfs/usr/sbin/nixos-live-init",
        include_str!("../../../guest/iso/rootfs/usr/sbin/nixos-live-init"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/disko",
        include_str!("../../../guest/rootfs/usr/local/bin/disko"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/nixos-install",
        include_str!("../../../guest/rootfs/usr/local/bin/nixos-install"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/nixos-generate-config",
        include_str!("../../../guest/rootfs/usr/local/bin/nixos-generate-config"),
        0o755,
    ),
];

/// The stand-in ISO for this nixtest's inputs.
#[derive(Debug, Clone)]
pub struct StandinIso {
    pub dir: PathBuf,
}

impl StandinIso {
    pub fn locate(vm_dir: &Path) -> StandinIso {
        let mut h = files_key(ISO_FILES);
        h.update(std::env::var("NIXTEST_GUEST_RELEASE").unwrap_or_else(|_| "bookworm".into()));
        let key = hex::encode(h.finalize());
        StandinIso {
            dir: vm_dir.join("isos").join(format!("standin-{}", &key[..16])),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("installer.iso")
    }

    pub fn exists(&self) -> bool {
        std::fs::metadata(self.path()).is_ok_and(|m| m.len() > 0)
    }

    /// Builds it unless it is cached (as root: mmdebstrap and chroot need it).
    pub fn ensure(&self, mut progress: impl FnMut(&str)) -> Result<PathBuf, VmError> {
        if self.exists() {
            return Ok(self.path());
        }
        if unsafe { libc::geteuid() } != 0 {
            return Err(VmError::ImageBuild(
                "building the stand-in installer ISO needs root (mmdebstrap, chroot)".into(),
            ));
        }
        let parent = self.dir.parent().expect("isos/KEY has a parent");
        std::fs::create_dir_all(parent)
            .map_err(VmError::io(format!("creating {}", parent.display())))?;
        let staging = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(parent)
            .map_err(VmError::io("creating the ISO folder"))?;
        run_build_script(
            ISO_FILES,
            "iso/build-iso.sh",
            &[staging.path().as_os_str()],
            "::PROGRESS::iso::",
            &mut progress,
        )
        .map_err(VmError::ImageBuild)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::rename(staging.keep(), &self.dir).map_err(VmError::io(format!(
            "moving the ISO to {}",
            self.dir.display()
        )))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(VmError::io("opening the ISO folder"))?;
        Ok(self.path())
    }
}
