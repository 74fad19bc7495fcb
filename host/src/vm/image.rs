//! The test guest image (shared/DESIGN.md, "The test guest"): built from Debian's packages by
//! `guest/build-image.sh`, which is carried in the binary with the guest's own files, and
//! cached under `VM_DIR/images/KEY/` where KEY hashes every input (the script, the guest files,
//! nixtest's public key and the Debian release). A change to any input builds a new image.

use super::VmError;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The guest's build inputs, relative to `guest/`.
const GUEST_FILES: &[(&str, &str, u32)] = &[
    (
        "build-image.sh",
        include_str!("../../../guest/build-image.sh"),
        0o755,
    ),
    (
        "initramfs-init",
        include_str!("../../../guest/initramfs-init"),
        0o755,
    ),
    (
        "rootfs/usr/sbin/nixtest-init",
        include_str!("../../../guest/rootfs/usr/sbin/nixtest-init"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/disko",
        include_str!("../../../guest/rootfs/usr/local/bin/disko"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/nixos-generate-config",
        include_str!("../../../guest/rootfs/usr/local/bin/nixos-generate-config"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/nixos-install",
        include_str!("../../../guest/rootfs/usr/local/bin/nixos-install"),
        0o755,
    ),
    (
        "rootfs/usr/local/bin/nixtest-poweroff",
        include_str!("../../../guest/rootfs/usr/local/bin/nixtest-poweroff"),
        0o755,
    ),
];

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub key: String,
}

impl GuestImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }

    /// The image for these inputs, if it was built (it may still be broken: see `verify`).
    pub fn locate(vm_dir: &Path, public_key: &str) -> GuestImage {
        let key = input_key(public_key);
        GuestImage {
            dir: vm_dir.join("images").join(&key[..16]),
            key,
        }
    }

    pub fn exists(&self) -> bool {
        self.root().exists() && self.kernel().exists() && self.initrd().exists()
    }

    /// Checks the files are there and the root disk is a sound qcow2.
    pub fn verify(&self) -> Result<(), VmError> {
        if !self.dir.exists() {
            return Err(VmError::ImageMissing {
                dir: self.dir.clone(),
            });
        }
        for f in [self.kernel(), self.initrd(), self.root()] {
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                return Err(VmError::ImageBroken {
                    dir: self.dir.clone(),
                    reason: format!("{} is missing or empty", f.display()),
                });
            }
        }
        let out = Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(self.root())
            .output()
            .map_err(VmError::io("running qemu-img (install qemu-utils)"))?;
        if !out.status.success() {
            return Err(VmError::ImageBroken {
                dir: self.dir.clone(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Builds the image (as root: mmdebstrap and chroot need it), reporting each step.
    pub fn build(&self, public_key: &str, mut progress: impl FnMut(&str)) -> Result<(), VmError> {
        if unsafe { libc::geteuid() } != 0 {
            return Err(VmError::ImageBuild(
                "building the guest image needs root (mmdebstrap, chroot); run `nixtest setup` as root".into(),
            ));
        }
        let parent = self.dir.parent().expect("images/KEY has a parent");
        std::fs::create_dir_all(parent)
            .map_err(VmError::io(format!("creating {}", parent.display())))?;
        let src = tempfile::tempdir().map_err(VmError::io("creating a temporary folder"))?;
        for (rel, content, mode) in GUEST_FILES {
            let path = src.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap())
                .map_err(VmError::io("writing the guest files"))?;
            std::fs::write(&path, content).map_err(VmError::io("writing the guest files"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .map_err(VmError::io("writing the guest files"))?;
        }
        let key_file = src.path().join("authorized_key");
        std::fs::write(&key_file, public_key).map_err(VmError::io("writing the guest files"))?;
        let staging = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(parent)
            .map_err(VmError::io("creating the image folder"))?;
        let mut child = Command::new("bash")
            .arg(src.path().join("build-image.sh"))
            .arg(staging.path())
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(VmError::io("running the image build"))?;
        let stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut tail: Vec<String> = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                tail.push(line);
                if tail.len() > 15 {
                    tail.remove(0);
                }
            }
            tail
        });
        for line in BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(step) = line.strip_prefix("::PROGRESS::image::") {
                progress(step);
            }
        }
        let status = child
            .wait()
            .map_err(VmError::io("waiting for the image build"))?;
        let tail = err_thread.join().unwrap_or_default();
        if !status.success() {
            return Err(VmError::ImageBuild(format!(
                "guest/build-image.sh exited with {status}:\n{}",
                tail.join("\n")
            )));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let built = staging.keep();
        std::fs::rename(&built, &self.dir).map_err(VmError::io(format!(
            "moving the image to {}",
            self.dir.display()
        )))?;
        Ok(())
    }
}

fn input_key(public_key: &str) -> String {
    let mut h = Sha256::new();
    for (rel, content, mode) in GUEST_FILES {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(content.as_bytes());
        h.update(mode.to_le_bytes());
    }
    h.update(public_key.as_bytes());
    h.update(std::env::var("NIXTEST_GUEST_RELEASE").unwrap_or_else(|_| "bookworm".into()));
    hex::encode(h.finalize())
}
