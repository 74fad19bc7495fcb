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
const GUEST_FILES: &BuildFiles = &[
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
        "kernel-lib.sh",
        include_str!("../../../guest/kernel-lib.sh"),
        0o644,
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
        let staging = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(parent)
            .map_err(VmError::io("creating the image folder"))?;
        let key_file = staging.path().join(".authorized_key");
        std::fs::write(&key_file, public_key).map_err(VmError::io("writing the guest files"))?;
        run_build_script(
            GUEST_FILES,
            "build-image.sh",
            &[staging.path().as_os_str(), key_file.as_os_str()],
            "::PROGRESS::image::",
            &mut progress,
        )
        .map_err(VmError::ImageBuild)?;
        let _ = std::fs::remove_file(&key_file);
        let _ = std::fs::remove_dir_all(&self.dir);
        let built = staging.keep();
        std::fs::rename(&built, &self.dir).map_err(VmError::io(format!(
            "moving the image to {}",
            self.dir.display()
        )))?;
        Ok(())
    }
}

/// Build inputs carried in the binary: (path, content, mode).
pub(crate) type BuildFiles = [(&'static str, &'static str, u32)];

/// Writes `files` to a temporary folder and runs `script` (one of them) with `args`,
/// reporting its `PREFIX step` lines; on failure, the last lines it printed on stderr.
pub(crate) fn run_build_script(
    files: &BuildFiles,
    script: &str,
    args: &[&std::ffi::OsStr],
    prefix: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let src = tempfile::tempdir().map_err(|e| fail("creating a temporary folder", e))?;
    for (rel, content, mode) in files {
        let path = src.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap())
            .map_err(|e| fail("writing the build files", e))?;
        std::fs::write(&path, content).map_err(|e| fail("writing the build files", e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| fail("writing the build files", e))?;
    }
    let mut child = Command::new("bash")
        .arg(src.path().join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(&format!("running {script}"), e))?;
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
        if let Some(step) = line.strip_prefix(prefix) {
            progress(step);
        }
    }
    let status = child
        .wait()
        .map_err(|e| fail(&format!("waiting for {script}"), e))?;
    let tail = err_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{script} exited with {status}:\n{}",
            tail.join("\n")
        ));
    }
    Ok(())
}

/// A key over build inputs: a change to any file, its path or its mode is a new key.
pub(crate) fn files_key(files: &BuildFiles) -> Sha256 {
    let mut h = Sha256::new();
    for (rel, content, mode) in files {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(content.as_bytes());
        h.update(mode.to_le_bytes());
    }
    h
}

fn input_key(public_key: &str) -> String {
    let mut h = files_key(GUEST_FILES);
    h.update(public_key.as_bytes());
    h.update(std::env::var("NIXTEST_GUEST_RELEASE").unwrap_or_else(|_| "bookworm".into()));
    hex::encode(h.finalize())
}
